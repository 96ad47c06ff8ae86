"""The approval broker's rules: who may decide a held command or an access grant, how many
distinct approvals it takes, and when things expire.

Sans-IO: every method takes `now` and returns what changed; nothing here waits, sleeps or
talks to a socket. The asyncio side (the gateway and its control API) resumes held sessions
and pushes the changes to subscribers. Every decision lands in the audit log.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.config import ConfigError, parse_duration
from storage.state import (
    AuditEntry,
    Decision,
    Grant,
    GrantStatus,
    Hold,
    HoldStatus,
    SqliteState,
)


class DecisionRefused(Exception):
    """A decision the broker will not take, with the reason worded for the person."""


DEFAULT_MAX_GRANT_S = 7 * 86400  # `[policy] max_grant` when the configuration names none


def grant_seconds(value: object, max_grant_s: float = DEFAULT_MAX_GRANT_S) -> int:
    """A grant length as asked for (a number of seconds from a control message or the console),
    checked: finite, above zero, at most `max_grant_s`. Anything else is refused with the
    reason, never turned into an endless or an exception-raising grant."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecisionRefused("a grant needs a length in seconds (--for 1h)")
    if value <= 0 or int(value) <= 0:
        raise DecisionRefused("a grant needs a positive duration (--for 1h)")
    if value > max_grant_s:
        raise DecisionRefused(
            f"a grant lasts at most {_length(max_grant_s)} ([policy] max_grant); ask for less"
        )
    return int(value)


def max_grant_from(raw: Mapping[str, Any], path: object) -> float:
    """`[policy] max_grant` ("12h", "7d", or seconds): the longest grant anyone may ask for."""
    section = raw.get("policy", {})
    value = section.get("max_grant") if isinstance(section, Mapping) else None
    if value is None:
        return DEFAULT_MAX_GRANT_S
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(str(path), "policy.max_grant", str(exc)) from None
    if not math.isfinite(seconds) or seconds < 1:
        raise ConfigError(str(path), "policy.max_grant", "must be at least one second")
    return seconds


def _length(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Person:
    """Someone acting on the broker: a gateway identity and its groups."""

    name: str
    groups: frozenset[str]

    def concerned_by(self, item: Mapping[str, Any]) -> bool:
        """Whether a hold or grant (as JSON) is this person's business: they asked for it, or
        they are in one of its approver groups. Console users see only those; the commands
        other people run are not theirs to read."""
        return item.get("user") == self.name or bool(
            self.groups.intersection(item.get("approvers") or ())
        )


def _new_id(prefix: str, taken: Iterable[str] = ()) -> str:
    existing = set(taken)
    while True:
        candidate = f"{prefix}-{secrets.token_hex(3)}"
        if candidate not in existing:
            return candidate


class ApprovalBroker:
    """Holds and grants over a StateStore. See the module docstring."""

    def __init__(self, store: SqliteState, gateway_id: str) -> None:
        self.store = store
        self.gateway_id = gateway_id

    def _audit(self, now: float, actor: str, action: str, subject: str, **detail: object) -> None:
        self.store.append_audit(AuditEntry(now, actor, action, subject, dict(detail)))

    @staticmethod
    def _check_decider(person: Person, requester: str, approvers: list[str]) -> None:
        if person.name == requester:
            raise DecisionRefused("you cannot decide your own request; another approver must")
        if not person.groups.intersection(approvers):
            raise DecisionRefused(
                f"{person.name} is not in an approver group for this ({', '.join(approvers)})"
            )

    # -- holds ---------------------------------------------------------------------------------

    def request_hold(
        self,
        *,
        session_id: str,
        user: str,
        target: str,
        command: str,
        rule: str,
        approvers: list[str],
        approvals: int,
        timeout_s: float,
        now: float,
    ) -> Hold:
        if approvals < 1:
            raise ValueError("a hold needs at least one approval")
        hold = Hold(
            id=_new_id("h", (h.id for h in self.store.list_holds(HoldStatus.PENDING))),
            session_id=session_id,
            gateway_id=self.gateway_id,
            user=user,
            target=target,
            command=command,
            rule=rule,
            approvers=list(approvers),
            approvals_needed=approvals,
            created_at=now,
            expires_at=now + timeout_s,
        )
        self.store.save_hold(hold)
        self._audit(now, user, "hold_requested", hold.id, command=command, rule=rule)
        return hold

    def _pending_hold(self, hold_id: str, now: float) -> Hold:
        hold = self.store.get_hold(hold_id)
        if hold is None:
            raise DecisionRefused(f"no hold {hold_id}")
        if hold.status is HoldStatus.PENDING and now >= hold.expires_at:
            self._finish_hold(hold, HoldStatus.EXPIRED, now, "gateway", "timed out")
        if hold.status is not HoldStatus.PENDING:
            raise DecisionRefused(f"hold {hold_id} is already {hold.status}")
        return hold

    def _finish_hold(
        self, hold: Hold, status: HoldStatus, now: float, actor: str, reason: str
    ) -> Hold:
        hold.status = status
        hold.decided_at = now
        hold.note = reason
        self.store.save_hold(hold)
        self._audit(now, actor, f"hold_{status}", hold.id, reason=reason)
        return hold

    def decide_hold(
        self, hold_id: str, person: Person, *, approve: bool, reason: str, now: float
    ) -> Hold:
        """Record one person's decision. One denial ends the hold; it is approved once
        `approvals_needed` distinct people have approved. Returns the hold as it now stands."""
        hold = self._pending_hold(hold_id, now)
        self._check_decider(person, hold.user, hold.approvers)
        if approve and person.name in hold.approved_by:
            raise DecisionRefused(
                f"{person.name} already approved hold {hold_id}; it needs "
                f"{hold.approvals_needed} different approvers"
            )
        if not approve and not reason.strip():
            raise DecisionRefused("a denial needs a reason (--reason)")
        hold.decisions.append(Decision(person.name, approve, reason, now))
        self._audit(
            now, person.name, "hold_approve" if approve else "hold_deny", hold.id, reason=reason
        )
        if not approve:
            return self._finish_hold(hold, HoldStatus.DENIED, now, person.name, reason)
        if len(hold.approved_by) >= hold.approvals_needed:
            return self._finish_hold(hold, HoldStatus.APPROVED, now, person.name, reason)
        self.store.save_hold(hold)
        return hold

    def withdraw_hold(
        self, hold_id: str, *, by: str, now: float, reason: str = "withdrawn"
    ) -> Hold:
        """The requester takes the request back (Ctrl-C while held, or the session ended);
        `reason` stays on the hold for the queue to show."""
        hold = self._pending_hold(hold_id, now)
        return self._finish_hold(hold, HoldStatus.WITHDRAWN, now, by, reason)

    def expire_holds(self, now: float, live_sessions: set[str] | None = None) -> list[Hold]:
        """Expire pending holds whose time is up, and (when `live_sessions` is given) those of
        this gateway whose session is gone, as after a restart."""
        expired = []
        for hold in self.store.list_holds(HoldStatus.PENDING):
            if now >= hold.expires_at:
                expired.append(
                    self._finish_hold(hold, HoldStatus.EXPIRED, now, "gateway", "timed out")
                )
            elif (
                live_sessions is not None
                and hold.gateway_id == self.gateway_id
                and hold.session_id not in live_sessions
            ):
                expired.append(
                    self._finish_hold(hold, HoldStatus.EXPIRED, now, "gateway", "session ended")
                )
        return expired

    def pending_holds(self) -> list[Hold]:
        return self.store.list_holds(HoldStatus.PENDING)

    # -- grants --------------------------------------------------------------------------------

    def request_grant(
        self,
        *,
        user: str,
        target: str,
        duration_s: int,
        reason: str,
        approvers: list[str],
        now: float,
        max_grant_s: float = DEFAULT_MAX_GRANT_S,
    ) -> Grant:
        duration_s = grant_seconds(duration_s, max_grant_s)
        if not reason.strip():
            raise DecisionRefused('a grant request needs a reason (--reason "...")')
        grant = Grant(
            id=_new_id("g", (g.id for g in self.store.list_grants())),
            user=user,
            target=target,
            reason=reason,
            duration_s=duration_s,
            approvers=list(approvers),
            requested_at=now,
        )
        self.store.save_grant(grant)
        self._audit(now, user, "grant_requested", grant.id, target=target, duration_s=duration_s)
        return grant

    def decide_grant(
        self, grant_id: str, person: Person, *, approve: bool, reason: str, now: float
    ) -> Grant:
        """Approval starts the grant's clock now; a denial needs a reason."""
        grant = self.store.get_grant(grant_id)
        if grant is None:
            raise DecisionRefused(f"no grant {grant_id}")
        if grant.status is not GrantStatus.REQUESTED:
            raise DecisionRefused(f"grant {grant_id} is already {grant.status}")
        self._check_decider(person, grant.user, grant.approvers)
        if not approve and not reason.strip():
            raise DecisionRefused("a denial needs a reason (--reason)")
        grant.decided_by = person.name
        grant.decided_at = now
        grant.note = reason
        if approve:
            grant.status = GrantStatus.ACTIVE
            grant.expires_at = now + grant.duration_s
        else:
            grant.status = GrantStatus.DENIED
        self.store.save_grant(grant)
        self._audit(now, person.name, f"grant_{grant.status}", grant.id, reason=reason)
        return grant

    def revoke_grant(self, grant_id: str, person: Person, *, reason: str, now: float) -> Grant:
        """Its holder may give a grant up; an approver may take it away."""
        grant = self.store.get_grant(grant_id)
        if grant is None:
            raise DecisionRefused(f"no grant {grant_id}")
        if person.name != grant.user and not person.groups.intersection(grant.approvers):
            raise DecisionRefused(f"{person.name} may not revoke grant {grant_id}")
        if grant.status not in (GrantStatus.ACTIVE, GrantStatus.REQUESTED):
            raise DecisionRefused(f"grant {grant_id} is already {grant.status}")
        by = person.name
        grant.status = GrantStatus.REVOKED
        grant.decided_at = now
        grant.note = reason or "revoked"
        self.store.save_grant(grant)
        self._audit(now, by, "grant_revoked", grant.id, reason=reason)
        return grant

    def expire_grants(self, now: float) -> list[Grant]:
        """Grants whose time ran out, now marked expired: their sessions must end."""
        expired = []
        for grant in self.store.list_grants(GrantStatus.ACTIVE):
            if grant.expires_at is not None and now >= grant.expires_at:
                grant.status = GrantStatus.EXPIRED
                self.store.save_grant(grant)
                self._audit(now, "gateway", "grant_expired", grant.id)
                expired.append(grant)
        return expired

    def live_grant(self, user: str, target: str, now: float) -> Grant | None:
        """The live grant giving `user` access to `target` that lasts longest, if any."""
        live = [
            g
            for g in self.store.list_grants(GrantStatus.ACTIVE)
            if g.user == user and g.target == target and g.live_at(now)
        ]
        return max(live, key=lambda g: g.expires_at or 0.0, default=None)

    def next_deadline(self) -> float | None:
        """When the next hold or grant expires: the asyncio side sleeps until then."""
        times = [h.expires_at for h in self.store.list_holds(HoldStatus.PENDING)]
        times += [
            g.expires_at
            for g in self.store.list_grants(GrantStatus.ACTIVE)
            if g.expires_at is not None
        ]
        return min(times, default=None)
