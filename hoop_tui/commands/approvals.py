"""Scripting the approval broker: holds, approve, deny, grants, request, revoke, audit.

Decisions go through the running gateway's control socket, so the gateway knows who acts and
resumes the waiting session at once. Listings read the same socket.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hoop_tui.commands.common import add_config_arguments, data_dir_from, parse_duration
from hoop_tui.errors import CommandError

# asyncio, the control client and the console's helpers load when a command runs (together a
# tenth of a second), not for every `hoop-tui` command that only registers these.


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _left(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    seconds = int(epoch - time.time())
    if seconds <= 0:
        return "due"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def call_gateway(args: argparse.Namespace, op: str, **call_args: Any) -> Any:
    """One request to the running gateway; its refusals become one-line errors."""
    import asyncio

    from proxy.holds.control import ControlClient, ControlError, socket_path

    async def run() -> Any:
        client = await ControlClient.connect(socket_path(data_dir_from(args)))
        try:
            return await client.call(op, **call_args)
        finally:
            await client.close()

    try:
        return asyncio.run(run())
    except ControlError as exc:
        raise CommandError(str(exc)) from None


def _print_json_or(args: argparse.Namespace, value: Any, show: Callable[[Any], None]) -> int:
    if args.json:
        print(json.dumps(value, indent=2))
    else:
        show(value)
    return 0


def cmd_holds(args: argparse.Namespace) -> int:
    holds = call_gateway(args, "holds.list", status="all" if args.all else "pending")

    def show(rows: list[dict[str, Any]]) -> None:
        from proxy.holds.console import printable
        from storage.state import Hold

        if not rows:
            print("no held commands")
            return
        print(
            f"{'ID':<10} {'USER':<10} {'TARGET':<12} {'RULE':<22} {'LEFT':<8} {'STATUS':<9} COMMAND"
        )
        for row in rows:
            hold = Hold.from_json(row)
            votes = f"{len(hold.approved_by)}/{hold.approvals_needed}"
            status = f"pending {votes}" if hold.pending else str(hold.status)
            # A decided hold says why it ended ("the caller disconnected", "timed out").
            why = f"  ({printable(hold.note)})" if hold.note else ""
            print(
                f"{hold.id:<10} {hold.user[:10]:<10} {hold.target[:12]:<12} "
                f"{hold.rule[:22]:<22} {_left(hold.expires_at):<8} {status:<9} "
                f"{printable(hold.command)}{why}{_agent(row.get('caller') or {})}"
            )

    return _print_json_or(args, holds, show)


def _decide(args: argparse.Namespace, approve: bool) -> int:
    from storage.state import Hold

    grant = args.id.startswith("g-")
    op = "grants.decide" if grant else "holds.decide"
    result = call_gateway(args, op, id=args.id, approve=approve, reason=args.reason or "")
    hold = None if grant else Hold.from_json(result)
    if hold is not None and hold.pending:
        print(f"{args.id}: approval recorded ({len(hold.approved_by)} of {hold.approvals_needed})")
    else:
        print(f"{args.id}: {'approved' if approve else 'denied'}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, approve=True)


def cmd_deny(args: argparse.Namespace) -> int:
    return _decide(args, approve=False)


def cmd_grants(args: argparse.Namespace) -> int:
    grants = call_gateway(args, "grants.list")
    if not args.all:
        grants = [g for g in grants if g["status"] in ("requested", "active")]

    def show(rows: list[dict[str, Any]]) -> None:
        from proxy.holds.console import printable
        from storage.state import Grant

        if not rows:
            print("no grants")
            return
        print(f"{'ID':<10} {'USER':<10} {'TARGET':<12} {'STATUS':<10} {'LEFT':<8} REASON")
        for grant in map(Grant.from_json, rows):
            print(
                f"{grant.id:<10} {grant.user[:10]:<10} {grant.target[:12]:<12} "
                f"{grant.status:<10} {_left(grant.expires_at):<8} {printable(grant.reason)}"
            )

    return _print_json_or(args, grants, show)


def cmd_request(args: argparse.Namespace) -> int:
    try:
        duration_s = parse_duration(args.duration)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    grant = call_gateway(
        args,
        "grants.request",
        target=args.target,
        duration_s=duration_s,
        reason=args.reason,
        approvers=args.approvers or [],
    )
    print(
        f"{grant['id']}: access to {grant['target']} for {args.duration} requested; "
        "an approver must approve it (hoop-tui approve " + grant["id"] + ")"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    call_gateway(args, "grants.revoke", id=args.id, reason=args.reason or "")
    print(f"{args.id}: revoked; sessions relying on it are ended")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    entries = call_gateway(args, "audit", limit=args.limit)

    def show(rows: list[dict[str, Any]]) -> None:
        for entry in rows:
            detail = " ".join(f"{k}={v}" for k, v in entry["detail"].items() if v not in ("", None))
            print(
                f"{_when(entry['at'])}  {entry['actor']:<10} {entry['action']:<16} "
                f"{entry['subject']}  {detail}".rstrip()
            )

    return _print_json_or(args, entries, show)


def cmd_live(args: argparse.Namespace) -> int:
    sessions = call_gateway(args, "sessions.list")

    def show(rows: list[dict[str, Any]]) -> None:
        if not rows:
            print("no live sessions")
            return
        print(
            f"{'SESSION':<10} {'USER':<10} {'TARGET':<12} {'SINCE (UTC)':<19} {'IN':>9} "
            f"{'OUT':>11}  CLIENT"
        )
        for row in rows:
            print(
                f"{row['id'][:8]:<10} {row['user'][:10]:<10} {row['target'][:12]:<12} "
                f"{_when(row['started_at']):<19} {row['bytes_in']:>9} {row['bytes_out']:>11}  "
                f"{row['client']}{_agent(row)}"
            )

    return _print_json_or(args, sessions, show)


def _agent(row: dict[str, Any]) -> str:
    """`  agent of alice, client ci-bot` for an OIDC agent's session (docs/identity.md)."""
    if row.get("caller_kind") != "agent":
        return ""
    return f"  agent of {row.get('owner', '?')}, client {row.get('client_id', '?')}"


def cmd_watch(args: argparse.Namespace) -> int:
    """Copy a live session's output to this terminal until it ends or Ctrl-C."""
    import asyncio

    from proxy.holds.control import ControlClient, ControlError, socket_path

    async def run() -> None:
        client = await ControlClient.connect(socket_path(data_dir_from(args)))
        try:
            watched = await client.call("sessions.watch", id=args.id)
            print(
                f"watching {watched['user']} -> {watched['target']} (read-only; Ctrl-C stops)",
                file=sys.stderr,
            )
            async for message in client.events():
                if message["event"] == "session.output":
                    sys.stdout.buffer.write(message["data"]["data"])
                    sys.stdout.buffer.flush()
        finally:
            await client.close()

    try:
        asyncio.run(run())
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    return 0


def cmd_end(args: argparse.Namespace) -> int:
    result = call_gateway(args, "sessions.end", id=args.id, reason=args.reason)
    print(f"session {result['id'][:8]} ended")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text)
        add_config_arguments(parser)
        parser.set_defaults(handler=handler)
        return parser

    holds = add("holds", "list held commands waiting for approval", cmd_holds)
    holds.add_argument("--all", action="store_true", help="include decided and expired holds")
    holds.add_argument("--json", action="store_true")

    approve = add(
        "approve", "approve a held command (h-...) or an access grant (g-...)", cmd_approve
    )
    approve.add_argument("id")
    approve.add_argument("--reason", default="")

    deny = add("deny", "deny a held command or an access grant", cmd_deny)
    deny.add_argument("id")
    deny.add_argument("--reason", required=True)

    grants = add("grants", "list just-in-time access grants", cmd_grants)
    grants.add_argument("--all", action="store_true", help="include ended grants")
    grants.add_argument("--json", action="store_true")

    request = add("request", "request time-bound access to a target", cmd_request)
    request.add_argument("target")
    request.add_argument(
        "--for",
        dest="duration",
        required=True,
        metavar="DURATION",
        help="how long, for example 1h or 30m",
    )
    request.add_argument("--reason", required=True)
    request.add_argument(
        "--approvers", nargs="*", metavar="GROUP", help="approver groups (default: the target's)"
    )

    revoke = add("revoke", "end an access grant now", cmd_revoke)
    revoke.add_argument("id")
    revoke.add_argument("--reason", default="")

    live = add("live", "list live sessions", cmd_live)
    live.add_argument("--json", action="store_true")

    watch = add("watch", "watch a live session's output, read-only", cmd_watch)
    watch.add_argument("id", help="session id (a unique prefix will do)")

    end = add("end", "end a live session, telling its user why", cmd_end)
    end.add_argument("id", help="session id (a unique prefix will do)")
    end.add_argument("--reason", required=True)

    audit = add("audit", "who decided what, and when", cmd_audit)
    audit.add_argument("--limit", type=int)
    audit.add_argument("--json", action="store_true")
