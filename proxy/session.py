"""One caller's session on one target, whatever the protocol: its id and header, its
recording, the live tap that lets approvers watch it, and the one way it ends.

A protocol layer (an SSH `TargetLink`, a PostgreSQL `PgConnection`) makes a `GatewaySession`
as soon as it knows who goes where, hands it an `owner` (how to stop reading when the recorder
is behind, how to end the connection) and then only records through the typed `record_*`
methods, one per event kind of `storage/schema.py`, so the arity of each event is checked
where it is recorded, not at replay.

The rules every protocol gets from here, so that none has to remember them:
- fail closed: `start()` raises RecordingUnavailable when the recording cannot be opened (the
  caller refuses the session), and a recording that breaks later ends the session through
  its owner; every `record_*` returns False when nothing was recorded, and then the caller
  must not forward what it was about to record;
- back-pressure: when the recorder falls behind, the owner is told to stop reading both sides
  until it has caught up (`pause_for_recording(True)`, later `(False)`);
- the live tap: the registry's `tap` sees each event as it is written, after the recording's
  filter masked it, so a watcher never sees what the recording does not hold;
- the end: `close(reason)` closes the recording once (off the event loop) and takes the
  session off the live list; `end(reason, message)` asks the owner to end the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from proxy.auth import Identity
from proxy.config import GatewayConfig
from proxy.oidc import expiry as session_expiry
from proxy.policy import Verdict
from proxy.recording import RecordingFilter, open_session_recording, session_header
from storage.schema import EventType, RecordingHeader
from storage.writer import RecordingFailed

if TYPE_CHECKING:
    from storage.recorder import RecordingWriter

log = logging.getLogger("hoop.session")

Tap = Callable[["GatewaySession", EventType, tuple[Any, ...]], None]


class RecordingUnavailable(Exception):
    """The session cannot be recorded, so it must not happen."""


class SessionOwner(Protocol):
    """What a session needs from the protocol layer that carries it."""

    def pause_for_recording(self, paused: bool) -> None:
        """Stop (True) or resume (False) reading from both sides: the recorder is behind."""

    def end_session(self, reason: str, message: str) -> None:
        """End the connection (once): tell the caller `message`, record `reason`."""


@dataclass(slots=True)
class SessionRegistry:
    """The sessions of one gateway, SSH and PostgreSQL alike: the live list and the tap.

    `tap`, when set, sees every event a session records (after its filter): the runtime
    counts traffic with it and streams a session to whoever watches it."""

    sessions: set[GatewaySession] = field(default_factory=set)
    tap: Tap | None = None

    def live(self) -> dict[str, GatewaySession]:
        """The sessions being recorded now, by id."""
        return {s.id: s for s in self.sessions if s.id and not s.closed}


class GatewaySession:
    """A caller, a target and the session's recording. See the module docstring."""

    def __init__(
        self,
        registry: SessionRegistry,
        config: GatewayConfig,
        identity: Identity,
        target: str,
        protocol: str,
        client: str,
        owner: SessionOwner,
        *,
        mode: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.identity = identity
        self.target = target
        self.protocol = protocol
        self.client = client
        self.owner = owner
        self.mode = mode
        self.extra = dict(extra or {})
        self.recording: RecordingWriter | None = None
        self.header: RecordingHeader | None = None
        self.bytes_in = 0  # what the caller sent, as recorded
        self.bytes_out = 0  # what the caller was shown, as recorded
        self.closed = False
        self.end_reason = ""
        self._filter: RecordingFilter | None = None
        self._starting: asyncio.Future[None] | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None  # proxy/oidc/expiry.py
        self._loop = asyncio.get_running_loop()
        registry.sessions.add(self)

    def __repr__(self) -> str:
        return f"<session {self.id or '(unrecorded)'} {self.identity.name}->{self.target}>"

    @property
    def id(self) -> str:
        return self.header.session_id if self.header is not None else ""

    # -- start -------------------------------------------------------------------------------

    async def start(self, *, term: str = "", cols: int = 0, rows: int = 0) -> None:
        """Open the recording (once; later calls wait for the first) off the event loop.
        RecordingUnavailable when it cannot be opened or the session is already over."""
        await asyncio.shield(self.begin(term=term, cols=cols, rows=rows))

    def begin(self, *, term: str = "", cols: int = 0, rows: int = 0) -> asyncio.Future[None]:
        """Begin opening the recording, without waiting for it; `start()` waits."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._open(term, cols, rows))
            # a failure nobody waits for any more (the channel went away) is not logged as lost
            self._starting.add_done_callback(_retrieved)
        return self._starting

    async def _open(self, term: str, cols: int, rows: int) -> None:
        self._check_open()
        header = self._header(term, cols, rows)
        writer = await asyncio.to_thread(self._open_recording, header)
        if self.closed:  # ended while the file was being opened: close it at once
            await asyncio.to_thread(writer.close, self.end_reason or "session ended")
            raise RecordingUnavailable("the session has ended")
        self._opened(header, writer)

    def _check_open(self) -> None:
        if self.closed:
            raise RecordingUnavailable("the session has ended")

    def _header(self, term: str, cols: int, rows: int) -> RecordingHeader:
        return session_header(
            self.config,
            self.identity,
            self.target,
            self.protocol,
            self.client,
            term=term,
            cols=cols,
            rows=rows,
            extra={"mode": self.mode, **self.extra} if self.mode else self.extra,
        )

    def _open_recording(self, header: RecordingHeader) -> RecordingWriter:
        """Runs in a worker thread."""
        loop = self._loop

        def broke(exc: BaseException) -> None:  # on the writer thread
            loop.call_soon_threadsafe(self.recording_broke, exc)

        try:
            return open_session_recording(self.config, self.identity, header, broke)
        except Exception as exc:
            log.error("cannot start the recording for %r: %s", self, exc)
            raise RecordingUnavailable(str(exc)) from exc

    def _opened(self, header: RecordingHeader, writer: RecordingWriter) -> None:
        self.header, self.recording = header, writer
        self._filter = writer.filter
        writer.filter = None  # applied here, so that the tap sees what is written
        log.info("recording session %s (%s -> %s)", self.id, self.identity.name, self.target)
        # a token's expiry, an agent's maximum session length: the session ends then
        self._expiry = session_expiry.arm(self.config, self.identity, self.end)

    # -- recording: one method per event kind --------------------------------------------------

    def record_output(self, channel: int, data: bytes) -> bool:
        return self._record(EventType.OUTPUT, (channel, data))

    def record_input(self, channel: int, data: bytes) -> bool:
        return self._record(EventType.INPUT, (channel, data))

    def record_resize(self, channel: int, cols: int, rows: int) -> bool:
        return self._record(EventType.RESIZE, (channel, cols, rows))

    def record_exec(self, channel: int, command: bytes) -> bool:
        return self._record(EventType.EXEC, (channel, command))

    def record_exit_status(self, channel: int, status: int) -> bool:
        return self._record(EventType.EXIT_STATUS, (channel, status))

    def record_signal(self, channel: int, name: str) -> bool:
        return self._record(EventType.SIGNAL, (channel, name))

    def record_file_transfer(
        self, channel: int, op: str, path: str | bytes, size: int | None, detail: str
    ) -> bool:
        return self._record(EventType.FILE_TRANSFER, (channel, op, path, size, detail))

    def record_port_forward(
        self,
        channel: int,
        action: str,
        direction: str,
        host: str,
        port: int,
        bytes_in: int,
        bytes_out: int,
    ) -> bool:
        fields = (channel, action, direction, host, port, bytes_in, bytes_out)
        return self._record(EventType.PORT_FORWARD, fields)

    def record_sql_statement(self, statement: str, params: list[Any]) -> bool:
        return self._record(EventType.SQL_STATEMENT, (statement, params))

    def record_sql_result(
        self, columns: list[Any], rows: int, sample: list[Any], duration_us: int
    ) -> bool:
        return self._record(EventType.SQL_RESULT, (columns, rows, sample, duration_us))

    def record_sql_error(self, sqlstate: str, message: str) -> bool:
        return self._record(EventType.SQL_ERROR, (sqlstate, message))

    def record_command(self, channel: int, source: str, command: str) -> bool:
        return self._record(EventType.COMMAND, (channel, source, command))

    def record_verdict(self, channel: int, verdict: Verdict) -> bool:
        return self._record(EventType.VERDICT, (channel, *verdict.recorded()))

    def record_hold_requested(
        self, hold_id: str, command: str, rule: str, approvers: list[str]
    ) -> bool:
        return self._record(EventType.HOLD_REQUESTED, (hold_id, command, rule, approvers))

    def record_hold_decided(self, hold_id: str, decision: str, by: str, reason: str) -> bool:
        return self._record(EventType.HOLD_DECIDED, (hold_id, decision, by, reason))

    def record_mask(
        self,
        channel: int,
        rule: str,
        position: int,
        length: int,
        token: str,
        column: str | None = None,
    ) -> bool:
        fields: tuple[Any, ...] = (channel, rule, position, length, token)
        return self._record(EventType.MASK, fields if column is None else (*fields, column))

    def record_annotation(self, text: str, by: str) -> bool:
        return self._record(EventType.ANNOTATION, (text, by))

    def record_channel_open(self, channel: int, kind: str, detail: str) -> bool:
        return self._record(EventType.CHANNEL_OPEN, (channel, kind, detail))

    def record_channel_close(self, channel: int) -> bool:
        return self._record(EventType.CHANNEL_CLOSE, (channel,))

    def _record(self, event: EventType, fields: tuple[Any, ...]) -> bool:
        """Write one event (through the filter); False, and the session ends, when it cannot."""
        recording = self.recording
        if recording is None or self.closed:
            return False
        written = [(event, fields)] if self._filter is None else self._filter(event, fields)
        try:
            now = recording.elapsed_us()
            for kind, values in written:
                recording.record_at(now, kind, *values)
        except RecordingFailed as exc:
            self.recording_broke(exc)
            return False
        for kind, values in written:
            self._count(kind, values)
            if self.registry.tap is not None:
                self.registry.tap(self, kind, values)
        if recording.congested and not self._draining:
            self._draining = True
            self._drain_task = asyncio.ensure_future(self._wait_for_recorder(recording))
        return True

    def _count(self, kind: EventType, values: tuple[Any, ...]) -> None:
        if kind is EventType.OUTPUT:
            self.bytes_out += len(values[1])
        elif kind is EventType.INPUT:
            self.bytes_in += len(values[1])

    def count_traffic(self, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """Traffic of a protocol that does not record every byte (PostgreSQL's wire)."""
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    async def _wait_for_recorder(self, recording: RecordingWriter) -> None:
        """The recorder is behind: the owner stops reading until it has caught up."""
        self.owner.pause_for_recording(True)
        try:
            await recording.drained()
        finally:
            self._draining = False
            self.owner.pause_for_recording(False)

    def recording_broke(self, exc: BaseException) -> None:
        """The recorder failed: the session must not go on unrecorded (fail closed)."""
        if self.closed:
            return
        log.error("recording of session %s failed, ending it: %s", self.id, exc)
        self.end(
            "recording failed",
            "hoop: the session recording failed, so the gateway ended the session",
        )

    # -- the end -----------------------------------------------------------------------------

    def end(self, reason: str, message: str = "") -> None:
        """Ask the protocol layer to end the connection (an operator, a grant, the gateway)."""
        if not self.closed:
            self.owner.end_session(reason, message)

    async def close(self, reason: str) -> None:
        """The connection is over: close the recording with `reason` (once, off the event
        loop) and leave the live list."""
        if self.closed:
            return
        self.closed = True
        self.end_reason = reason
        self.registry.sessions.discard(self)
        if self._expiry is not None:
            self._expiry.cancel()
        if self._drain_task is not None:
            self._drain_task.cancel()
        recording, self.recording = self.recording, None
        if recording is None:
            return
        try:
            await asyncio.to_thread(recording.close, reason)
        except Exception as exc:
            log.error("closing the recording of session %s failed: %s", self.id, exc)

    # -- the live list -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This session's row of the live list (`hoop-tui live`, the workstation)."""
        header = self.header
        return {
            "id": self.id,
            "user": self.identity.name,
            "target": self.target,
            "protocol": self.protocol,
            "client": self.client,
            "mode": self.mode,
            "started_at": header.started_at_us / 1e6 if header is not None else None,
            "term": header.term if header is not None else "",
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            **self.identity.describe_caller(),  # person or agent; an agent's owner, client id
        }


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
