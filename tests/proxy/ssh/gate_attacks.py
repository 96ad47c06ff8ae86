"""The hostile-caller setting of issue 12, shared by the tests/proxy/ssh/test_gate_*.py modules:
alice (a low-privilege caller) on t1, a real bash on the real sshd; rules deny `rm -rf *` and
anything naming a canary, hold `sudo *`; masks for cards, e-mails and password assignments.
No `[policy]` approvers are set, so what the gateway cannot read (opaque, unparsable) is denied
rather than held: a test sees the refusal at once.

`Terminal` drives `ssh -tt` through pipes, one write per `send`, as an agent types."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import shlex
from pathlib import Path

from tests.fixtures.gateway import GatewayHarness, Result

PROMPT = "gw$ "
CARDS = "visa 4111 1111 1111 1111 for alice@example.org\nmc 5500 0000 0000 0004\n"


async def start(harness: GatewayHarness, *, masks: bool = False) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("t1")
    harness.add_rule("no-canary", shell="*canary*", action="deny", message="canary")
    harness.add_rule("no-recursive-delete", shell="rm -rf *", action="deny", message="no")
    harness.add_rule("sudo-needs-review", shell="sudo *", action="review", approvers=["oncall"])
    if masks:
        harness.masks.append({"name": "cards", "detector": "credit_card", "style": "last4"})
        harness.masks.append({"name": "emails", "detector": "email"})
        harness.masks.append({"name": "passwords", "detector": "password_assignment"})
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()


def canary(directory: Path) -> Path:
    path = directory / "x-canary"
    path.write_text("still here\n")
    return path


async def exec_as_alice(harness: GatewayHarness, command: str, stdin: bytes = b"") -> Result:
    """`ssh alice+t1@gateway COMMAND`, no terminal."""
    return await harness.ssh_direct("alice+t1", command, stdin=stdin)


class Terminal:
    """`ssh -tt alice+t1@gateway COMMAND` fed through a pipe."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen = bytearray()

    @classmethod
    async def open(cls, harness: GatewayHarness, command: str, *, ready: bytes) -> Terminal:
        process = await asyncio.create_subprocess_exec(
            "ssh",
            *harness.ssh_args("alice"),
            "-tt",
            "-p",
            str(harness.port),
            "alice+t1@127.0.0.1",
            command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=harness.env(None),
            start_new_session=True,
        )
        terminal = cls(process)
        await terminal.expect(ready)
        await terminal.quiet(0.3)
        return terminal

    @classmethod
    async def shell(cls, harness: GatewayHarness, command: str) -> Terminal:
        """A program that starts the caller's shell (any prompt), which is then given ours."""
        terminal = await cls.open(harness, command, ready=b"")
        deadline = asyncio.get_running_loop().time() + 20
        while not re.search(rb"[#$] $", bytes(terminal.seen)):
            assert asyncio.get_running_loop().time() < deadline, bytes(terminal.seen)
            await terminal.quiet(0.3)
        terminal.send(f"PS1='{PROMPT}'\r".encode())
        await terminal.expect(PROMPT.encode(), after=len(terminal.seen))
        await terminal.quiet(0.5)
        return terminal

    @classmethod
    async def bash(cls, harness: GatewayHarness, directory: Path) -> Terminal:
        """An interactive bash with a known prompt, in `directory`."""
        command = (
            f"cd {shlex.quote(str(directory))} && HISTFILE=/dev/null INPUTRC=/dev/null "
            f"PS1={shlex.quote(PROMPT)} exec bash --norc -i"
        )
        return await cls.open(harness, command, ready=PROMPT.encode())

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)

    async def expect(self, needle: bytes, timeout: float = 20.0, *, after: int = 0) -> int:
        """Wait until `needle` shows (past offset `after`); returns where it ends."""
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := self.seen.find(needle, after)) < 0:
            left = deadline - loop.time()
            assert left > 0, f"{needle!r} never shown: {bytes(self.seen)[-1500:]!r}"
            with contextlib.suppress(TimeoutError):
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), min(left, 0.5))
                if not chunk:
                    raise AssertionError(f"{needle!r} never shown: {bytes(self.seen)!r}")
                self.seen += chunk
        return found + len(needle)

    async def quiet(self, seconds: float = 1.0) -> None:
        """Read until nothing arrived for `seconds`."""
        assert self.process.stdout is not None
        while True:
            try:
                chunk = await asyncio.wait_for(self.process.stdout.read(4096), seconds)
            except TimeoutError:
                return
            if not chunk:
                return
            self.seen += chunk

    async def line(self, text: str) -> bytes:
        """Type `text` and Enter (two writes, the way a person's keys come), then wait for the
        screen to settle; what the terminal showed since."""
        start = len(self.seen)
        self.send(text.encode())
        await self.quiet(0.3)
        self.send(b"\r")
        await self.quiet(1.0)
        return bytes(self.seen[start:])

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
