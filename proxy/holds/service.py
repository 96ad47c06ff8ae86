"""The asyncio side of the approval broker: sessions wait here for decisions, approvers'
decisions arrive (through `api`, the console or the workstation), and expiries fire on time.

A held session calls `request_hold()` and awaits `wait_for()`; when the hold is decided,
expires or the session gives up (Ctrl-C, the client vanished: the waiting task is cancelled),
the outcome is pushed to every subscriber at once. Nothing polls: the expiry task sleeps until
the broker's next deadline. A change another gateway made to the shared store arrives as a
hint and is pushed the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from proxy.holds.api import HoldsApi
from proxy.holds.broker import (
    DEFAULT_MAX_GRANT_S,
    ApprovalBroker,
    DecisionRefused,
    HoldEnded,
    Person,
    Visible,
)
from proxy.holds.control import GRANTS_TOPIC, HOLDS_TOPIC, ControlServer
from storage.state import AuditEntry, Grant, GrantStatus, Hint, Hold, HoldStatus, StoreUnavailable

log = logging.getLogger("hoop.holds")


def _everyone(item: Hold | Grant) -> bool:
    return True


class ApprovalService:
    """Wires an ApprovalBroker to waiting sessions, subscribers and the expiry clock."""

    def __init__(
        self,
        broker: ApprovalBroker,
        control: ControlServer,
        *,
        clock: Callable[[], float] = time.time,
        on_grant_ended: Callable[[Grant], None] | None = None,
        grant_approvers: Callable[[str], list[str]] | None = None,
        max_grant_s: float = DEFAULT_MAX_GRANT_S,
        describe_caller: Callable[[str], dict[str, str]] | None = None,
    ) -> None:
        self.max_grant_s = max_grant_s  # `[policy] max_grant`
        self.broker = broker
        self.control = control
        self.clock = clock
        self._on_grant_ended = on_grant_ended
        self._grant_approvers = grant_approvers or (lambda target: [])
        self._waiters: dict[str, asyncio.Future[Hold]] = {}
        self._wake = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # active grants, kept in step with the store: an access check asks without waiting
        self._active: dict[str, Grant] = {}
        self._stop_hints = broker.on_change_elsewhere(self._hinted)
        self._describe_caller = describe_caller or (lambda name: {})
        HoldsApi(self, describe_caller).register(control)

    async def start(self, live_sessions: set[str] | None = None) -> None:
        """Expire what a previous run left behind, then watch deadlines."""
        now = self.clock()
        for hold in await self.broker.expire_holds(now, live_sessions=live_sessions or set()):
            self._publish_hold("hold.decided", hold)
        for grant in await self.broker.list_grants(GrantStatus.ACTIVE):
            self._active[grant.id] = grant
        self._expiry_task = asyncio.ensure_future(self._expire_forever())

    async def stop(self) -> None:
        self._stop_hints()
        for task in [self._expiry_task, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- sessions ------------------------------------------------------------------------------

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
    ) -> Hold:
        """Create a hold and tell subscribers; `wait_for` then awaits its outcome."""
        hold = await self.broker.request_hold(
            session_id=session_id,
            user=user,
            target=target,
            command=command,
            rule=rule,
            approvers=approvers,
            approvals=approvals,
            timeout_s=timeout_s,
            now=self.clock(),
        )
        self._waiters[hold.id] = asyncio.get_running_loop().create_future()
        self._publish_hold("hold.created", hold)
        self._wake.set()
        return hold

    async def wait_for(self, hold: Hold, on_end: Callable[[Hold], None] | None = None) -> Hold:
        """The outcome of a hold from `request_hold`. Cancelling the wait withdraws the hold
        (the cancel message, if any, says why). `on_end` gets the hold as it ended, however
        the wait ends."""
        future = self._waiters.setdefault(hold.id, asyncio.get_running_loop().create_future())
        final = hold
        try:
            final = await future
            return final
        except asyncio.CancelledError as cancelled:
            # Whoever cancelled may say why (the caller disconnected); Ctrl-C says nothing.
            reason = str(cancelled.args[0]) if cancelled.args else "withdrawn"
            final = await self._withdraw(hold, reason)
            raise
        finally:
            self._waiters.pop(hold.id, None)
            if on_end is not None:
                on_end(final)

    async def _withdraw(self, hold: Hold, reason: str) -> Hold:
        try:
            withdrawn = await self.broker.withdraw_hold(
                hold.id, by=hold.user, now=self.clock(), reason=reason
            )
        except HoldEnded as ended:
            withdrawn = ended.hold
        except (DecisionRefused, StoreUnavailable):
            with contextlib.suppress(StoreUnavailable):
                return await self.broker.get_hold(hold.id) or hold
            return hold
        self._publish_hold("hold.decided", withdrawn)
        return withdrawn

    def _publish_hold(self, event: str, hold: Hold) -> None:
        caller = self._describe_caller(hold.user)  # the queue marks an agent's holds
        self.control.publish(HOLDS_TOPIC, event, hold, {"caller": caller} if caller else None)
        if not hold.pending:
            future = self._waiters.get(hold.id)
            if future is not None and not future.done():
                future.set_result(hold)

    # -- reading -------------------------------------------------------------------------------

    async def pending_holds(self) -> list[Hold]:
        return await self.broker.pending_holds()

    async def list_holds(self, status: HoldStatus | None = HoldStatus.PENDING) -> list[Hold]:
        return await self.broker.list_holds(status)

    async def list_grants(self, status: GrantStatus | None = None) -> list[Grant]:
        return await self.broker.list_grants(status)

    def live_grants(self) -> list[Grant]:
        """Grants active now, without a store call (kept in step with every change)."""
        now = self.clock()
        return [grant for grant in self._active.values() if grant.live_at(now)]

    async def audit(self, actor: str, action: str, subject: str, **detail: object) -> None:
        await self.broker.audit(self.clock(), actor, action, subject, **detail)

    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        return await self.broker.audit_log(limit)

    # -- expiry --------------------------------------------------------------------------------

    async def _expire_forever(self) -> None:
        while True:
            self._wake.clear()  # before reading the deadline: a hold made meanwhile wakes us
            try:
                deadline = await self.broker.next_deadline()
            except StoreUnavailable as exc:
                log.warning("expiry check postponed: %s", exc)
                deadline = self.clock() + 1.0
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            try:
                await self._expire_now()
            except StoreUnavailable as exc:
                log.warning("expiry postponed: %s", exc)

    async def _expire_now(self) -> None:
        now = self.clock()
        for hold in await self.broker.expire_holds(now):
            self._publish_hold("hold.decided", hold)
        for grant in await self.broker.expire_grants(now):
            self._grant_changed("grant.ended", grant)

    # -- decisions -----------------------------------------------------------------------------

    async def decide_hold(
        self,
        hold_id: str,
        person: Person,
        *,
        approve: bool,
        reason: str,
        visible: Visible = _everyone,
    ) -> Hold:
        """One person's decision, pushed to subscribers and to the waiting session."""
        try:
            hold = await self.broker.decide_hold(
                hold_id, person, approve=approve, reason=reason, now=self.clock(), visible=visible
            )
        except HoldEnded as ended:
            self._publish_hold("hold.decided", ended.hold)
            raise
        self._publish_hold("hold.updated" if hold.pending else "hold.decided", hold)
        return hold

    async def request_grant(
        self, person: Person, target: str, *, duration_s: int, reason: str, approvers: list[str]
    ) -> Grant:
        """A grant request, for the target's approvers unless others are named."""
        approvers = approvers or self._grant_approvers(target)
        if not approvers:
            raise DecisionRefused(f"no approver groups for {target}: name them with --approvers")
        grant = await self.broker.request_grant(
            user=person.name,
            target=target,
            duration_s=duration_s,
            reason=reason,
            approvers=approvers,
            now=self.clock(),
            max_grant_s=self.max_grant_s,
        )
        self._grant_changed("grant.requested", grant)
        return grant

    async def decide_grant(
        self,
        grant_id: str,
        person: Person,
        *,
        approve: bool,
        reason: str,
        visible: Visible = _everyone,
    ) -> Grant:
        grant = await self.broker.decide_grant(
            grant_id, person, approve=approve, reason=reason, now=self.clock(), visible=visible
        )
        self._grant_changed("grant.decided", grant)
        self._wake.set()  # its expiry is a new deadline
        return grant

    async def revoke_grant(
        self, grant_id: str, person: Person, *, reason: str, visible: Visible = _everyone
    ) -> Grant:
        grant = await self.broker.revoke_grant(
            grant_id, person, reason=reason, now=self.clock(), visible=visible
        )
        self._grant_changed("grant.ended", grant)
        return grant

    def _grant_changed(self, event: str, grant: Grant) -> None:
        """Keep the active set in step, tell subscribers, end sessions a grant no longer
        allows."""
        was_active = self._active.pop(grant.id, None) is not None
        if grant.status is GrantStatus.ACTIVE:
            self._active[grant.id] = grant
        self.control.publish(GRANTS_TOPIC, event, grant)
        ended = grant.status in (GrantStatus.EXPIRED, GrantStatus.REVOKED)
        if ended and self._on_grant_ended is not None and (was_active or event == "grant.ended"):
            self._on_grant_ended(grant)

    # -- changes made by other gateways --------------------------------------------------------

    def _hinted(self, hint: Hint) -> None:
        if hint.kind not in ("hold", "grant", "resync"):
            return
        task = asyncio.ensure_future(self._reread(hint))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reread(self, hint: Hint) -> None:
        try:
            if hint.kind == "resync":  # hints may have been missed: everything open, again
                for hold in await self.broker.pending_holds():
                    self._publish_hold("hold.updated", hold)
                active = await self.broker.list_grants(GrantStatus.ACTIVE)
                for open_grant in active:
                    self._grant_changed("grant.decided", open_grant)
                # and those active here that ended meanwhile (revoked elsewhere, unheard):
                # their sessions end now, and they admit no new ones
                for gone in set(self._active) - {g.id for g in active}:
                    ended = await self.broker.get_grant(gone)
                    if ended is None:
                        self._active.pop(gone, None)
                    else:
                        self._grant_changed(_grant_event(ended), ended)
                self._wake.set()
                return
            if hint.kind == "hold":
                changed = await self.broker.get_hold(hint.id)
                if changed is not None:
                    event = "hold.created" if not changed.decisions else "hold.updated"
                    self._publish_hold(event if changed.pending else "hold.decided", changed)
                    self._wake.set()
                return
            grant = await self.broker.get_grant(hint.id)
            if grant is not None:
                self._grant_changed(_grant_event(grant), grant)
                self._wake.set()
        except StoreUnavailable as exc:
            log.warning("could not read %s %s changed elsewhere: %s", hint.kind, hint.id, exc)


def _grant_event(grant: Grant) -> str:
    return {
        GrantStatus.REQUESTED: "grant.requested",
        GrantStatus.ACTIVE: "grant.decided",
        GrantStatus.DENIED: "grant.decided",
    }.get(grant.status, "grant.ended")
