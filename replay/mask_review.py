"""What was masked in one session: by which rule, where, and how often, never the values.

An auditor asks "what did the gateway hide from this person, and why?". `review_terminal`
answers for a terminal session from its `mask` events (the position is a byte offset in that
channel's masked output), `review_sql` for a PostgreSQL session from its statement timeline
(the statement, and the column and row of a result: the column the gateway recorded in the
event, or for recordings older than that field, the one `replay.sql_timeline` reads off the
masked sample row). With a `Masker` (today's rules) the entries
today's rules add on replay are listed too, marked `today`, so a reviewer sees what a new rule
changes in an old recording.

Each entry says where to go to see it: the event to replay up to (terminal) or the statement to
select (SQL).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from replay.masking_view import EventMasker
from replay.sql_timeline import SqlTimeline, StatementMask, build_sql_timeline
from storage.masking import Masker
from storage.schema import Event, EventType, RecordingHeader


@dataclass(frozen=True, slots=True)
class MaskEntry:
    """One masking act: when, by which rule, where (in words), how long, its stable token."""

    time_us: int
    rule: str
    where: str
    length: int
    token: str
    today: bool = False  # found by today's rules on replay, not recorded by the gateway
    event_index: int | None = None  # terminal: replay up to this event to see it
    statement: int | None = None  # SQL: the statement's index in the timeline


@dataclass(frozen=True, slots=True)
class RuleCount:
    rule: str
    recorded: int
    today: int


@dataclass(slots=True)
class MaskReview:
    entries: list[MaskEntry] = field(default_factory=list)

    def counts(self) -> list[RuleCount]:
        """Per rule, the acts recorded and those today's rules add, most frequent first."""
        recorded: dict[str, int] = {}
        today: dict[str, int] = {}
        for entry in self.entries:
            tally = today if entry.today else recorded
            tally[entry.rule] = tally.get(entry.rule, 0) + 1
        rules = sorted(
            {*recorded, *today}, key=lambda r: (-(recorded.get(r, 0) + today.get(r, 0)), r)
        )
        return [RuleCount(r, recorded.get(r, 0), today.get(r, 0)) for r in rules]


def review_session(
    header: RecordingHeader, events: Iterable[Event], masker: Masker | None = None
) -> MaskReview:
    """The review of any session, chosen by its protocol."""
    if header.protocol == "postgres":
        return review_sql(build_sql_timeline(events, masker))
    return review_terminal(events, masker)


def review_terminal(events: Iterable[Event], masker: Masker | None = None) -> MaskReview:
    """The masks of a terminal session: its recorded `mask` events, then (with `masker`)
    what today's rules find in its output, input and commands. A rule finding again what it
    masked when recording (`password=*******` is still an assignment) adds nothing: an act
    of today's rules at the place of a recorded one of the same rule is left out."""
    review = MaskReview()
    state = EventMasker(masker) if masker is not None else None
    recorded: set[tuple[str, object, object]] = set()
    index = -1
    last_us = 0
    for index, event in enumerate(events):
        last_us = event.time_us
        if event.type is EventType.MASK:
            recorded.add((str(event.get("rule")), event.get("channel"), event.get("position")))
            review.entries.append(
                MaskEntry(
                    event.time_us,
                    str(event.get("rule") or ""),
                    f"output, channel {event.get('channel')}, byte {event.get('position')}",
                    _int(event.get("length")),
                    str(event.get("token") or ""),
                    event_index=index,
                )
            )
        if state is not None:
            masked, acts = state.event(event)
            for act in acts:
                if masked.type is EventType.OUTPUT and (
                    (act.rule, masked.get("channel"), act.position) in recorded
                ):
                    continue
                where = _stream_place(masked, act.position)
                review.entries.append(
                    MaskEntry(
                        event.time_us,
                        act.rule,
                        where,
                        act.length,
                        act.token,
                        today=True,
                        event_index=index,
                    )
                )
    if state is not None:
        for masked, acts in state.finish(last_us):
            for act in acts:
                where = _stream_place(masked, act.position)
                review.entries.append(
                    MaskEntry(last_us, act.rule, where, act.length, act.token, True, max(index, 0))
                )
    review.entries.sort(key=lambda e: (e.time_us, e.today))
    return review


def review_sql(timeline: SqlTimeline) -> MaskReview:
    """The masks of a PostgreSQL session, by statement (its result, error or SQL text)."""
    review = MaskReview()
    for statement in timeline.statements:
        for mask in statement.masks:
            review.entries.append(
                MaskEntry(
                    mask.time_us,
                    mask.rule,
                    f"statement {statement.index + 1}, {_sql_place(mask)}",
                    mask.length,
                    mask.token,
                    today=mask.today,
                    statement=statement.index,
                )
            )
    review.entries.sort(key=lambda e: (e.time_us, e.today))
    return review


def _sql_place(mask: StatementMask) -> str:
    if mask.place == "result":
        where = f"column {mask.column}" if mask.column else "result"
        return f"{where}, row {mask.row}" if mask.row is not None else where
    if mask.place == "statement":
        return f"SQL text, character {mask.position}"
    return "error or notice text"


def _stream_place(event: Event, position: int) -> str:
    match event.type:
        case EventType.OUTPUT | EventType.INPUT:
            return f"{event.name}, channel {event.get('channel')}, byte {position}"
        case EventType.COMMAND | EventType.EXEC:
            return f"{event.name} text, character {position}"
    return f"{event.name}, character {position}"


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
