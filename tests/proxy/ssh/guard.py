"""The guard-mode attack harness: a real `ssh -tt` through the gateway into a real bash on the
real sshd, fed the way an agent types (pipes, one write per call), with rules that deny any
command naming a canary file. A test asserts what a user would see: whether the canary file is
still there after the attack, and what the caller was shown."""

from __future__ import annotations

import asyncio
import getpass
import shlex
from pathlib import Path
from typing import Any

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import Terminal, canary

__all__ = ["PROMPT", "Agent", "canary", "start_guard"]

PROMPT = "gw$ "


async def start_guard(harness: GatewayHarness, **extra_rules: Any) -> None:
    """alice on web1; commands naming a canary are denied, `sudo *` is held; output is masked
    for cards, e-mail addresses, password assignments and AWS keys (the issue's setting)."""
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1")
    harness.add_rule("no-canary", shell="*canary*", action="deny", message="canary")
    harness.add_rule("no-recursive-delete", shell="rm -rf *", action="deny", message="no")
    harness.add_rule("sudo-needs-review", shell="sudo *", action="review", approvers=["oncall"])
    for name, rule in extra_rules.items():
        harness.add_rule(name, **rule)
    harness.masks.append({"name": "cards", "detector": "credit_card", "style": "token"})
    harness.masks.append({"name": "emails", "detector": "email"})
    harness.masks.append({"name": "passwords", "detector": "password_assignment"})
    harness.masks.append({"name": "aws", "detector": "aws_access_key", "style": "last4"})
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()


class Agent(Terminal):
    """`ssh -tt alice+web1@gateway 'bash --norc -i'` driven through pipes: each `send` is one
    write on the channel, as an agent (or a script) sends its keys (sending, reading and
    closing as `gate_attacks.Terminal` does)."""

    @classmethod
    async def start(
        cls,
        harness: GatewayHarness,
        tmp_path: Path,
        *,
        env: str = "",
        shell: str = "",
        wait: bool = True,
        first: bytes = b"",
    ) -> Agent:
        """`first` is written at once, before the prompt; without `wait` the agent does not
        wait for the prompt either."""
        history = tmp_path / "history"
        history.touch()
        command = shell or (
            f"cd {shlex.quote(str(tmp_path))} && HISTFILE={shlex.quote(str(history))} "
            f"INPUTRC=/dev/null {env} PS1={shlex.quote(PROMPT)} exec bash --norc -i"
        )
        process = await asyncio.create_subprocess_exec(
            "ssh",
            *harness.ssh_args("alice"),
            "-tt",
            "-p",
            str(harness.port),
            "alice+web1@127.0.0.1",
            *([command] if command != "login" else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=harness.env(None),
            start_new_session=True,
        )
        agent = cls(process)
        if first:
            agent.send(first)
        if not wait:
            return agent
        await agent.expect(b"# " if command == "login" else PROMPT.encode())
        await asyncio.sleep(0.3)  # the prompt has settled: what follows is typed at it
        return agent

    async def run(self, data: bytes, marker: str, timeout: float = 20.0) -> int:
        """Send `data`, then (as its own write, once the screen is quiet) `echo MARKER` and
        wait for the marker's output: whatever `data` started has finished by then."""
        start = len(self.seen)
        self.send(data)
        await self.quiet()
        await self.at_prompt()
        self.send(f"echo {marker[:1]}''{marker[1:]}\r".encode())
        return await self.expect(marker.encode(), timeout, after=start)

    async def at_prompt(self, timeout: float = 20.0) -> None:
        """Wait until the screen ends at a prompt (a loaded machine may be slow to draw it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while PROMPT.encode() not in self.seen[-24:] and loop.time() < deadline:
            await self.quiet(0.2)
