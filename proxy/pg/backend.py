"""The server's messages after login, one handler per message type (a dispatch table), for
`PgSession`: each answer is matched with the client message it answers (`Expect`), results
are recorded and masked (`results.py`), and a change of client_encoding or
standard_conforming_strings the gateway cannot follow ends the session."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from proxy.pg import classify as sqlclass
from proxy.pg.encodings import conforming_refusal, encoding_refusal
from proxy.pg.expect import ANSWERED_BY_READY, LOCAL_KINDS, RESULT_KINDS, Expect, Kind, State
from proxy.pg.results import Result, ResultMasking, sample_row
from proxy.pg.sides import SessionCore
from proxy.pg.wire import (
    Backend,
    CommandComplete,
    DataRow,
    ErrorResponse,
    Field,
    MessageReader,
    ParameterStatus,
    ProtocolError,
    ReadyForQuery,
    RowDescription,
)

_CLIENT_ENCODING_STATUS = sqlclass.CLIENT_ENCODING.encode() + b"\x00"
_CONFORMING_STATUS = sqlclass.STANDARD_CONFORMING_STRINGS.encode() + b"\x00"
_ENDS_SESSION = frozenset({"FATAL", "PANIC"})
_ASYNC_CODES = (Backend.NOTICE_RESPONSE, Backend.NOTIFICATION_RESPONSE, Backend.PARAMETER_STATUS)
COLUMN_CACHE = 256  # RowDescriptions a session keeps decoded


class BackendSession(SessionCore, Protocol):
    """What `BackendSide` needs of its session besides `SessionCore`: the server's bytes,
    the client's output, the transaction status, result masking and the session's end."""

    to_client: bytearray
    status: str  # the last ReadyForQuery's transaction status
    upstream_fatal: bool

    @property
    def upstream(self) -> MessageReader: ...

    @property
    def masking(self) -> ResultMasking | None: ...

    @property
    def sample_rows(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def set_client_encoding(self, value: str | None) -> None: ...

    def fatal(self, sqlstate: str, message: str) -> None: ...


class BackendSide:
    """Reads the server's messages for a session. Each handler says whether the message
    goes to the client as it came (True), or was replaced or kept back (False)."""

    def __init__(self, session: BackendSession) -> None:
        self.session = session
        self.sides = 0  # the gateway's own questions before a COPY, not yet answered
        self.column_cache: dict[bytes, tuple[tuple[str, ...], tuple[int, ...]]] = {}

    def pump(self) -> None:
        session = self.session
        reader = session.upstream
        buf = reader.buffer
        out = session.to_client
        expects = session.expects
        while session.state is not State.CLOSED:
            span = reader.next_span()
            if span is None:
                return
            type_code, start, end = span
            handler = _HANDLERS.get(type_code)
            if handler is None:
                raise ProtocolError(f"unknown backend message type {chr(type_code)!r}")
            if not (self.sides and self._side_message(type_code, buf, start, end)) and handler(
                self, buf, start, end
            ):
                out += buf[start:end]
            if expects and expects[0].kind in LOCAL_KINDS:
                self._flush_local()

    def _flush_local(self) -> None:
        session = self.session
        expects = session.expects
        while expects and expects[0].kind in LOCAL_KINDS:
            entry = expects.popleft()
            if entry.kind is Kind.LOCAL:
                session.to_client += entry.data
            else:
                session.to_client += ReadyForQuery(session.status).encode()

    def _head(self) -> Expect | None:
        expects = self.session.expects
        return expects[0] if expects else None

    def _pop(self, kind: Kind) -> Expect | None:
        """Finish the head entry if it is `kind` (a lenient relay: unexpected order is passed
        through, never fatal)."""
        head = self._head()
        if head is not None and head.kind is kind:
            return self.session.expects.popleft()
        return None

    def _result(self, head: Expect) -> Result | None:
        if head.current is None and head.results:
            head.current = head.results.popleft()
        return head.current

    def _side_message(self, type_code: int, buf: bytearray, start: int, end: int) -> bool:
        """An answer to `FrontendSide.ask_columns`, kept from the client; False for
        everything else."""
        head = self._head()
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
                self.session.status = chr(buf[start + 5])
            self.session.expects.popleft()
            self.sides -= 1
            if not job.failed and job.learned:
                job.columns = job.learned
        return True

    # -- the handlers -----------------------------------------------------------------------------

    def _up_async(self, buf: bytearray, start: int, end: int) -> bool:
        return True  # straight through

    def _up_parameter_status(self, buf: bytearray, start: int, end: int) -> bool:
        """The server reports a new client_encoding after whatever changed it, also where the
        gateway could not see the change (dynamic SQL): one the session may not use ends it,
        since what follows would be read in an encoding the gateway does not read. The same
        for standard_conforming_strings turned off."""
        session = self.session
        encoding = buf.startswith(_CLIENT_ENCODING_STATUS, start + 5)
        if not encoding and not buf.startswith(_CONFORMING_STATUS, start + 5):
            return True
        value = ParameterStatus.decode(bytes(buf[start + 5 : end])).value
        if encoding:
            refusal = encoding_refusal(value, masking=session.masker is not None)
        else:
            refusal = conforming_refusal(value)
        if refusal is None:
            if encoding:
                session.set_client_encoding(value)
                session.encoding.may_revert = True  # until the transaction is known over
            return True
        session.fatal(refusal[0], refusal[1] + "; the server switched to it, so the session ends")
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

    def _up_no_data(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is not None and head.kind is Kind.DESCRIBE:
            self._describe_done(head, None)
        return True

    def _up_row_description(self, buf: bytearray, start: int, end: int) -> bool:
        body = bytes(buf[start + 5 : end])
        described = self.column_cache.get(body)
        if described is None:
            decoded = RowDescription.decode(body, self.session.encoding.codec).columns
            described = (tuple(c.name for c in decoded), tuple(c.type_oid for c in decoded))
            if len(self.column_cache) < COLUMN_CACHE:
                self.column_cache[body] = described
        names, types = described
        head = self._head()
        if head is None:
            return True
        if head.kind is Kind.DESCRIBE:
            self._describe_done(head, list(names), types)
        else:
            result = self._result(head)
            if result is not None:
                result.columns = list(names)
                result.types = types
        return True

    def _describe_done(
        self, head: Expect, columns: list[str] | None, types: tuple[int, ...] | None = None
    ) -> None:
        names = self.session.names
        self.session.expects.popleft()
        table = names.statements if head.describe_kind == "S" else names.portals
        described = table.get(head.name)
        if described is not None:
            described.columns = columns
            described.types = types

    def _up_data_row(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is None or head.kind not in RESULT_KINDS:
            return True
        result = self._result(head)
        if result is None:
            return True
        result.rows += 1
        masking = self.session.masking
        if masking is not None and masking.row(result, buf, start, end):
            return False
        if len(result.sample) < self.session.sample_rows:
            result.sample.append(sample_row(bytes(buf[start + 5 : end])))
        return True

    def _up_command_complete(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is None or head.kind not in RESULT_KINDS:
            return True
        if buf[end - 1] != 0:
            raise ProtocolError("CommandComplete tag is not NUL-terminated")
        tag = CommandComplete(buf[start + 5 : end - 1].decode("utf-8", errors="replace"))
        result = self._result(head)
        head.current = None
        if result is not None:
            if result.on_done is not None:
                result.on_done()
            rows = tag.rows
            self._record_result(result, rows if rows is not None else result.rows)
        if head.kind is Kind.EXECUTE:
            self.session.expects.popleft()
        return True

    def _record_result(self, result: Result, rows: int) -> None:
        elapsed_us = (self.session.clock_ns() - result.started_ns) // 1000
        recorder = self.session.recorder
        self.session.kept(
            recorder.record_sql_result(result.columns or [], rows, result.sample, elapsed_us)
        )

    def _up_empty_query(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._head()
        if head is not None and head.kind in RESULT_KINDS:
            self._result(head)
            head.current = None
            if head.kind is Kind.EXECUTE:
                self.session.expects.popleft()
        return True

    def _up_portal_suspended(self, buf: bytearray, start: int, end: int) -> bool:
        head = self._pop(Kind.EXECUTE)
        if head is not None:
            result = self._result(head)
            if result is not None:
                self._record_result(result, result.rows)
        return True

    def _up_notification(self, buf: bytearray, start: int, end: int) -> bool:
        masking = self.session.masking
        return masking is None or not masking.notification(bytes(buf[start + 5 : end]))

    def _up_notice(self, buf: bytearray, start: int, end: int) -> bool:
        masking = self.session.masking
        if masking is None:
            return True
        return not masking.notice(bytes(buf[start + 5 : end]), self.session.encoding.codec)

    def _up_error(self, buf: bytearray, start: int, end: int) -> bool:
        session = self.session
        head = self._head()
        if head is not None and head.kind is Kind.ABORT:
            session.expects.popleft()  # the failure the gateway asked for: not the client's
            return False
        error = ErrorResponse.decode(bytes(buf[start + 5 : end]), session.encoding.codec)
        if error.get(Field.SEVERITY_NONLOCALIZED, error.get(Field.SEVERITY)) in _ENDS_SESSION:
            session.upstream_fatal = True
        if session.copying is not None:
            session.copying.failed()
        masked = session.masking.report(error) if session.masking is not None else None
        shown = masked or error
        session.kept(session.recorder.record_sql_error(shown.sqlstate, shown.message))
        self._after_error()
        if masked is None:
            return True
        session.to_client += masked.encode()
        return False

    def _after_error(self) -> None:
        expects = self.session.expects
        head = self._head()
        if head is None:
            return
        if head.kind is Kind.QUERY:
            self._result(head)
            head.current = None
            head.results = deque()  # the rest of the string is not run
            return
        # Extended protocol: the server skips everything until Sync.
        while expects and expects[0].kind not in (Kind.SYNC, Kind.LOCAL, Kind.LOCAL_READY):
            skipped = expects.popleft()
            if skipped.refusal is not None:
                # The batch failed before the refused message: PostgreSQL would report that
                # failure alone, and the refusal is moot.
                skipped.refusal.data = b""

    def _up_ready(self, buf: bytearray, start: int, end: int) -> bool:
        session = self.session
        status = buf[start + 5 : end]
        if len(status) != 1 or status[0] not in b"ITE":
            raise ProtocolError("bad ReadyForQuery")
        session.status = chr(status[0])
        swallow = False
        expects = session.expects
        while expects:
            head = expects[0]
            if head.kind in LOCAL_KINDS:
                break
            expects.popleft()
            if head.kind in ANSWERED_BY_READY:
                swallow = head.swallow
                break
        if session.status == "I" and not any(e.kind in ANSWERED_BY_READY for e in expects):
            session.encoding.may_revert = False  # no transaction left that could set it back
        return not swallow

    def _up_copy_out(self, buf: bytearray, start: int, end: int) -> bool:
        copying = self.session.copying
        if copying is None:
            return True
        head = self._head()
        result = self._result(head) if head is not None and head.kind in RESULT_KINDS else None
        return copying.response(result, bytes(buf[start + 5 : end]))

    def _up_copy_data(self, buf: bytearray, start: int, end: int) -> bool:
        copying = self.session.copying
        return copying is None or copying.data(bytes(buf[start + 5 : end]))

    def _up_copy_done(self, buf: bytearray, start: int, end: int) -> bool:
        if self.session.copying is not None:
            self.session.copying.done()
        return not self.session.closed

    def _up_login_only(self, buf: bytearray, start: int, end: int) -> bool:
        raise ProtocolError(f"login message {chr(buf[start])!r} after the login")


_Handler = Callable[[BackendSide, bytearray, int, int], bool]
_HANDLERS: dict[int, _Handler] = {
    Backend.NOTICE_RESPONSE: BackendSide._up_notice,
    Backend.NOTIFICATION_RESPONSE: BackendSide._up_notification,
    Backend.PARAMETER_STATUS: BackendSide._up_parameter_status,
    Backend.PARSE_COMPLETE: BackendSide._up_parse_complete,
    Backend.BIND_COMPLETE: BackendSide._up_bind_complete,
    Backend.CLOSE_COMPLETE: BackendSide._up_close_complete,
    Backend.PARAMETER_DESCRIPTION: BackendSide._up_async,  # a statement Describe's first half
    Backend.NO_DATA: BackendSide._up_no_data,
    Backend.ROW_DESCRIPTION: BackendSide._up_row_description,
    Backend.DATA_ROW: BackendSide._up_data_row,
    Backend.COMMAND_COMPLETE: BackendSide._up_command_complete,
    Backend.EMPTY_QUERY_RESPONSE: BackendSide._up_empty_query,
    Backend.PORTAL_SUSPENDED: BackendSide._up_portal_suspended,
    Backend.ERROR_RESPONSE: BackendSide._up_error,
    Backend.READY_FOR_QUERY: BackendSide._up_ready,
    Backend.COPY_IN_RESPONSE: BackendSide._up_async,
    Backend.COPY_OUT_RESPONSE: BackendSide._up_copy_out,
    Backend.COPY_BOTH_RESPONSE: BackendSide._up_async,
    Backend.COPY_DATA: BackendSide._up_copy_data,
    Backend.COPY_DONE: BackendSide._up_copy_done,
    Backend.FUNCTION_CALL_RESPONSE: BackendSide._up_async,
    Backend.AUTHENTICATION: BackendSide._up_login_only,
    Backend.BACKEND_KEY_DATA: BackendSide._up_login_only,
    Backend.NEGOTIATE_PROTOCOL_VERSION: BackendSide._up_login_only,
}
