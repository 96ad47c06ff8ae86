"""Carrying out a verdict: record it, refuse with a clear message, or hold the command until an
approver decides. Shared by every place a command is seen (SSH exec, shell lines, SQL), so a
hold looks and is recorded the same everywhere.

Fail closed: a review verdict with no approval service to reach is a denial.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from proxy.holds.service import ApprovalService
from proxy.policy import Action, Verdict
from storage.state import Hold, HoldStatus, StoreUnavailable

DENIED_EXIT_STATUS = 126  # what a shell reports for a command that cannot be executed


class SessionRecord(Protocol):
    """What enforcement needs from a session (a `proxy.session.GatewaySession`): its id and
    the typed events of a verdict and a hold."""

    @property
    def id(self) -> str: ...

    def record_verdict(self, channel: int, verdict: Verdict) -> bool: ...

    def record_hold_requested(
        self, hold_id: str, command: str, rule: str, approvers: list[str]
    ) -> bool: ...

    def record_hold_decided(self, hold_id: str, decision: str, by: str, reason: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happens to the command: it runs, or it does not and `message` says why."""

    allowed: bool
    message: str = ""
    hold: Hold | None = None

    def machine_line(self, verdict: Verdict) -> str:
        """One line an agent can parse: a human prefix, then JSON."""
        detail = {
            "verdict": "allow" if self.allowed else "deny",
            "rule": verdict.rule,
            "reason": self.message,
            "hold": self.hold.id if self.hold else None,
            "hold_status": str(self.hold.status) if self.hold else None,
        }
        return f"hoop: {self.message} {json.dumps(detail, sort_keys=True)}"


class HoldNotice(str):
    """The line a held caller is shown: "... (expires in 10m)" as plain text, and its parts for
    a terminal that counts the time left down instead (the PTY shell's status line)."""

    waiting: str
    timeout_s: int

    def __new__(cls, waiting: str, timeout_s: int) -> HoldNotice:
        notice = super().__new__(cls, f"{waiting} (expires in {_minutes(timeout_s)})")
        notice.waiting = waiting
        notice.timeout_s = timeout_s
        return notice


class Enforcer:
    """Applies verdicts for one gateway. `notify` callbacks show progress to the caller."""

    def __init__(self, approvals: ApprovalService | None) -> None:
        self.approvals = approvals

    async def enforce(
        self,
        session: SessionRecord,
        *,
        user: str,
        target: str,
        channel: int,
        command: str,
        verdict: Verdict,
        notify: Callable[[str], None] = lambda text: None,
    ) -> Outcome:
        session.record_verdict(channel, verdict)
        if verdict.action is Action.ALLOW:
            return Outcome(True)
        if verdict.action is Action.DENY:
            return Outcome(False, f"denied: {verdict.describe()}")
        if self.approvals is None:
            return Outcome(
                False, "denied: this command needs approval and no approver can be reached"
            )
        review = verdict.review
        if review is None or not review.approvers:
            return Outcome(
                False,
                f"denied: {verdict.describe()}: it needs review, and no approver group is "
                "configured for it ([policy] review approvers)",
            )
        return await self._hold(self.approvals, session, user, target, command, verdict, notify)

    @staticmethod
    async def _hold(
        approvals: ApprovalService,
        session: SessionRecord,
        user: str,
        target: str,
        command: str,
        verdict: Verdict,
        notify: Callable[[str], None],
    ) -> Outcome:
        """Hold the command until it is decided; record the hold and its end."""
        review = verdict.review
        assert review is not None
        try:
            hold = await approvals.request_hold(
                session_id=session.id,
                user=user,
                target=target,
                command=command,
                rule=verdict.rule or f"[policy] {verdict.basis.value}",
                approvers=list(review.approvers),
                approvals=review.approvals,
                timeout_s=review.timeout_seconds,
            )
        except StoreUnavailable as exc:
            return Outcome(
                False, f"denied: it needs approval, and the hold could not be kept: {exc}"
            )
        session.record_hold_requested(hold.id, command, hold.rule, list(hold.approvers))
        notify(
            HoldNotice(
                f"held as {hold.id} {_held_why(verdict)}: waiting for {review.approvals} "
                f"approval(s) from {', '.join(review.approvers)}",
                review.timeout_seconds,
            )
        )

        def record_end(final: Hold) -> None:
            last = final.decisions[-1] if final.decisions else None
            session.record_hold_decided(
                hold.id,
                str(final.status),
                last.by if last else "gateway",
                last.reason if last else final.note or str(final.status),
            )

        decided = await approvals.wait_for(hold, on_end=record_end)
        return _outcome(decided)


def _held_why(verdict: Verdict) -> str:
    """`by rule NAME`, or, when a default held the line (one the parser cannot read, an
    opaque program), that default's reason: the caller sees why nothing runs yet."""
    if verdict.rule:
        return f"by rule {verdict.rule}"
    return f"({verdict.message})" if verdict.message else f"({verdict.basis.value})"


def _outcome(hold: Hold) -> Outcome:
    """What the caller is told once a hold has ended."""
    if hold.status is HoldStatus.APPROVED:
        return Outcome(True, f"{hold.id} approved by {', '.join(hold.approved_by)}", hold)
    reason = {
        HoldStatus.DENIED: lambda: (
            f"{hold.id} denied by {hold.decisions[-1].by}: {hold.decisions[-1].reason}"
        ),
        HoldStatus.EXPIRED: lambda: f"{hold.id} expired without a decision",
        HoldStatus.WITHDRAWN: lambda: f"{hold.id} withdrawn",
    }[hold.status]()
    return Outcome(False, reason, hold)


def _minutes(seconds: int) -> str:
    return f"{seconds // 60}m" if seconds >= 60 else f"{seconds}s"
