"""The client's messages after login, one handler per message type (a dispatch table), for
`PgSession`: each statement is analysed and judged, then run (`FrontendSide.run`, the one
path a statement takes upstream, at once or when its hold is decided) or refused."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from proxy.pg import classify as sqlclass
from proxy.pg.analysis import StatementAnalysis
from proxy.pg.backend import BackendSide
from proxy.pg.copy_out import CopyJob, CopyOut, learn_columns_messages
from proxy.pg.encodings import (
    FEATURE_NOT_SUPPORTED,
    INSUFFICIENT_PRIVILEGE,
    conforming_refusal,
    encoding_refusal,
)
from proxy.pg.expect import Expect, Kind, State
from proxy.pg.lineage import OutputMasks, lineages
from proxy.pg.results import Result, bind_params, result_formats, whole_rule
from proxy.pg.settings import UnparsableMode
from proxy.pg.sides import SessionCore
from proxy.pg.statements import Portal, Prepared, unknown
from proxy.pg.wire import Execute, Frontend, Parse, ProtocolError, Query
from proxy.policy import Action, Basis, Verdict

SYNTAX_ERROR = "42601"
SQL_CODES = (Frontend.QUERY, Frontend.PARSE)  # messages whose text is judged as SQL
COPY_CODES = (Frontend.COPY_DATA, Frontend.COPY_DONE, Frontend.COPY_FAIL)
SYNTAX_HINT = "hoop: the gateway's SQL parser rejected it, so it was not sent to the server"
UNKNOWN_ENCODING = (
    "hoop: an earlier statement of this batch sets client_encoding to a value the gateway "
    "cannot tell before it runs, so the gateway cannot read the rest of the batch as the "
    "server will: send it after a Sync"
)
STORES_REFUSAL = (
    "hoop: a value computed by the query kept in a setting, large object or sequence "
    "(set_config, lo_from_bytea, lo_put, lowrite, setval) is refused where column masks "
    "apply: a later read would show it unmasked"
)
FUNCTION_CALL = "(fast-path function call)"


class Step(enum.Enum):
    """What running a judged statement is."""

    QUERY = "query"
    PARSE = "parse"
    EXECUTE = "execute"


@dataclass(slots=True)
class Planned:
    """A judged statement and what running it takes: the message, and what its results are
    recorded and masked against. Held ones wait in `PgSession.held`."""

    step: Step
    raw: bytes
    sql: str
    extended: bool
    analysis: StatementAnalysis | None = None
    results: deque[Result] = field(default_factory=deque)  # QUERY: one per statement
    name: str = ""  # PARSE: the statement's name
    verdict: Verdict | None = None  # PARSE: what every Execute of it is judged by
    copy: CopyOut | None = None  # PARSE: a COPY TO STDOUT whose rows are masked
    portal: Portal | None = None  # EXECUTE
    prepared: Prepared | None = None  # EXECUTE
    shown: str = ""  # what an approver reads, when more than `sql` (see PreparedNames.shown)


class FrontendSession(SessionCore, Protocol):
    """What `FrontendSide` needs of its session besides `SessionCore`: analysing and judging
    a statement, refusing one, the bytes for the server, and the batch and encoding state."""

    to_upstream: bytearray
    batch_open: bool  # extended messages forwarded since the last Sync

    @property
    def analyze(self) -> Callable[[str], StatementAnalysis]: ...

    @property
    def unparsable(self) -> UnparsableMode: ...

    @property
    def typos_are_syntax_errors(self) -> bool: ...

    @property
    def backend(self) -> BackendSide: ...

    def verdict(self, found: sqlclass.Classified) -> Verdict: ...

    def judge(self, verdict: Verdict, planned: Planned) -> None: ...

    def refuse(
        self, extended: bool, message: str, sqlstate: str, statement: str, hint: str = ""
    ) -> None: ...

    def outputs_of(self, analysis: StatementAnalysis) -> tuple[OutputMasks | None, ...]: ...

    def settle(self) -> bool: ...

    def local_ready(self) -> None: ...

    def end(self, reason: str) -> None: ...


class FrontendSide:
    """Reads the client's messages for a session."""

    def __init__(self, session: FrontendSession) -> None:
        self.session = session

    def dispatch(self, type_code: int, raw: bytes) -> None:
        handler = _HANDLERS.get(type_code)
        if handler is None:
            raise ProtocolError(f"unknown frontend message type {chr(type_code)!r}")
        handler(self, raw)

    def run(self, planned: Planned) -> None:
        """Send a judged statement upstream: the one path, at once or after its hold."""
        _STEPS[planned.step](self, planned)

    # -- checks before judging ------------------------------------------------------------------

    def refused_early(self, analysis: StatementAnalysis, extended: bool) -> bool:
        """Refuse text the parser rejected (as a syntax error, see `syntax_error`) or that
        would change a setting the gateway must keep; True when it was refused."""
        session, found, sql = self.session, analysis.found, analysis.text
        if self.syntax_error(found):
            session.kept(session.recorder.record_sql_statement(sql, []))
            session.refuse(extended, found.error or "", SYNTAX_ERROR, sql, SYNTAX_HINT)
            return True
        refusal = self.setting_refusal(found)
        if refusal is not None:
            session.kept(session.recorder.record_sql_statement(sql, []))
            session.refuse(extended, refusal[1], refusal[0], sql)
            return True
        return False

    def syntax_error(self, found: sqlclass.Classified) -> bool:
        """Whether text the parser rejected is answered with its syntax error (42601, nothing
        sent): always with `unparsable = "syntax_error"`; with "policy", when the policy is
        permissive (`typos_are_syntax_errors`) and no rule names the text (its verdict would
        only be `[policy] unparsable`). Nothing runs either way."""
        if found.error is None:
            return False
        session = self.session
        if session.unparsable is UnparsableMode.SYNTAX_ERROR:
            return True
        return session.typos_are_syntax_errors and session.verdict(found).basis is Basis.UNPARSABLE

    def setting_refusal(self, found: sqlclass.Classified) -> tuple[str, str] | None:
        """A statement that sets a client_encoding the session may not use, or turns
        standard_conforming_strings off, refused before the upstream sees it (see
        `encoding_refusal` and `conforming_refusal`); one that keeps a computed value where
        a later read would pass the column masks."""
        masker = self.session.masker
        for statement in found.statements:
            for value in statement.encodings:
                refusal = encoding_refusal(value, masking=masker is not None)
                if refusal is not None:
                    return refusal
            for value in statement.conforming:
                refusal = conforming_refusal(value)
                if refusal is not None:
                    return refusal
            if statement.stores and masker is not None and whole_rule(masker):
                return INSUFFICIENT_PRIVILEGE, STORES_REFUSAL
        return None

    # -- the simple protocol ----------------------------------------------------------------

    def on_query(self, raw: bytes) -> None:
        session = self.session
        sql = _query_text(raw, session.encoding.codec)
        analysis = session.analyze(sql)
        if self.refused_early(analysis, False):
            return
        found = analysis.found
        verdict = session.verdict(found)
        planned = Planned(Step.QUERY, raw, sql, False, analysis)
        for statement in found.statements or (sqlclass.Statement(sql, frozenset()),):
            text = statement.text  # an SQL EXECUTE with the body it runs (see `shown`)
            if statement.named is not None and statement.named.executes:
                text = session.names.shown(sqlclass.Classified((statement,)), text)
            if not session.kept(session.recorder.record_sql_statement(text, [])):
                return
            planned.results.append(Result(statement.text, 0))
        if session.copying is not None and sqlclass.COPY_OUT in found.classes:
            refusal = session.copying.jobs(found, analysis.copies(), planned.results)
            if refusal:
                session.refuse(False, refusal, INSUFFICIENT_PRIVILEGE, sql)
                return
        if any(statement.named for statement in found.statements):
            planned.shown = session.names.shown(found, sql)  # what an approver reads
        session.judge(verdict, planned)

    def _run_query(self, planned: Planned) -> None:
        session, analysis = self.session, planned.analysis
        assert analysis is not None
        found, results = analysis.found, planned.results
        now = session.clock_ns()
        for result in results:
            result.started_ns = now
            if result.copy is not None and result.copy.columns is None:
                self.ask_columns(result)
        statements = found.statements
        for index, (statement, result) in enumerate(zip(statements, results, strict=False)):
            if statement.named is not None:
                result.on_done = self.named_effects(analysis, index)
        if session.masker is not None and session.masker.uses_columns:
            outputs = session.outputs_of(analysis)
            for index, (statement, result) in enumerate(zip(statements, results, strict=False)):
                own = outputs[index] if index < len(outputs) else None
                executed = session.names.executed_outputs(statement)
                result.outputs = executed or session.names.cursor_outputs(own)
        session.expects.append(Expect(Kind.QUERY, results=results))
        session.to_upstream += planned.raw
        if session.encoding.may_change(statements, planned.sql):
            session.state = State.SETTLING
            session.encoding.may_revert = True

    def named_effects(self, analysis: StatementAnalysis, index: int) -> Callable[[], None] | None:
        """See `PreparedNames.named_effects`; a PREPARE's output masks from its lineage."""
        session = self.session
        statement = analysis.found.statements[index]
        outputs = None
        masker = session.masker
        named = statement.named
        if masker is not None and masker.uses_columns and named and named.prepares is not None:
            lineage = analysis.lineage(index)
            outputs = OutputMasks.build(lineage, masker) if lineage is not None else None
        return session.names.named_effects(statement, outputs)

    def _prepares(self, statement: sqlclass.Statement) -> OutputMasks | None:
        """The output masks of an SQL PREPARE run by a prepared statement's Execute."""
        masker = self.session.masker
        named = statement.named
        if masker is None or not masker.uses_columns or not named or named.prepares is None:
            return None
        found = lineages(statement.text)
        return OutputMasks.build(found[0], masker) if found else None

    def ask_columns(self, result: Result) -> None:
        """Ask the upstream, just before the COPY, which columns it will write."""
        assert result.copy is not None
        session = self.session
        session.expects.append(Expect(Kind.SIDE, swallow=True, current=result))
        session.backend.sides += 1
        session.to_upstream += learn_columns_messages(result.copy.spec)

    # -- the extended protocol --------------------------------------------------------------

    def on_parse(self, raw: bytes) -> None:
        session = self.session
        if session.encoding.unknown:
            session.refuse(True, UNKNOWN_ENCODING, FEATURE_NOT_SUPPORTED, "")
            return
        parse = Parse.decode(raw[5:], session.encoding.codec)
        analysis = session.analyze(parse.sql)
        if self.refused_early(analysis, True):
            return
        verdict = session.verdict(analysis.found)
        planned = Planned(Step.PARSE, raw, parse.sql, True, analysis, name=parse.name)
        planned.verdict = verdict
        if session.copying is not None and sqlclass.COPY_OUT in analysis.found.classes:
            planned.copy = analysis.copy()
            refusal = session.copying.refusal(planned.copy, extended=True) if planned.copy else None
            if refusal:
                session.kept(session.recorder.record_sql_statement(parse.sql, []))
                session.refuse(True, refusal, INSUFFICIENT_PRIVILEGE, parse.sql)
                return
        if verdict.action is Action.REVIEW:
            self.run(planned)  # preparing runs nothing: the hold comes at each Execute
            return
        if verdict.action is Action.DENY:
            session.kept(session.recorder.record_sql_statement(parse.sql, []))
        session.judge(verdict, planned)

    def _run_parse(self, planned: Planned) -> None:
        session, analysis = self.session, planned.analysis
        assert analysis is not None and planned.verdict is not None
        outputs = None
        if session.masker is not None and session.masker.uses_columns:
            outputs = next(iter(session.outputs_of(analysis)), None)
            for statement in analysis.found.statements:
                outputs = session.names.executed_outputs(statement) or outputs
        prepared = Prepared(
            planned.sql, planned.verdict, found=analysis.found, copy=planned.copy, outputs=outputs
        )
        session.names.define(planned.name, prepared)
        session.expects.append(Expect(Kind.PARSE, name=planned.name))
        self._forward(raw=planned.raw)

    def on_bind(self, raw: bytes) -> None:
        body = raw[5:]
        portal_end = body.find(b"\x00")
        statement_end = body.find(b"\x00", portal_end + 1)
        if portal_end < 0 or statement_end < 0:
            raise ProtocolError("Bind without portal and statement names")
        codec = self.session.encoding.codec
        portal = _name(body[:portal_end], codec)
        statement = _name(body[portal_end + 1 : statement_end], codec)
        self.session.names.bind(portal, statement, body)
        self.session.expects.append(Expect(Kind.BIND))
        self._forward(raw)

    def on_describe(self, raw: bytes) -> None:
        kind, name = _target(raw, "Describe", self.session.encoding.codec)
        self.session.expects.append(Expect(Kind.DESCRIBE, name=name, describe_kind=kind))
        self._forward(raw)

    def on_execute(self, raw: bytes) -> None:
        session = self.session
        if session.encoding.unknown:
            session.refuse(True, UNKNOWN_ENCODING, FEATURE_NOT_SUPPORTED, "")
            return
        execute = Execute.decode(raw[5:], session.encoding.codec)
        portal = session.names.portals.get(execute.portal)
        prepared = portal.prepared if portal is not None else None
        sql = prepared.sql if prepared is not None else ""
        params = bind_params(portal.bind, session.encoding.codec) if portal is not None else []
        found = prepared.found if prepared is not None else None
        named = found is not None and any(s.named for s in found.statements)
        shown = session.names.shown(found, sql) if named else sql
        if not session.kept(session.recorder.record_sql_statement(shown, params)):
            return
        planned = Planned(Step.EXECUTE, raw, sql, True, portal=portal, prepared=prepared)
        planned.shown = shown
        if prepared is None:
            # Every Bind and Parse passes through here, so this portal or statement was made
            # where the gateway could not see it (dynamic SQL): it cannot be judged.
            what = f'portal "{execute.portal}"' if portal is None else "its prepared statement"
            verdict = unknown(f"{what} is not known to the gateway, so it cannot be judged")
            session.judge(verdict, planned)
            return
        verdict = prepared.verdict
        if prepared.found is not None and any(s.named for s in prepared.found.statements):
            verdict = session.names.decide_named(prepared.found)  # EXECUTE runs what it is now
        if verdict.action is Action.ALLOW:
            self.run(planned)
        else:
            session.judge(verdict, planned)

    def _run_execute(self, planned: Planned) -> None:
        session, portal, prepared = self.session, planned.portal, planned.prepared
        result = Result(planned.sql, session.clock_ns(), portal.columns if portal else None)
        result.described_by = [item for item in (portal, prepared) if item is not None]
        if prepared is not None:
            result.outputs = session.names.cursor_outputs(prepared.outputs)
            if prepared.copy is not None:
                columns = prepared.copy.columns
                result.copy = CopyJob(prepared.copy, list(columns) if columns else None)
        if portal is not None:
            result.formats = result_formats(portal.bind)
        statements = prepared.found.statements if prepared and prepared.found else ()
        for statement in statements:
            if statement.named is not None:
                result.on_done = session.names.named_effects(statement, self._prepares(statement))
        session.expects.append(Expect(Kind.EXECUTE, results=deque([result])))
        self._forward(planned.raw)
        changes = session.encoding.may_change(statements, planned.sql)
        if changes and session.encoding.executed(statements):
            session.backend.column_cache.clear()

    def on_close(self, raw: bytes) -> None:
        kind, name = _target(raw, "Close", self.session.encoding.codec)
        forget = self.session.names.closing(kind, name)
        self.session.expects.append(Expect(Kind.CLOSE, on_done=forget))
        self._forward(raw)

    def on_sync(self, raw: bytes) -> None:
        session = self.session
        session.encoding.unknown = False
        if session.state is State.DISCARDING:
            session.state = State.READY
            session.local_ready()
        else:
            session.expects.append(Expect(Kind.SYNC))
            session.to_upstream += raw
            session.batch_open = False
        if session.encoding.after_sync:
            session.encoding.after_sync = False
            session.state = State.SETTLING
            session.settle()

    def _forward(self, raw: bytes) -> None:
        """An extended-protocol message goes upstream: a batch is open until its Sync."""
        self.session.to_upstream += raw
        self.session.batch_open = True

    # -- the rest -----------------------------------------------------------------------------

    def on_passthrough(self, raw: bytes) -> None:
        """Flush and the COPY sub-protocol: no answer of their own."""
        self.session.to_upstream += raw

    def on_function_call(self, raw: bytes) -> None:
        session = self.session
        recorder = session.recorder
        session.kept(recorder.record_sql_statement(FUNCTION_CALL, []))
        why = "fast-path function calls bypass SQL inspection"
        session.kept(recorder.record_verdict(0, Verdict(Action.DENY, Basis.OPAQUE, why)))
        session.refuse(
            False,
            "hoop: fast-path function calls are not allowed by the gateway",
            INSUFFICIENT_PRIVILEGE,
            FUNCTION_CALL,
        )

    def on_terminate(self, raw: bytes) -> None:
        self.session.to_upstream += raw
        self.session.end("client terminated")

    def on_password(self, raw: bytes) -> None:
        raise ProtocolError("a password message after the login")


def _query_text(raw: bytes, codec: str) -> str:
    """A Query message's SQL, decoded in the client encoding (ProtocolError when it is not
    a well-formed, well-encoded string)."""
    if raw[-1] != 0 or raw.find(b"\x00", 5) != len(raw) - 1:
        return Query.decode(raw[5:], codec).sql  # raises the precise ProtocolError
    try:
        return raw[5:-1].decode(codec)
    except UnicodeDecodeError:
        return Query.decode(raw[5:], codec).sql  # raises the ProtocolError


def _target(raw: bytes, what: str, codec: str) -> tuple[str, str]:
    """The kind ("S" statement, "P" portal) and name of a Describe or Close."""
    body = raw[5:]
    if len(body) < 2 or body[-1] != 0 or body[0] not in b"SP":
        raise ProtocolError(f"malformed {what}")
    return chr(body[0]), _name(body[1:-1], codec)


def _name(raw: bytes, codec: str) -> str:
    """A statement or portal name of Bind, Describe or Close, read as strictly as Parse and
    Execute read theirs. A lenient decoding would give two names the server tells apart
    (byte 0xFF and U+FFFD, under LATIN1) one entry here, and a Bind would be judged by
    the wrong statement."""
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        raise ProtocolError(f"a statement or portal name is not valid {codec}") from None


_Handler = Callable[[FrontendSide, bytes], None]
_HANDLERS: dict[int, _Handler] = {
    Frontend.QUERY: FrontendSide.on_query,
    Frontend.PARSE: FrontendSide.on_parse,
    Frontend.BIND: FrontendSide.on_bind,
    Frontend.DESCRIBE: FrontendSide.on_describe,
    Frontend.EXECUTE: FrontendSide.on_execute,
    Frontend.CLOSE: FrontendSide.on_close,
    Frontend.SYNC: FrontendSide.on_sync,
    Frontend.FLUSH: FrontendSide.on_passthrough,
    Frontend.COPY_DATA: FrontendSide.on_passthrough,
    Frontend.COPY_DONE: FrontendSide.on_passthrough,
    Frontend.COPY_FAIL: FrontendSide.on_passthrough,
    Frontend.FUNCTION_CALL: FrontendSide.on_function_call,
    Frontend.TERMINATE: FrontendSide.on_terminate,
    Frontend.PASSWORD: FrontendSide.on_password,
}
_STEPS: dict[Step, Callable[[FrontendSide, Planned], None]] = {
    Step.QUERY: FrontendSide._run_query,
    Step.PARSE: FrontendSide._run_parse,
    Step.EXECUTE: FrontendSide._run_execute,
}
