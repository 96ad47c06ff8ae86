"""Two gateway processes behind HAProxy on one PostgreSQL: holds raised on one instance are
seen and decided on the other, and the first decision wins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.holds.control import ControlClient, socket_path
from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet

HOLD_ETC = {
    "name": "etc-needs-review",
    "shell": "cat /etc/*",
    "action": "review",
    "approvers": ["ops"],
    "timeout": "1m",
}


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, state_url: str) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path / "fleet", sshd, state_url, rules=[HOLD_ETC])
    fleet.start()
    yield fleet
    fleet.stop()


async def listed_on(fleet: Fleet, name: str, timeout: float = 20) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        holds = await fleet.holds(name)
        if holds:
            return holds[0]
        assert time.monotonic() < deadline, "no hold listed"
        await asyncio.sleep(0.05)


async def test_a_hold_on_a_is_listed_on_b_within_a_second_and_approved_there(
    fleet: Fleet,
) -> None:
    # B's control socket (what `hoop-tui holds` and the workstation ask), polled from here
    b = await ControlClient.connect(socket_path(fleet.instances["gw-b"].data_dir))
    try:
        caller = await fleet.ssh("alice", "cat /etc/hostname", frontend="ssh_gw-a")
        deadline = time.monotonic() + 30
        while not (listed := await b.call("holds.list")):
            assert time.monotonic() < deadline, "never listed on B"
            await asyncio.sleep(0.01)
        seen_at = time.time()
    finally:
        await b.close()
    assert listed[0]["gateway_id"] == "gw-a"
    assert seen_at - listed[0]["created_at"] < 1.0  # raised on A, listed on B within 1 s
    hold = await listed_on(fleet, "gw-b")  # and the command line on B lists it
    assert hold["id"] == listed[0]["id"] and hold["command"] == "cat /etc/hostname"
    status, _, err = await fleet.hoop("gw-b", "approve", hold["id"], "--reason", "ok")
    assert status == 0, err
    stdout, stderr = await asyncio.wait_for(caller.communicate(), 20)
    assert caller.returncode == 0, stderr
    assert stdout.strip()  # the caller on A ran the command once B approved it


async def test_two_approvers_on_two_instances_at_once_one_wins(fleet: Fleet) -> None:
    caller = await fleet.ssh("alice", "cat /etc/hostname", frontend="ssh_gw-a")
    hold = await listed_on(fleet, "gw-a")
    await listed_on(fleet, "gw-b")
    on_a, on_b = await asyncio.gather(
        fleet.hoop("gw-a", "approve", hold["id"], "--reason", "bob says"),
        fleet.hoop("gw-b", "approve", hold["id"], "--reason", "carol says"),
    )
    results = sorted([on_a, on_b], key=lambda r: r[0])
    assert [r[0] for r in results] == [0, 1], results
    winner = "bob" if on_a[0] == 0 else "carol"
    assert "already approved" in results[1][2] and f"decided by {winner}" in results[1][2]
    await asyncio.wait_for(caller.communicate(), 20)
    assert caller.returncode == 0


async def test_a_workstation_on_b_is_told_of_a_hold_raised_on_a(fleet: Fleet) -> None:
    """The workstation does not poll: it subscribes, and B pushes what A raised (A's NOTIFY,
    B's re-read) within 1 s."""
    b = await ControlClient.connect(socket_path(fleet.instances["gw-b"].data_dir))
    try:
        await b.call("subscribe", topics=["holds"])
        caller = await fleet.ssh("alice", "cat /etc/hostname", frontend="ssh_gw-a")
        events = b.events()
        while True:
            message = await asyncio.wait_for(events.__anext__(), 30)
            if message["event"] in ("hold.created", "hold.updated"):
                break
        pushed_at = time.time()
        hold = message["data"]
        assert hold["gateway_id"] == "gw-a" and hold["status"] == "pending"
        assert pushed_at - hold["created_at"] < 1.0
        status, _, err = await fleet.hoop("gw-b", "deny", hold["id"], "--reason", "not now")
        assert status == 0, err
        out, err = await asyncio.wait_for(caller.communicate(), 20)
        assert caller.returncode != 0 and b"not now" in out + err
    finally:
        await b.close()
