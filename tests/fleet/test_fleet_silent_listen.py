"""The connection an instance hears the fleet's changes on (LISTEN) can die without a word: a
firewall or load balancer drops an idle connection's state, a database host stalls. Every
other connection works, so nothing else notices. An instance deaf that way must notice and
read everything again, or a grant revoked on another instance is never revoked on it: the
sessions relying on it run on, and new ones are let in (failing open)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.pgstate import PrivateCluster, fresh_database
from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet


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
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, cluster: PrivateCluster) -> Iterator[Fleet]:
    with fresh_database(cluster.admin_url) as url:
        fleet = Fleet(tmp_path / "fleet", sshd, url, target={"jit": True}, lost_after="60s")
        fleet.start()
        yield fleet
        fleet.stop()


def _listeners(url: str) -> list[int]:
    """The backends serving the instances' LISTEN connections."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND (query ILIKE 'LISTEN%%' OR application_name LIKE 'hoop-tui %%notifications')"
        ).fetchall()
    return [int(row[0]) for row in rows]


async def test_a_deaf_instance_notices_and_a_revoked_grant_ends_its_sessions(
    fleet: Fleet,
) -> None:
    status, out, err = await fleet.hoop("gw-a", "request", "web1", "--for", "1h", "--reason", "x")
    assert status == 0, err
    status, out, err = await fleet.hoop("gw-b", "grants", "--json")
    assert status == 0, err
    (grant,) = json.loads(out)
    status, _, err = await fleet.hoop("gw-b", "approve", grant["id"], "--reason", "ok")
    assert status == 0, err
    live = await fleet.ssh("bob", "echo started; sleep 120", frontend="ssh_gw-a")
    assert live.stdout is not None
    line = await asyncio.wait_for(live.stdout.readline(), 30)
    assert line.strip() == b"started"

    listeners = _listeners(fleet.state_url)
    assert len(listeners) == 2, listeners
    for pid in listeners:  # both LISTEN connections go silent; every other one works
        os.kill(pid, signal.SIGSTOP)
    try:
        status, _, err = await fleet.hoop("gw-b", "revoke", grant["id"], "--reason", "done")
        assert status == 0, err
        try:
            _, err = await asyncio.wait_for(live.communicate(), 60)
        except TimeoutError:
            live.kill()
            raise AssertionError(
                "the grant revoked on gw-b never ended bob's session on gw-a"
            ) from None
        assert b"grant" in err
        again = await fleet.ssh("bob", "echo let-in", frontend="ssh_gw-a")
        out, err = await asyncio.wait_for(again.communicate(), 30)
        assert again.returncode != 0 and b"let-in" not in out, out + err
    finally:
        for pid in listeners:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
