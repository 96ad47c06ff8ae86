"""Today's mask rules applied to old recordings, before anything is rendered, and a dry run of
new rules over past sessions.

Recordings store the stream as it was masked when it was recorded. When a rule is added later
(after an incident, say), `MaskedSource` wraps a recording so that the player, `screen` and the
exports see it through today's rules too: terminal output and input go through the same
`MaskStream` the gateway uses (one per channel and direction, so a secret cut across two
recorded events is still found), command, exec and SQL statement text, SQL error messages and
the sampled SQL result rows through the same `Masker`. The recording file is never changed.

The view is deterministic: the stream state at every frame boundary is kept, so a frame read
out of order (a seek) is masked exactly as in a straight pass. Tails held back by a stream are
released at the next event of the same stream, or earlier when the recorded gap before that
event is longer than `QUIET_FLUSH_S`, as the gateway would have done, and at the end.

A masked view has its own session id (the recording's, plus a digest of the rules and secret)
so keyframes cached for it never mix with keyframes of the unmasked recording.

`dry_run` answers "what would these rules mask in these recordings?": counts per rule and
sample positions (session, time, channel, byte offset, column), never the values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from replay.sources import EventSource
from storage.mask_stream import QUIET_FLUSH_S, MaskStream
from storage.masking import MaskAct, Masker, MaskPolicy, make_token
from storage.schema import Event, EventType, RecordingHeader
from storage.signing import MASK_KEY_NAME

QUIET_US = int(QUIET_FLUSH_S * 1_000_000)
STREAM_TYPES = (EventType.OUTPUT, EventType.INPUT)
TEXT_FIELDS = {
    EventType.COMMAND: "command",
    EventType.EXEC: "command",
    EventType.SQL_STATEMENT: "statement",
    EventType.SQL_ERROR: "message",
}


class EventMasker:
    """Masks events in recording order; keeps one stream per (direction, channel)."""

    def __init__(self, masker: Masker, *, quiet_us: int = QUIET_US) -> None:
        self.masker = masker
        self.quiet_us = quiet_us
        self._streams: dict[tuple[EventType, Any], MaskStream] = {}
        self._last_us: dict[tuple[EventType, Any], int] = {}

    def copy(self) -> EventMasker:
        other = EventMasker(self.masker, quiet_us=self.quiet_us)
        other._streams = {key: stream.copy() for key, stream in self._streams.items()}
        other._last_us = dict(self._last_us)
        return other

    def event(self, event: Event) -> tuple[Event, list[MaskAct]]:
        """The event as today's rules show it, and what they masked in it."""
        if event.type in STREAM_TYPES:
            return self._stream_event(event)
        if event.type is EventType.SQL_RESULT:
            return self._sql_result(event)
        name = TEXT_FIELDS.get(event.type)
        if name is None:
            return event, []
        value = event.get(name)
        if isinstance(value, bytes):
            text, acts = self.masker.mask_text(value.decode("utf-8", "surrogateescape"))
            if not acts:
                return event, []
            masked: Any = text.encode("utf-8", "surrogateescape")
        elif isinstance(value, str):
            masked, acts = self.masker.mask_text(value)
            if not acts:
                return event, []
        else:
            return event, []
        return _with(event, name, masked), acts

    def finish(self, time_us: int) -> list[tuple[Event, list[MaskAct]]]:
        """What the streams still hold, as final events at `time_us`, with their acts."""
        out: list[tuple[Event, list[MaskAct]]] = []
        for (kind, channel), stream in self._streams.items():
            data, acts = stream.flush(final=True)
            if data or acts:
                out.append((Event(kind, time_us, {"channel": channel, "data": data}), acts))
        return out

    def _stream_event(self, event: Event) -> tuple[Event, list[MaskAct]]:
        data = event.get("data")
        if not isinstance(data, bytes) or not self.masker.masks_text:
            return event, []
        key = (event.type, event.get("channel"))
        stream = self._streams.get(key)
        released = b""
        acts: list[MaskAct] = []
        if stream is None:
            stream = self._streams[key] = MaskStream(self.masker)
        elif event.time_us - self._last_us[key] > self.quiet_us:
            released, acts = stream.flush()
        self._last_us[key] = event.time_us
        out, found = stream.feed(data)
        return _with(event, "data", released + out), acts + found

    def _sql_result(self, event: Event) -> tuple[Event, list[MaskAct]]:
        columns = event.get("columns")
        sample = event.get("sample")
        if not isinstance(columns, list) or not isinstance(sample, list) or not sample:
            return event, []
        names = [str(c) for c in columns]
        plan = self.masker.plan(names)
        if not plan.active:
            return event, []
        rows: list[Any] = []
        acts: list[MaskAct] = []
        for row in sample:
            if not isinstance(row, list):
                rows.append(row)
                continue
            values = [v if isinstance(v, str | bytes) else None for v in row]
            masked, found = plan.mask_row(values)
            rows.append(
                [
                    m if v is not None else original
                    for m, v, original in zip(masked, values, row, strict=True)
                ]
            )
            acts += found
        return _with(event, "sample", rows), acts


def _with(event: Event, name: str, value: Any) -> Event:
    return Event(event.type, event.time_us, {**event.fields, name: value})


def view_id(policy_or_masker: MaskPolicy | Masker) -> str:
    """A short digest of rules and secret, naming a masked view."""
    return make_token(policy_or_masker.secret, repr(policy_or_masker.rules))[4:]


def unscoped_policy(policy: MaskPolicy) -> MaskPolicy:
    """Every rule for everyone: who watched a past session is not recorded, so a replay or a
    dry run applies each rule whatever its groups (its targets still count)."""
    return MaskPolicy(
        tuple(dataclasses.replace(r, groups=(), except_groups=()) for r in policy.rules),
        policy.secret,
    )


class MaskedSource:
    """An `EventSource` (and, for the exports, a reader with `events()`) seen through a
    masker. Frames are masked on demand; the stream state at each frame start is kept."""

    def __init__(self, source: EventSource, masker: Masker) -> None:
        self.source = source
        self.masker = masker
        self.header: RecordingHeader = dataclasses.replace(
            source.header, session_id=f"{source.header.session_id}-masked-{view_id(masker)}"
        )
        self.size = source.size
        self._states: list[EventMasker] = [EventMasker(masker)]
        self.acts: dict[int, list[tuple[int, MaskAct]]] = {}

    @property
    def frame_count(self) -> int:
        return self.source.frame_count

    @property
    def frame_first_us(self) -> Sequence[int] | None:
        """The recording's frame start times, when it has them: a screen at a time stops
        before a frame that starts after it (what a stream holds back at the end of the
        frame before is released by a later event, so not shown at that time either)."""
        starts: Sequence[int] | None = getattr(self.source, "frame_first_us", None)
        return starts

    def read_frame(self, index: int) -> list[Event]:
        while len(self._states) <= index:
            self._mask(len(self._states) - 1)
        return self._mask(index)

    def _mask(self, index: int) -> list[Event]:
        state = self._states[index].copy()
        events: list[Event] = []
        acts: list[tuple[int, MaskAct]] = []
        for event in self.source.read_frame(index):
            masked, found = state.event(event)
            events.append(masked)
            acts += [(event.time_us, act) for act in found]
        if index == self.frame_count - 1:
            last = events[-1].time_us if events else 0
            for event, found in state.finish(last):
                events.append(event)
                acts += [(last, act) for act in found]
        if len(self._states) == index + 1:
            self._states.append(state)
        self.acts[index] = acts
        return events

    def events(self, start_us: int = 0, end_us: int | None = None) -> Iterator[Event]:
        for index in range(self.frame_count):
            for event in self.read_frame(index):
                if event.time_us >= start_us and (end_us is None or event.time_us <= end_us):
                    yield event

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True, slots=True)
class CurrentMasks:
    """Today's `[[masks]]` of a gateway configuration, every rule applying to everyone (see
    `unscoped_policy`): what `hoop-tui screen --masks`, `export --masks` and the workstation
    apply to old recordings."""

    policy: MaskPolicy
    config_path: Path

    @property
    def active(self) -> bool:
        return bool(self.policy.rules)

    @property
    def label(self) -> str:
        count = len(self.policy.rules)
        return f"{count} mask rule{'s' if count != 1 else ''} of {self.config_path.name}"

    def masker_for(self, header: RecordingHeader) -> Masker:
        """The rules for the recording's target (a rule's `targets` still count)."""
        return self.policy.for_caller((), header.target)

    def view(self, source: EventSource) -> MaskedSource:
        return MaskedSource(source, self.masker_for(source.header))


class MaskedConfig(Protocol):
    """What the masks need of a loaded gateway configuration (`proxy.config.GatewayConfig`)."""

    @property
    def path(self) -> Path: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def raw(self) -> dict[str, Any]: ...


def load_current_masks(config: MaskedConfig) -> CurrentMasks:
    """The mask rules of a loaded configuration with the gateway's token secret (from its data
    directory). Raises ConfigError (naming file, rule and key) or OSError."""
    key = config.data_dir / MASK_KEY_NAME
    secret = key.read_bytes() if key.exists() else b""
    policy = MaskPolicy.from_raw_config(config.raw, config.path, secret)
    return CurrentMasks(unscoped_policy(policy), config.path)


def mask_events(events: Iterable[Event], masker: Masker) -> Iterator[Event]:
    """Events in order, masked (held tails come out with a later event or at the end)."""
    state = EventMasker(masker)
    last = 0
    for event in events:
        last = event.time_us
        yield state.event(event)[0]
    for event, _ in state.finish(last):
        yield event


# -- dry run ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """Where a rule would mask something: never what."""

    session_id: str
    time_us: int
    rule: str
    kind: str  # output, input, command, exec, sql_statement, sql_error, sql_result
    channel: Any
    position: int
    length: int
    column: str | None


@dataclass(slots=True)
class DryRunReport:
    sessions: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    sessions_by_rule: dict[str, set[str]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "rules": {
                rule: {"count": count, "sessions": sorted(self.sessions_by_rule.get(rule, ()))}
                for rule, count in self.counts.items()
            },
            "samples": [dataclasses.asdict(s) for s in self.samples],
            "problems": self.problems,
        }


def dry_run(
    policy: MaskPolicy,
    sources: Iterable[EventSource],
    *,
    samples_per_rule: int = 5,
) -> DryRunReport:
    """What `policy` would mask in `sources`. Group scoping is ignored (who watched a past
    session is not recorded): every rule counts, limited only by its `targets`."""
    report = DryRunReport(counts={rule.name: 0 for rule in policy.rules})
    unscoped = unscoped_policy(policy)
    shown: dict[str, int] = {}
    for source in sources:
        session = source.header.session_id
        report.sessions.append(session)
        state = EventMasker(unscoped.for_caller((), source.header.target))
        last = 0
        try:
            for index in range(source.frame_count):
                for event in source.read_frame(index):
                    last = event.time_us
                    _, acts = state.event(event)
                    _count(report, shown, samples_per_rule, session, event, acts)
        except Exception as exc:  # a damaged recording is reported, not fatal
            report.problems.append(f"{session}: {exc}")
        for event, acts in state.finish(last):
            _count(report, shown, samples_per_rule, session, event, acts)
    return report


def _count(
    report: DryRunReport,
    shown: dict[str, int],
    limit: int,
    session: str,
    event: Event,
    acts: list[MaskAct],
) -> None:
    for act in acts:
        report.counts[act.rule] = report.counts.get(act.rule, 0) + 1
        report.sessions_by_rule.setdefault(act.rule, set()).add(session)
        if shown.get(act.rule, 0) < limit:
            shown[act.rule] = shown.get(act.rule, 0) + 1
            report.samples.append(
                Sample(
                    session,
                    event.time_us,
                    act.rule,
                    event.name,
                    event.get("channel"),
                    act.position,
                    act.length,
                    act.column,
                )
            )
