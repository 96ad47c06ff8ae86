"""The approval broker's rules: who may decide a held command or an access grant, how many
distinct approvals it takes, and when things expire.

Each rule is a change function run by the state store inside one transaction (see
`storage.state.StateStore.change_hold`): the hold is loaded, checked and changed there, so two
approvers deciding at once (on one gateway or two) cannot both win; the second is told who
decided first. Every decision lands in the audit log in the same transaction. Nothing here
sleeps or talks to a socket; `now` is always given. The asyncio side (`service`) resumes held
sessions and pushes the changes to subscribers.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.config import ConfigError, parse_duration
from proxy.names import fold_name
from storage.state import (
    AuditEntry,
    Decision,
    DuplicateId,
    Grant,
    GrantStatus,
    Hint,
    Hold,
    HoldStatus,
    Refused,
    StateStore,
)


class DecisionRefused(Refused):
    """A decision the broker will not take, with the reason worded for the person."""


class HoldEnded(DecisionRefused):
    """The hold's time ran out as someone tried to act on it: the store now has it expired
    (`hold`), and the action is refused."""

    def __init__(self, hold: Hold) -> None:
        super().__init__(f"hold {hold.id} is already {hold.status}")
        self.hold = hold


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
    # agents this person answers for ([[agents]] owner): deciding their requests would be
    # deciding one's own (proxy.oidc.identity.answered_for; docs/identity.md)
    answers_for: frozenset[str] = frozenset()
    # an OIDC agent ([[agents]]): it may ask, never decide (an approval is a person's judgement)
    agent: bool = False

    def concerned_by(self, item: Hold | Grant) -> bool:
        """Whether a hold or grant is this person's business: they asked for it, or they are
        in one of its approver groups. Console users see only those; the commands other
        people run are not theirs to read."""
        mine = fold_name(item.user) == fold_name(self.name)
        return mine or bool(self.groups.intersection(item.approvers))

    def may_decide(self, item: Hold | Grant) -> None:
        """Refuse (DecisionRefused) unless this person may decide `item`."""
        if self.agent:
            raise DecisionRefused(
                f"{self.name} is an agent: agents may not decide requests; a person must"
            )
        if fold_name(self.name) == fold_name(item.user):  # `Dana` is dana: one person
            raise DecisionRefused("you cannot decide your own request; another approver must")
        if fold_name(item.user) in {fold_name(agent) for agent in self.answers_for}:
            raise DecisionRefused(
                f"{self.name} answers for agent {item.user} (its owner); another approver must"
                " decide ([oidc] owner_may_approve)"
            )
        if not self.groups.intersection(item.approvers):
            raise DecisionRefused(
                f"{self.name} is not in an approver group for this ({', '.join(item.approvers)})"
            )


Visible = Callable[[Hold | Grant], bool]


def _everyone(item: Hold | Grant) -> bool:
    return True


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def _add_with_new_id(make: Callable[[str], Awaitable[None]], prefix: str) -> None:
    """Call `make(id)` with fresh ids until one is not taken."""
    for _ in range(32):
        try:
            await make(_new_id(prefix))
            return
        except DuplicateId:
            continue
    raise DecisionRefused(f"could not find a free {prefix}- id; try again")


def already(item: Hold | Grant) -> DecisionRefused:
    """The refusal for acting on what is no longer open, naming who closed it."""
    kind = "hold" if isinstance(item, Hold) else "grant"
    who = item.decided_by if isinstance(item, Hold) else item.decided_by or "gateway"
    decided = item.status in ("approved", "denied", "active")
    tail = f" (decided by {who})" if decided else ""
    return DecisionRefused(f"{kind} {item.id} is already {item.status}{tail}")


def finish_hold(hold: Hold, status: HoldStatus, now: float, actor: str, reason: str) -> AuditEntry:
    """End `hold` with `status`; the audit entry that says so."""
    hold.status = status
    hold.decided_at = now
    hold.note = reason
    return AuditEntry(now, actor, f"hold_{status}", hold.id, {"reason": reason})


def decide(hold: Hold, person: Person, approve: bool, reason: str, now: float) -> list[AuditEntry]:
    """One person's decision on a pending hold. One denial ends it; it is approved once
    `approvals_needed` distinct people have approved."""
    person.may_decide(hold)
    if approve and person.name in hold.approved_by:
        raise DecisionRefused(
            f"{person.name} already approved hold {hold.id}; it needs "
            f"{hold.approvals_needed} different approvers"
        )
    if not approve and not reason.strip():
        raise DecisionRefused("a denial needs a reason (--reason)")
    hold.decisions.append(Decision(person.name, approve, reason, now))
    action = "hold_approve" if approve else "hold_deny"
    entries = [AuditEntry(now, person.name, action, hold.id, {"reason": reason})]
    if not approve:
        entries.append(finish_hold(hold, HoldStatus.DENIED, now, person.name, reason))
    elif len(hold.approved_by) >= hold.approvals_needed:
        entries.append(finish_hold(hold, HoldStatus.APPROVED, now, person.name, reason))
    return entries


class ApprovalBroker:
    """Holds and grants over a StateStore. See the module docstring."""

    def __init__(self, store: StateStore, gateway_id: str) -> None:
        self.store = store
        self.gateway_id = gateway_id

    def on_change_elsewhere(self, receiver: Callable[[Hint], None]) -> Callable[[], None]:
        """Call `receiver` for each change another gateway made to the shared store (its own
        are published as they are made); returns the function that stops it."""

        def filtered(hint: Hint) -> None:
            if hint.origin != self.store.gateway_id:
                receiver(hint)

        return self.store.on_hint(filtered)

    # -- holds ---------------------------------------------------------------------------------

    async def request_hold(
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
        made: list[Hold] = []

        async def add(hold_id: str) -> None:
            hold = Hold(
                id=hold_id,
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
            detail = {"command": command, "rule": rule}
            await self.store.add_hold(
                hold, AuditEntry(now, user, "hold_requested", hold_id, detail)
            )
            made.append(hold)

        await _add_with_new_id(add, "h")
        return made[0]

    async def get_hold(self, hold_id: str) -> Hold | None:
        return await self.store.get_hold(hold_id)

    async def pending_holds(self) -> list[Hold]:
        return await self.store.list_holds(HoldStatus.PENDING)

    async def list_holds(self, status: HoldStatus | None) -> list[Hold]:
        return await self.store.list_holds(status)

    async def _act_on_pending(
        self, hold_id: str, now: float, visible: Visible, act: Callable[[Hold], list[AuditEntry]]
    ) -> Hold:
        """Run `act` on the hold if it is pending and `visible`, in one transaction. A hold
        whose time is up is expired instead, and HoldEnded says so."""
        ran_out: list[bool] = []

        def change(hold: Hold) -> list[AuditEntry]:
            if not visible(hold):
                raise DecisionRefused(f"no hold {hold_id}")
            if hold.pending and now >= hold.expires_at:
                ran_out.append(True)
                return [finish_hold(hold, HoldStatus.EXPIRED, now, "gateway", "timed out")]
            if not hold.pending:
                raise already(hold)
            return act(hold)

        hold = await self.store.change_hold(hold_id, change)
        if hold is None:
            raise DecisionRefused(f"no hold {hold_id}")
        if ran_out:
            raise HoldEnded(hold)
        return hold

    async def decide_hold(
        self,
        hold_id: str,
        person: Person,
        *,
        approve: bool,
        reason: str,
        now: float,
        visible: Visible = _everyone,
    ) -> Hold:
        """Record one person's decision (see `decide`); the hold as it now stands. A hold the
        person may not see (`visible`) is refused as if it did not exist."""
        return await self._act_on_pending(
            hold_id, now, visible, lambda hold: decide(hold, person, approve, reason, now)
        )

    async def withdraw_hold(
        self, hold_id: str, *, by: str, now: float, reason: str = "withdrawn"
    ) -> Hold:
        """The requester takes the request back (Ctrl-C while held, or the session ended);
        `reason` stays on the hold for the queue to show."""
        return await self._act_on_pending(
            hold_id,
            now,
            _everyone,
            lambda hold: [finish_hold(hold, HoldStatus.WITHDRAWN, now, by, reason)],
        )

    async def expire_holds(self, now: float, live_sessions: set[str] | None = None) -> list[Hold]:
        """Expire pending holds whose time is up, and (when `live_sessions` is given) those of
        this gateway whose session is gone, as after a restart."""

        def why(hold: Hold) -> str | None:
            if now >= hold.expires_at:
                return "timed out"
            if (
                live_sessions is not None
                and hold.gateway_id == self.gateway_id
                and hold.session_id not in live_sessions
            ):
                return "session ended"
            return None

        def change(hold: Hold) -> list[AuditEntry]:
            reason = why(hold) if hold.pending else None
            if reason is None:  # decided meanwhile, elsewhere
                raise already(hold)
            return [finish_hold(hold, HoldStatus.EXPIRED, now, "gateway", reason)]

        expired = []
        for hold in await self.pending_holds():
            if why(hold) is None:
                continue
            try:
                changed = await self.store.change_hold(hold.id, change)
            except DecisionRefused:
                continue
            if changed is not None:
                expired.append(changed)
        return expired

    # -- grants --------------------------------------------------------------------------------

    async def request_grant(
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
        made: list[Grant] = []

        async def add(grant_id: str) -> None:
            grant = Grant(grant_id, user, target, reason, duration_s, list(approvers), now)
            detail = {"target": target, "duration_s": duration_s}
            await self.store.add_grant(
                grant, AuditEntry(now, user, "grant_requested", grant_id, detail)
            )
            made.append(grant)

        await _add_with_new_id(add, "g")
        return made[0]

    async def list_grants(self, status: GrantStatus | None = None) -> list[Grant]:
        return await self.store.list_grants(status)

    async def get_grant(self, grant_id: str) -> Grant | None:
        return await self.store.get_grant(grant_id)

    async def _change_grant(
        self, grant_id: str, change: Callable[[Grant], list[AuditEntry]]
    ) -> Grant:
        grant = await self.store.change_grant(grant_id, change)
        if grant is None:
            raise DecisionRefused(f"no grant {grant_id}")
        return grant

    async def decide_grant(
        self,
        grant_id: str,
        person: Person,
        *,
        approve: bool,
        reason: str,
        now: float,
        visible: Visible = _everyone,
    ) -> Grant:
        """Approval starts the grant's clock now; a denial needs a reason."""

        def change(grant: Grant) -> list[AuditEntry]:
            if not visible(grant):
                raise DecisionRefused(f"no grant {grant_id}")
            if grant.status is not GrantStatus.REQUESTED:
                raise already(grant)
            person.may_decide(grant)
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
            return [
                AuditEntry(now, person.name, f"grant_{grant.status}", grant.id, {"reason": reason})
            ]

        return await self._change_grant(grant_id, change)

    async def revoke_grant(
        self,
        grant_id: str,
        person: Person,
        *,
        reason: str,
        now: float,
        visible: Visible = _everyone,
    ) -> Grant:
        """Its holder may give a grant up; an approver may take it away."""

        def change(grant: Grant) -> list[AuditEntry]:
            if not visible(grant):
                raise DecisionRefused(f"no grant {grant_id}")
            if person.name != grant.user and not person.groups.intersection(grant.approvers):
                raise DecisionRefused(f"{person.name} may not revoke grant {grant_id}")
            if grant.status not in (GrantStatus.ACTIVE, GrantStatus.REQUESTED):
                raise already(grant)
            grant.status = GrantStatus.REVOKED
            grant.decided_at = now
            grant.note = reason or "revoked"
            return [AuditEntry(now, person.name, "grant_revoked", grant.id, {"reason": reason})]

        return await self._change_grant(grant_id, change)

    async def expire_grants(self, now: float) -> list[Grant]:
        """Grants whose time ran out, now marked expired: their sessions must end."""

        def change(grant: Grant) -> list[AuditEntry]:
            if grant.status is not GrantStatus.ACTIVE or grant.live_at(now):
                raise already(grant)
            grant.status = GrantStatus.EXPIRED
            return [AuditEntry(now, "gateway", "grant_expired", grant.id)]

        expired = []
        for grant in await self.store.list_grants(GrantStatus.ACTIVE):
            if grant.expires_at is None or now < grant.expires_at:
                continue
            try:
                expired.append(await self._change_grant(grant.id, change))
            except DecisionRefused:
                continue
        return expired

    async def live_grant(self, user: str, target: str, now: float) -> Grant | None:
        """The live grant giving `user` access to `target` that lasts longest, if any."""
        live = [
            g
            for g in await self.store.list_grants(GrantStatus.ACTIVE)
            if g.user == user and g.target == target and g.live_at(now)
        ]
        return max(live, key=lambda g: g.expires_at or 0.0, default=None)

    async def next_deadline(self) -> float | None:
        """When the next hold or grant expires: the asyncio side sleeps until then."""
        times = [h.expires_at for h in await self.pending_holds()]
        times += [
            g.expires_at
            for g in await self.store.list_grants(GrantStatus.ACTIVE)
            if g.expires_at is not None
        ]
        return min(times, default=None)

    async def audit(
        self, now: float, actor: str, action: str, subject: str, **detail: object
    ) -> None:
        await self.store.append_audit(AuditEntry(now, actor, action, subject, dict(detail)))

    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        return await self.store.audit_log(limit)
