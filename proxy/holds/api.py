"""The control socket's operations on holds, grants and the audit log.

Each handler reads its arguments from the request map, asks the `ApprovalService` and answers
with `to_json()` of what came back: the one place holds and grants become JSON on the way out
(events are serialised by `ControlServer.publish`). Visibility is checked on the typed object:
a console ticket's connection deciding a hold it may not see is told it does not exist, the
same answer as for an unknown id, so nothing about it leaks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from proxy.holds.broker import Person, Visible, grant_seconds
from proxy.holds.control import GRANTS_TOPIC, HOLDS_TOPIC, ControlPeer, ControlServer
from storage.state import AuditEntry, Grant, GrantStatus, Hold, HoldStatus


class Service(Protocol):
    """What the operations ask of `proxy.holds.service.ApprovalService`."""

    max_grant_s: float

    async def list_holds(self, status: HoldStatus | None = ...) -> list[Hold]: ...
    async def list_grants(self, status: GrantStatus | None = ...) -> list[Grant]: ...
    async def audit_log(self, limit: int | None = ...) -> list[AuditEntry]: ...
    async def decide_hold(
        self, hold_id: str, person: Person, *, approve: bool, reason: str, visible: Visible = ...
    ) -> Hold: ...
    async def request_grant(
        self, person: Person, target: str, *, duration_s: int, reason: str, approvers: list[str]
    ) -> Grant: ...
    async def decide_grant(
        self, grant_id: str, person: Person, *, approve: bool, reason: str, visible: Visible = ...
    ) -> Grant: ...
    async def revoke_grant(
        self, grant_id: str, person: Person, *, reason: str, visible: Visible = ...
    ) -> Grant: ...


class HoldsApi:
    """The operations `holds.*`, `grants.*` and `audit` on one service."""

    def __init__(
        self, service: Service, describe_caller: Callable[[str], dict[str, str]] | None = None
    ) -> None:
        self.service = service
        # a requester's name -> person or agent, owner, client id (proxy.oidc.identity)
        self.describe_caller = describe_caller or (lambda name: {})

    def register(self, control: ControlServer) -> None:
        for op, handler in {
            "holds.list": self.list_holds,
            "holds.decide": self.decide_hold,
            "grants.list": self.list_grants,
            "grants.request": self.request_grant,
            "grants.decide": self.decide_grant,
            "grants.revoke": self.revoke_grant,
            "audit": self.audit,
        }.items():
            control.register(op, handler)

    async def list_holds(self, caller: ControlPeer, args: dict[str, Any]) -> list[dict[str, Any]]:
        status = args.get("status", "pending")
        holds = await self.service.list_holds(None if status == "all" else HoldStatus(status))
        return [
            {**hold.to_json(), "caller": self.describe_caller(hold.user)}
            for hold in holds
            if caller.sees(HOLDS_TOPIC, hold)
        ]

    async def decide_hold(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        hold = await self.service.decide_hold(
            str(args["id"]),
            caller.person,
            approve=bool(args["approve"]),
            reason=str(args.get("reason") or ""),
            visible=_seen_by(caller, HOLDS_TOPIC),
        )
        return hold.to_json()

    async def list_grants(self, caller: ControlPeer, args: dict[str, Any]) -> list[dict[str, Any]]:
        grants = await self.service.list_grants()
        return [grant.to_json() for grant in grants if caller.sees(GRANTS_TOPIC, grant)]

    async def request_grant(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        # A console user gets the target's approvers, as in the line console: someone logged in
        # remotely does not pick who approves their own access.
        named = [] if caller.restricted else [str(g) for g in args.get("approvers") or []]
        grant = await self.service.request_grant(
            caller.person,
            str(args["target"]),
            duration_s=grant_seconds(args["duration_s"], self.service.max_grant_s),
            reason=str(args.get("reason") or ""),
            approvers=named,
        )
        return grant.to_json()

    async def decide_grant(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        grant = await self.service.decide_grant(
            str(args["id"]),
            caller.person,
            approve=bool(args["approve"]),
            reason=str(args.get("reason") or ""),
            visible=_seen_by(caller, GRANTS_TOPIC),
        )
        return grant.to_json()

    async def revoke_grant(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        grant = await self.service.revoke_grant(
            str(args["id"]),
            caller.person,
            reason=str(args.get("reason") or ""),
            visible=_seen_by(caller, GRANTS_TOPIC),
        )
        return grant.to_json()

    async def audit(self, caller: ControlPeer, args: dict[str, Any]) -> list[dict[str, Any]]:
        limit = args.get("limit")
        entries = await self.service.audit_log(int(limit) if limit is not None else None)
        return [entry.to_json() for entry in entries]


def _seen_by(caller: ControlPeer, topic: str) -> Visible:
    def visible(item: Hold | Grant) -> bool:
        return caller.sees(topic, item)

    return visible
