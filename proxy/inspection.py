"""Policy-driven inspection of SSH channels: exec requests in full, shell lines at Enter.

This is the `ChannelInspector` the SSH bridge uses when the configuration has rules: it turns
the caller's identity and the target into a policy `Caller`, asks the policy for a verdict and
lets the `Enforcer` carry it out (record, deny, or hold for approval).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from proxy.holds.enforcement import Enforcer, Outcome
from proxy.line_detector import CommandLine, LineDetector
from proxy.policy import (
    Action,
    Basis,
    Caller,
    Policy,
    Verdict,
    decide_exec,
    decide_files,
    decide_shell,
    decide_unseen,
)
from proxy.shell import SimpleCommand, Unparsable, analyse_line
from proxy.shell_gate import LONG_LINE, GuardGate, decide_guard_line
from proxy.ssh.sftp import FileRequest
from storage.masking import Masker, MaskPolicy

if TYPE_CHECKING:
    from proxy.ssh.link import TargetLink


# Programs that read further commands from the terminal, and the options (or the number of
# operands) that make them run something given instead. In strict mode such a program is
# opaque: what is typed into it never meets the gate (docs/security-model.md, strict mode).
_ALWAYS_READS = frozenset(
    {
        "script",
        "tmux",
        "screen",
        "byobu",
        "dtach",
        "su",
        "expect",
        "telnet",
        "ftp",
        "sftp",
        "busybox",
        "ed",
        "red",
        "ex",
        "dc",
        "rlwrap",
        "unbuffer",
        "tclsh",
        "wish",
        "ghci",
        "erl",
        "iex",
        "jshell",
        "julia",
        "R",
        "octave",
        "guile",
        "sbcl",
        "clisp",
        "mongo",
        "mongosh",
        "cqlsh",
    }
)


class _Reads(NamedTuple):
    """When a program reads further commands: unless one of `work` (options that give it a
    program, `-c`, `-e`) is there, or `operands` operands are (a script, a database and SQL).
    `argument` lists its options that take the next word as their argument, so that word is
    not taken for an operand (`python3 -X dev`, `ssh -p 22 host`)."""

    work: frozenset[str]
    operands: int
    argument: frozenset[str] = frozenset()


_PYTHON = _Reads(frozenset({"-c", "-m"}), 1, frozenset({"-W", "-X", "-Q"}))
_NODE = _Reads(
    frozenset({"-e", "--eval", "-p", "--print"}),
    1,
    frozenset({"-r", "--require", "--import", "--loader", "-C", "--conditions"}),
)
_SQL = frozenset({"-h", "--host", "-p", "--port", "-U", "--username", "-u", "--user", "-d"})
_READS_UNLESS: dict[str, _Reads] = {
    **dict.fromkeys(("python", "python2", "python3", "pypy", "pypy3"), _PYTHON),
    "perl": _Reads(frozenset({"-e", "-E"}), 1, frozenset({"-I", "-M", "-m"})),
    "ruby": _Reads(frozenset({"-e"}), 1, frozenset({"-I", "-r", "-C", "-E"})),
    "node": _NODE,
    "nodejs": _NODE,
    "php": _Reads(frozenset({"-r"}), 1, frozenset({"-c", "-d", "-z"})),
    "lua": _Reads(frozenset({"-e"}), 1, frozenset({"-l"})),
    "irb": _Reads(frozenset(), 99),
    "gdb": _Reads(frozenset({"-batch", "--batch"}), 99),
    "psql": _Reads(frozenset({"-c", "--command", "-f", "--file", "-l", "--list"}), 99, _SQL),
    "mysql": _Reads(frozenset({"-e", "--execute"}), 99, _SQL),
    "mariadb": _Reads(frozenset({"-e", "--execute"}), 99, _SQL),
    "sqlite3": _Reads(
        frozenset(), 2, frozenset({"-cmd", "-init", "-separator", "-nullvalue", "-newline"})
    ),
    "redis-cli": _Reads(frozenset(), 1, frozenset({"-h", "-p", "-a", "-n", "-u", "-s"})),
    "ssh": _Reads(frozenset(), 2, frozenset(f"-{c}" for c in "BbcDEeFIiJLlmOoPpQRSWw")),
}


def reads_commands(command: SimpleCommand) -> str | None:
    """Why `command` reads further commands from its terminal (a shell, `script`, a REPL, `su`,
    `sudo -i`, tmux), or None. A work option counts however it is spelt (`-c'x'`, `-cx`); an
    option known to take an argument hides the next word; `-i` (interactive) and `-` (the
    program from the terminal) make any of them read."""
    name = command.program
    if command.reads_commands:
        return f"{name} reads the commands to run from the terminal"
    if name in _ALWAYS_READS:
        return f"{name} runs further commands typed into it"
    rule = _READS_UNLESS.get(name)
    if rule is None:
        return None
    operands = 0
    skip = False
    ended = False
    for word in command.argv[1:]:
        text = word.text
        if skip:
            skip = False
            continue
        if text == "-":
            return f"{name} reads its program from the terminal"
        if text == "--" and not ended:
            ended = True
            continue
        if text.startswith("-") and not ended:
            if text in ("-i", "--interactive"):
                return f"{name} runs further commands typed into it"
            if any(text == o or (o[1] != "-" and text.startswith(o)) for o in rule.work):
                return None
            skip = text in rule.argument
            continue
        operands += 1
    if operands >= rule.operands:
        return None
    return f"{name} runs further commands typed into it"


def decide_strict_line(policy: Policy, caller: Caller, target: str, line: str) -> Verdict:
    """A line typed into a strict shell: the shell verdict, and a program that would read
    further commands (see `reads_commands`) is opaque unless a rule of its own names it."""
    verdict = decide_shell(policy, caller, target, line)
    result = analyse_line(line)
    if isinstance(result, Unparsable) or verdict.action is Action.DENY:
        return verdict
    for simple in result.commands:
        why = reads_commands(simple)
        if why is None:
            continue
        own = decide_shell(policy, caller, target, simple.text)
        named = own.rule is not None and own.basis is Basis.RULE
        rule = policy.rule(own.rule) if own.rule is not None else None
        if named and rule is not None and not rule.catch_all:
            opaque = own
        else:
            opaque = decide_unseen(policy, caller, target, simple.text, why)
        if opaque.action.severity > verdict.action.severity:
            verdict = opaque
        if verdict.action is Action.DENY:
            break
    return verdict


def caller_of(link: TargetLink) -> Caller:
    identity = link.identity
    return Caller.of(identity)  # kind, owner and client id too (proxy/policy.py)


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
        link.session.record_command(channel, "exec", command)
        outcome = await self._enforce(link, channel, command, verdict, notify)
        return None if outcome.allowed else outcome.machine_line(verdict)

    async def check_strict_line(
        self,
        link: TargetLink,
        channel: int,
        line: str,
        notify: Callable[[str], None] = lambda text: None,
    ) -> str | None:
        """A line of a strict shell (proxy/ssh/strict.py): None to run it, else why not. A long
        line (a big paste) is parsed on a worker thread, off the event loop."""
        args = (self.policy, caller_of(link), link.target.name, line)
        if len(line) > LONG_LINE:
            verdict = await asyncio.to_thread(decide_strict_line, *args)
        else:
            verdict = decide_strict_line(*args)
        link.session.record_command(channel, "shell", line)
        outcome = await self._enforce(link, channel, line, verdict, notify)
        return None if outcome.allowed else outcome.message

    async def check_strict_exec(
        self,
        link: TargetLink,
        channel: int,
        command: str,
        notify: Callable[[str], None] = lambda text: None,
    ) -> str | None:
        """An exec request with a terminal from a strict caller: judged in full as an exec
        whose input nothing reads (a shell in it is opaque), and as a strict line (so is a
        REPL, `script` or tmux): no program there takes commands the gate never sees."""
        caller = caller_of(link)
        target = link.target.name
        verdicts = (
            decide_exec(self.policy, caller, target, command, terminal=False),
            decide_strict_line(self.policy, caller, target, command),
        )
        verdict = max(verdicts, key=lambda v: v.action.severity)
        link.session.record_command(channel, "exec", command)
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
        link.session.record_command(channel, "shell", what)
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
    ) -> GuardGate:
        """A gate for one interactive shell channel."""
        caller = caller_of(link)

        def decide(line: CommandLine) -> Verdict | None:
            return decide_guard_line(self.policy, caller, link.target.name, line)

        async def enforce(command: str, verdict: Verdict, notify: Callable[[str], None]) -> Outcome:
            link.session.record_command(channel, "shell", command)
            return await self._enforce(link, channel, command, verdict, notify)

        return GuardGate(
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
        link.waiting += 1  # a caller waiting on a hold is not idle (proxy.ssh.link.watch_idle)
        try:
            return await self.enforcer.enforce(
                link.session,
                user=link.identity.name,
                target=link.target.name,
                channel=channel,
                command=command,
                verdict=verdict,
                notify=notify,
            )
        finally:
            link.waiting -= 1
            link.touch()  # the idle clock starts again once the hold is decided

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
        link.session.record_command(channel, "sftp", what)
        outcome = await self._enforce(link, channel, what, verdict, notify)
        return None if outcome.allowed else outcome.message
