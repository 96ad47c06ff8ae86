"""Sessions the gateway answers itself: a refusal notice, and the target menu.

`ssh alice@gateway` names no target: with a terminal, alice gets a numbered list of the targets
her groups allow and picks one; the channel then becomes an ordinary bridge to that target.
Without a terminal (`ssh alice@gateway` with a command), the list is printed and the session
ends, which is also how scripts discover targets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncssh

from proxy.auth import Identity
from proxy.config import TargetConfig
from proxy.oidc.certs import LOGIN_COMMAND
from proxy.ssh.console_pty import PtyChild, workstation_refusal

Bridge = asyncssh.SSHServerSession[bytes]

CTRL_C, CTRL_D, BACKSPACE, DELETE = 0x03, 0x04, 0x08, 0x7F

log = logging.getLogger("hoop.ssh")


class NoticeChannel(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """A session that only shows a message on stderr and exits with `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        self.message = message
        self.status = status
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(self, *args: object) -> bool:
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        self.chan.write_stderr((self.message.rstrip() + "\r\n").encode())
        self.chan.exit(self.status)


def target_list(targets: list[TargetConfig]) -> str:
    if not targets:
        return "You may not use any target through this gateway.\r\n"
    lines = ["Targets you may use:"]
    width = max(len(target.name) for target in targets)
    for number, target in enumerate(targets, 1):
        lines.append(f"  {number:>2}) {target.name:<{width}}  {target.user}@{target.host}")
    return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True, slots=True)
class MenuCaller:
    """What the menu knows of the logged-in caller, and what it may ask the server for."""

    identity: Identity
    login_user: str  # as typed at login, for the hint that names it
    client: str
    targets: list[TargetConfig]  # those the caller's groups allow
    access_problem: Callable[[str], str | None]  # why not this target now (None: it may)
    # a new link to the chosen target, and the channel that bridges this session to it
    start_bridge: Callable[[str], Bridge]
    start_issue: Callable[[str, Any], None]  # `hoop-tui login` (proxy/oidc)
    console: Callable[..., Any] | None = None
    workstation: Callable[[Identity, str], tuple[list[str], dict[str, str]]] | None = None
    idle_timeout: float | None = None  # [gateway] idle_timeout: the prompt is ended after it


class MenuChannel(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """Lists the caller's targets; with a terminal, lets them pick one and bridges to it."""

    PROMPT = b"Target (number or name, empty to quit): "

    def __init__(self, caller: MenuCaller) -> None:
        self.caller = caller
        self.targets = caller.targets
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.term: tuple[str, tuple[int, int, int, int], Mapping[int, int]] | None = None
        self.line = bytearray()
        self.bridge: Bridge | None = None
        self.command = ""
        self.console_lines: asyncio.Queue[str | None] | None = None
        self.console_task: asyncio.Future[None] | None = None
        self.workstation: PtyChild | None = None
        self.idle: asyncio.TimerHandle | None = None

    def _rearm_idle(self) -> None:
        """A caller left at the target prompt is ended after [gateway] idle_timeout, as an
        idle session is (a terminal left logged in could pick any of its targets later)."""
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        timeout = self.caller.idle_timeout
        if timeout and self.bridge is None and self.chan is not None:
            self.idle = asyncio.get_running_loop().call_later(timeout, self._idled_out)

    def _idled_out(self) -> None:
        self.idle = None
        chan = self.chan
        if self.bridge is not None or chan is None or chan.is_closing():
            return
        if self.console_lines is not None or self.workstation is not None:
            return
        chan.write(
            f"\r\nhoop: idle for {self.caller.idle_timeout:g} s, closed by the gateway\r\n".encode()
        )
        chan.exit(0)

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.term = (term_type, term_size, term_modes)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command.strip()
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        if self.command.partition(" ")[0] == LOGIN_COMMAND:  # `hoop-tui login`: proxy/oidc
            self.caller.start_issue(self.command, self.chan)
            return
        if self.command == "console":
            if self.term is not None and self.caller.workstation is not None:
                self._start_workstation()
                return
            if self.caller.console is not None:
                self._start_console()
                return
        self.chan.write(target_list(self.targets).encode())
        if self.term is None or not self.targets:
            name = self.caller.login_user
            hint = f"Connect with: ssh -J {name}@GATEWAY TARGET  or  ssh {name}+TARGET@GATEWAY\r\n"
            self.chan.write(hint.encode())
            self.chan.exit(0)
            return
        self.chan.write(self.PROMPT)
        self._rearm_idle()

    def _start_console(self) -> None:
        """`ssh -t bob@gateway console`: the approver console, acting as bob."""
        assert self.chan is not None
        chan = self.chan
        self.console_lines = asyncio.Queue()

        def write(text: str) -> None:
            if not chan.is_closing():
                chan.write(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())

        console = self.caller.console
        assert console is not None
        session = console(self.caller.identity, self.console_lines.get, write)

        async def run() -> None:
            try:
                await session.run()
            finally:
                if not chan.is_closing():
                    chan.exit(0)

        self.console_task = asyncio.ensure_future(run())

    def _start_workstation(self) -> None:
        """`ssh -t bob@gateway console`: the full-screen workstation on a pseudo-terminal,
        acting as bob through a one-time console ticket."""
        assert self.chan is not None and self.term is not None
        assert self.caller.workstation is not None
        chan = self.chan
        identity = self.caller.identity
        term_type, size, _ = self.term
        refusal = workstation_refusal(identity.name)
        if refusal is not None:
            log.warning("%s: remote workstation refused: %s", identity.name, refusal)
            chan.write_stderr(f"hoop: {refusal}\r\n".encode())
            chan.exit(1)
            return
        argv, env = self.caller.workstation(identity, term_type)
        child = PtyChild(chan, argv, env, size, owner=identity.name)
        self.workstation = child

        async def run() -> None:
            try:
                await child.start()
            except OSError as exc:
                log.error("%s: the remote workstation did not start: %s", identity.name, exc)
                if not chan.is_closing():
                    chan.write_stderr(b"hoop: the workstation could not be started\r\n")
                    chan.exit(1)
                return
            log.info(
                "%s from %s opened the remote workstation (pid %s)",
                identity.name,
                self.caller.client,
                child.pid,
            )

        self.console_task = asyncio.ensure_future(run())

    def _console_input(self, data: bytes) -> None:
        """A small line editor for the console: echo, backspace, Enter, Ctrl-C/D to leave."""
        assert self.chan is not None and self.console_lines is not None
        echo = self.term is not None
        for byte in data:
            if byte in (CTRL_C, CTRL_D):
                self.console_lines.put_nowait(None)
                return
            if byte in (BACKSPACE, DELETE):
                if self.line:
                    del self.line[-1]
                    if echo:
                        self.chan.write(b"\b \b")
            elif byte in (0x0D, 0x0A):
                if echo:
                    self.chan.write(b"\r\n")
                self.console_lines.put_nowait(self.line.decode("utf-8", "replace"))
                self.line.clear()
            elif byte >= 0x20 and len(self.line) < 1024:
                self.line.append(byte)
                if echo:
                    self.chan.write(bytes([byte]))

    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.bridge is not None:
            self.bridge.data_received(data, datatype)
            return
        if self.workstation is not None:
            self.workstation.write(data)
            return
        if self.console_lines is not None:
            self._console_input(data)
            return
        assert self.chan is not None
        self._rearm_idle()
        for index, byte in enumerate(data):
            if byte in (CTRL_C, CTRL_D):
                self.chan.write(b"\r\n")
                self.chan.exit(0)
                return
            if byte in (BACKSPACE, DELETE):
                if self.line:
                    del self.line[-1]
                    self.chan.write(b"\b \b")
            elif byte in (0x0D, 0x0A):
                self.chan.write(b"\r\n")
                self._choose(self.line.decode("utf-8", "replace").strip())
                if self.bridge is not None and data[index + 1 :]:
                    self.bridge.data_received(data[index + 1 :], datatype)
                return
            elif 0x20 <= byte < 0x7F and len(self.line) < 256:
                self.line.append(byte)
                self.chan.write(bytes([byte]))

    def _choose(self, choice: str) -> None:
        assert self.chan is not None and self.term is not None
        self.line.clear()
        if not choice:
            self.chan.exit(0)
            return
        names = [target.name for target in self.targets]
        if choice.isdigit() and 1 <= int(choice) <= len(names):
            choice = names[int(choice) - 1]
        if choice not in names:
            self.chan.write(f"No target {choice!r} for you here.\r\n".encode() + self.PROMPT)
            return
        problem = self.caller.access_problem(choice)
        if problem is not None:
            self.chan.write(problem.encode() + b"\r\n" + self.PROMPT)
            return
        bridge = self.caller.start_bridge(choice)
        if self.idle is not None:  # the session's own idle watch takes over
            self.idle.cancel()
            self.idle = None
        bridge.connection_made(self.chan)
        bridge.pty_requested(*self.term)
        bridge.shell_requested()
        self.bridge = bridge
        bridge.session_started()

    def eof_received(self) -> bool:
        if self.bridge is not None:
            return self.bridge.eof_received()
        if self.workstation is not None:
            return True  # a terminal has no half-close; the child decides when it ends
        if self.console_lines is not None:
            self.console_lines.put_nowait(None)
            return True
        return False

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.term is not None:
            self.term = (self.term[0], (width, height, pixwidth, pixheight), self.term[2])
        if self.bridge is not None:
            self.bridge.terminal_size_changed(width, height, pixwidth, pixheight)
        if self.workstation is not None:
            self.workstation.resize(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.bridge is not None:
            self.bridge.signal_received(signal)

    def break_received(self, msec: int) -> bool:
        return self.bridge.break_received(msec) if self.bridge is not None else False

    def pause_writing(self) -> None:
        if self.bridge is not None:
            self.bridge.pause_writing()
        if self.workstation is not None:
            self.workstation.pause_writing()

    def resume_writing(self) -> None:
        if self.bridge is not None:
            self.bridge.resume_writing()
        if self.workstation is not None:
            self.workstation.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if self.bridge is not None:
            self.bridge.connection_lost(exc)
        if self.console_lines is not None:
            self.console_lines.put_nowait(None)  # the console ends with its channel
        if self.workstation is not None:
            self.workstation.close()  # the caller went away: so does the child
