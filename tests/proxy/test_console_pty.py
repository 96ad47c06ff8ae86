"""`ssh -t -p PORT bob@gateway console`: the Textual workstation runs for bob on a pseudo-terminal
of the gateway, driven here through a real OpenSSH client on a terminal of the test's own, whose
bytes a terminal emulator (replay.terminal) turns into the screen bob would see."""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import os
import signal
import struct
import termios
import time
from pathlib import Path

import pytest

from proxy.holds.control import TICKET_ENV
from proxy.ssh import console_pty
from replay.terminal import Terminal
from storage.state import HoldStatus
from tests.fixtures.gateway import GatewayHarness

pytestmark = pytest.mark.timeout(120)


async def start(harness: GatewayHarness) -> None:
    harness.add_restart_review()
    harness.add_user("admin", groups=("oncall",))
    # The gateway's own OS user is an operator acting as `admin`: the remote workstation runs
    # as that OS user, yet must act as bob.
    harness.operators[getpass.getuser()] = "admin"
    await harness.start_runtime()


def set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class SshTerminal:
    """A real `ssh -tt` on a pseudo-terminal of the test; its screen as a terminal shows it."""

    def __init__(self, master: int, slave: int, process: asyncio.subprocess.Process) -> None:
        self.master = master
        self.slave = slave
        self.process = process
        self.screen = Terminal(100, 30)
        self.raw = bytearray()

    @classmethod
    async def open(cls, harness: GatewayHarness, user: str, *command: str) -> SshTerminal:
        master, slave = os.openpty()
        set_size(slave, 100, 30)
        process = await asyncio.create_subprocess_exec(
            "ssh",
            *harness.ssh_args(user),
            "-tt",
            "-p",
            str(harness.port),
            f"{user}@127.0.0.1",
            *command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**harness.env(None), "TERM": "xterm-256color"},
            start_new_session=True,
        )
        os.set_blocking(master, False)
        return cls(master, slave, process)

    def pump(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.raw += data
            self.screen.feed(data)

    async def until(self, check, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            if check():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never shown; screen:\n{self.screen.text()}")
            await asyncio.sleep(0.05)

    async def shows(self, needle: str, timeout: float = 30) -> None:
        await self.until(lambda: self.screen.contains(needle), repr(needle), timeout)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def resize(self, columns: int, rows: int) -> None:
        set_size(self.slave, columns, rows)
        self.screen.resize(columns, rows)
        self.process.send_signal(signal.SIGWINCH)  # as the kernel would for its terminal

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        os.close(self.master)
        os.close(self.slave)


def workstation_children() -> list[int]:
    """Processes the gateway (this test process) spawned that run the workstation."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"hoop_tui" in cmdline and b"tui" in cmdline:
            found.append(int(entry.name))
    return found


async def the_workstation_child(timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while not (children := workstation_children()):
        assert time.monotonic() < deadline, "no workstation process was started"
        await asyncio.sleep(0.05)
    (pid,) = children
    return pid


def gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the child's whole process group
    except ProcessLookupError:
        return True
    return False


async def test_bob_approves_a_hold_in_the_full_screen_workstation_over_ssh(
    harness: GatewayHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    await start(harness)
    assert harness.runtime is not None
    term = await SshTerminal.open(harness, "bob", "console")
    try:
        await term.shows("bob @ remote console")
        await term.shows("No held commands")
        pid = await the_workstation_child()

        # The child got its ticket in its environment only, with nothing else of the gateway's.
        environ = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        ticket = environ[TICKET_ENV.encode()]
        assert set(environ) == {
            b"PATH",
            b"HOME",
            b"LANG",
            b"TERM",
            b"PYTHONPATH",
            TICKET_ENV.encode(),
        }
        assert environ[b"TERM"] == b"xterm-256color"
        assert ticket not in Path(f"/proc/{pid}/cmdline").read_bytes()
        # Recordings are the gateway's disk: not offered remotely, and 2 says so.
        assert "Recordings" not in term.screen.text()
        term.type(b"2")
        await term.shows("not available")

        client = asyncio.ensure_future(
            harness.ssh_jump("alice", "web1", f"touch {tmp_path}/restart.done; echo done")
        )
        await term.shows("restart.done")
        # The approver may watch the requester's session from afar, not end it.
        term.type(b"3")
        await term.shows("Live sessions")
        await term.shows("Watch")
        assert "End session" not in term.screen.text()
        term.type(b"w")
        await term.shows("watching alice -> web1 (read-only)")
        term.type(b"\x1b")
        await term.shows("Live sessions")
        term.type(b"1")
        await term.shows("restart.done")
        term.type(b"a")
        await term.shows("Approve h-")
        term.type(b"ok from afar")
        await term.shows("ok from afar")
        term.type(b"\r")
        result = await asyncio.wait_for(client, 30)
        assert (result.status, result.out) == (0, "done\n")
        (hold,) = await harness.runtime.broker.list_holds(HoldStatus.APPROVED)
        assert [(d.by, d.reason) for d in hold.decisions] == [("bob", "ok from afar")]
        await term.shows("No held commands")

        # A window change reaches the child: it redraws for 40 rows, footer on the last one.
        term.resize(120, 40)
        await term.until(lambda: "Quit" in term.screen.text_lines()[39], "a 40-row redraw")

        # The caller vanishes: the child and its process group go with the connection.
        term.process.kill()
        deadline = time.monotonic() + 15
        while not gone(pid):
            assert time.monotonic() < deadline, f"workstation {pid} outlived its ssh client"
            await asyncio.sleep(0.1)
        assert workstation_children() == []
    finally:
        await term.close()

    assert ticket.decode() not in caplog.text
    for path in harness.data_dir.rglob("*"):
        if path.is_file() and path.name != "control.sock":
            assert ticket not in path.read_bytes(), path


async def test_quitting_ends_the_ssh_session_with_the_exit_status(harness: GatewayHarness):
    await start(harness)
    term = await SshTerminal.open(harness, "bob", "console")
    try:
        await term.shows("bob @ remote console")
        pid = await the_workstation_child()
        term.type(b"2")  # the recordings key does nothing here
        term.type(b"q")
        status = await asyncio.wait_for(term.process.wait(), 30)
        assert status == 0
        assert gone(pid)
    finally:
        await term.close()


async def test_without_a_terminal_console_stays_line_mode(harness: GatewayHarness):
    await start(harness)
    result = await harness.run(
        "ssh",
        "-T",
        "-p",
        str(harness.port),
        "bob@127.0.0.1",
        "console",
        user="bob",
        stdin=b"holds\nquit\n",
    )
    assert result.status == 0, result.err
    assert "hoop console for bob (oncall)" in result.out
    assert "no held commands" in result.out
    assert workstation_children() == []


async def test_a_person_may_keep_only_a_few_workstations_open(
    harness: GatewayHarness, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(console_pty, "WORKSTATIONS_PER_PERSON", 1)
    await start(harness)
    first = await SshTerminal.open(harness, "bob", "console")
    second = None
    try:
        await first.shows("bob @ remote console")
        second = await SshTerminal.open(harness, "bob", "console")
        status = await asyncio.wait_for(second.process.wait(), 30)
        second.pump()
        assert status == 1
        assert "you already have 1 workstations open" in second.raw.decode(errors="replace")
        assert len(workstation_children()) == 1
        line_mode = await harness.run(  # the line-mode console is still there
            "ssh",
            "-T",
            "-p",
            str(harness.port),
            "bob@127.0.0.1",
            "console",
            user="bob",
            stdin=b"quit\n",
        )
        assert "hoop console for bob" in line_mode.out
    finally:
        await first.close()
        if second is not None:
            await second.close()
