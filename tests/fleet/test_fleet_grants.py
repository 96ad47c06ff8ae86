"""A just-in-time grant in a fleet: created and approved on one instance, honoured on another;
revoked on one instance, the sessions relying on it on the other end within 2 s."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, state_url: str) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path / "fleet", sshd, state_url, target={"jit": True})
    fleet.start()
    yield fleet
    fleet.stop()


async def test_a_grant_from_a_is_honoured_on_b_and_revoking_it_on_b_ends_a_sessions(
    fleet: Fleet,
) -> None:
    # without a grant, bob may not reach web1 on either instance
    refused = await fleet.ssh("bob", "echo no", frontend="ssh_gw-b")
    out, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode != 0 and b"grant" in err + out

    # bob asks on A (he is A's operator); carol approves on B
    status, out, err = await fleet.hoop("gw-a", "request", "web1", "--for", "1h", "--reason", "x")
    assert status == 0, err
    status, out, err = await fleet.hoop("gw-b", "grants", "--json")
    assert status == 0, err
    (grant,) = json.loads(out)
    status, _, err = await fleet.hoop("gw-b", "approve", grant["id"], "--reason", "ok")
    assert status == 0, err

    # honoured on B (where it was approved) and on A (where it was asked)
    on_b = await fleet.ssh("bob", "echo on-b", frontend="ssh_gw-b")
    out, err = await asyncio.wait_for(on_b.communicate(), 30)
    assert on_b.returncode == 0 and b"on-b" in out, err
    live = await fleet.ssh("bob", "echo started; sleep 60", frontend="ssh_gw-a")
    assert live.stdout is not None
    line = await asyncio.wait_for(live.stdout.readline(), 30)
    assert line.strip() == b"started"

    # carol revokes it on B: bob's session on A ends within 2 s
    status, _, err = await fleet.hoop("gw-b", "revoke", grant["id"], "--reason", "done")
    assert status == 0, err
    revoked_at = time.monotonic()
    _, err = await asyncio.wait_for(live.communicate(), 30)
    ended_after = time.monotonic() - revoked_at
    assert ended_after < 2.0, ended_after
    assert b"grant" in err
