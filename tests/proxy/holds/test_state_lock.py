"""No SQLite call on the event loop (issue 20): another process holding state.db's write lock
makes only the operations that need the state wait, never a live session's echo."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sqlite3
import time
from pathlib import Path

import pytest

from proxy.holds.control import ControlClient, socket_path
from storage import sqlite as sqlite_files
from storage.state import STATE_NAME
from tests.fixtures.gateway import GatewayHarness

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


class Locker:
    """The sqlite3 command line holding the write lock of a database: until `release()`, or
    for `seconds` on its own (so it lets go even if this process's event loop is frozen)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process: asyncio.subprocess.Process | None = None

    async def hold(self, seconds: float | None = None) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "sqlite3", str(self.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.process.stdin is not None
        script = "BEGIN IMMEDIATE;\n"
        if seconds is not None:
            script += f".shell sleep {seconds}\nCOMMIT;\n"
        self.process.stdin.write(script.encode())
        await self.process.stdin.drain()
        if seconds is not None:
            self.process.stdin.close()  # it commits and exits on its own
        deadline = time.monotonic() + 10
        while not _write_locked(self.path):  # until the other process has the lock
            assert time.monotonic() < deadline, "sqlite3 never took the write lock"
            await asyncio.sleep(0.02)

    @property
    def holding(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def release(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        if not self.process.stdin.is_closing():
            with contextlib.suppress(ConnectionError):
                self.process.stdin.write(b"COMMIT;\n")
                self.process.stdin.close()
        await asyncio.wait_for(self.process.wait(), 20)


def _write_locked(path: Path) -> bool:
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    finally:
        db.close()


async def _typing(harness: GatewayHarness):
    """A live session (`cat` on web1) and a function timing one echo through it."""
    session = await harness.spawn(
        "ssh", "-T", "-p", str(harness.port), "alice+web1@127.0.0.1", "cat",
        user="alice", stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert session.stdin is not None and session.stdout is not None

    async def echo(n: int) -> float:
        started = time.monotonic()
        session.stdin.write(f"ping {n}\n".encode())
        line = await asyncio.wait_for(session.stdout.readline(), 20)
        assert line == f"ping {n}\n".encode()
        return time.monotonic() - started

    await echo(0)  # the session is up
    return session, echo


async def _start(harness: GatewayHarness) -> ControlClient:
    harness.add_restart_review()
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    watcher = await ControlClient.connect(socket_path(harness.data_dir))
    await watcher.call("subscribe", topics=["holds"])
    return watcher


async def test_a_locked_state_db_stalls_no_session_and_the_hold_waits_for_it(
    harness: GatewayHarness, tmp_path: Path
):
    """sqlite3 in another process holds state.db's write lock for 5 s while alice types through
    the gateway and runs a held command: every echo comes back within 0.5 s, and the hold,
    requested meanwhile, is made once the lock is gone, approved, and the command runs."""
    watcher = await _start(harness)
    session, echo = await _typing(harness)
    marker = tmp_path / "restart.done"
    locker = Locker(harness.data_dir / STATE_NAME)
    await locker.hold(seconds=5)  # it lets go by itself, even if this event loop froze
    held = asyncio.ensure_future(harness.ssh_jump("alice", "web1", f"touch {marker}; echo ran"))
    # A line every 0.2 s until sqlite3 lets go. This process is also the gateway: a frozen
    # event loop would hold back the typing as well as the echo, so each round's delay past
    # its 0.2 s pause counts (what a typist in another process would wait for the echo).
    slowest, n = 0.0, 0
    while locker.holding:
        n += 1
        started = time.monotonic()
        await echo(n)
        await asyncio.sleep(0.2)
        slowest = max(slowest, time.monotonic() - started - 0.2)
    released_at = time.time()
    assert slowest < 0.5, f"an echo took {slowest:.2f} s while state.db was locked"
    assert n > 15
    created = await asyncio.wait_for(anext(watcher.events()), 30)
    assert created["event"] == "hold.created"
    assert created["data"]["created_at"] < released_at - 1  # asked for while locked
    hold_id = created["data"]["id"]
    code, out, err = await harness.hoop("approve", hold_id, "--reason", "ok")
    assert (code, out.strip()) == (0, f"{hold_id}: approved"), err
    result = await asyncio.wait_for(held, 30)
    assert (result.status, result.out) == (0, "ran\n")
    assert marker.exists()
    await watcher.close()
    session.stdin.close()
    await asyncio.wait_for(session.wait(), 20)


async def test_a_lock_outlasting_the_wait_refuses_the_held_command_and_says_why(
    harness: GatewayHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The lock outlasts how long the gateway waits for it (1 s here): the command that needed
    a hold is refused, fail closed, with the reason; the typing session never noticed."""
    monkeypatch.setattr(sqlite_files, "BUSY_TIMEOUT_S", 1.0)
    watcher = await _start(harness)
    session, echo = await _typing(harness)
    marker = tmp_path / "restart.done"
    locker = Locker(harness.data_dir / STATE_NAME)
    await locker.hold()
    try:
        held = asyncio.ensure_future(harness.ssh_jump("alice", "web1", f"touch {marker}"))
        slowest = 0.0
        for n in range(1, 10):
            slowest = max(slowest, await echo(n))
            await asyncio.sleep(0.2)
        result = await asyncio.wait_for(held, 30)
    finally:
        await locker.release()
    assert slowest < 0.5, f"an echo took {slowest:.2f} s while state.db was locked"
    assert result.status == 126
    assert "denied: it needs approval, and the hold could not be kept" in result.err
    assert "did not answer (database is locked)" in result.err
    assert not marker.exists()
    await watcher.close()
    session.stdin.close()
    await asyncio.wait_for(session.wait(), 20)
