"""Gateway state that must survive a restart: held commands, their decisions, just-in-time
access grants and the audit log.

`StateStore` is the small interface the approval broker uses; `SqliteState` is the embedded
default, a file in the data directory. Like the session catalogue, each call opens its own short
connection, so the gateway and the command line can use it at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from storage import sqlite

STATE_NAME = "state.db"


class HoldStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class GrantStatus(StrEnum):
    REQUESTED = "requested"
    ACTIVE = "active"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(slots=True)
class Decision:
    by: str
    approve: bool
    reason: str
    at: float


@dataclass(slots=True)
class Hold:
    """A command held until enough approvers say yes (or one says no, or time runs out)."""

    id: str
    session_id: str
    gateway_id: str
    user: str
    target: str
    command: str
    rule: str
    approvers: list[str]
    approvals_needed: int
    created_at: float
    expires_at: float
    status: HoldStatus = HoldStatus.PENDING
    decided_at: float | None = None
    decisions: list[Decision] = field(default_factory=list)
    note: str = ""  # why it ended, in a word: "timed out", "the caller disconnected"

    @property
    def approved_by(self) -> list[str]:
        return [d.by for d in self.decisions if d.approve]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "gateway_id": self.gateway_id,
            "user": self.user,
            "target": self.target,
            "command": self.command,
            "rule": self.rule,
            "approvers": self.approvers,
            "approvals_needed": self.approvals_needed,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "status": str(self.status),
            "decided_at": self.decided_at,
            "decisions": [
                {"by": d.by, "approve": d.approve, "reason": d.reason, "at": d.at}
                for d in self.decisions
            ],
            "note": self.note,
        }


@dataclass(slots=True)
class Grant:
    """Time-bound access to a target, requested by a user and approved by someone else."""

    id: str
    user: str
    target: str
    reason: str
    duration_s: int
    approvers: list[str]
    requested_at: float
    status: GrantStatus = GrantStatus.REQUESTED
    decided_by: str | None = None
    decided_at: float | None = None
    expires_at: float | None = None
    note: str = ""

    def live_at(self, now: float) -> bool:
        return (
            self.status is GrantStatus.ACTIVE
            and self.expires_at is not None
            and now < self.expires_at
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "target": self.target,
            "reason": self.reason,
            "duration_s": self.duration_s,
            "approvers": self.approvers,
            "requested_at": self.requested_at,
            "status": str(self.status),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "expires_at": self.expires_at,
            "note": self.note,
        }


@dataclass(slots=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": self.detail,
        }


class StateStore(Protocol):
    def save_hold(self, hold: Hold) -> None: ...
    def get_hold(self, hold_id: str) -> Hold | None: ...
    def list_holds(self, status: HoldStatus | None = None) -> list[Hold]: ...
    def save_grant(self, grant: Grant) -> None: ...
    def get_grant(self, grant_id: str) -> Grant | None: ...
    def list_grants(self, status: GrantStatus | None = None) -> list[Grant]: ...
    def append_audit(self, entry: AuditEntry) -> None: ...
    def audit_log(self, limit: int | None = None) -> list[AuditEntry]: ...


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
"""


class SqliteState:
    """The embedded state store. Rows keep their whole object as JSON beside the columns
    used to select them, so adding a field needs no migration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite.Database(path, _SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SqliteState:
        return cls(data_dir / STATE_NAME)

    def save_hold(self, hold: Hold) -> None:
        db = self._db.connection()
        db.execute(
            "INSERT OR REPLACE INTO holds (id, status, created_at, body) VALUES (?, ?, ?, ?)",
            (hold.id, str(hold.status), hold.created_at, json.dumps(hold.to_json())),
        )

    def get_hold(self, hold_id: str) -> Hold | None:
        db = self._db.connection()
        row = db.execute("SELECT body FROM holds WHERE id = ?", (hold_id,)).fetchone()
        return None if row is None else _hold(json.loads(row[0]))

    def _bodies(self, table: str, order: str, status: str | None) -> list[dict[str, Any]]:
        sql = f"SELECT body FROM {table}"
        params: tuple[str, ...] = ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)
        db = self._db.connection()
        rows = db.execute(f"{sql} ORDER BY {order}", params).fetchall()
        return [json.loads(row[0]) for row in rows]

    def list_holds(self, status: HoldStatus | None = None) -> list[Hold]:
        bodies = self._bodies("holds", "created_at", None if status is None else str(status))
        return [_hold(body) for body in bodies]

    def save_grant(self, grant: Grant) -> None:
        db = self._db.connection()
        db.execute(
            "INSERT OR REPLACE INTO grants (id, status, requested_at, body) VALUES (?, ?, ?, ?)",
            (grant.id, str(grant.status), grant.requested_at, json.dumps(grant.to_json())),
        )

    def get_grant(self, grant_id: str) -> Grant | None:
        db = self._db.connection()
        row = db.execute("SELECT body FROM grants WHERE id = ?", (grant_id,)).fetchone()
        return None if row is None else _grant(json.loads(row[0]))

    def list_grants(self, status: GrantStatus | None = None) -> list[Grant]:
        bodies = self._bodies("grants", "requested_at", None if status is None else str(status))
        return [_grant(body) for body in bodies]

    def append_audit(self, entry: AuditEntry) -> None:
        db = self._db.connection()
        db.execute(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            (entry.at, entry.actor, entry.action, entry.subject, json.dumps(entry.detail)),
        )

    def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT at, actor, action, subject, detail FROM audit ORDER BY seq DESC"
        params: tuple[int, ...] = ()
        if limit is not None:
            sql, params = sql + " LIMIT ?", (limit,)
        db = self._db.connection()
        rows = db.execute(sql, params).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in reversed(rows)]


def _hold(data: dict[str, Any]) -> Hold:
    decisions = [Decision(**d) for d in data.pop("decisions", [])]
    data["status"] = HoldStatus(data["status"])
    return Hold(**data, decisions=decisions)


def _grant(data: dict[str, Any]) -> Grant:
    data["status"] = GrantStatus(data["status"])
    return Grant(**data)
