"""PostgreSQL that stops answering without closing anything (its processes paused: a stalled
database host or network, not a refused connection) under a running fleet: the live session
goes on, and a command that needs a hold fails closed with the usual message within bounded
time, instead of hanging its caller for as long as the database stays silent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures.pgstate import PrivateCluster, fresh_database
from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet
from tests.fleet.test_fleet_pg_restart import HOLD_ETC, read_until


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    if not Path("/usr/lib/postgresql").exists():
        pytest.skip("PostgreSQL server binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="hoop-pg-"))
    root.chmod(0o755)
    server = PrivateCluster(root)
    server.init()
    server.start()
    server.wait_ready()
    yield server
    _signal_cluster(server, signal.SIGCONT)
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, cluster: PrivateCluster) -> Iterator[Fleet]:
    with fresh_database(cluster.admin_url) as url:
        fleet = Fleet(tmp_path / "fleet", sshd, url, rules=[HOLD_ETC], names=("gw-a",))
        fleet.start()
        fleet.ssh_argv("alice", "ssh", "x")  # known_hosts
        yield fleet
        _signal_cluster(cluster, signal.SIGCONT)
        fleet.stop()


def _signal_cluster(cluster: PrivateCluster, sig: int) -> None:
    """The postmaster and every backend of this private cluster (started by this test)."""
    pid_file = cluster.data / "postmaster.pid"
    if not pid_file.exists():
        return
    postmaster = int(pid_file.read_text().split()[0])
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True
    ).stdout.split()
    for pid in [postmaster, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def test_a_silent_database_fails_a_held_command_closed_in_bounded_time(
    fleet: Fleet, cluster: PrivateCluster
) -> None:
    conn = await asyncssh.connect(
        "127.0.0.1",
        fleet.port("ssh_gw-a"),
        username="alice+web1",
        client_keys=[asyncssh.read_private_key(fleet.directory / "alice_key")],
        known_hosts=str(fleet.directory / "known_hosts"),
        agent_path=None,
    )
    try:
        shell = await conn.create_process(term_type="xterm", term_size=(80, 24))
        await asyncio.sleep(1.0)
        shell.stdin.write("echo before-4''2\r")
        await read_until(shell, b"before-42")

        _signal_cluster(cluster, signal.SIGSTOP)
        try:
            shell.stdin.write("echo during-4''2\r")  # the live session goes on
            await read_until(shell, b"during-42")
            began = time.monotonic()
            held = await fleet.ssh("alice", "cat /etc/hostname", frontend="ssh_gw-a")
            try:
                out, err = await asyncio.wait_for(held.communicate(), 45)
            except TimeoutError:
                held.kill()
                raise AssertionError("the held command hung on the silent database") from None
            assert held.returncode != 0  # failed closed: the command did not run
            assert b"could not be kept" in out + err, out + err
            assert time.monotonic() - began < 45
        finally:
            _signal_cluster(cluster, signal.SIGCONT)
    finally:
        conn.close()
