"""Policy-driven inspection of SSH channels: exec requests in full, shell lines at Enter.

This is the `ChannelInspector` the SSH bridge uses when the configuration has rules: it turns
the caller's identity and the target into a policy `Caller`, asks the policy for a verdict and
lets the `Enforcer` carry it out (record, deny, or hold for approval).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.enforcement import Enforcer, Outcome
from proxy.line_detector import CommandLine, LineDetector
from proxy.masking import Masker, MaskPolicy
from proxy.policy import (
    Caller,
    Policy,
    Verdict,
    decide_exec,
    decide_files,
    decide_unseen,
)
from proxy.shell_gate import ShellGate, decide_guard_line
from proxy.ssh.sftp import FileRequest
from storage.schema import EventType

if TYPE_CHECKING:
    from proxy.ssh.link import TargetLink


def caller_of(link: TargetLink) -> Caller:
    identity = link.identity
    return Caller(identity.name, identity.groups, identity.service_account)


class PolicyInspector:
    """Decides and enforces every command a channel carries."""

    def __init__(self, policy: Policy, enforcer: Enforcer, masks: MaskPolicy | None = None) -> None:
        self.policy = policy
        self.enforcer = enforcer
        self.masks = masks

    def output_masker(self, link: TargetLink) -> Masker | None:
        """The masking rules for what this caller sees on this target, if any apply."""
        if self.masks is None:
            return None
        masker = self.masks.for_caller(link.identity.groups, link.target.name)
        return masker if masker.masks_text else None

    async def check_exec(
        self,
        link: TargetLink,
        channel: int,
        command: str,
        notify: Callable[[str], None] = lambda text: None,
        *,
        terminal: bool = False,
    ) -> str | None:
        """None to run the command, else the one line to put on the caller's stderr."""
        caller = caller_of(link)
        verdict = decide_exec(self.policy, caller, link.target.name, command, terminal=terminal)
        link.record(EventType.COMMAND, channel, "exec", command)
        outcome = await self._enforce(link, channel, command, verdict, notify)
        return None if outcome.allowed else outcome.machine_line(verdict)

    async def check_shell_without_terminal(
        self,
        link: TargetLink,
        channel: int,
        notify: Callable[[str], None] = lambda text: None,
    ) -> str | None:
        """A shell session without a terminal (`ssh -T host < script`): the target's shell runs
        whatever the caller sends as a script, with no Enter and no screen to judge it by. It is
        judged once, as a command nobody can read (`decide_unseen`): None to let it start, else
        the line for the caller's stderr."""
        what = "a shell without a terminal (its commands come from the caller, not inspected)"
        why = "a shell without a terminal runs input the gateway cannot inspect; use ssh -t"
        verdict = decide_unseen(self.policy, caller_of(link), link.target.name, what, why)
        link.record(EventType.COMMAND, channel, "shell", what)
        outcome = await self._enforce(link, channel, what, verdict, notify)
        return None if outcome.allowed else outcome.machine_line(verdict)

    def shell_gate(
        self,
        link: TargetLink,
        channel: int,
        columns: int,
        *,
        to_target: Callable[[bytes], None],
        to_caller: Callable[[bytes], None],
    ) -> ShellGate:
        """A gate for one interactive shell channel."""
        caller = caller_of(link)

        def decide(line: CommandLine) -> Verdict | None:
            return decide_guard_line(self.policy, caller, link.target.name, line)

        async def enforce(command: str, verdict: Verdict, notify: Callable[[str], None]) -> Outcome:
            link.record(EventType.COMMAND, channel, "shell", command)
            return await self._enforce(link, channel, command, verdict, notify)

        return ShellGate(
            LineDetector(columns),
            decide=decide,
            enforce=enforce,
            to_target=to_target,
            to_caller=to_caller,
        )

    async def _enforce(
        self,
        link: TargetLink,
        channel: int,
        command: str,
        verdict: Verdict,
        notify: Callable[[str], None],
    ) -> Outcome:
        return await self.enforcer.enforce(
            link,
            user=link.identity.name,
            target=link.target.name,
            channel=channel,
            command=command,
            verdict=verdict,
            notify=notify,
        )

    async def check_file(
        self,
        link: TargetLink,
        channel: int,
        request: FileRequest,
        notify: Callable[[str], None] = lambda text: None,
    ) -> str | None:
        """An SFTP request that touches files (proxy.ssh.sftp.FileRequest), judged by the
        `files` rules: None to forward it, else the reason to refuse it with."""
        caller = caller_of(link)
        if request.unknown:
            what = f"sftp {request.unknown}"
            why = "an SFTP request the gateway cannot read"
            verdict = decide_unseen(self.policy, caller, link.target.name, what, why)
        else:
            verdict = decide_files(
                self.policy, caller, link.target.name, request.operations, cwd=request.cwd
            )
            what = verdict.command or " ".join(
                f"sftp {op} {path}" for op, path in request.operations
            )
        link.record(EventType.COMMAND, channel, "sftp", what)
        outcome = await self._enforce(link, channel, what, verdict, notify)
        return None if outcome.allowed else outcome.message
