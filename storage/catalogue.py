"""The session catalogue: one row per recorded session, searchable by user, target and time.

`Catalogue` is the small interface the rest of hoop_tui uses; `SqliteCatalogue` is the
embedded default (a file in the data directory, safe to use from the gateway, its recording
threads and the command line at the same time). A fleet of gateways can later put the same
interface on a shared PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from storage import sqlite
from storage.schema import RecordingHeader
from storage.writer import RecordingSummary

CATALOGUE_NAME = "catalogue.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id            TEXT PRIMARY KEY,
    path          TEXT NOT NULL,
    user          TEXT NOT NULL,
    service_account INTEGER NOT NULL DEFAULT 0,
    target        TEXT NOT NULL,
    protocol      TEXT NOT NULL,
    client        TEXT NOT NULL DEFAULT '',
    gateway_id    TEXT NOT NULL DEFAULT '',
    started_at_us INTEGER NOT NULL,
    ended_at_us   INTEGER,
    end_reason    TEXT,
    size          INTEGER NOT NULL DEFAULT 0,
    events        INTEGER NOT NULL DEFAULT 0,
    denies        INTEGER NOT NULL DEFAULT 0,
    holds         INTEGER NOT NULL DEFAULT 0,
    counts        TEXT NOT NULL DEFAULT '{}',
    verdicts      TEXT NOT NULL DEFAULT '{}',
    caller        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user, started_at_us);
CREATE INDEX IF NOT EXISTS sessions_target ON sessions (target, started_at_us);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at_us);
"""


@dataclass(slots=True)
class SessionRow:
    id: str
    path: str
    user: str
    service_account: bool
    target: str
    protocol: str
    client: str
    gateway_id: str
    started_at_us: int
    ended_at_us: int | None
    end_reason: str | None
    size: int
    events: int
    denies: int
    holds: int
    counts: dict[str, int]
    verdicts: dict[str, int]
    # person or agent, an agent's owner and client id (the header's extra; issue 16)
    caller: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "user": self.user,
            "service_account": self.service_account,
            "target": self.target,
            "protocol": self.protocol,
            "client": self.client,
            "gateway_id": self.gateway_id,
            "started_at_us": self.started_at_us,
            "ended_at_us": self.ended_at_us,
            "end_reason": self.end_reason,
            "size": self.size,
            "events": self.events,
            "denies": self.denies,
            "holds": self.holds,
            "counts": self.counts,
            "verdicts": self.verdicts,
            "caller": self.caller,
        }


@dataclass(slots=True)
class SessionQuery:
    user: str | None = None
    target: str | None = None
    protocol: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    unfinished_only: bool = False
    limit: int | None = None


class Catalogue(Protocol):
    def add_session(self, header: RecordingHeader, path: Path | str) -> None: ...
    def finish_session(self, summary: RecordingSummary) -> None: ...
    def find_sessions(self, query: SessionQuery) -> list[SessionRow]: ...
    def get_session(self, session_id: str) -> SessionRow | None: ...
    def remove_session(self, session_id: str) -> None: ...


class SqliteCatalogue:
    """The embedded catalogue. Any thread may call it: they share one connection, one call at
    a time (a statement takes microseconds). One per thread would keep three open files per
    thread that ever touched it (the file, -wal, -shm) for as long as the thread lives, and a
    gateway's thread pools made its open files grow with every burst of sessions. Other
    processes have their own; WAL keeps readers and the writer out of each other's way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite.Database(path, _SCHEMA)
        self._db.close_connection()  # the one that made the tables, on the caller's thread
        self._shared: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        with self._connection() as db:
            _add_caller_column(db)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._shared is None:
                db = sqlite3.connect(
                    self.path,
                    timeout=self._db.busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,  # one call at a time, under the lock
                )
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA synchronous=NORMAL")
                self._shared = db
            yield self._shared

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SqliteCatalogue:
        return cls(data_dir / CATALOGUE_NAME)

    def add_session(self, header: RecordingHeader, path: Path | str) -> None:
        row = (
            header.session_id,
            str(path),
            header.user,
            int(header.service_account),
            header.target,
            header.protocol,
            header.client,
            header.gateway_id,
            header.started_at_us,
            json.dumps(caller_of(header), sort_keys=True),
        )
        with self._connection() as db:
            db.execute(
                "INSERT INTO sessions (id, path, user, service_account, target, protocol, client,"
                " gateway_id, started_at_us, caller) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def finish_session(self, summary: RecordingSummary) -> None:
        header = summary.header
        verdicts = summary.verdicts
        values = (
            header.started_at_us + summary.end_us,
            summary.end_reason,
            summary.size,
            summary.event_count,
            verdicts.get("deny", 0),
            summary.counts.get("hold_requested", 0),
            json.dumps(summary.counts, sort_keys=True),
            json.dumps(verdicts, sort_keys=True),
            header.session_id,
        )
        with self._connection() as db:
            db.execute(
                "UPDATE sessions SET ended_at_us = ?, end_reason = ?, size = ?, events = ?,"
                " denies = ?, holds = ?, counts = ?, verdicts = ? WHERE id = ?",
                values,
            )

    def find_sessions(self, query: SessionQuery) -> list[SessionRow]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("user", query.user),
            ("target", query.target),
            ("protocol", query.protocol),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since_us is not None:
            clauses.append("COALESCE(ended_at_us, 9223372036854775807) >= ?")
            params.append(query.since_us)
        if query.until_us is not None:
            clauses.append("started_at_us <= ?")
            params.append(query.until_us)
        if query.unfinished_only:
            clauses.append("ended_at_us IS NULL")
        sql = "SELECT * FROM sessions"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_at_us DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        with self._connection() as db:
            return [_row(r) for r in db.execute(sql, params).fetchall()]

    def find_prefix(self, prefix: str, limit: int = 6) -> list[SessionRow]:
        """The sessions whose id starts with `prefix`, newest first, at most `limit`."""
        sql = (
            "SELECT * FROM sessions WHERE substr(id, 1, length(?)) = ?"
            " ORDER BY started_at_us DESC LIMIT ?"
        )
        with self._connection() as db:
            return [_row(r) for r in db.execute(sql, (prefix, prefix, limit)).fetchall()]

    def get_session(self, session_id: str) -> SessionRow | None:
        with self._connection() as db:
            found = db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return None if found is None else _row(found)

    def remove_session(self, session_id: str) -> None:
        with self._connection() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def move_session(self, session_id: str, path: Path | str) -> None:
        """The session's recording is now at `path` (moved to object storage)."""
        with self._connection() as db:
            db.execute("UPDATE sessions SET path = ? WHERE id = ?", (str(path), session_id))

    def close(self) -> None:
        """Close the shared connection (the next call opens it again)."""
        with self._lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None


CALLER_KEYS = ("caller_kind", "owner", "client_id", "subject")


def caller_of(header: RecordingHeader) -> dict[str, str]:
    """Who the caller is beyond their name, from the header: person or agent, owner, client."""
    extra = header.extra or {}
    return {key: str(extra[key]) for key in CALLER_KEYS if extra.get(key)}


def _add_caller_column(db: sqlite3.Connection) -> None:
    """Catalogues made before the `caller` column get it (empty for their old rows)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    if "caller" not in columns:
        with contextlib.suppress(sqlite3.OperationalError):  # another process added it
            db.execute("ALTER TABLE sessions ADD COLUMN caller TEXT NOT NULL DEFAULT '{}'")


def _row(found: sqlite3.Row) -> SessionRow:
    return SessionRow(
        id=found["id"],
        path=found["path"],
        user=found["user"],
        service_account=bool(found["service_account"]),
        target=found["target"],
        protocol=found["protocol"],
        client=found["client"],
        gateway_id=found["gateway_id"],
        started_at_us=found["started_at_us"],
        ended_at_us=found["ended_at_us"],
        end_reason=found["end_reason"],
        size=found["size"],
        events=found["events"],
        denies=found["denies"],
        holds=found["holds"],
        counts=json.loads(found["counts"]),
        verdicts=json.loads(found["verdicts"]),
        caller=json.loads(found["caller"] or "{}"),
    )
