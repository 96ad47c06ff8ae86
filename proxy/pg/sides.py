"""What the two readers of a session's traffic (`frontend.FrontendSide` for the client's
messages, `backend.BackendSide` for the server's) need of the session they read for, as
Protocols: `SessionCore` here is what both use; each side adds its own in its module
(`FrontendSession`, `BackendSession`). `session.PgSession` has it all. The sides import
this, never `session`, so the session sits above its two readers."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from proxy.pg.encodings import EncodingState
from proxy.pg.expect import Expect, State
from proxy.pg.results import CopyMasking
from proxy.pg.statements import PreparedNames
from proxy.policy import Verdict
from storage.masking import Masker


class SqlRecorder(Protocol):
    """The typed recording methods a PostgreSQL session uses (`proxy.session.GatewaySession`
    has them); each returns False when nothing was recorded."""

    def record_sql_statement(self, statement: str, params: list[Any]) -> bool: ...

    def record_sql_result(
        self, columns: list[Any], rows: int, sample: list[Any], duration_us: int
    ) -> bool: ...

    def record_sql_error(self, sqlstate: str, message: str) -> bool: ...

    def record_verdict(self, channel: int, verdict: Verdict) -> bool: ...

    def record_mask(
        self,
        channel: int,
        rule: str,
        position: int,
        length: int,
        token: str,
        column: str | None = None,
    ) -> bool: ...


class SessionCore(Protocol):
    """What both sides read or change of their session: the state of the client's reading,
    what the server owes the client (`expects`), the encoding, the prepared names, masking,
    and the recording (`kept` ends the session when a `record_*` call failed)."""

    state: State

    @property
    def expects(self) -> deque[Expect]: ...

    @property
    def encoding(self) -> EncodingState: ...

    @property
    def names(self) -> PreparedNames: ...

    @property
    def masker(self) -> Masker | None: ...

    @property
    def copying(self) -> CopyMasking | None: ...

    @property
    def recorder(self) -> SqlRecorder: ...

    @property
    def clock_ns(self) -> Callable[[], int]: ...

    def kept(self, recorded: bool) -> bool: ...
