"""The full-screen workstation for a remote approver: `ssh -t -p 2222 bob@gateway console`.

With a terminal requested, the gateway runs the Textual workstation (`hoop-tui tui`) as a child
process on a new pseudo-terminal and relays the SSH channel's bytes both ways, the way sshd
runs a login shell: the caller's terminal type is the child's `TERM`, the window size is set on
the pseudo-terminal at start and on every window change (`TIOCSWINSZ`, so the child gets
SIGWINCH), the SSH session ends with the child's exit status, and when the caller goes away the
child's process group is hung up and, if it lingers, killed.

The child acts as the caller, not as the gateway's OS user: the gateway hands it a one-time
console ticket in `$HOOP_CONSOLE_TICKET` (never in argv, logs or recordings), which it presents
on the control socket (`proxy.holds.control`). It runs with a clean environment, so the gateway's
own secrets (`password_env`, `bind_password_env`) are not in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import struct
import sys
import termios
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import asyncssh

from proxy.holds.control import TICKET_ENV

log = logging.getLogger("hoop.ssh")

# Run in the child before the workstation: make the pseudo-terminal (its stdin) the controlling
# terminal of its new session, so window changes reach it as SIGWINCH and a hang-up as SIGHUP.
# Done by exec'ing through a tiny interpreter rather than in a preexec_fn, which is unsafe in a
# process with threads (the recording writers).
CTTY_TRAMPOLINE = (
    "import fcntl,os,sys,termios;"
    "fcntl.ioctl(0,termios.TIOCSCTTY,0);"
    "os.execv(sys.argv[1],sys.argv[1:])"
)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
KILL_AFTER_S = 2.0  # between the hang-up and SIGKILL when the caller goes away
MAX_PENDING_INPUT = 64 * 1024  # stop reading the channel while this much waits for the child
# Each remote workstation is a Python process of its own (tens of MB): a person may keep a few
# open, the gateway a bounded number, so logins cannot exhaust the gateway host.
WORKSTATIONS_PER_PERSON = 3
WORKSTATIONS_IN_ALL = 24


def workstation_command(data_dir: Path, ticket: str, term: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `hoop-tui tui` for a remote approver holding `ticket`."""
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        CTTY_TRAMPOLINE,
        sys.executable,
        "-m",
        "hoop_tui",
        "tui",
        "--data-dir",
        str(data_dir),
    ]
    python_path = [str(PROJECT_ROOT)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "TERM": term or "xterm-256color",
        "PYTHONPATH": os.pathsep.join(python_path),
        TICKET_ENV: ticket,
    }
    return argv, env


def set_window_size(fd: int, columns: int, rows: int, xpixels: int = 0, ypixels: int = 0) -> None:
    size = struct.pack("HHHH", max(rows, 1), max(columns, 1), xpixels, ypixels)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


_LIVE: set[PtyChild] = set()  # children of this gateway process not yet reaped


def workstation_refusal(person: str) -> str | None:
    """Why `person` may not open another remote workstation now, or None."""
    if sum(1 for child in _LIVE if child.owner == person) >= WORKSTATIONS_PER_PERSON:
        return (
            f"you already have {WORKSTATIONS_PER_PERSON} workstations open: close one, or use "
            "`console` without -t for the line-mode console"
        )
    if len(_LIVE) >= WORKSTATIONS_IN_ALL:
        return "the gateway has as many remote workstations open as it allows; try again later"
    return None


async def stop_all() -> None:
    """Hang up every remote workstation and wait until each has exited (gateway stop)."""
    children = list(_LIVE)
    for child in children:
        child.close()
    for child in children:
        if child.process is not None:
            await child.process.wait()
    for task in [task for child in children for task in child._tasks]:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def exit_status(returncode: int) -> int:
    """A process's exit status as a shell reports it: 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class PtyChild:
    """One child process on its own pseudo-terminal, relayed to one SSH session channel."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        argv: list[str],
        env: dict[str, str],
        size: tuple[int, int, int, int],
        owner: str = "",
    ) -> None:
        self.chan = chan
        self.owner = owner  # the person it acts for, for `workstation_refusal`
        self.argv = argv
        self.env = env
        self.size = size
        self.process: asyncio.subprocess.Process | None = None
        self.master = -1
        self._loop = asyncio.get_running_loop()
        self._pending = bytearray()  # input the child has not taken yet
        self._reading = False
        self._paused = False
        self._output_done = asyncio.Event()
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()
        _LIVE.add(self)  # counted from now, so a burst of logins cannot outrun the limit

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        """Spawn the child on a new pseudo-terminal; ends the channel when it exits."""
        master, slave = os.openpty()
        try:
            columns, rows, xpixels, ypixels = self.size
            set_window_size(master, columns, rows, xpixels, ypixels)
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self.env,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            _LIVE.discard(self)
            raise
        finally:
            os.close(slave)
        self.master = master
        os.set_blocking(master, False)
        if self._closed:  # the caller left while the child was being spawned
            self._closed = False
            self.close()
            return
        self._start_reading()
        self._spawn(self._wait())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- child to caller ---------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._paused and not self._output_done.is_set():
            self._loop.add_reader(self.master, self._readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.master)
            self._reading = False

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the terminal's other side has closed it
            data = b""
        if not data:
            self._stop_reading()
            self._output_done.set()
            return
        if not self.chan.is_closing():
            self.chan.write(data)

    def pause_writing(self) -> None:
        """The caller is slow: stop reading the child, whose writes then block on the pty."""
        self._paused = True
        self._stop_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.master >= 0:
            self._start_reading()

    async def _wait(self) -> None:
        assert self.process is not None
        returncode = await self.process.wait()
        _LIVE.discard(self)
        if not self._paused:
            with contextlib.suppress(TimeoutError):  # what it wrote last, before the exit
                await asyncio.wait_for(self._output_done.wait(), 1.0)
        log.info("remote workstation (pid %s) exited with %s", self.process.pid, returncode)
        self._close_master()
        if not self._closed and not self.chan.is_closing():
            self.chan.exit(exit_status(returncode))

    # -- caller to child ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.master < 0 or self._closed:
            return
        if not self._pending:
            try:
                written = os.write(self.master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return
            data = data[written:]
            if not data:
                return
            self._loop.add_writer(self.master, self._writable)
        self._pending += data
        if len(self._pending) > MAX_PENDING_INPUT:
            self.chan.pause_reading()

    def _writable(self) -> None:
        try:
            written = os.write(self.master, self._pending)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._pending)
        del self._pending[:written]
        if not self._pending:
            self._loop.remove_writer(self.master)
        if len(self._pending) <= MAX_PENDING_INPUT // 2:
            self.chan.resume_reading()

    def resize(self, columns: int, rows: int, xpixels: int = 0, ypixels: int = 0) -> None:
        """A window change: the kernel sends SIGWINCH to the child's foreground group."""
        self.size = (columns, rows, xpixels, ypixels)
        if self.master >= 0:
            with contextlib.suppress(OSError):
                set_window_size(self.master, columns, rows, xpixels, ypixels)

    # -- the end -----------------------------------------------------------------------------

    def _close_master(self) -> None:
        if self.master >= 0:
            self._stop_reading()
            if self._pending:
                self._loop.remove_writer(self.master)
                self._pending.clear()
            os.close(self.master)  # the child's side is hung up
            self.master = -1

    def close(self) -> None:
        """The caller went away: hang up the child's process group, kill it if it stays."""
        if self._closed:
            return
        self._closed = True
        process = self.process
        if process is None or process.returncode is not None:
            self._close_master()
            return
        self._signal(signal.SIGHUP)
        self._close_master()
        self._spawn(self._kill_if_lingering(process))

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)  # its own session: the group id is its pid

    async def _kill_if_lingering(self, process: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), KILL_AFTER_S)
        except TimeoutError:
            log.warning("remote workstation (pid %s) ignored the hang-up; killed", process.pid)
        # whatever it left in its group goes too (a no-op when the group is gone)
        self._signal(signal.SIGKILL)
        await process.wait()
        _LIVE.discard(self)
