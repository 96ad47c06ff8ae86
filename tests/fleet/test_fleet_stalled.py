"""An instance that stalls longer than lost_after (paused, swapping, a long GC: not dead) is
reaped by the others, then comes back with its sessions still running. It must put them back
in the shared live list and reopen their catalogue rows, or the fleet shows nothing where a
session is going on: `hoop-tui live` on another instance would miss it, and so would watch
and end from there."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, state_url: str) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path / "fleet", sshd, state_url)
    fleet.start()
    fleet.ssh_argv("alice", "ssh", "x")  # known_hosts
    yield fleet
    for instance in fleet.instances.values():
        if instance.process is not None and instance.process.poll() is None:
            os.kill(instance.process.pid, signal.SIGCONT)
    fleet.stop()


def _instance(fleet: Fleet, seen_from: str, name: str) -> dict[str, object]:
    done = fleet.hoop_sync(seen_from, "status", "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = next(
        i for i in json.loads(done.stdout)["instances"] if i["id"] == name
    )
    return found


def _open_rows(url: str, gateway_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM sessions WHERE gateway_id = %s AND ended_at_us IS NULL",
            (gateway_id,),
        ).fetchone()
    return int(row[0]) if row is not None else 0


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.3)


async def test_a_stalled_instance_puts_its_live_sessions_back(fleet: Fleet) -> None:
    session = await fleet.ssh("alice", "sleep 120", frontend="ssh_gw-a")
    try:
        await _until(
            lambda: _instance(fleet, "gw-b", "gw-a")["live_sessions"] == 1,
            30,
            "alice's session never showed in the fleet",
        )
        process = fleet.instances["gw-a"].process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            await _until(
                lambda: _instance(fleet, "gw-b", "gw-a")["state"] == "lost",
                30,
                "gw-b never reaped the silent gw-a",
            )
        finally:
            os.kill(process.pid, signal.SIGCONT)
        await _until(
            lambda: _instance(fleet, "gw-b", "gw-a")["state"] == "up",
            30,
            "gw-a never beat again",
        )
        assert session.returncode is None  # the session went on through the stall
        await _until(
            lambda: _instance(fleet, "gw-b", "gw-a")["live_sessions"] == 1,
            10,
            "gw-a is up again but its running session is missing from the fleet's live list",
        )
        # and the shared catalogue no longer says it ended (the reaper's ended-unknown)
        await _until(
            lambda: _open_rows(fleet.state_url, "gw-a") == 1,
            10,
            "the running session stays ended-unknown in the fleet's catalogue",
        )
    finally:
        session.kill()
        await session.wait()
