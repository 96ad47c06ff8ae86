"""Gateway state that must survive a restart and, in a fleet, be shared by every gateway: held
commands and their decisions, just-in-time access grants, the audit log, the session catalogue,
the sessions live right now and failed logins.

`StateStore` is the interface (async: no implementation may block the event loop);
`storage.sqlite_state.SqliteState` is the embedded default (files in the data directory), and a
fleet puts a PostgreSQL implementation behind the same methods. /work/coord/state-store.md and
docs/architecture.md say what each method promises.

The types here are the one shape of each thing: a `Hold` is what the broker decides on, what
the control socket sends (`to_json` / `from_json`, nowhere else) and what the workstation shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from storage.catalogue import SessionQuery, SessionRow
from storage.schema import RecordingHeader
from storage.writer import RecordingSummary

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

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "approve": self.approve, "reason": self.reason, "at": self.at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(str(data["by"]), bool(data["approve"]), str(data["reason"]), float(data["at"]))


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

    @property
    def pending(self) -> bool:
        return self.status is HoldStatus.PENDING

    @property
    def decided_by(self) -> str:
        """Who ended it: the last decider, or "gateway" (expiry) or the requester (withdrawn)."""
        if self.decisions and self.status in (HoldStatus.APPROVED, HoldStatus.DENIED):
            return self.decisions[-1].by
        return "gateway" if self.status is HoldStatus.EXPIRED else self.user

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "gateway_id": self.gateway_id,
            "user": self.user,
            "target": self.target,
            "command": self.command,
            "rule": self.rule,
            "approvers": list(self.approvers),
            "approvals_needed": self.approvals_needed,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "status": str(self.status),
            "decided_at": self.decided_at,
            "decisions": [d.to_json() for d in self.decisions],
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hold:
        """The inverse of `to_json`; a missing or malformed field raises KeyError/ValueError."""
        body = dict(data)
        body.pop("caller", None)  # what the queue shows about the requester (holds.list)
        decisions = [Decision.from_json(d) for d in body.pop("decisions", None) or []]
        body["status"] = HoldStatus(body["status"])
        body["approvers"] = [str(a) for a in body.get("approvers") or []]
        return cls(**body, decisions=decisions)


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
            "approvers": list(self.approvers),
            "requested_at": self.requested_at,
            "status": str(self.status),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "expires_at": self.expires_at,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grant:
        body = dict(data)
        body["status"] = GrantStatus(body["status"])
        return cls(**body)


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


@dataclass(frozen=True, slots=True)
class LiveSession:
    """A session running now on one gateway: what the live list shows across a fleet."""

    id: str
    gateway_id: str
    user: str
    target: str
    protocol: str  # "ssh" | "postgres"
    client: str
    started_at: float


@dataclass(frozen=True, slots=True)
class Hint:
    """ "Something changed, read it again": sent after a committed change, to every gateway
    sharing the store (itself included). It carries no data: the store is the truth, and a hint
    may come twice, late, or not at all (a dropped connection). `kind` is "hold", "grant" or
    "session"; `origin` is the gateway id that made the change."""

    kind: str
    id: str
    origin: str


class Refused(Exception):
    """A change function refused (for example, the hold was already decided): the store wrote
    nothing and passes this to the caller. The message is worded for a person."""


class StoreUnavailable(Exception):
    """The store did not answer in time (a lock held elsewhere, the database down): the
    operation that needed it fails closed with this message; nothing was written."""


class DuplicateId(Exception):
    """`add_hold` / `add_grant` with an id already in use: pick another and try again."""


T = TypeVar("T", Hold, Grant)
# Mutates the object it is given (the row as committed now, loaded inside the transaction and
# locked); returns the audit entries to write in the same transaction; raises `Refused` to
# write nothing. It must be quick and pure: it may run on a store's own thread.
Change = Callable[[T], list[AuditEntry]]
HintReceiver = Callable[[Hint], None]


class StateStore(Protocol):
    """Every method is a coroutine that never blocks the event loop; each is one transaction.
    Reads return copies: changing one does not change the store."""

    gateway_id: str

    # -- holds and their decisions -------------------------------------------------------------
    async def add_hold(self, hold: Hold, audit: AuditEntry) -> None: ...
    async def get_hold(self, hold_id: str) -> Hold | None: ...
    async def list_holds(self, status: HoldStatus | None = None) -> list[Hold]: ...
    async def change_hold(self, hold_id: str, change: Change[Hold]) -> Hold | None:
        """Load, `change`, save and audit in one transaction (None: no such hold). Two
        changes of one hold never interleave: the second sees the first's result."""
        ...

    # -- grants --------------------------------------------------------------------------------
    async def add_grant(self, grant: Grant, audit: AuditEntry) -> None: ...
    async def get_grant(self, grant_id: str) -> Grant | None: ...
    async def list_grants(self, status: GrantStatus | None = None) -> list[Grant]: ...
    async def change_grant(self, grant_id: str, change: Change[Grant]) -> Grant | None: ...

    # -- audit ---------------------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None: ...
    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]: ...

    # -- the session catalogue (one row per recording) -----------------------------------------
    async def add_session(self, header: RecordingHeader, path: Path) -> None: ...
    async def finish_session(self, summary: RecordingSummary) -> None: ...
    async def find_sessions(self, query: SessionQuery) -> list[SessionRow]: ...
    async def get_session(self, session_id: str) -> SessionRow | None: ...

    # -- sessions live now, on any gateway -----------------------------------------------------
    async def register_live(self, session: LiveSession) -> None: ...
    async def unregister_live(self, session_id: str) -> None: ...
    async def live_sessions(self, gateway_id: str | None = None) -> list[LiveSession]: ...

    # -- failed logins, counted by key ("person:<canonical id>", "address:<net>") -------------
    async def note_login_failure(self, key: str, at: float, forget_after: float) -> int:
        """Count a failure; returns the failures of `key` in the last `forget_after` s."""
        ...

    async def clear_login_failures(self, key: str) -> None: ...

    # -- hints ---------------------------------------------------------------------------------
    def on_hint(self, receiver: HintReceiver) -> Callable[[], None]:
        """Call `receiver` on the event loop for each hint; returns the function that stops."""
        ...

    async def close(self) -> None: ...
