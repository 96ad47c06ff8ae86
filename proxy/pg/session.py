"""One PostgreSQL connection after login, as a sans-IO relay: client bytes and upstream bytes
in; bytes for each side, and commands, out. The asyncio shell (`server.py`) only moves bytes.

What it does with the traffic:

- Every statement is analysed once (`analysis.py`: classes, tables, lineage, COPY) and judged
  before the upstream sees it: a simple Query (each of its statements), a Parse (judged once;
  the verdict applies at every Execute of it). The client messages are read in `frontend.py`,
  the server's in `backend.py`.
- An allowed statement is forwarded at once (the fast path never leaves this object). A
  deny or review becomes a `Judge` command and the session is HELD (client bytes queue up,
  upstream bytes keep flowing) until the outcome arrives as an event (`Decided`, through
  `judged()`): the statement runs through the one resume path (`FrontendSide.run`), or the
  client gets ErrorResponse 42501 and the connection stays usable. In the extended protocol a
  refusal discards the client's messages until its Sync (DISCARDING), as PostgreSQL does.
  A kill (`Killed`, through `fatal()`) ends the session with a FATAL error.
- The client encoding stays one the gateway reads as the server does (`encodings.py`);
  messages behind a statement that may change it wait for the server's answer (SETTLING).
- A refusal inside a transaction block fails the transaction on the server too, so both
  sides agree it is failed (`_refuse`).
- Responses are tracked message by message (what each client message makes the server
  answer, `Expect`), so replies the gateway makes itself go out in their place in the
  response stream, and results are recorded against the statement that produced them:
  columns, row counts, the first rows (capped), timing, errors (`results.py`).

The reading of client messages is an explicit state machine (`State`), one reader per state.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.pg import classify as sqlclass
from proxy.pg.analysis import Analyzer, StatementAnalysis
from proxy.pg.backend import BackendSide
from proxy.pg.encodings import (
    CODECS as CODECS,
)
from proxy.pg.encodings import (
    FEATURE_NOT_SUPPORTED,
    INSUFFICIENT_PRIVILEGE,
    EncodingState,
)
from proxy.pg.encodings import (
    codec_of as codec_of,
)
from proxy.pg.encodings import (
    conforming_refusal as conforming_refusal,
)
from proxy.pg.encodings import (
    encoding_refusal as encoding_refusal,
)
from proxy.pg.expect import ANSWERED_BY_READY, Expect, Kind, State
from proxy.pg.frontend import COPY_CODES, SQL_CODES, FrontendSide, Planned
from proxy.pg.judging import Decide
from proxy.pg.lineage import OutputMasks, shape_key
from proxy.pg.results import DEFAULT_SAMPLE_ROWS as DEFAULT_SAMPLE_ROWS
from proxy.pg.results import CopyMasking, ResultMasking
from proxy.pg.settings import UnparsableMode as UnparsableMode  # where it was defined
from proxy.pg.sides import SqlRecorder
from proxy.pg.statements import PreparedNames
from proxy.pg.wire import (
    Describe,
    ErrorResponse,
    Frontend,
    MessageReader,
    NoticeResponse,
    ProtocolError,
    ReadyForQuery,
    frame,
)
from proxy.policy import Action, Basis, Verdict
from storage.masking import Masker
from storage.schema import EventType

__all__ = [
    "CODECS",
    "DEFAULT_SAMPLE_ROWS",
    "FEATURE_NOT_SUPPORTED",
    "INSUFFICIENT_PRIVILEGE",
    "QUERY_CANCELED",
    "Command",
    "Decided",
    "End",
    "EventRecorder",
    "Judge",
    "Killed",
    "PgSession",
    "SqlRecorder",
    "State",
    "UnparsableMode",
    "codec_of",
    "conforming_refusal",
    "encoding_refusal",
]

SYNTAX_ERROR = "42601"
QUERY_CANCELED = "57014"
PROTOCOL_VIOLATION = "08P01"
OUTPUT_CACHE = 256  # statements whose output masks a session keeps (see outputs_of)
_SYNC = frame(Frontend.SYNC)


class Recorder(Protocol):
    """Where events go, as one callable; False means the recording failed and the session
    must end (tests and `hoop-tui policy check` pass one of these)."""

    def __call__(self, event: EventType, *fields: object) -> bool: ...


@dataclass(frozen=True, slots=True)
class EventRecorder:
    """A `Recorder` callable as a `SqlRecorder`."""

    record: Recorder

    def record_sql_statement(self, statement: str, params: list[Any]) -> bool:
        return self.record(EventType.SQL_STATEMENT, statement, params)

    def record_sql_result(
        self, columns: list[Any], rows: int, sample: list[Any], duration_us: int
    ) -> bool:
        return self.record(EventType.SQL_RESULT, columns, rows, sample, duration_us)

    def record_sql_error(self, sqlstate: str, message: str) -> bool:
        return self.record(EventType.SQL_ERROR, sqlstate, message)

    def record_verdict(self, channel: int, verdict: Verdict) -> bool:
        return self.record(EventType.VERDICT, channel, *verdict.recorded())

    def record_mask(
        self,
        channel: int,
        rule: str,
        position: int,
        length: int,
        token: str,
        column: str | None = None,
    ) -> bool:
        fields = (channel, rule, position, length, token)
        return self.record(EventType.MASK, *fields, *(() if column is None else (column,)))


# -- commands: what the session asks of its shell ------------------------------------------


@dataclass(frozen=True, slots=True)
class Judge:
    """Carry out a verdict that is not a plain allow (deny, or hold for review), then send
    the outcome back as a `Decided` event (`PgSession.judged`)."""

    verdict: Verdict
    statement: str


@dataclass(frozen=True, slots=True)
class End:
    """Close both connections (after sending what is queued for the client)."""

    reason: str


Command = Judge | End


# -- events: what happens to the session from outside its two byte streams -----------------


@dataclass(frozen=True, slots=True)
class Decided:
    """The outcome of the pending `Judge`: an approval, a refusal, an expired or withdrawn
    hold. `message` is the text the client reads (a notice beside a statement that runs)."""

    allowed: bool
    message: str = ""
    sqlstate: str = ""


@dataclass(frozen=True, slots=True)
class Killed:
    """End the session with a FATAL error (upstream lost, recording broke, access ended)."""

    sqlstate: str
    message: str


Event = Decided | Killed


class PgSession:
    """The relay of one logged-in connection. See the module docstring."""

    def __init__(
        self,
        decide: Decide,
        classify: Callable[[str], sqlclass.Classified],
        record: SqlRecorder | Recorder,
        *,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        unparsable: UnparsableMode = UnparsableMode.POLICY,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.decide = decide
        self.analyze = Analyzer(classify)
        self.recorder: SqlRecorder = EventRecorder(record) if callable(record) else record
        self.sample_rows = sample_rows
        self.unparsable = unparsable
        # Set by the shell when `[policy] default = "allow"`: see `FrontendSide.syntax_error`.
        self.typos_are_syntax_errors = False
        self.clock_ns = clock_ns
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.commands: list[Command] = []
        self.status = "I"
        self.state = State.READY
        # The server sent FATAL (pg_terminate_backend, shutdown): the client has its
        # error, and its closing socket is the rest of the story.
        self.upstream_fatal = False
        self.client = MessageReader()
        self.upstream = MessageReader()
        self.expects: deque[Expect] = deque()
        self.names = PreparedNames(decide)
        self.encoding = EncodingState()
        self.held: Planned | None = None
        self.batch_open = False  # extended messages forwarded since the last Sync
        self.abort_portal = f"hoop-refused-{secrets.token_hex(8)}"  # a portal never made
        self._outputs: OrderedDict[Hashable, tuple[OutputMasks | None, ...]] = OrderedDict()
        self._masker: Masker | None = None
        self.masking: ResultMasking | None = None
        self.copying: CopyMasking | None = None
        self.frontend = FrontendSide(self)
        self.backend = BackendSide(self)

    # -- the API of the shell --------------------------------------------------------------------

    @property
    def masker(self) -> Masker | None:
        return self._masker

    @masker.setter
    def masker(self, masker: Masker | None) -> None:
        """Set after login when masking rules apply to the caller here."""
        self._masker = masker
        self.masking = self.copying = None
        if masker is not None:
            out, rows = self.to_client, self.sample_rows
            self.masking = ResultMasking(masker, out, self.record_mask, rows)
            self.copying = CopyMasking(masker, out, self.record_mask, rows, self._fatal)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def paused(self) -> bool:
        return self.state is State.HELD

    @property
    def waiting(self) -> bool:
        """Client messages are not read now: a statement is held, or they wait for the
        server's answer to an encoding change. The shell bounds what it reads meanwhile."""
        return self.state in (State.HELD, State.SETTLING)

    @property
    def buffered(self) -> int:
        """Client bytes read but not yet handled (queued behind a held statement)."""
        return self.client.buffered

    def take_commands(self) -> list[Command]:
        commands, self.commands = self.commands, []
        return commands

    def client_data(self, data: bytes) -> None:
        """Bytes from the client; may queue output and commands."""
        if self.closed:
            return
        self.client.feed(data)
        self._pump_client()

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the upstream server."""
        if self.closed:
            return
        self.upstream.feed(data)
        try:
            self.backend.pump()
        except ProtocolError as exc:
            self._fatal(PROTOCOL_VIOLATION, f"hoop: the target broke the protocol: {exc}")
        if self.state is State.SETTLING and self.settle():
            self._pump_client()

    def handle(self, event: Event) -> None:
        """An event from outside the byte streams: a verdict carried out, or a kill."""
        if isinstance(event, Killed):
            self._fatal(event.sqlstate, event.message)
            return
        held, self.held = self.held, None
        if held is None or self.closed:
            return
        self.state = State.READY
        if event.allowed:
            if event.message:
                self.notice(event.message)
            self.frontend.run(held)
        else:
            sqlstate = event.sqlstate or INSUFFICIENT_PRIVILEGE
            self.refuse(held.extended, event.message, sqlstate, held.sql)
        self._pump_client()

    def judged(self, allowed: bool, message: str = "", sqlstate: str = "") -> None:
        """The outcome of the pending `Judge`; resumes the client's messages."""
        self.handle(Decided(allowed, message, sqlstate))

    def fatal(self, sqlstate: str, message: str) -> None:
        """End the session with a FATAL error for the client (upstream lost, recording broke)."""
        self.handle(Killed(sqlstate, message))

    def notice(self, text: str) -> None:
        """A NoticeResponse for the client, in its place in the response stream."""
        self.local(NoticeResponse.make("01000", text, severity="NOTICE").encode())

    def verdict(self, found: sqlclass.Classified) -> Verdict:
        """The verdict for a classified string in this session, as a Query or Parse of it
        gets: SQL prepared statements (`EXECUTE p`) are judged by the body the session has
        prepared under that name. `hoop-tui policy check --sql` asks a fresh session."""
        if any(statement.named is not None for statement in found.statements):
            return self.names.decide_named(found)
        return self.decide(found)

    def set_client_encoding(self, value: str | None) -> None:
        """The client_encoding the server reported (at login, or after a change): statements,
        names, column names and errors are read in it from now on."""
        if self.encoding.confirm(value):
            self.backend.column_cache.clear()

    def use_codec(self, codec: str) -> None:
        if self.encoding.use(codec):
            self.backend.column_cache.clear()

    def settle(self) -> bool:
        """End SETTLING once every answer the encoding change may come with has arrived (the
        last ReadyForQuery carried its ParameterStatus)."""
        if any(e.kind in ANSWERED_BY_READY for e in self.expects):
            return False
        self.state = State.READY
        self.use_codec(self.encoding.confirmed)
        return True

    # -- reading the client: one reader per state ---------------------------------------------

    def _pump_client(self) -> None:
        try:
            while (reader := _READERS.get(self.state)) is not None and reader(self):
                pass
        except ProtocolError as exc:
            self._fatal(PROTOCOL_VIOLATION, f"hoop: invalid message from the client: {exc}")

    def _read_ready(self) -> bool:
        span = self.client.next_span()
        if span is None:
            return False
        type_code, start, end = span
        if type_code in SQL_CODES and self._settings_unseen(start, end):
            self.client.unread(start)
            self.state = State.SETTLING  # until the answers due have come
            return False
        self.frontend.dispatch(type_code, bytes(self.client.buffer[start:end]))
        return True

    def _read_settling(self) -> bool:
        if self.client.peek_type() not in COPY_CODES:
            return False  # until the server says which client_encoding follows
        return self._read_ready()

    def _read_discarding(self) -> bool:
        span = self.client.next_span()
        if span is None:
            return False
        type_code, start, end = span
        if type_code == Frontend.SYNC:
            self.frontend.dispatch(type_code, bytes(self.client.buffer[start:end]))
        return True

    def _settings_unseen(self, start: int, end: int) -> bool:
        """Whether this SQL could be read under settings the gateway has not been told:
        statements before it are still running, any of which may switch client_encoding or
        standard_conforming_strings where the gateway cannot see it (a function, dynamic
        SQL), and it holds bytes those change the reading of: non-ASCII (ASCII reads alike
        in every encoding allowed here) or a backslash (inside a string, only with
        standard_conforming_strings off is it an escape). The server reports a switch with
        its ReadyForQuery, so a new simple Query or batch waits for those; inside an open
        extended batch nothing can be waited for (see docs/postgresql.md)."""
        if self.batch_open or not any(e.kind in ANSWERED_BY_READY for e in self.expects):
            return False
        body = self.client.buffer[start + 5 : end]
        return not body.isascii() or b"\\" in body

    # -- judging and refusing -------------------------------------------------------------------

    def judge(self, verdict: Verdict, planned: Planned) -> None:
        """Run an allowed statement now; hold any other until its `Decided` event."""
        if verdict.action is Action.ALLOW:
            if verdict.basis is not Basis.DEFAULT:  # an explicit allow rule: on the record
                self.kept(self.recorder.record_verdict(0, verdict))
            self.frontend.run(planned)
            return
        self.held = planned
        self.state = State.HELD
        self.commands.append(Judge(verdict, planned.shown or planned.sql))

    def refuse(
        self, extended: bool, message: str, sqlstate: str, statement: str, hint: str = ""
    ) -> None:
        """Answer a statement with an error the gateway makes. PostgreSQL fails a transaction
        block on any error, so where one may be open (the last status was not idle, or answers
        are still due) the upstream is made to fail too (`_abort_batch`): afterwards both
        sides are in the failed state, the next statement gets 25P02 and COMMIT rolls back."""
        maybe_open = self.status != "I" or bool(self.expects)
        if extended:
            abort = self._abort_batch() if self.batch_open or maybe_open else None
            self._local_error(sqlstate, message, hint)
            if abort is not None and self.expects and self.expects[-1].kind is Kind.LOCAL:
                abort.refusal = self.expects[-1]
            self.state = State.DISCARDING
        else:
            if maybe_open:
                self._abort_batch()
            self._local_error(sqlstate, message, hint)
            self.local_ready()

    def _abort_batch(self) -> Expect:
        """The upstream has run earlier messages of the refused batch. A Sync alone would
        commit them; PostgreSQL rolls a batch back when any of it fails. So the gateway makes
        it fail: a Describe of a portal that does not exist (which runs nothing), then Sync.
        The upstream's error and ReadyForQuery stay with the gateway; the status it reports
        (idle, or a failed transaction block) is what the client's own Sync then reads."""
        abort = Expect(Kind.ABORT, swallow=True)
        self.expects.append(abort)
        self.to_upstream += Describe("P", self.abort_portal).encode()
        self.expects.append(Expect(Kind.SYNC, swallow=True))
        self.to_upstream += _SYNC
        self.batch_open = False
        return abort

    def _local_error(self, sqlstate: str, message: str, hint: str = "") -> None:
        self.kept(self.recorder.record_sql_error(sqlstate, message))
        extra = {"hint": hint} if hint else {}
        self.local(ErrorResponse.make(sqlstate, message, **extra).encode())

    def local(self, data: bytes) -> None:
        """Bytes the gateway answers with itself, sent when their turn in the stream comes."""
        if self.expects:
            self.expects.append(Expect(Kind.LOCAL, data=data))
        else:
            self.to_client += data

    def local_ready(self) -> None:
        if self.expects:
            self.expects.append(Expect(Kind.LOCAL_READY))
        else:
            self.to_client += ReadyForQuery(self.status).encode()

    def kept(self, recorded: bool) -> bool:
        """What a `record_*` call returned; nothing recorded ends the session (fail closed)."""
        if recorded:
            return True
        self._fatal("58030", "hoop: the session recording failed, so the gateway ended the session")
        return False

    def record_mask(
        self, channel: int, rule: str, position: int, length: int, token: str, column: str | None
    ) -> bool:
        return self.kept(self.recorder.record_mask(channel, rule, position, length, token, column))

    def _fatal(self, sqlstate: str, message: str) -> None:
        if self.closed:
            return
        self.state = State.CLOSED
        self.expects.clear()
        self.to_client += ErrorResponse.make(sqlstate, message, severity="FATAL").encode()
        self.commands.append(End(message))

    def end(self, reason: str) -> None:
        """The client said goodbye (Terminate)."""
        self.state = State.CLOSED
        self.commands.append(End(reason))

    # -- output masks by statement shape --------------------------------------------------------

    def outputs_of(self, analysis: StatementAnalysis) -> tuple[OutputMasks | None, ...]:
        """Per statement of a string, which output columns carry masked values for this
        session's rules, cached per session by the statement's shape: the classifier's key
        when it has one (texts sharing it differ only in constants and comments, so their
        lineage is one), else lineage.shape_key."""
        key = analysis.found.key
        if key is None:
            key = shape_key(analysis.text)
        found = self._outputs.get(key)
        if found is not None:
            self._outputs.move_to_end(key)
            return found
        assert self.masker is not None
        masker = self.masker
        found = tuple(OutputMasks.build(item, masker) for item in analysis.lineages())
        self._outputs[key] = found
        if len(self._outputs) > OUTPUT_CACHE:
            self._outputs.popitem(last=False)
        return found


_Reader = Callable[[PgSession], bool]
_READERS: dict[State, _Reader] = {
    State.READY: PgSession._read_ready,
    State.SETTLING: PgSession._read_settling,
    State.DISCARDING: PgSession._read_discarding,
}
