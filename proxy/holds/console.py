"""The line-mode approver console: `ssh -t -p 2222 bob@gateway console`.

An on-call approver away from the gateway host logs in like anyone else and gets a small
console: held commands and grant requests appear as they happen, and `approve` / `deny` decide
them as that person. Transport-free: it reads lines and writes text through two callables, so
the SSH server (or a test) supplies the I/O.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.holds.broker import Person
from proxy.holds.control import GRANTS_TOPIC, HOLDS_TOPIC
from proxy.holds.service import ApprovalService
from storage.state import Grant, GrantStatus, Hold, Refused, StoreUnavailable

DURATION = re.compile(r"(\d+)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int | None:
    """'30m', '1h', '1h30m' -> seconds; None when it is not a duration."""
    parts = DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * UNITS[u] for n, u in parts)


ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with every character that is not plainly printable written as an escape
    (`\\x1b`, `\\r`, `\\u202e`): control characters (C0, DEL, C1), format characters such
    as the bidirectional overrides, and spaces other than ` `. A held command is the
    requester's own text, byte for byte from an exec request: printed raw, its CR, CSI and OSC
    sequences could redraw the approver's screen and show a harmless command in place of the
    one that runs."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in ESCAPES:
        return ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


HELP = """commands:
  holds                       list held commands
  grants                      list grant requests and live grants
  approve ID [REASON...]      approve a hold (h-...) or a grant request (g-...)
  deny ID REASON...           deny it, with a reason
  revoke ID [REASON...]       end a grant now
  request TARGET FOR REASON...  ask for time-bound access (FOR like 30m, 1h)
  help                        this list
  quit                        leave the console
new holds and requests are shown as they arrive."""

ReadLine = Callable[[], Awaitable[str | None]]
Write = Callable[[str], None]


def describe_hold(hold: Hold, now: float) -> str:
    left = max(0, int(hold.expires_at - now))
    return (
        f"{hold.id}  {hold.user}@{hold.target}  {printable(hold.command)}\n"
        f"    rule {hold.rule}, {len(hold.approved_by)}/{hold.approvals_needed} approvals from "
        f"{', '.join(hold.approvers)}, {left // 60}m{left % 60:02d}s left"
    )


def describe_grant(grant: Grant) -> str:
    hours = grant.duration_s / 3600
    return (
        f"{grant.id}  {grant.user} -> {grant.target} for {hours:g}h: "
        f"{printable(grant.reason)} [{grant.status}]"
    )


class Console:
    """One approver's console session."""

    def __init__(
        self,
        service: ApprovalService,
        person: Person,
        read_line: ReadLine,
        write: Write,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.person = person
        self._read_line = read_line
        self._write = write
        self._clock = clock

    def _on_event(self, topic: str, event: str, data: dict[str, Any]) -> None:
        item = Hold.from_json(data) if topic == HOLDS_TOPIC else Grant.from_json(data)
        if not self.person.concerned_by(item):
            return
        if isinstance(item, Hold) and event == "hold.created":
            self._write(f"\a\n[new hold] {describe_hold(item, self._clock())}\n")
        elif isinstance(item, Hold) and event == "hold.decided":
            self._write(f"\n[{item.id}] {item.status}\n")
        elif isinstance(item, Grant) and event == "grant.requested":
            self._write(f"\a\n[grant request] {describe_grant(item)}\n")

    async def run(self) -> None:
        stop_listening = self.service.control.listen(self._on_event, (HOLDS_TOPIC, GRANTS_TOPIC))
        groups = ", ".join(sorted(self.person.groups)) or "no groups"
        self._write(f"hoop console for {self.person.name} ({groups}). Type help.\n")
        await self._command("holds", [])
        try:
            while True:
                self._write("hoop> ")
                line = await self._read_line()
                if line is None:
                    return
                try:
                    words = shlex.split(line)
                except ValueError as exc:
                    self._write(f"error: {exc}\n")
                    continue
                if not words:
                    continue
                if words[0] in ("quit", "exit"):
                    return
                await self._command(words[0], words[1:])
        finally:
            stop_listening()

    async def _command(self, name: str, args: list[str]) -> None:
        handlers: dict[str, Callable[[list[str]], Awaitable[None]]] = {
            "help": self._help,
            "holds": self._show_holds,
            "grants": self._show_grants,
            "approve": lambda a: self._decide(a, approve=True),
            "deny": lambda a: self._decide(a, approve=False),
            "revoke": self._revoke,
            "request": self._request,
        }
        handler = handlers.get(name)
        if handler is None:
            self._write(f"unknown command {name!r}; type help\n")
            return
        try:
            await handler(args)
        except Refused as exc:
            self._write(f"refused: {exc}\n")
        except StoreUnavailable as exc:
            self._write(f"not now: {exc}\n")

    async def _help(self, args: list[str]) -> None:
        self._write(HELP + "\n")

    async def _show_holds(self, args: list[str]) -> None:
        holds = [h for h in await self.service.pending_holds() if self.person.concerned_by(h)]
        if not holds:
            self._write("no held commands\n")
        now = self._clock()
        for hold in holds:
            self._write(describe_hold(hold, now) + "\n")

    async def _show_grants(self, args: list[str]) -> None:
        open_ = (GrantStatus.REQUESTED, GrantStatus.ACTIVE)
        grants = [
            g
            for g in await self.service.list_grants()
            if g.status in open_ and self.person.concerned_by(g)
        ]
        if not grants:
            self._write("no grant requests or live grants\n")
        for grant in grants:
            self._write(describe_grant(grant) + "\n")

    async def _decide(self, args: list[str], *, approve: bool) -> None:
        if not args:
            self._write(f"usage: {'approve ID [REASON]' if approve else 'deny ID REASON'}\n")
            return
        item_id, reason = args[0], " ".join(args[1:])
        concerns = self.person.concerned_by
        if item_id.startswith("g-"):
            await self.service.decide_grant(
                item_id, self.person, approve=approve, reason=reason, visible=concerns
            )
            self._write(f"{item_id}: {'approved' if approve else 'denied'}\n")
            return
        hold = await self.service.decide_hold(
            item_id, self.person, approve=approve, reason=reason, visible=concerns
        )
        if hold.pending:
            self._write(
                f"{item_id}: approval recorded ({len(hold.approved_by)} of "
                f"{hold.approvals_needed})\n"
            )

    async def _request(self, args: list[str]) -> None:
        if len(args) < 3:
            self._write("usage: request TARGET FOR REASON...  (for example: request web1 1h fix)\n")
            return
        seconds = parse_duration(args[1])
        if seconds is None:
            self._write(f"{args[1]!r} is not a duration like 30m or 1h\n")
            return
        grant = await self.service.request_grant(
            self.person, args[0], duration_s=seconds, reason=" ".join(args[2:]), approvers=[]
        )
        self._write(
            f"{grant.id}: access to {grant.target} requested; an approver from "
            f"{', '.join(grant.approvers)} must approve it\n"
        )

    async def _revoke(self, args: list[str]) -> None:
        if not args:
            self._write("usage: revoke ID [REASON]\n")
            return
        await self.service.revoke_grant(
            args[0], self.person, reason=" ".join(args[1:]), visible=self.person.concerned_by
        )
        self._write(f"{args[0]}: revoked\n")
