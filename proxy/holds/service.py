"""The asyncio side of the approval broker: sessions wait here for decisions, approvers'
decisions arrive through the control API, and expiries fire on time.

A held session awaits `request_hold()`; when the hold is decided, expires or the session gives
up (Ctrl-C, the client vanished: the waiting task is cancelled), the outcome is pushed to every
subscriber at once. Nothing polls: the expiry task sleeps until the broker's next deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from proxy.holds.broker import (
    DEFAULT_MAX_GRANT_S,
    ApprovalBroker,
    DecisionRefused,
    Person,
    grant_seconds,
)
from proxy.holds.control import Caller, ControlServer
from storage.state import Grant, Hold, HoldStatus

HOLDS_TOPIC = "holds"
GRANTS_TOPIC = "grants"


class ApprovalService:
    """Wires an ApprovalBroker to the control API and to waiting sessions."""

    def __init__(
        self,
        broker: ApprovalBroker,
        control: ControlServer,
        *,
        clock: Callable[[], float] = time.time,
        on_grant_ended: Callable[[Grant], None] | None = None,
        grant_approvers: Callable[[str], list[str]] | None = None,
        max_grant_s: float = DEFAULT_MAX_GRANT_S,
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
        for op, handler in {
            "holds.list": self._list_holds,
            "holds.decide": self._decide_hold,
            "grants.list": self._list_grants,
            "grants.request": self._request_grant,
            "grants.decide": self._decide_grant,
            "grants.revoke": self._revoke_grant,
            "audit": self._audit,
        }.items():
            control.register(op, handler)

    def start(self, live_sessions: set[str] | None = None) -> None:
        """Expire what a previous run left behind, then watch deadlines."""
        for hold in self.broker.expire_holds(self.clock(), live_sessions=live_sessions or set()):
            self._publish_hold("hold.decided", hold)
        self._expiry_task = asyncio.ensure_future(self._expire_forever())

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task

    # -- sessions ------------------------------------------------------------------------------

    async def request_hold(self, **request: Any) -> Hold:
        """Create a hold and wait for its outcome. Cancelling the wait withdraws the hold."""
        hold = self.broker.request_hold(now=self.clock(), **request)
        return await self.wait_for(hold)

    async def wait_for(self, hold: Hold) -> Hold:
        future: asyncio.Future[Hold] = asyncio.get_running_loop().create_future()
        self._waiters[hold.id] = future
        self._publish_hold("hold.created", hold)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError as cancelled:
            # Whoever cancelled may say why (the caller disconnected); Ctrl-C says nothing.
            reason = str(cancelled.args[0]) if cancelled.args else "withdrawn"
            with contextlib.suppress(DecisionRefused):
                withdrawn = self.broker.withdraw_hold(
                    hold.id, by=hold.user, now=self.clock(), reason=reason
                )
                self._publish_hold("hold.decided", withdrawn)
            raise
        finally:
            self._waiters.pop(hold.id, None)

    def _publish_hold(self, event: str, hold: Hold) -> None:
        self.control.publish(HOLDS_TOPIC, event, hold.to_json())
        if hold.status is not HoldStatus.PENDING:
            future = self._waiters.get(hold.id)
            if future is not None and not future.done():
                future.set_result(hold)

    # -- expiry --------------------------------------------------------------------------------

    async def _expire_forever(self) -> None:
        while True:
            deadline = self.broker.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            now = self.clock()
            for hold in self.broker.expire_holds(now):
                self._publish_hold("hold.decided", hold)
            for grant in self.broker.expire_grants(now):
                self.control.publish(GRANTS_TOPIC, "grant.ended", grant.to_json())
                if self._on_grant_ended is not None:
                    self._on_grant_ended(grant)

    # -- control operations --------------------------------------------------------------------

    async def _list_holds(self, caller: Caller, args: dict[str, Any]) -> list[dict[str, Any]]:
        status = args.get("status", "pending")
        holds = self.broker.store.list_holds(None if status == "all" else HoldStatus(status))
        listed = [hold.to_json() for hold in holds]
        return [hold for hold in listed if caller.sees(HOLDS_TOPIC, hold)]

    def decide_hold(self, hold_id: str, person: Person, *, approve: bool, reason: str) -> Hold:
        """One person's decision, pushed to subscribers and to the waiting session."""
        hold = self.broker.decide_hold(
            hold_id, person, approve=approve, reason=reason, now=self.clock()
        )
        event = "hold.updated" if hold.status is HoldStatus.PENDING else "hold.decided"
        self._publish_hold(event, hold)
        return hold

    async def _decide_hold(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        self._refuse_unseen(caller, HOLDS_TOPIC, self.broker.store.get_hold(str(args["id"])))
        hold = self.decide_hold(
            str(args["id"]),
            caller.person,
            approve=bool(args["approve"]),
            reason=str(args.get("reason") or ""),
        )
        return hold.to_json()

    async def _list_grants(self, caller: Caller, args: dict[str, Any]) -> list[dict[str, Any]]:
        listed = [grant.to_json() for grant in self.broker.store.list_grants()]
        return [grant for grant in listed if caller.sees(GRANTS_TOPIC, grant)]

    def request_grant(
        self, person: Person, target: str, *, duration_s: int, reason: str, approvers: list[str]
    ) -> Grant:
        """A grant request, for the target's approvers unless others are named."""
        approvers = approvers or self._grant_approvers(target)
        if not approvers:
            raise DecisionRefused(f"no approver groups for {target}: name them with --approvers")
        grant = self.broker.request_grant(
            user=person.name,
            target=target,
            duration_s=duration_s,
            reason=reason,
            approvers=approvers,
            now=self.clock(),
            max_grant_s=self.max_grant_s,
        )
        self.control.publish(GRANTS_TOPIC, "grant.requested", grant.to_json())
        return grant

    async def _request_grant(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        # A console user gets the target's approvers, as in the line console: someone logged in
        # remotely does not pick who approves their own access.
        named = [] if caller.restricted else [str(g) for g in args.get("approvers") or []]
        grant = self.request_grant(
            caller.person,
            str(args["target"]),
            duration_s=grant_seconds(args["duration_s"], self.max_grant_s),
            reason=str(args.get("reason") or ""),
            approvers=named,
        )
        return grant.to_json()

    def decide_grant(self, grant_id: str, person: Person, *, approve: bool, reason: str) -> Grant:
        grant = self.broker.decide_grant(
            grant_id, person, approve=approve, reason=reason, now=self.clock()
        )
        self.control.publish(GRANTS_TOPIC, "grant.decided", grant.to_json())
        self._wake.set()  # its expiry is a new deadline
        return grant

    def revoke_grant(self, grant_id: str, person: Person, *, reason: str) -> Grant:
        grant = self.broker.revoke_grant(grant_id, person, reason=reason, now=self.clock())
        self.control.publish(GRANTS_TOPIC, "grant.ended", grant.to_json())
        if self._on_grant_ended is not None:
            self._on_grant_ended(grant)
        return grant

    async def _decide_grant(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        self._refuse_unseen(caller, GRANTS_TOPIC, self.broker.store.get_grant(str(args["id"])))
        grant = self.decide_grant(
            str(args["id"]),
            caller.person,
            approve=bool(args["approve"]),
            reason=str(args.get("reason") or ""),
        )
        return grant.to_json()

    async def _revoke_grant(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        self._refuse_unseen(caller, GRANTS_TOPIC, self.broker.store.get_grant(str(args["id"])))
        grant = self.revoke_grant(
            str(args["id"]), caller.person, reason=str(args.get("reason") or "")
        )
        return grant.to_json()

    @staticmethod
    def _refuse_unseen(caller: Caller, topic: str, item: Hold | Grant | None) -> None:
        """A console user deciding on a hold or grant they cannot see is told it does not
        exist, the same answer as for an unknown id: nothing about it leaks."""
        if item is not None and not caller.sees(topic, item.to_json()):
            kind = "hold" if topic == HOLDS_TOPIC else "grant"
            raise DecisionRefused(f"no {kind} {item.id}")

    async def _audit(self, caller: Caller, args: dict[str, Any]) -> list[dict[str, Any]]:
        limit = args.get("limit")
        entries = self.broker.store.audit_log(int(limit) if limit is not None else None)
        return [entry.to_json() for entry in entries]
