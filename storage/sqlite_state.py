"""The embedded `StateStore`: state.db (holds, grants, audit, live sessions, failed logins) and
catalogue.db (one row per recording) in the data directory.

Each file has one `storage.sqlite.Worker`: every call runs on that file's own thread, so the
event loop never waits for SQLite, and a lock another process holds makes only the calls that
need it wait (`BUSY_TIMEOUT_S`, then `StoreUnavailable`). Rows keep their whole object as JSON
beside the columns used to select them, so adding a field needs no migration.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from storage import sqlite
from storage.catalogue import CATALOGUE_NAME, SessionQuery, SessionRow, SqliteCatalogue
from storage.schema import RecordingHeader
from storage.state import (
    STATE_NAME,
    AuditEntry,
    Change,
    DuplicateId,
    Grant,
    GrantStatus,
    Hint,
    HintReceiver,
    Hold,
    HoldStatus,
    LiveSession,
    StoreUnavailable,
)
from storage.writer import RecordingSummary

R = TypeVar("R")
T = TypeVar("T", Hold, Grant)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS holds_status ON holds (status, created_at);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    requested_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_status ON grants (status, requested_at);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS live_sessions (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures (key, at);
"""

# table, its time column, the object's type: what holds and grants share
_KINDS: dict[type[Any], tuple[str, str, str]] = {
    Hold: ("holds", "created_at", "hold"),
    Grant: ("grants", "requested_at", "grant"),
}


class SqliteState:
    """See the module docstring. Construct it anywhere (it opens nothing); use it from one
    event loop."""

    def __init__(
        self,
        path: Path,
        *,
        catalogue_path: Path | None = None,
        gateway_id: str = "",
        busy_timeout_s: float | None = None,
    ) -> None:
        """`busy_timeout_s`: how long a call waits for a lock another process holds before it
        fails with StoreUnavailable (default `storage.sqlite.BUSY_TIMEOUT_S`)."""
        if busy_timeout_s is None:
            busy_timeout_s = sqlite.BUSY_TIMEOUT_S
        self.path = path
        self.gateway_id = gateway_id
        self._state = sqlite.Worker(
            sqlite.Database(path, _SCHEMA, busy_timeout_s=busy_timeout_s, lazy=True)
        )
        catalogue_path = catalogue_path or path.with_name(CATALOGUE_NAME)
        self._catalogue_path = catalogue_path
        self._catalogue: SqliteCatalogue | None = None
        self._catalogue_worker = sqlite.Worker(
            sqlite.Database(catalogue_path, "", busy_timeout_s=busy_timeout_s, lazy=True)
        )  # its own connection stays unopened: the catalogue opens one on this thread
        self._receivers: list[HintReceiver] = []

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, gateway_id: str = "") -> SqliteState:
        return cls(data_dir / STATE_NAME, gateway_id=gateway_id)

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        try:
            return await self._state.run(fn)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(
                f"the state database {self.path} did not answer ({exc}); "
                "another process may hold it locked"
            ) from None

    def _hint(self, kind: str, item_id: str) -> None:
        hint = Hint(kind, item_id, self.gateway_id)
        for receiver in list(self._receivers):
            receiver(hint)

    def on_hint(self, receiver: HintReceiver) -> Callable[[], None]:
        self._receivers.append(receiver)

        def stop() -> None:
            if receiver in self._receivers:
                self._receivers.remove(receiver)

        return stop

    async def close(self) -> None:
        await self._state.close()
        catalogue = self._catalogue
        await self._catalogue_worker.close(*(() if catalogue is None else (catalogue.close,)))

    # -- holds and grants ----------------------------------------------------------------------

    async def _add(self, item: Hold | Grant, audit: AuditEntry) -> None:
        table, time_column, kind = _KINDS[type(item)]
        body = json.dumps(item.to_json())
        created = item.created_at if isinstance(item, Hold) else item.requested_at

        def add(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    f"INSERT INTO {table} (id, status, {time_column}, body) VALUES (?, ?, ?, ?)",
                    (item.id, str(item.status), created, body),
                )
            except sqlite3.IntegrityError:
                raise DuplicateId(item.id) from None
            _insert_audit(db, audit)

        await self._run(lambda db: sqlite.transaction(db, add))
        self._hint(kind, item.id)

    async def _get(self, cls: type[T], item_id: str) -> T | None:
        table = _KINDS[cls][0]

        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute(f"SELECT body FROM {table} WHERE id = ?", (item_id,)).fetchone()
            return None if row is None else str(row[0])

        body = await self._run(get)
        return None if body is None else cls.from_json(json.loads(body))

    async def _list(self, cls: type[T], status: str | None) -> list[T]:
        table, order, _ = _KINDS[cls]
        sql = f"SELECT body FROM {table}"
        params: tuple[str, ...] = ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)

        def select(db: sqlite3.Connection) -> list[str]:
            return [row[0] for row in db.execute(f"{sql} ORDER BY {order}", params)]

        return [cls.from_json(json.loads(body)) for body in await self._run(select)]

    async def _change(self, cls: type[T], item_id: str, change: Change[T]) -> T | None:
        table, _, kind = _KINDS[cls]

        def apply(db: sqlite3.Connection) -> T | None:
            row = db.execute(f"SELECT body FROM {table} WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return None
            item = cls.from_json(json.loads(row[0]))
            entries = change(item)
            db.execute(
                f"UPDATE {table} SET status = ?, body = ? WHERE id = ?",
                (str(item.status), json.dumps(item.to_json()), item_id),
            )
            for entry in entries:
                _insert_audit(db, entry)
            return item

        changed = await self._run(lambda db: sqlite.transaction(db, apply))
        if changed is not None:
            self._hint(kind, item_id)
        return changed

    async def add_hold(self, hold: Hold, audit: AuditEntry) -> None:
        await self._add(hold, audit)

    async def get_hold(self, hold_id: str) -> Hold | None:
        return await self._get(Hold, hold_id)

    async def list_holds(self, status: HoldStatus | None = None) -> list[Hold]:
        return await self._list(Hold, None if status is None else str(status))

    async def change_hold(self, hold_id: str, change: Change[Hold]) -> Hold | None:
        return await self._change(Hold, hold_id, change)

    async def add_grant(self, grant: Grant, audit: AuditEntry) -> None:
        await self._add(grant, audit)

    async def get_grant(self, grant_id: str) -> Grant | None:
        return await self._get(Grant, grant_id)

    async def list_grants(self, status: GrantStatus | None = None) -> list[Grant]:
        return await self._list(Grant, None if status is None else str(status))

    async def change_grant(self, grant_id: str, change: Change[Grant]) -> Grant | None:
        return await self._change(Grant, grant_id, change)

    # -- audit ---------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        await self._run(lambda db: _insert_audit(db, entry))

    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT at, actor, action, subject, detail FROM audit ORDER BY seq DESC"
        params: tuple[int, ...] = ()
        if limit is not None:
            sql, params = sql + " LIMIT ?", (limit,)
        rows = await self._run(lambda db: db.execute(sql, params).fetchall())
        return [AuditEntry(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in reversed(rows)]

    # -- the session catalogue -----------------------------------------------------------------

    def _catalogue_here(self) -> SqliteCatalogue:
        """The catalogue, opened on (and only ever used from) the catalogue's worker thread."""
        if self._catalogue is None:
            self._catalogue = SqliteCatalogue(self._catalogue_path)
        return self._catalogue

    async def _in_catalogue(self, fn: Callable[[SqliteCatalogue], R]) -> R:
        try:
            return await self._catalogue_worker.call(lambda: fn(self._catalogue_here()))
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(
                f"the session catalogue {self._catalogue_path} did not answer ({exc})"
            ) from None

    async def add_session(self, header: RecordingHeader, path: Path) -> None:
        await self._in_catalogue(lambda c: c.add_session(header, path))

    async def finish_session(self, summary: RecordingSummary) -> None:
        await self._in_catalogue(lambda c: c.finish_session(summary))

    async def find_sessions(self, query: SessionQuery) -> list[SessionRow]:
        return await self._in_catalogue(lambda c: c.find_sessions(query))

    async def get_session(self, session_id: str) -> SessionRow | None:
        return await self._in_catalogue(lambda c: c.get_session(session_id))

    # -- live sessions -------------------------------------------------------------------------

    async def register_live(self, session: LiveSession) -> None:
        body = json.dumps(_live_json(session))
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO live_sessions (id, gateway_id, body) VALUES (?, ?, ?)",
                (session.id, session.gateway_id, body),
            )
        )
        self._hint("session", session.id)

    async def unregister_live(self, session_id: str) -> None:
        await self._run(
            lambda db: db.execute("DELETE FROM live_sessions WHERE id = ?", (session_id,))
        )
        self._hint("session", session_id)

    async def live_sessions(self, gateway_id: str | None = None) -> list[LiveSession]:
        sql = "SELECT body FROM live_sessions"
        params: tuple[str, ...] = ()
        if gateway_id is not None:
            sql, params = sql + " WHERE gateway_id = ?", (gateway_id,)
        rows = await self._run(lambda db: db.execute(sql, params).fetchall())
        return [LiveSession(**json.loads(row[0])) for row in rows]

    # -- failed logins -------------------------------------------------------------------------

    async def note_login_failure(self, key: str, at: float, forget_after: float) -> int:
        def note(db: sqlite3.Connection) -> int:
            db.execute(
                "DELETE FROM login_failures WHERE key = ? AND at < ?", (key, at - forget_after)
            )
            db.execute("INSERT INTO login_failures (key, at) VALUES (?, ?)", (key, at))
            row = db.execute("SELECT count(*) FROM login_failures WHERE key = ?", (key,)).fetchone()
            return int(row[0])

        return await self._run(lambda db: sqlite.transaction(db, note))

    async def clear_login_failures(self, key: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM login_failures WHERE key = ?", (key,)))


def _insert_audit(db: sqlite3.Connection, entry: AuditEntry) -> None:
    db.execute(
        "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (entry.at, entry.actor, entry.action, entry.subject, json.dumps(entry.detail)),
    )


def _live_json(session: LiveSession) -> dict[str, Any]:
    return {
        "id": session.id,
        "gateway_id": session.gateway_id,
        "user": session.user,
        "target": session.target,
        "protocol": session.protocol,
        "client": session.client,
        "started_at": session.started_at,
    }
