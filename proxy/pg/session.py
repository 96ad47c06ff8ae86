"""One PostgreSQL connection after login, as a sans-IO relay: client bytes and upstream bytes
in; bytes for each side, and commands, out. The asyncio shell (`server.py`) only moves bytes.

What it does with the traffic:

- Every statement is classified and judged before the upstream sees it: a simple Query (each
  of its statements), a Parse (judged once; the verdict applies at every Execute of it).
- An allowed statement is forwarded at once (the fast path never leaves this object). A
  deny or review becomes a `Judge` command and the session pauses (client bytes queue up,
  upstream bytes keep flowing) until `judged()` brings the outcome: the statement runs, or
  the client gets ErrorResponse 42501 and the connection stays usable. In the extended
  protocol a refusal discards the client's messages until its Sync, as PostgreSQL does.
- The client encoding stays one the gateway reads as the server does (`CODECS`: UTF8, the
  single-byte encodings, the EUC family), and text is decoded in it: UTF8 when masking
  rules apply (values are masked as UTF-8 text), and never a client-only encoding whose
  multibyte characters hold ASCII bytes (SJIS, BIG5, GBK, UHC, GB18030, JOHAB), where a
  backslash the gateway's parser sees may be part of a character for the server. Messages
  behind a statement that may change it wait for the server's answer.
- A refusal inside a transaction block fails the transaction on the server too, so both
  sides agree it is failed (`_refuse`).
  `SET client_encoding`, `SET NAMES`, `set_config(...)` to such a value are refused before
  they are sent; a change the gateway could not see (dynamic SQL) ends the session when the
  server reports it (`encoding_refusal`).
- Responses are tracked message by message (what each client message makes the server
  answer), so replies the gateway makes itself go out in their place in the response stream,
  and results are recorded against the statement that produced them: columns, row counts,
  the first rows (capped), timing, errors.

Wire codes go through dispatch tables keyed by the message type.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.masking import ColumnPlan, MaskAct, Masker, MaskRule
from proxy.pg import classify as sqlclass
from proxy.pg.binary_values import readable
from proxy.pg.copy_out import (
    BINARY,
    CopyJob,
    CopyOut,
    CopyRows,
    learn_columns_messages,
    parse_copy_out,
)
from proxy.pg.judging import Decide
from proxy.pg.lineage import OutputMasks, lineages, shape_key
from proxy.pg.settings import UnparsableMode as UnparsableMode  # where it was defined
from proxy.pg.wire import (
    Backend,
    Bind,
    CommandComplete,
    CopyData,
    CopyResponse,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    Field,
    Frontend,
    MessageReader,
    NoticeResponse,
    NotificationResponse,
    ParameterStatus,
    Parse,
    ProtocolError,
    Query,
    ReadyForQuery,
    RowDescription,
    frame,
)
from proxy.policy import Action, Basis, Verdict
from storage.schema import EventType

INSUFFICIENT_PRIVILEGE = "42501"
FEATURE_NOT_SUPPORTED = "0A000"
SYNTAX_ERROR = "42601"
QUERY_CANCELED = "57014"
PROTOCOL_VIOLATION = "08P01"
DEFAULT_SAMPLE_ROWS = 20
OUTPUT_CACHE = 256  # statements whose output masks a session keeps (see _outputs_of)
MAX_SAMPLE_VALUE = 1024  # bytes of one recorded value; longer values are cut
_SYNC = frame(Frontend.SYNC)
_CLIENT_ENCODING_STATUS = sqlclass.CLIENT_ENCODING.encode() + b"\x00"
_CONFORMING_STATUS = sqlclass.STANDARD_CONFORMING_STRINGS.encode() + b"\x00"


# Encoding names as PostgreSQL compares them: lower case, letters and digits only.
UTF8_NAMES = frozenset({"utf8", "unicode"})
# Client-only encodings whose second byte of a character may be an ASCII byte (`\`).
SPLIT_ASCII_ENCODINGS = frozenset(
    {
        "big5",
        "win950",
        "cp950",
        "windows950",
        "gbk",
        "win936",
        "cp936",
        "windows936",
        "gb18030",
        "sjis",
        "mskanji",
        "shiftjis",
        "win932",
        "cp932",
        "windows932",
        "shiftjis2004",
        "uhc",
        "win949",
        "cp949",
        "windows949",
        "johab",
    }
)


# The client encodings the gateway reads SQL in, by PostgreSQL's names and aliases (normalized
# as above), with the Python codec of each. All are ASCII-compatible and no byte of a
# multibyte character is below 0x80, so quotes, backslashes and semicolons are where the
# server sees them. SQL_ASCII is read as UTF-8: the server does not say what its bytes are.
_SINGLE_BYTE = {
    "latin1": "latin-1",
    "latin2": "iso8859-2",
    "latin3": "iso8859-3",
    "latin4": "iso8859-4",
    "latin5": "iso8859-9",
    "latin6": "iso8859-10",
    "latin7": "iso8859-13",
    "latin8": "iso8859-14",
    "latin9": "iso8859-15",
    "latin10": "iso8859-16",
    "iso88595": "iso8859-5",
    "iso88596": "iso8859-6",
    "iso88597": "iso8859-7",
    "iso88598": "iso8859-8",
    "koi8r": "koi8-r",
    "koi8": "koi8-r",
    "koi8u": "koi8-u",
    "win866": "cp866",
    "alt": "cp866",
    "win874": "cp874",
    "win": "cp1251",
    "abc": "cp1258",
    "tcvn": "cp1258",
    "tcvn5712": "cp1258",
    "vscii": "cp1258",
    "euccn": "gb2312",
    "eucjp": "euc_jp",
    "eucjis2004": "euc_jis_2004",
    "euckr": "euc_kr",
}
_ISO_ALIASES = {"1": 1, "2": 2, "3": 3, "4": 4, "9": 5, "10": 6, "13": 7, "14": 8, "15": 9}
CODECS: dict[str, str] = {
    "utf8": "utf-8",
    "unicode": "utf-8",
    "sqlascii": "utf-8",
    **_SINGLE_BYTE,
    **{f"iso8859{iso}": _SINGLE_BYTE[f"latin{n}"] for iso, n in _ISO_ALIASES.items()},
    "iso885916": "iso8859-16",
    **{f"win{n}": f"cp{n}" for n in range(1250, 1259)},
    **{f"windows{n}": f"cp{n}" for n in (*range(1250, 1259), 866, 874)},
}


def _encoding_name(value: str) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower())


def codec_of(value: str | None) -> str | None:
    """The Python codec the gateway reads a client_encoding in, or None (not readable)."""
    return CODECS.get(_encoding_name(value)) if value is not None else None


def encoding_refusal(value: str | None, *, masking: bool) -> tuple[str, str] | None:
    """Why the session may not use client_encoding `value` (None: a value the gateway could
    not tell before it runs): (sqlstate, message), or None when it may."""
    if value is None:
        if not masking:
            return None
        return (
            INSUFFICIENT_PRIVILEGE,
            "hoop: masking rules apply to this session and the gateway masks UTF8 text only; "
            "it cannot tell which client_encoding this would set, so it is not allowed",
        )
    name = _encoding_name(value)
    if name in SPLIT_ASCII_ENCODINGS:
        return (
            FEATURE_NOT_SUPPORTED,
            f"hoop: client_encoding {value} is not allowed: its characters may contain "
            "backslash and other ASCII bytes, so the gateway's SQL parser could read other "
            "statements than the server does (use UTF8)",
        )
    if masking and name not in UTF8_NAMES:
        return (
            INSUFFICIENT_PRIVILEGE,
            f"hoop: masking rules apply to this session and the gateway masks UTF8 text only, "
            f"so client_encoding {value} is not allowed (use UTF8, e.g. PGCLIENTENCODING=UTF8)",
        )
    if name not in CODECS:
        return (
            FEATURE_NOT_SUPPORTED,
            f"hoop: client_encoding {value} is not allowed: the gateway cannot read SQL in it "
            "(use UTF8, or a single-byte encoding such as LATIN1 or WIN1252)",
        )
    return None


def conforming_refusal(value: str | None) -> tuple[str, str] | None:
    """Why the session may not set standard_conforming_strings to `value` (None: a value
    only known when it runs): (sqlstate, message), or None when it may. Off, the server
    reads `\\'` in a `'...'` string as an escaped quote, the gateway's parser as a backslash
    then a quote: `select 'x\\'' ; drop table t; --'` is one SELECT to the gateway (its
    string goes on after the doubled quote) and a SELECT and a DROP to the server."""
    if sqlclass.setting_is_true(value):
        return None
    return (
        FEATURE_NOT_SUPPORTED,
        "hoop: standard_conforming_strings must stay on: with it off the server reads "
        "backslashes in strings differently from the gateway's SQL parser",
    )


class Recorder(Protocol):
    """Where events go; False means the recording failed and the session must end."""

    def __call__(self, event: EventType, *fields: object) -> bool: ...


@dataclass(frozen=True, slots=True)
class Judge:
    """Carry out a verdict that is not a plain allow (deny, or hold for review), then call
    `PgSession.judged(allowed, message)`."""

    verdict: Verdict
    statement: str


@dataclass(frozen=True, slots=True)
class End:
    """Close both connections (after sending what is queued for the client)."""

    reason: str


Command = Judge | End


# ---------------------------------------------------------------------------------------------
# What the server owes the client: one entry per response-producing client message


class Kind(enum.Enum):
    PARSE = "parse"
    BIND = "bind"
    DESCRIBE = "describe"
    EXECUTE = "execute"
    CLOSE = "close"
    SYNC = "sync"
    QUERY = "query"
    LOCAL = "local"  # bytes the gateway itself answers with, sent when their turn comes
    LOCAL_READY = "local_ready"  # a ReadyForQuery with the then current status
    ABORT = "abort"  # the gateway's own failing Describe: makes the upstream drop a batch
    SIDE = "side"  # the gateway's own question before a COPY: which columns it will write


@dataclass(slots=True)
class Result:
    """One statement's result as it streams back."""

    statement: str
    started_ns: int
    columns: list[str] | None = None
    sample: list[list[Any]] = field(default_factory=list)
    rows: int = 0
    mask: ColumnPlan | None = None  # built from the columns at the first row, when masking
    # Where the columns will be known when a Describe's answer arrives after the Execute.
    described_by: list[Portal | Prepared] = field(default_factory=list)
    on_done: Callable[[], None] | None = None  # an effect that counts once it succeeded
    copy: CopyJob | None = None  # a COPY TO STDOUT whose rows are masked
    # Output columns whose values come from masked columns, whatever they are called.
    outputs: OutputMasks | None = None
    types: tuple[int, ...] | None = None  # the columns' type OIDs, when described
    formats: tuple[int, ...] = ()  # result format codes of the Bind (none: text)
    nulled: bool = False  # a masked binary value was sent as NULL (the notice was sent)


@dataclass(slots=True)
class Expect:
    kind: Kind
    swallow: bool = False  # the gateway sent it; its answer is not the client's
    data: bytes = b""
    name: str = ""  # statement or portal of a Describe/Parse
    describe_kind: str = ""
    results: deque[Result] | None = None  # QUERY: one per statement; EXECUTE: one
    current: Result | None = None
    refusal: Expect | None = None  # ABORT: the refusal to drop if the batch failed before
    on_done: Callable[[], None] | None = None  # CLOSE: forget the object once it is closed


@dataclass(slots=True)
class Prepared:
    """A prepared statement of the session, by Parse or by SQL PREPARE (one namespace
    upstream): its verdict, and its classified body, which an SQL EXECUTE inherits."""

    sql: str
    verdict: Verdict
    columns: list[str] | None = None
    found: sqlclass.Classified | None = None
    copy: CopyOut | None = None  # a COPY TO STDOUT whose rows are masked
    outputs: OutputMasks | None = None  # see Result.outputs
    types: tuple[int, ...] | None = None


@dataclass(slots=True)
class Portal:
    statement: str
    bind: bytes  # the raw Bind body, decoded only when recorded
    columns: list[str] | None = None
    prepared: Prepared | None = None  # what it runs, fixed at Bind (None: not known here)
    types: tuple[int, ...] | None = None


class PgSession:
    """The relay of one logged-in connection. See the module docstring."""

    def __init__(
        self,
        decide: Decide,
        classify: Callable[[str], sqlclass.Classified],
        record: Recorder,
        *,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        unparsable: UnparsableMode = UnparsableMode.POLICY,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.decide = decide
        self.classify = classify
        self.record = record
        self.sample_rows = sample_rows
        self.unparsable = unparsable
        # Set by the shell when `[policy] default = "allow"`: see `_syntax_error`.
        self.typos_are_syntax_errors = False
        self.clock_ns = clock_ns
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.commands: list[Command] = []
        self.status = "I"
        self.closed = False
        # The server sent FATAL (pg_terminate_backend, shutdown): the client has its
        # error, and its closing socket is the rest of the story.
        self.upstream_fatal = False
        self._client = MessageReader()
        self._upstream = MessageReader()
        self._expects: deque[Expect] = deque()
        self._statements: dict[str, Prepared] = {}
        self._portals: dict[str, Portal] = {}
        self._paused: _Pending | None = None
        self._discarding = False  # after a refusal in the extended protocol, until Sync
        self._batch_open = False  # extended messages forwarded since the last Sync
        self._abort_portal = f"hoop-refused-{secrets.token_hex(8)}"  # a portal never made
        self._column_cache: dict[bytes, tuple[tuple[str, ...], tuple[int, ...]]] = {}
        self._codec = "utf-8"  # the client_encoding, as the Python codec text is read in
        self._confirmed_codec = "utf-8"  # as the server last reported it
        # A statement that may change client_encoding went upstream: the client's next
        # messages wait for the server's answer (and its ParameterStatus), so that they are
        # read in the encoding the server reads them in. In the extended protocol, from the
        # batch's Sync on.
        self._encoding_wait = False
        self._encoding_after_sync = False
        self._encoding_unknown = False  # the batch set client_encoding to a computed value
        # client_encoding may have changed inside a transaction that has not ended: its end
        # (COMMIT of a SET LOCAL, ROLLBACK, ROLLBACK TO, a procedure's COMMIT) sets it back,
        # so until a ReadyForQuery says idle, such statements count as encoding changes.
        self._encoding_may_revert = False
        self._outputs: OrderedDict[Hashable, tuple[OutputMasks | None, ...]] = OrderedDict()
        self._cursors: dict[str, OutputMasks] = {}  # DECLAREd cursors' output masks
        self.masker: Masker | None = None  # set after login when masking rules apply
        self._sides = 0  # SIDE questions not yet answered
        self._copy_rows: CopyRows | None = None  # the COPY whose CopyData is being masked
        self._copy_result: Result | None = None

    # -- the API of the shell --------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused is not None

    @property
    def waiting(self) -> bool:
        """Client messages are not read now: a statement is held, or they wait for the
        server's answer to an encoding change. The shell bounds what it reads meanwhile."""
        return self._paused is not None or self._encoding_wait

    @property
    def buffered(self) -> int:
        """Client bytes read but not yet handled (queued behind a held statement)."""
        return self._client.buffered

    def take_commands(self) -> list[Command]:
        commands, self.commands = self.commands, []
        return commands

    def client_data(self, data: bytes) -> None:
        """Bytes from the client; may queue output and commands."""
        if self.closed:
            return
        self._client.feed(data)
        self._pump_client()

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the upstream server."""
        if self.closed:
            return
        self._upstream.feed(data)
        try:
            self._pump_upstream()
        except ProtocolError as exc:
            self._fatal(PROTOCOL_VIOLATION, f"hoop: the target broke the protocol: {exc}")
        if self._encoding_wait and self._encoding_settled():
            self._pump_client()

    def _encoding_settled(self) -> bool:
        """End the wait of `_encoding_wait` once every answer the change may come with has
        arrived (the last ReadyForQuery carried its ParameterStatus)."""
        if any(e.kind in _ANSWERED_BY_READY for e in self._expects):
            return False
        self._encoding_wait = False
        self._use_codec(self._confirmed_codec)
        return True

    def judged(self, allowed: bool, message: str = "", sqlstate: str = "") -> None:
        """The outcome of the pending `Judge`; resumes the client's messages."""
        pending, self._paused = self._paused, None
        if pending is None or self.closed:
            return
        if allowed:
            if message:
                self.notice(message)
            pending.proceed()
        else:
            self._refuse(
                pending.extended, message, sqlstate or INSUFFICIENT_PRIVILEGE, pending.statement
            )
        self._pump_client()

    def notice(self, text: str) -> None:
        """A NoticeResponse for the client, in its place in the response stream."""
        self._local(NoticeResponse.make("01000", text, severity="NOTICE").encode())

    def verdict(self, found: sqlclass.Classified) -> Verdict:
        """The verdict for a classified string in this session, as a Query or Parse of it
        gets: SQL prepared statements (`EXECUTE p`) are judged by the body the session has
        prepared under that name. `hoop-tui policy check --sql` asks a fresh session."""
        if any(statement.named is not None for statement in found.statements):
            return self._decide_named(found)
        return self.decide(found)

    def set_client_encoding(self, value: str | None) -> None:
        """The client_encoding the server reported (at login, or after a change): statements,
        names, column names and errors are read in it from now on."""
        codec = codec_of(value)
        if codec is not None:
            self._confirmed_codec = codec
            self._use_codec(codec)

    def _use_codec(self, codec: str) -> None:
        if codec != self._codec:
            self._codec = codec
            self._column_cache.clear()

    def fatal(self, sqlstate: str, message: str) -> None:
        """End the session with a FATAL error for the client (upstream lost, recording broke)."""
        self._fatal(sqlstate, message)

    # -- the client side -----------------------------------------------------------------------

    def _pump_client(self) -> None:
        reader = self._client
        try:
            while self._paused is None and not self.closed:
                if self._encoding_wait and reader.peek_type() not in _COPY_CODES:
                    return  # until the server says which client_encoding follows
                span = reader.next_span()
                if span is None:
                    return
                type_code, start, end = span
                raw = bytes(reader.buffer[start:end])
                if self._discarding and type_code != Frontend.SYNC:
                    continue
                if type_code in _SQL_CODES and self._settings_unseen(reader.buffer, start, end):
                    reader.unread(start)
                    self._encoding_wait = True  # until the answers due have come
                    return
                handler = _CLIENT_HANDLERS.get(type_code)
                if handler is None:
                    raise ProtocolError(f"unknown frontend message type {chr(type_code)!r}")
                handler(self, raw)
        except ProtocolError as exc:
            self._fatal(PROTOCOL_VIOLATION, f"hoop: invalid message from the client: {exc}")

    def _settings_unseen(self, buf: bytearray, start: int, end: int) -> bool:
        """Whether this SQL could be read under settings the gateway has not been told:
        statements before it are still running, any of which may switch client_encoding or
        standard_conforming_strings where the gateway cannot see it (a function, dynamic
        SQL), and it holds bytes those change the reading of: non-ASCII (ASCII reads alike
        in every encoding allowed here) or a backslash (inside a string, only with
        standard_conforming_strings off is it an escape). The server reports a switch with
        its ReadyForQuery, so a new simple Query or batch waits for those; inside an open
        extended batch nothing can be waited for (see docs/postgresql.md)."""
        if self._batch_open or not any(e.kind in _ANSWERED_BY_READY for e in self._expects):
            return False
        body = buf[start + 5 : end]
        return not body.isascii() or b"\\" in body

    def _forward(self, raw: bytes) -> None:
        self.to_upstream += raw

    def _on_query(self, raw: bytes) -> None:
        if raw[-1] != 0 or raw.find(b"\x00", 5) != len(raw) - 1:
            sql = Query.decode(raw[5:], self._codec).sql  # raises the precise ProtocolError
        else:
            try:
                sql = raw[5:-1].decode(self._codec)
            except UnicodeDecodeError:
                sql = Query.decode(raw[5:], self._codec).sql  # raises the ProtocolError
        found = self.classify(sql)
        if self._syntax_error(found):
            self._record(EventType.SQL_STATEMENT, sql, [])
            self._refuse(False, found.error or "", SYNTAX_ERROR, sql, _SYNTAX_HINT)
            return
        wrong_encoding = self._encoding_refusal(found)
        if wrong_encoding is not None:
            self._record(EventType.SQL_STATEMENT, sql, [])
            self._refuse(False, wrong_encoding[1], wrong_encoding[0], sql)
            return
        named = any(statement.named is not None for statement in found.statements)
        verdict = self.verdict(found)
        results: deque[Result] = deque()
        for statement in found.statements or (sqlclass.Statement(sql, frozenset()),):
            if not self._record(EventType.SQL_STATEMENT, statement.text, []):
                return
            results.append(Result(statement.text, 0))
        if self.masker is not None and sqlclass.COPY_OUT in found.classes:
            refusal = self._copy_jobs(found, results)
            if refusal:
                self._refuse(False, refusal, INSUFFICIENT_PRIVILEGE, sql)
                return

        def proceed() -> None:
            now = self.clock_ns()
            for result in results:
                result.started_ns = now
                if result.copy is not None and result.copy.columns is None:
                    self._ask_columns(result)
            if named:
                for statement, result in zip(found.statements, results, strict=False):
                    result.on_done = self._named_effects(statement)
            if self.masker is not None and self.masker.uses_columns:
                outputs = self._outputs_of(sql, found.key)
                for index, (statement, result) in enumerate(
                    zip(found.statements, results, strict=False)
                ):
                    result.outputs = self._executed_outputs(statement) or self._cursor_outputs(
                        outputs[index] if index < len(outputs) else None
                    )
            self._expects.append(Expect(Kind.QUERY, results=results))
            self._forward(raw)
            if self._may_set_encoding(found.statements, sql):
                self._encoding_wait = True
                self._encoding_may_revert = True

        self._judge(verdict, sql, proceed, extended=False)

    def _on_parse(self, raw: bytes) -> None:
        if self._encoding_unknown:
            self._refuse(True, _UNKNOWN_ENCODING, FEATURE_NOT_SUPPORTED, "")
            return
        parse = Parse.decode(raw[5:], self._codec)
        found = self.classify(parse.sql)
        if self._syntax_error(found):
            self._record(EventType.SQL_STATEMENT, parse.sql, [])
            self._refuse(True, found.error or "", SYNTAX_ERROR, parse.sql, _SYNTAX_HINT)
            return
        wrong_encoding = self._encoding_refusal(found)
        if wrong_encoding is not None:
            self._record(EventType.SQL_STATEMENT, parse.sql, [])
            self._refuse(True, wrong_encoding[1], wrong_encoding[0], parse.sql)
            return
        verdict = self.verdict(found)
        copy = None
        if self.masker is not None and sqlclass.COPY_OUT in found.classes:
            copy = parse_copy_out(parse.sql)
            refusal = self._copy_refusal(copy, extended=True) if copy else None
            if refusal:
                self._record(EventType.SQL_STATEMENT, parse.sql, [])
                self._refuse(True, refusal, INSUFFICIENT_PRIVILEGE, parse.sql)
                return

        def proceed() -> None:
            outputs = None
            if self.masker is not None and self.masker.uses_columns:
                outputs = next(iter(self._outputs_of(parse.sql, found.key)), None)
                for statement in found.statements:
                    outputs = self._executed_outputs(statement) or outputs
            prepared = Prepared(parse.sql, verdict, found=found, copy=copy, outputs=outputs)
            self._define(parse.name, prepared)
            self._expects.append(Expect(Kind.PARSE, name=parse.name))
            self._forward(raw)
            self._batch_open = True

        if verdict.action is Action.REVIEW:
            proceed()  # preparing runs nothing: the hold comes at each Execute
        else:
            if verdict.action is Action.DENY:
                self._record(EventType.SQL_STATEMENT, parse.sql, [])
            self._judge(verdict, parse.sql, proceed, extended=True)

    def _on_bind(self, raw: bytes) -> None:
        body = raw[5:]
        portal_end = body.find(b"\x00")
        statement_end = body.find(b"\x00", portal_end + 1)
        if portal_end < 0 or statement_end < 0:
            raise ProtocolError("Bind without portal and statement names")
        portal = _name(body[:portal_end], self._codec)
        statement = _name(body[portal_end + 1 : statement_end], self._codec)
        prepared = self._statements.get(statement)
        bound = Portal(statement, body, prepared.columns if prepared else None, prepared)
        previous = self._portals.get(portal) if portal else None
        if previous is not None and previous.prepared is not None and prepared is not None:
            # Binding an existing named portal fails upstream, which keeps the old one: judge
            # by both until the portal is closed.
            bound.prepared = _merged(previous.prepared, prepared)
        self._portals[portal] = bound
        self._expects.append(Expect(Kind.BIND))
        self._forward(raw)
        self._batch_open = True

    def _on_describe(self, raw: bytes) -> None:
        body = raw[5:]
        if len(body) < 2 or body[-1] != 0 or body[0] not in b"SP":
            raise ProtocolError("malformed Describe")
        name = _name(body[1:-1], self._codec)
        self._expects.append(Expect(Kind.DESCRIBE, name=name, describe_kind=chr(body[0])))
        self._forward(raw)
        self._batch_open = True

    def _on_execute(self, raw: bytes) -> None:
        if self._encoding_unknown:
            self._refuse(True, _UNKNOWN_ENCODING, FEATURE_NOT_SUPPORTED, "")
            return
        execute = Execute.decode(raw[5:], self._codec)
        portal = self._portals.get(execute.portal)
        prepared = portal.prepared if portal is not None else None
        sql = prepared.sql if prepared is not None else ""

        params = _params(portal.bind, self._codec) if portal is not None else []
        if not self._record(EventType.SQL_STATEMENT, sql, params):
            return

        def proceed() -> None:
            result = Result(sql, self.clock_ns(), portal.columns if portal else None)
            result.described_by = [item for item in (portal, prepared) if item is not None]
            if prepared is not None:
                result.outputs = self._cursor_outputs(prepared.outputs)
            if portal is not None:
                result.formats = _result_formats(portal.bind)
            if prepared is not None and prepared.copy is not None:
                columns = prepared.copy.columns
                result.copy = CopyJob(prepared.copy, list(columns) if columns else None)
            if prepared is not None and prepared.found is not None:
                for statement in prepared.found.statements:
                    if statement.named is not None:
                        result.on_done = self._named_effects(statement)
            self._expects.append(Expect(Kind.EXECUTE, results=deque([result])))
            self._forward(raw)
            self._batch_open = True
            statements = prepared.found.statements if prepared and prepared.found else ()
            if self._may_set_encoding(statements, sql):
                reverts = self._encoding_may_revert and _may_end_transaction(statements)
                self._encoding_may_revert = True
                self._encoding_after_sync = True
                # The server reads the rest of this batch in the new encoding at once (if this
                # fails, it skips the rest); its Sync's ReadyForQuery confirms which it is.
                # A transaction's end sets back a value the gateway has not kept: unknown.
                values = {value for statement in statements for value in statement.encodings}
                unnamed = reverts or _unnamed_encoding(statements)
                if None in values or (unnamed and not values):
                    self._encoding_unknown = True  # a value only known when it runs
                elif len(values) == 1 and (codec := codec_of(values.pop())) is not None:
                    self._use_codec(codec)

        if prepared is None:
            # Every Bind and Parse passes through here, so this portal or statement was made
            # where the gateway could not see it (dynamic SQL): it cannot be judged.
            what = f'portal "{execute.portal}"' if portal is None else "its prepared statement"
            verdict = _unknown(f"{what} is not known to the gateway, so it cannot be judged")
            self._judge(verdict, sql, proceed, extended=True)
            return
        verdict = prepared.verdict
        if prepared.found is not None and any(s.named for s in prepared.found.statements):
            verdict = self._decide_named(prepared.found)  # EXECUTE runs what the name is now
        if verdict.action is Action.ALLOW:
            proceed()
        else:
            self._judge(verdict, sql, proceed, extended=True)

    def _on_close(self, raw: bytes) -> None:
        body = raw[5:]
        if len(body) < 2 or body[-1] != 0 or body[0] not in b"SP":
            raise ProtocolError("malformed Close")
        name = _name(body[1:-1], self._codec)
        table: dict[str, Any] = self._statements if body[0] == ord("S") else self._portals
        self._expects.append(Expect(Kind.CLOSE, on_done=_forget(table, name)))
        self._forward(raw)
        self._batch_open = True

    def _on_sync(self, raw: bytes) -> None:
        self._encoding_unknown = False
        if self._discarding:
            self._discarding = False
            self._local_ready()
        else:
            self._expects.append(Expect(Kind.SYNC))
            self._forward(raw)
            self._batch_open = False
        if self._encoding_after_sync:
            self._encoding_after_sync = False
            self._encoding_wait = True
            self._encoding_settled()

    def _on_passthrough(self, raw: bytes) -> None:
        """Flush and the COPY sub-protocol: no answer of their own."""
        self._forward(raw)

    def _on_function_call(self, raw: bytes) -> None:
        self._record(EventType.SQL_STATEMENT, "(fast-path function call)", [])
        self._record(
            EventType.VERDICT, 0, "deny", "", "fast-path function calls bypass SQL inspection"
        )
        self._refuse(
            False,
            "hoop: fast-path function calls are not allowed by the gateway",
            INSUFFICIENT_PRIVILEGE,
            "(fast-path function call)",
        )

    def _on_terminate(self, raw: bytes) -> None:
        self._forward(raw)
        self.closed = True
        self.commands.append(End("client terminated"))

    def _on_password(self, raw: bytes) -> None:
        raise ProtocolError("a password message after the login")

    def _may_set_encoding(self, statements: Sequence[sqlclass.Statement], sql: str) -> bool:
        """`_may_set_encoding`, and inside a transaction that changed client_encoding also
        whatever may end that transaction (it sets the encoding back)."""
        if self._encoding_may_revert and _may_end_transaction(statements):
            return True
        return _may_set_encoding(statements, sql)

    def _syntax_error(self, found: sqlclass.Classified) -> bool:
        """Whether text the parser rejected is answered with its syntax error (42601, nothing
        sent): always with `unparsable = "syntax_error"`; with "policy", when the policy is
        permissive (`typos_are_syntax_errors`) and no rule names the text (its verdict would
        only be `[policy] unparsable`). Nothing runs either way."""
        if found.error is None:
            return False
        if self.unparsable is UnparsableMode.SYNTAX_ERROR:
            return True
        return self.typos_are_syntax_errors and self.verdict(found).basis is Basis.UNPARSABLE

    # -- SQL prepared statements --------------------------------------------------------------

    def _encoding_refusal(self, found: sqlclass.Classified) -> tuple[str, str] | None:
        """A statement that sets a client_encoding the session may not use, or turns
        standard_conforming_strings off, refused before the upstream sees it (see
        `encoding_refusal` and `conforming_refusal`)."""
        for statement in found.statements:
            for value in statement.encodings:
                refusal = encoding_refusal(value, masking=self.masker is not None)
                if refusal is not None:
                    return refusal
            for value in statement.conforming:
                refusal = conforming_refusal(value)
                if refusal is not None:
                    return refusal
            if statement.stores and self.masker is not None and _whole_rule(self.masker):
                return INSUFFICIENT_PRIVILEGE, _STORES_REFUSAL
        return None

    def _decide_named(self, found: sqlclass.Classified) -> Verdict:
        """The verdict of a string that uses SQL prepared statements. An EXECUTE carries the
        classes and tables of the body prepared under its name (a PREPARE earlier in the same
        string counts); a name the gateway never saw prepared is refused. Decided without the
        classifier's key: these names are not in the fingerprint."""
        overlay: dict[str, Prepared | None] = {}
        statements = []
        for statement in found.statements:
            named = statement.named
            if named is None:
                statements.append(statement)
                continue
            classes, tables = set(statement.classes), set(statement.tables)
            for name in sorted(named.executes):
                body = overlay[name] if name in overlay else self._statements.get(name)
                if body is None or body.found is None:
                    return _unknown(
                        f'prepared statement "{name}" is not known to the gateway, so it '
                        "cannot be judged",
                        statement.text,
                    )
                for inner in _bodies(body.found, self._statements):
                    classes |= inner.classes
                    tables |= inner.tables
            if named.prepares is not None and named.body is not None:
                overlay[named.prepares] = Prepared(
                    statement.text, _ALLOWED, found=sqlclass.Classified((named.body,))
                )
            if named.deallocates is not None:
                overlay[named.deallocates] = None
            statements.append(
                sqlclass.Statement(statement.text, frozenset(classes), frozenset(tables))
            )
        return self.decide(sqlclass.Classified(tuple(statements), found.error))

    def _outputs_of(
        self, sql: str, known: Hashable | None = None
    ) -> tuple[OutputMasks | None, ...]:
        """Per statement of a string, which output columns carry masked values for this
        session's rules, cached per session by the statement's shape: the classifier's key
        when it has one (`known`: texts sharing it differ only in constants and comments,
        so their lineage is one), else lineage.shape_key."""
        key = known if known is not None else shape_key(sql)
        found = self._outputs.get(key)
        if found is not None:
            self._outputs.move_to_end(key)
            return found
        assert self.masker is not None
        found = tuple(OutputMasks.build(item, self.masker) for item in lineages(sql))
        self._outputs[key] = found
        if len(self._outputs) > OUTPUT_CACHE:
            self._outputs.popitem(last=False)
        return found

    def _cursor_outputs(self, outputs: OutputMasks | None) -> OutputMasks | None:
        """A DECLAREd cursor keeps its query's output masks (once declared, a name stays
        masked: a later harmless DECLARE of it only masks more); a FETCH returns them."""
        if outputs is not None and outputs.declares is not None:
            known = self._cursors.get(outputs.declares)
            self._cursors[outputs.declares] = outputs.merged(known) if known else outputs
        if outputs is not None and outputs.fetches is not None:
            return self._cursors.get(outputs.fetches)
        return outputs

    def _executed_outputs(self, statement: sqlclass.Statement) -> OutputMasks | None:
        """An SQL EXECUTE returns what the statement prepared under its name returns."""
        if statement.named is None or not statement.named.executes:
            return None
        outputs: OutputMasks | None = None
        for name in sorted(statement.named.executes):
            body = self._statements.get(name)
            if body is not None and body.outputs is not None:
                outputs = body.outputs.merged(outputs)
        return outputs

    def _define(self, name: str, prepared: Prepared) -> None:
        """A prepared statement sent upstream. Redefining a named one fails upstream, which
        keeps the old one, so until it is closed it is judged by both."""
        previous = self._statements.get(name) if name else None
        self._statements[name] = _merged(previous, prepared) if previous else prepared

    def _named_effects(self, statement: sqlclass.Statement) -> Callable[[], None] | None:
        """Register an SQL PREPARE now (it may be executed before its answer comes back);
        what DEALLOCATE and DISCARD ALL forget, forget once they succeeded."""
        named = statement.named
        if named is None:
            return None
        if named.prepares is not None and named.body is not None:
            body = sqlclass.Classified((named.body,))
            outputs = None
            if self.masker is not None and self.masker.uses_columns:
                outputs = next(iter(self._outputs_of(statement.text)), None)
            self._define(
                named.prepares,
                Prepared(statement.text, self.decide(body), found=body, outputs=outputs),
            )
        if named.deallocates_all:
            statements = dict(self._statements)
            portals = dict(self._portals) if named.closes_portals else {}

            def forget_all() -> None:
                for key, value in statements.items():
                    _forget(self._statements, key, value)()
                for key, portal in portals.items():
                    _forget(self._portals, key, portal)()

            return forget_all
        if named.deallocates is not None:
            return _forget(self._statements, named.deallocates)
        return None

    # -- COPY TO STDOUT, masked ---------------------------------------------------------------

    def _copy_refusal(self, spec: CopyOut, *, extended: bool, alone: bool = True) -> str | None:
        """Why this COPY cannot be masked (and so is refused), or None."""
        masker = self.masker
        assert masker is not None
        if spec.columns is not None:
            may_mask = masker.plan(list(spec.columns)).active
        else:
            may_mask = bool(masker.text_finders) or masker.uses_columns
        if not may_mask:
            return None
        if spec.format == BINARY:
            return (
                "hoop: masking rules apply to this COPY and the binary format cannot be "
                "masked: use the text or CSV format"
            )
        if not spec.utf8:
            return "hoop: masking rules apply to this COPY: its ENCODING must be UTF8"
        if spec.columns is None and masker.uses_columns and (extended or not alone):
            return (
                "hoop: masking rules name columns, so a COPY TO STDOUT needs its column list "
                "here (COPY t (a, b) TO STDOUT), or must be sent on its own as a simple query"
            )
        return None

    def _copy_jobs(self, found: sqlclass.Classified, results: deque[Result]) -> str | None:
        """Attach a CopyJob to each COPY TO STDOUT of a Query; a refusal when one cannot be
        masked (then nothing of the string is sent)."""
        alone = len(found.statements) == 1
        for statement, result in zip(found.statements, results, strict=False):
            if sqlclass.COPY_OUT not in statement.classes:
                continue
            spec = parse_copy_out(statement.text)
            if spec is None:
                continue  # COPY TO a file or a program: no rows come back
            refusal = self._copy_refusal(spec, extended=False, alone=alone)
            if refusal:
                return refusal
            assert self.masker is not None
            columns = list(spec.columns) if spec.columns else None
            if columns is None and not self.masker.uses_columns:
                columns = []  # value detectors only: the names do not matter
            result.copy = CopyJob(spec, columns)
        return None

    def _ask_columns(self, result: Result) -> None:
        """Ask the upstream, just before the COPY, which columns it will write."""
        assert result.copy is not None
        self._expects.append(Expect(Kind.SIDE, swallow=True, current=result))
        self._sides += 1
        self._forward(learn_columns_messages(result.copy.spec))

    def _side_message(self, type_code: int, buf: bytearray, start: int, end: int) -> bool:
        """An answer to `_ask_columns`, kept from the client; False for everything else."""
        head = self._expects[0] if self._expects else None
        if head is None or head.kind is not Kind.SIDE or type_code in _ASYNC_CODES:
            return False
        job = head.current.copy if head.current is not None else None
        assert job is not None
        body = bytes(buf[start + 5 : end])
        if type_code == Backend.ROW_DESCRIPTION and job.spec.relation is None:
            job.learned = [column.name for column in RowDescription.decode(body).columns]
        elif type_code == Backend.DATA_ROW and job.spec.relation is not None:
            values = DataRow.decode(body).values
            if values and values[0] is not None:
                job.learned.append(values[0].decode("utf-8", "surrogateescape"))
        elif type_code == Backend.ERROR_RESPONSE:
            job.failed = True  # the COPY itself will fail the same way (or the session ends)
        elif type_code == Backend.READY_FOR_QUERY:
            if end - start == 6 and buf[start + 5] in b"ITE":
                self.status = chr(buf[start + 5])
            self._expects.popleft()
            self._sides -= 1
            if not job.failed and job.learned:
                job.columns = job.learned
        return True

    def _up_copy_out(self, buf: bytearray, start: int, end: int) -> bool:
        if self.masker is None:
            return True
        head = self._head()
        result = None
        if head is not None and head.kind in (Kind.QUERY, Kind.EXECUTE):
            result = self._result(head)
        job = result.copy if result is not None else None
        count = len(CopyResponse.decode(bytes(buf[start + 5 : end])).column_formats)
        columns = job.columns if job is not None else None
        if columns == [] or (columns is None and not self.masker.uses_columns):
            columns = [""] * count
        if columns is None or len(columns) != count:
            self._fatal(
                INSUFFICIENT_PRIVILEGE,
                "hoop: the gateway could not tell the columns of this COPY, so it ended the "
                "session rather than pass unmasked data",
            )
            return False
        forced = None
        if job is not None and self.masker.uses_columns:
            # `COPY t` reads what `select * from t` does (`COPY pg_statistic`: sampled values)
            query = job.spec.query
            if query is None and job.spec.relation is not None:
                query = f"select * from {job.spec.relation}"
            outputs = next(iter(self._outputs_of(query)), None) if query else None
            forced = outputs.rules(columns) if outputs is not None else None
        plan = self.masker.plan(columns, forced=forced)
        if not plan.active:
            return True
        if job is None or buf[start + 5] != 0 or job.spec.format == BINARY or not job.spec.utf8:
            self._fatal(
                INSUFFICIENT_PRIVILEGE,
                "hoop: the gateway cannot mask this COPY, so it ended the session rather "
                "than pass unmasked data",
            )
            return False
        assert result is not None
        result.columns = [name for name in columns if name] or None
        self._copy_rows = CopyRows(job.spec, plan)
        self._copy_result = result
        return True

    def _up_copy_data(self, buf: bytearray, start: int, end: int) -> bool:
        rows = self._copy_rows
        if rows is None:
            return True
        for row in rows.feed(bytes(buf[start + 5 : end])):
            if not self._copy_row(rows, row):
                break
        return False

    def _up_copy_done(self, buf: bytearray, start: int, end: int) -> bool:
        rows, self._copy_rows = self._copy_rows, None
        if rows is not None:
            rest = rows.finish()
            if rest:
                self._copy_row(rows, rest)
        return not self.closed

    def _copy_row(self, rows: CopyRows, row: bytes) -> bool:
        out, values, acts = rows.mask(row)
        self.to_client += CopyData(out).encode()
        result = self._copy_result
        if values is None or result is None:
            return True
        result.rows += 1
        if len(result.sample) < self.sample_rows:
            result.sample.append([_sample_text(value) for value in values])
            for act in acts:
                if not self._record(EventType.MASK, *_row_mask(act, result.rows)):
                    return False
        return True

    # -- judging ------------------------------------------------------------------------------

    def _judge(
        self, verdict: Verdict, statement: str, proceed: Callable[[], None], *, extended: bool
    ) -> None:
        if verdict.action is Action.ALLOW:
            if verdict.basis is not Basis.DEFAULT:  # an explicit allow rule: on the record
                self._record(EventType.VERDICT, 0, "allow", verdict.rule or "", verdict.message)
            proceed()
            return
        self._paused = _Pending(proceed, extended, statement)
        self.commands.append(Judge(verdict, statement))

    def _refuse(
        self, extended: bool, message: str, sqlstate: str, statement: str, hint: str = ""
    ) -> None:
        """Answer a statement with an error the gateway makes. PostgreSQL fails a transaction
        block on any error, so where one may be open (the last status was not idle, or answers
        are still due) the upstream is made to fail too (`_abort_batch`): afterwards both
        sides are in the failed state, the next statement gets 25P02 and COMMIT rolls back."""
        maybe_open = self.status != "I" or bool(self._expects)
        if extended:
            abort = self._abort_batch() if self._batch_open or maybe_open else None
            self._local_error(sqlstate, message, hint)
            if abort is not None and self._expects and self._expects[-1].kind is Kind.LOCAL:
                abort.refusal = self._expects[-1]
            self._discarding = True
        else:
            if maybe_open:
                self._abort_batch()
            self._local_error(sqlstate, message, hint)
            self._local_ready()

    def _abort_batch(self) -> Expect:
        """The upstream has run earlier messages of the refused batch. A Sync alone would
        commit them; PostgreSQL rolls a batch back when any of it fails. So the gateway makes
        it fail: a Describe of a portal that does not exist (which runs nothing), then Sync.
        The upstream's error and ReadyForQuery stay with the gateway; the status it reports
        (idle, or a failed transaction block) is what the client's own Sync then reads."""
        abort = Expect(Kind.ABORT, swallow=True)
        self._expects.append(abort)
        self._forward(Describe("P", self._abort_portal).encode())
        self._expects.append(Expect(Kind.SYNC, swallow=True))
        self._forward(_SYNC)
        self._batch_open = False
        return abort

    def _local_error(self, sqlstate: str, message: str, hint: str = "") -> None:
        self._record(EventType.SQL_ERROR, sqlstate, message)
        extra = {"hint": hint} if hint else {}
        self._local(ErrorResponse.make(sqlstate, message, **extra).encode())

    def _local(self, data: bytes) -> None:
        if self._expects:
            self._expects.append(Expect(Kind.LOCAL, data=data))
        else:
            self.to_client += data

    def _local_ready(self) -> None:
        if self._expects:
            self._expects.append(Expect(Kind.LOCAL_READY))
        else:
            self.to_client += ReadyForQuery(self.status).encode()

    def _record(self, event: EventType, *fields: object) -> bool:
        if self.record(event, *fields):
            return True
        self._fatal("58030", "hoop: the session recording failed, so the gateway ended the session")
        return False

    def _fatal(self, sqlstate: str, message: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._expects.clear()
        self.to_client += ErrorResponse.make(sqlstate, message, severity="FATAL").encode()
        self.commands.append(End(message))

    # -- the upstream side ---------------------------------------------------------------------

    def _pump_upstream(self) -> None:
        reader = self._upstream
        buf = reader.buffer
        out = self.to_client
        while not self.closed:
            span = reader.next_span()
            if span is None:
                return
            type_code, start, end = span
            handler = _UPSTREAM_HANDLERS.get(type_code)
            if handler is None:
                raise ProtocolError(f"unknown backend message type {chr(type_code)!r}")
            if not (self._sides and self._side_message(type_code, buf, start, end)) and handler(
                self, buf, start, end
            ):
                out += buf[start:end]
            expects = self._expects
            if expects and expects[0].kind in _LOCAL_KINDS:
                self._flush_local()

    def _flush_local(self) -> None:
        expects = self._expects
        while expects and expects[0].kind in (Kind.LOCAL, Kind.LOCAL_READY):
            entry = expects.popleft()
            if entry.kind is Kind.LOCAL:
                self.to_client += entry.data
            else:
                self.to_client += ReadyForQuery(self.status).encode()

    def _head(self) -> Expect | None:
        return self._expects[0] if self._expects else None

    def _pop(self, kind: Kind) -> Expect | None:
        """Finish the head entry if it is `kind` (a lenient relay: unexpected order is passed
        through, never fatal)."""
        head = self._head()
        if head is not None and head.kind is kind:
            return self._expects.popleft()
        return None

    def _up_async(self, buf: bytearray, start: int, end: int) -> bool:
        return True  # notices, notifications, parameter status: straight through

    def _up_parameter_status(self, buf: bytearray, start: int, end: int) -> bool:
        """The server reports a new client_encoding after whatever changed it, also where the
        gateway could not see the change (dynamic SQL): one the session may not use ends it,
        since what follows would be read in an encoding the gateway does not read. The same
        for standard_conforming_strings turned off."""
        if buf.startswith(_CONFORMING_STATUS, start + 5):
            value = ParameterStatus.decode(bytes(buf[start + 5 : end])).value
            refusal = conforming_refusal(value)
        elif buf.startswith(_CLIENT_ENCODING_STATUS, start + 5):
            value = ParameterStatus.decode(bytes(buf[start + 5 : end])).value
            refusal = encoding_refusal(value, masking=self.masker is not None)
        else:
            return True
        if refusal is None:
            if buf.startswith(_CLIENT_ENCODING_STATUS, start + 5):
                self.set_client_encoding(value)
                self._encoding_may_revert = True  # until the transaction is known to be over
            return True
        self._fatal(refusal[0], refusal[1] + "; the server switched to it, so the session ends")
        return False

    def _up_parse_complete(self, buf: bytearray, start: int, end: int) -> bool:
        self._pop(Kind.PARSE)
        return True

    def _up_bind_complete(self, buf: bytearray, start: int, end: int) -> bool:
        self._pop(Kind.BIND)
        return True

    def _up_close_complete(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._pop(Kind.CLOSE)
        if head is not None and head.on_done is not None:
            head.on_done()
        return True

    def _up_parameter_description(self, buf: bytearray, start: int, end: int) -> bool:
        return True  # the first half of a statement Describe; T or n finishes it

    def _up_no_data(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is not None and head.kind is Kind.DESCRIBE:
            self._describe_done(head, None)
        return True

    def _up_row_description(self, buf: bytearray, start: int, end: int) -> bool:
        body = bytes(buf[start + 5 : end])
        described = self._column_cache.get(body)
        if described is None:
            decoded = RowDescription.decode(body, self._codec).columns
            described = (tuple(c.name for c in decoded), tuple(c.type_oid for c in decoded))
            if len(self._column_cache) < 256:
                self._column_cache[body] = described
        names, types = described
        columns = list(names)
        head = self._head()
        if head is None:
            return True
        if head.kind is Kind.DESCRIBE:
            self._describe_done(head, columns, types)
        else:
            result = self._result(head)
            if result is not None:
                result.columns = columns
                result.types = types
        return True

    def _describe_done(
        self, head: Expect, columns: list[str] | None, types: tuple[int, ...] | None = None
    ) -> None:
        self._expects.popleft()
        if head.describe_kind == "S":
            prepared = self._statements.get(head.name)
            if prepared is not None:
                prepared.columns = columns
                prepared.types = types
        else:
            portal = self._portals.get(head.name)
            if portal is not None:
                portal.columns = columns
                portal.types = types

    def _result(self, head: Expect) -> Result | None:
        if head.current is None and head.results:
            head.current = head.results.popleft()
        return head.current

    def _up_data_row(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is not None and head.kind in (Kind.QUERY, Kind.EXECUTE):
            result = self._result(head)
            if result is not None:
                result.rows += 1
                if self.masker is not None and self._mask_row(result, buf, start, end):
                    return False
                if len(result.sample) < self.sample_rows:
                    result.sample.append(_row(buf, start + 5, end))
        return True

    def _mask_row(self, result: Result, buf: bytearray, start: int, end: int) -> bool:
        """Mask a row before the client sees it; True when a rewritten row was sent instead.
        Values are read as text: a masked value that is not UTF-8 (a binary-format column)
        becomes NULL rather than bytes a driver would misread."""
        assert self.masker is not None
        if result.mask is None:
            columns = result.columns or next(
                (item.columns for item in result.described_by if item.columns), None
            )
            if columns is None:  # never described: value detectors still run on every column
                (count,) = _I16.unpack_from(buf, start + 5)
                columns = [""] * count
            if result.types is None:
                result.types = next(
                    (item.types for item in result.described_by if item.types is not None), None
                )
            forced = result.outputs.rules(columns) if result.outputs is not None else None
            result.mask = self.masker.plan(columns, forced=forced)
        plan = result.mask
        if not plan.active:
            return False
        values = DataRow.decode(bytes(buf[start + 5 : end])).values
        texts: list[bytes | str | None] = []
        for index, value in enumerate(values):
            # a binary integer, numeric or array is read as the text PostgreSQL would send
            text = _binary_text(result, index, value)
            if text is not None:
                texts.append(text)
                continue
            try:
                texts.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(value)
        masked, acts = plan.mask_row(texts)
        if not acts:
            return False
        out = tuple(
            raw if new == old else _wire_value(new, old)
            for new, old, raw in zip(masked, texts, values, strict=True)
        )
        out, nulled = _typed_values(out, texts, masked, result)
        if nulled and not result.nulled:
            result.nulled = True
            self.to_client += NoticeResponse.make(
                "01000",
                "hoop: masked values of binary-format columns are sent as NULL",
                severity="NOTICE",
            ).encode()
        self.to_client += DataRow(out).encode()
        if len(result.sample) < self.sample_rows:
            result.sample.append([_sample_value(v) for v in out])
            for act in acts:
                if not self._record(EventType.MASK, *_row_mask(act, result.rows)):
                    return True
        return True

    def _up_command_complete(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is not None and head.kind in (Kind.QUERY, Kind.EXECUTE):
            if buf[end - 1] != 0:
                raise ProtocolError("CommandComplete tag is not NUL-terminated")
            tag = CommandComplete(buf[start + 5 : end - 1].decode("utf-8", errors="replace"))
            result = self._result(head)
            head.current = None
            if result is not None:
                if result.on_done is not None:
                    result.on_done()
                rows = tag.rows
                self._record(
                    EventType.SQL_RESULT,
                    result.columns or [],
                    rows if rows is not None else result.rows,
                    result.sample,
                    (self.clock_ns() - result.started_ns) // 1000,
                )
            if head.kind is Kind.EXECUTE:
                self._expects.popleft()
        return True

    def _up_empty_query(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is not None and head.kind in (Kind.QUERY, Kind.EXECUTE):
            self._result(head)
            head.current = None
            if head.kind is Kind.EXECUTE:
                self._expects.popleft()
        return True

    def _up_portal_suspended(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._pop(Kind.EXECUTE)
        if head is not None:
            result = self._result(head)
            if result is not None:
                self._record(
                    EventType.SQL_RESULT,
                    result.columns or [],
                    result.rows,
                    result.sample,
                    (self.clock_ns() - result.started_ns) // 1000,
                )
        return True

    def _mask_report(self, report: ErrorResponse) -> ErrorResponse | None:
        """Errors and notices echo values (`DETAIL: Key (email)=(...)`): the report with its
        text fields masked, or None when nothing in it needed masking. Under a whole-value
        column rule, the values a data or integrity error echoes (`invalid input syntax for
        type integer: "..."` of `password::int`, `Failing row contains (...)`) are masked
        whole: the gateway cannot tell which column they came from."""
        if self.masker is None:
            return None
        whole = _whole_rule(self.masker)
        if not self.masker.masks_text and whole is None:
            return None
        echoes = whole is not None and report.sqlstate[:2] in _ECHOING_CLASSES
        fields, masked = [], False
        for code, value in report.fields:
            if echoes and whole is not None and code in _ECHO_FIELDS:
                new = self._mask_echo(whole, code, value)
                masked = masked or new != value
                value = new
            if code in _TEXT_FIELDS:
                new, acts = self.masker.mask_text(value)
                for act in acts:
                    self._record(EventType.MASK, 0, act.rule, act.position, act.length, act.token)
                masked = masked or new != value
                value = new
            fields.append((code, value))
        return type(report)(tuple(fields)) if masked else None

    def _mask_echo(self, rule: MaskRule, code: int, value: str) -> str:
        """An echoed value masked whole: the quoted parts of a message, all of a detail or
        context (they quote rows and input lines)."""
        masker = self.masker
        assert masker is not None

        def whole(text: str) -> str:
            out, act = masker._mask_whole(rule, "error", text)
            if act is not None:
                self._record(EventType.MASK, 0, act.rule, act.position, act.length, act.token)
            return str(out)

        if code == Field.MESSAGE:
            return _QUOTED.sub(lambda match: '"' + whole(match.group(1)) + '"', value)
        return whole(value) if value else value

    def _up_notification(self, buf: bytearray, start: int, end: int) -> bool:
        """A NOTIFY payload may carry any value (`pg_notify('c', card)` from a table): value
        detectors mask it, and under a whole-value column rule it is masked whole, since the
        gateway cannot tell where it came from."""
        if self.masker is None:
            return True
        note = NotificationResponse.decode(bytes(buf[start + 5 : end]))
        payload, acts = self.masker.mask_text(note.payload)
        rule = _whole_rule(self.masker)
        if rule is not None and payload:
            shown, act = self.masker._mask_whole(rule, "payload", note.payload)
            payload, acts = str(shown), [act] if act is not None else []
        if payload == note.payload:
            return True
        for act in acts:
            self._record(EventType.MASK, 0, act.rule, act.position, act.length, act.token)
        self.to_client += NotificationResponse(note.pid, note.channel, payload).encode()
        return False

    def _up_notice(self, buf: bytearray, start: int, end: int) -> bool:
        if self.masker is None:
            return True
        masked = self._mask_report(NoticeResponse.decode(bytes(buf[start + 5 : end]), self._codec))
        if masked is None:
            return True
        self.to_client += masked.encode()
        return False

    def _up_error(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is not None and head.kind is Kind.ABORT:
            self._expects.popleft()  # the failure the gateway asked for: not the client's
            return False
        error = ErrorResponse.decode(bytes(buf[start + 5 : end]), self._codec)
        if error.get(Field.SEVERITY_NONLOCALIZED, error.get(Field.SEVERITY)) in _ENDS_SESSION:
            self.upstream_fatal = True
        self._copy_rows = None  # a COPY that fails midway sends nothing more
        masked = self._mask_report(error)
        shown = masked or error
        self._record(EventType.SQL_ERROR, shown.sqlstate, shown.message)
        self._after_error()
        if masked is None:
            return True
        self.to_client += masked.encode()
        return False

    def _after_error(self) -> None:
        head = self._head()
        if head is None:
            return
        if head.kind is Kind.QUERY:
            self._result(head)
            head.current = None
            head.results = deque()  # the rest of the string is not run
            return
        # Extended protocol: the server skips everything until Sync.
        while self._expects and self._expects[0].kind not in (
            Kind.SYNC,
            Kind.LOCAL,
            Kind.LOCAL_READY,
        ):
            skipped = self._expects.popleft()
            if skipped.refusal is not None:
                # The batch failed before the refused message: PostgreSQL would report that
                # failure alone, and the refusal is moot.
                skipped.refusal.data = b""

    def _up_ready(self, buf: bytearray, start: int, end: int) -> bool:
        status = buf[start + 5 : end]
        if len(status) != 1 or status[0] not in b"ITE":
            raise ProtocolError("bad ReadyForQuery")
        self.status = chr(status[0])
        swallow = False
        while self._expects:
            head = self._expects[0]
            if head.kind in (Kind.LOCAL, Kind.LOCAL_READY):
                break
            self._expects.popleft()
            if head.kind in (Kind.SYNC, Kind.QUERY):
                swallow = head.swallow
                break
        if self.status == "I" and not any(e.kind in _ANSWERED_BY_READY for e in self._expects):
            self._encoding_may_revert = False  # no transaction left that could set it back
        return not swallow

    def _up_copy(self, buf: bytearray, start: int, end: int) -> bool:
        return True  # CopyIn/Out responses, CopyData, CopyDone, FunctionCallResponse

    def _up_login_only(self, buf: bytearray, start: int, end: int) -> bool:
        raise ProtocolError(f"login message {chr(buf[start])!r} after the login")


_LOCAL_KINDS = (Kind.LOCAL, Kind.LOCAL_READY)
_ANSWERED_BY_READY = (Kind.QUERY, Kind.SYNC)
_COPY_CODES = (Frontend.COPY_DATA, Frontend.COPY_DONE, Frontend.COPY_FAIL)
_SQL_CODES = (Frontend.QUERY, Frontend.PARSE)  # messages whose text is judged as SQL
# What may change client_encoding without the classifier naming a value: RESET, SET NAMES
# DEFAULT, RESET ALL, DISCARD ALL, a set_config whose name is computed.
_ENCODING_HINT = re.compile(
    r"client_encoding|\bnames\b|\breset\b|\bdiscard\b|set_config", re.IGNORECASE
)


def _may_set_encoding(statements: Sequence[sqlclass.Statement], sql: str) -> bool:
    """Whether running this may change the session's client_encoding (see _encoding_wait)."""
    if any(s.encodings or s.classes & _SETS_SETTINGS or _writes_settings(s) for s in statements):
        return True
    return bool(_ENCODING_HINT.search(sql))


# set_config with a computed name, RESET ALL (the classifier's "set_role"): any setting. A DO
# block is code any role may run, which may set anything through dynamic SQL.
_SETS_SETTINGS = frozenset({"set_role", "do_block"})
# Statements that may set client_encoding to a value not written in them (RESET, DEFAULT,
# DISCARD ALL, a DO block, text the parser rejected), when `_ENCODING_HINT` finds them.
_UNNAMED_ENCODING_CLASSES = frozenset({"utility", "do_block", sqlclass.UNPARSABLE}) | _SETS_SETTINGS


def _writes_settings(statement: sqlclass.Statement) -> bool:
    """An UPDATE of pg_settings: its rule calls set_config with the row's name."""
    if "write" not in statement.classes:
        return False
    return any(t.rpartition(".")[2].strip('"').lower() == "pg_settings" for t in statement.tables)


def _unnamed_encoding(statements: Sequence[sqlclass.Statement]) -> bool:
    """Whether a statement that may change client_encoding may set it to a value the
    classifier did not find written in it (then the gateway cannot know the new one)."""
    return any(s.classes & _UNNAMED_ENCODING_CLASSES or _writes_settings(s) for s in statements)


# Statements that may end a transaction or roll back to a savepoint (procedures and DO
# blocks may COMMIT or ROLLBACK), which sets back a client_encoding changed inside it.
_ENDS_TRANSACTION_CLASSES = frozenset({"transaction", "utility", "do_block", sqlclass.UNPARSABLE})


def _may_end_transaction(statements: Sequence[sqlclass.Statement]) -> bool:
    return not statements or any(s.classes & _ENDS_TRANSACTION_CLASSES for s in statements)


@dataclass(slots=True)
class _Pending:
    proceed: Callable[[], None]
    extended: bool
    statement: str


_ClientHandler = Callable[[PgSession, bytes], None]
_CLIENT_HANDLERS: dict[int, _ClientHandler] = {
    Frontend.QUERY: PgSession._on_query,
    Frontend.PARSE: PgSession._on_parse,
    Frontend.BIND: PgSession._on_bind,
    Frontend.DESCRIBE: PgSession._on_describe,
    Frontend.EXECUTE: PgSession._on_execute,
    Frontend.CLOSE: PgSession._on_close,
    Frontend.SYNC: PgSession._on_sync,
    Frontend.FLUSH: PgSession._on_passthrough,
    Frontend.COPY_DATA: PgSession._on_passthrough,
    Frontend.COPY_DONE: PgSession._on_passthrough,
    Frontend.COPY_FAIL: PgSession._on_passthrough,
    Frontend.FUNCTION_CALL: PgSession._on_function_call,
    Frontend.TERMINATE: PgSession._on_terminate,
    Frontend.PASSWORD: PgSession._on_password,
}

_UpstreamHandler = Callable[[PgSession, bytearray, int, int], bool]
_UPSTREAM_HANDLERS: dict[int, _UpstreamHandler] = {
    Backend.NOTICE_RESPONSE: PgSession._up_notice,
    Backend.NOTIFICATION_RESPONSE: PgSession._up_notification,
    Backend.PARAMETER_STATUS: PgSession._up_parameter_status,
    Backend.PARSE_COMPLETE: PgSession._up_parse_complete,
    Backend.BIND_COMPLETE: PgSession._up_bind_complete,
    Backend.CLOSE_COMPLETE: PgSession._up_close_complete,
    Backend.PARAMETER_DESCRIPTION: PgSession._up_parameter_description,
    Backend.NO_DATA: PgSession._up_no_data,
    Backend.ROW_DESCRIPTION: PgSession._up_row_description,
    Backend.DATA_ROW: PgSession._up_data_row,
    Backend.COMMAND_COMPLETE: PgSession._up_command_complete,
    Backend.EMPTY_QUERY_RESPONSE: PgSession._up_empty_query,
    Backend.PORTAL_SUSPENDED: PgSession._up_portal_suspended,
    Backend.ERROR_RESPONSE: PgSession._up_error,
    Backend.READY_FOR_QUERY: PgSession._up_ready,
    Backend.COPY_IN_RESPONSE: PgSession._up_copy,
    Backend.COPY_OUT_RESPONSE: PgSession._up_copy_out,
    Backend.COPY_BOTH_RESPONSE: PgSession._up_copy,
    Backend.COPY_DATA: PgSession._up_copy_data,
    Backend.COPY_DONE: PgSession._up_copy_done,
    Backend.FUNCTION_CALL_RESPONSE: PgSession._up_copy,
    Backend.AUTHENTICATION: PgSession._up_login_only,
    Backend.BACKEND_KEY_DATA: PgSession._up_login_only,
    Backend.NEGOTIATE_PROTOCOL_VERSION: PgSession._up_login_only,
}


_TEXT_FIELDS = frozenset({Field.MESSAGE, Field.DETAIL, Field.HINT})
# Errors whose message, detail or context echo an input value or a row: data exceptions
# (22P02 `invalid input syntax for type integer: "..."`) and integrity violations (23505's
# `Key (x)=(...)`, 23502's `Failing row contains (...)`); `W` is the context field (COPY's
# line, a function's statement).
_ECHOING_CLASSES = frozenset({"22", "23"})
_ECHO_FIELDS = frozenset({Field.MESSAGE, Field.DETAIL, ord("W")})
_QUOTED = re.compile(r'"([^"]*)"')
_STORES_REFUSAL = (
    "hoop: a value computed by the query kept in a setting, large object or sequence "
    "(set_config, lo_from_bytea, lo_put, lowrite, setval) is refused where column masks "
    "apply: a later read would show it unmasked"
)


def _whole_rule(masker: Masker) -> MaskRule | None:
    """The first rule that masks a column's whole value (no detector or pattern), if any."""
    for rule in masker.rules:
        if rule.column is not None and rule.detector is None and rule.pattern is None:
            return rule
    return None


_ENDS_SESSION = frozenset({"FATAL", "PANIC"})
_ASYNC_CODES = (Backend.NOTICE_RESPONSE, Backend.NOTIFICATION_RESPONSE, Backend.PARAMETER_STATUS)
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


def _row(buf: bytearray, pos: int, end: int) -> list[Any]:
    """A DataRow's values for the record, read in place (the hot path of result sampling)."""
    if end - pos < 2:
        raise ProtocolError("DataRow is too short")
    (count,) = _I16.unpack_from(buf, pos)
    pos += 2
    values: list[Any] = []
    for _ in range(count):
        if end - pos < 4:
            raise ProtocolError("DataRow is shorter than its values")
        (size,) = _I32.unpack_from(buf, pos)
        pos += 4
        if size == -1:
            values.append(None)
            continue
        if size < 0 or pos + size > end:
            raise ProtocolError("DataRow value does not fit the message")
        values.append(_sample_value(bytes(buf[pos : pos + min(size, MAX_SAMPLE_VALUE)])))
        pos += size
    if pos != end:
        raise ProtocolError("DataRow is longer than its values")
    return values


def _name(raw: bytes, codec: str) -> str:
    """A statement or portal name of Bind, Describe or Close, read as strictly as Parse and
    Execute read theirs. A lenient decoding would give two names the server tells apart
    (byte 0xFF and U+FFFD, under LATIN1) one entry here, and a Bind would be judged by
    the wrong statement."""
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        raise ProtocolError(f"a statement or portal name is not valid {codec}") from None


def _wire_value(masked: bytes | str | None, original: bytes | str | None) -> bytes | None:
    """A masked value as DataRow bytes. A binary value the masker changed becomes NULL."""
    if isinstance(masked, str):
        return masked.encode("utf-8")
    if masked is not None and masked != original:
        return None
    return masked


# Types whose binary format is their UTF-8 text: a masked value can be sent as text.
_TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705, 18})
_JSONB = 3802
_JSON_TYPES = frozenset({114, _JSONB})


def _typed_values(
    out: tuple[bytes | None, ...],
    texts: Sequence[bytes | str | None],
    masked: Sequence[bytes | str | None],
    result: Result,
) -> tuple[tuple[bytes | None, ...], bool]:
    """The row with masked values made readable for their column's type: a JSON value
    becomes a JSON string (`"********"`, so a driver still parses it), and a binary-format
    value of any other non-text type becomes NULL (a driver would misread `********` as an
    integer or a timestamp). Also whether a value became NULL."""
    types = result.types or ()
    formats = result.formats
    nulled = False
    row = list(out)
    for index, value in enumerate(row):
        if value is None or masked[index] == texts[index]:
            continue
        oid = types[index] if index < len(types) else 0
        code = formats[0] if len(formats) == 1 else _at(formats, index)
        if oid in _JSON_TYPES:
            quoted = json.dumps(value.decode("utf-8", "replace")).encode("utf-8")
            row[index] = b"\x01" + quoted if code == 1 and oid == _JSONB else quoted
        elif code == 1 and oid not in _TEXT_TYPES:
            row[index] = None
            nulled = True
    return tuple(row), nulled


def _binary_text(result: Result, index: int, value: bytes | None) -> str | None:
    """A binary-format value of a type `readable` knows, as its text; None otherwise."""
    formats = result.formats
    if value is None or (formats[0] if len(formats) == 1 else _at(formats, index)) != 1:
        return None
    types = result.types or ()
    oid = types[index] if index < len(types) else 0
    return None if oid in _TEXT_TYPES else readable(oid, value)


def _at(codes: tuple[int, ...], index: int) -> int:
    return codes[index] if index < len(codes) else 0


def _result_formats(bind_body: bytes) -> tuple[int, ...]:
    try:
        return Bind.decode(bind_body).result_formats
    except ProtocolError:
        return ()


def _sample_text(value: str | None) -> str | None:
    return None if value is None else value[:MAX_SAMPLE_VALUE]


def _sample_value(value: bytes | None) -> str | bytes | None:
    if value is None:
        return None
    cut = value[:MAX_SAMPLE_VALUE]
    try:
        return cut.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(cut)


def _params(bind_body: bytes, codec: str = "utf-8") -> list[str | bytes | None]:
    """A Bind's parameters for the record: text ones as text, binary ones as bytes."""
    try:
        bind = Bind.decode(bind_body, codec)
    except ProtocolError:
        return []
    out: list[str | bytes | None] = []
    for index, value in enumerate(bind.params):
        if value is None:
            out.append(None)
        elif bind.param_format(index) == 0:
            out.append(value[:MAX_SAMPLE_VALUE].decode(codec, errors="replace"))
        else:
            out.append(bytes(value[:MAX_SAMPLE_VALUE]))
    return out


_ALLOWED = Verdict(Action.ALLOW, Basis.DEFAULT, "")
_UNKNOWN_ENCODING = (
    "hoop: an earlier statement of this batch sets client_encoding to a value the gateway "
    "cannot tell before it runs, so the gateway cannot read the rest of the batch as the "
    "server will: send it after a Sync"
)
_SYNTAX_HINT = "hoop: the gateway's SQL parser rejected it, so it was not sent to the server"


def _row_mask(act: MaskAct, row: int) -> tuple[object, ...]:
    """The fields of a MASK event for a result row: channel 0, the 1-based row as position,
    and the column (None when its name is not known, as for a COPY with value detectors
    only)."""
    return (0, act.rule, row, act.length, act.token, act.column or None)


def _unknown(why: str, statement: str | None = None) -> Verdict:
    return Verdict(Action.DENY, Basis.UNPARSABLE, why, None, statement)


def _merged(old: Prepared, new: Prepared) -> Prepared:
    """One of two bodies, not knowing which: judged as the more severe, with both bodies'
    classes for an EXECUTE."""
    verdict = (
        new.verdict if new.verdict.action.severity >= old.verdict.action.severity else (old.verdict)
    )
    statements = (old.found.statements if old.found else ()) + (
        new.found.statements if new.found else ()
    )
    outputs = new.outputs.merged(old.outputs) if new.outputs is not None else old.outputs
    return Prepared(new.sql, verdict, None, sqlclass.Classified(statements), outputs=outputs)


def _bodies(
    found: sqlclass.Classified, statements: dict[str, Prepared], depth: int = 0
) -> list[sqlclass.Statement]:
    """The statements a prepared body runs, following an EXECUTE inside it (a Parse of
    `EXECUTE q`) a few levels deep; deeper than that counts as unparsable."""
    out = list(found.statements)
    for statement in found.statements:
        for name in statement.named.executes if statement.named else ():
            inner = statements.get(name)
            if depth >= 4:
                out.append(sqlclass.Statement(statement.text, frozenset({sqlclass.UNPARSABLE})))
            elif inner is not None and inner.found is not None:
                out.extend(_bodies(inner.found, statements, depth + 1))
    return out


def _forget(table: dict[str, Any], name: str, which: object = None) -> Callable[[], None]:
    """Forget `name` once its close succeeded, unless it was redefined meanwhile (then the
    newer definition stays)."""
    current = table.get(name) if which is None else which

    def forget() -> None:
        if current is not None and table.get(name) is current:
            del table[name]

    return forget
