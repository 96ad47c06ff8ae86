"""PostgreSQL (a private cluster) stopped and started again under a running fleet: a live
session goes on; a command that needs a hold while the database is away fails closed with a
clear message; once it is back, holds work again (raised on A, approved on B)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures.pgstate import PrivateCluster, fresh_database
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
def cluster() -> Iterator[PrivateCluster]:
    if not Path("/usr/lib/postgresql").exists():
        pytest.skip("PostgreSQL server binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="hoop-pg-"))
    root.chmod(0o755)  # the postgres user must reach it
    server = PrivateCluster(root)
    server.init()
    server.start()
    server.wait_ready()
    yield server
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, cluster: PrivateCluster) -> Iterator[Fleet]:
    with fresh_database(cluster.admin_url) as url:
        fleet = Fleet(tmp_path / "fleet", sshd, url, rules=[HOLD_ETC])
        fleet.start()
        fleet.ssh_argv("alice", "ssh", "x")  # known_hosts
        yield fleet
        fleet.stop()


async def read_until(process: object, needle: bytes, timeout: float = 15) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, seen[-400:]
        try:
            chunk = await asyncio.wait_for(process.stdout.read(4096), 0.5)  # type: ignore[attr-defined]
        except TimeoutError:
            continue
        seen += chunk.encode()
    return seen


async def test_postgresql_restarted_under_a_fleet(fleet: Fleet, cluster: PrivateCluster) -> None:
    conn = await asyncssh.connect(
        "127.0.0.1",
        fleet.port("ssh_gw-a"),
        username="alice+web1",
        client_keys=[asyncssh.read_private_key(fleet.directory / "alice_key")],
        known_hosts=str(fleet.directory / "known_hosts"),
        agent_path=None,
    )
    shell = await conn.create_process(term_type="xterm", term_size=(80, 24))
    await asyncio.sleep(1.0)  # the prompt first: a line typed before it is not judged alone
    shell.stdin.write("echo before-4''2\r")
    await read_until(shell, b"before-42")

    await asyncio.to_thread(cluster.stop, "fast")
    try:
        shell.stdin.write("echo during-4''2\r")  # the live session goes on
        await read_until(shell, b"during-42")
        held = await fleet.ssh("alice", "cat /etc/hostname", frontend="ssh_gw-a")
        out, err = await asyncio.wait_for(held.communicate(), 30)
        assert held.returncode != 0  # failed closed: the command did not run
        assert b"could not be kept" in out + err, out + err
    finally:
        await asyncio.to_thread(cluster.start)

    shell.stdin.write("echo after-4''2\r")
    await read_until(shell, b"after-42")
    deadline = time.monotonic() + 30
    while True:  # the pools reconnect; then a hold raised on A is decided on B
        caller = await fleet.ssh("alice", "cat /etc/hostname", frontend="ssh_gw-a")
        holds: list[dict[str, object]] = []
        for _ in range(40):
            holds = await fleet.holds("gw-b")
            if holds or caller.returncode is not None:
                break
            await asyncio.sleep(0.1)
        if holds:
            break
        await caller.communicate()
        assert time.monotonic() < deadline, "holds did not come back"
    status, _, err = await fleet.hoop("gw-b", "approve", str(holds[0]["id"]), "--reason", "ok")
    assert status == 0, err
    out, err = await asyncio.wait_for(caller.communicate(), 30)
    assert caller.returncode == 0, err
    conn.close()
