"""A live session carried by instance A seen from instance B: listed (`hoop-tui live`), watched
(`hoop-tui watch`), its screen shown (as beside a hold) and ended (`hoop-tui end`) on B, which
reaches A over the authenticated peer channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import psycopg
import pytest

from proxy.holds.control import ControlClient, socket_path
from tests.fixtures.sshd import Sshd
from tests.fleet.harness import ROOT, Fleet


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, state_url: str) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path / "fleet", sshd, state_url, peers=True)
    fleet.start()
    fleet.ssh_argv("alice", "ssh", "x")  # known_hosts
    yield fleet
    fleet.stop()


async def test_a_session_on_a_is_watched_from_b(fleet: Fleet) -> None:
    conn = await asyncssh.connect(
        "127.0.0.1",
        fleet.port("ssh_gw-a"),
        username="alice+web1",
        client_keys=[asyncssh.read_private_key(fleet.directory / "alice_key")],
        known_hosts=str(fleet.directory / "known_hosts"),
        agent_path=None,
    )
    shell = await conn.create_process(term_type="xterm", term_size=(80, 24))
    deadline = time.monotonic() + 15
    while True:  # the session is in the shared live list
        async with await psycopg.AsyncConnection.connect(fleet.state_url) as db:
            cur = await db.execute("SELECT id FROM live_sessions WHERE gateway_id = 'gw-a'")
            found = await cur.fetchall()
        if found:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    session_id = str(found[0][0])
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hoop_tui", "watch", session_id[:8],
        "--config", str(fleet.instances["gw-b"].config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert watcher.stderr is not None and watcher.stdout is not None
        line = await asyncio.wait_for(watcher.stderr.readline(), 30)
        assert b"watching alice -> web1" in line, line
        seen = b""
        deadline = time.monotonic() + 20
        while b"seen-from-b" not in seen:
            assert time.monotonic() < deadline, seen[-300:]
            shell.stdin.write("echo seen-from-''b\r")
            with contextlib.suppress(TimeoutError):
                seen += await asyncio.wait_for(watcher.stdout.read(4096), 1.0)
    finally:
        watcher.kill()
        await watcher.wait()

    status, out, err = await fleet.hoop("gw-b", "live", "--json")
    assert status == 0, err
    assert [(r["id"], r.get("gateway_id")) for r in json.loads(out)] == [(session_id, "gw-a")]
    b = await ControlClient.connect(socket_path(fleet.instances["gw-b"].data_dir))
    try:
        screen = await b.call("sessions.screen", id=session_id[:8])
        assert any("seen-from-b" in line for line in screen["lines"]), screen
    finally:
        await b.close()
    status, out, err = await fleet.hoop("gw-b", "end", session_id[:8], "--reason", "maintenance")
    assert status == 0, err
    await asyncio.wait_for(shell.wait(), 15)  # A ended it: the caller's shell is gone
    conn.close()
    status, out, err = await fleet.hoop("gw-a", "audit")
    assert "session_ended" in out and "carol" in out, out
