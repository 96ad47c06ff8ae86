"""PostgreSQL restarted under a fleet member (a private cluster from initdb, not the machine's
server): while it is down a state operation fails closed with a clear message, within the
configured timeout; when it is back the pool reconnects, the LISTEN connection comes back and
tells receivers to read everything again, and the member's rows are copied again."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.pg_state import RESYNC, PgState, migrate
from storage.state import AuditEntry, Hint, Hold, HoldStatus, StoreUnavailable
from tests.fixtures.pgstate import PrivateCluster, fresh_database


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    if not Path("/usr/lib/postgresql").exists():
        pytest.skip("PostgreSQL server binaries are not installed")
    # not under pytest's tmp_path: the postgres user must reach it (root runs the tests in CI)
    root = Path(tempfile.mkdtemp(prefix="hoop-pg-"))
    root.chmod(0o755)
    server = PrivateCluster(root)
    server.init()
    server.start()
    server.wait_ready()
    yield server
    server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


def a_hold(hold_id: str) -> Hold:
    now = time.time()
    return Hold(hold_id, "s", "gw-a", "alice", "web1", "id", "r", ["ops"], 1, now, now + 60)


async def test_the_state_survives_a_postgresql_restart(cluster: PrivateCluster) -> None:
    with fresh_database(cluster.admin_url) as url:
        await migrate(url)
        a = await PgState.open(url, gateway_id="gw-a", timeout_s=1.0)
        b = await PgState.open(url, gateway_id="gw-b", timeout_s=1.0)
        try:
            await b.listening.wait()
            hints: asyncio.Queue[Hint] = asyncio.Queue()
            b.on_hint(hints.put_nowait)
            await a.add_hold(a_hold("h-1"), AuditEntry(time.time(), "alice", "x", "h-1"))
            assert (await asyncio.wait_for(hints.get(), 2)).id == "h-1"

            await asyncio.to_thread(cluster.stop, "fast")
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="did not answer"):
                await a.add_hold(a_hold("h-2"), AuditEntry(time.time(), "alice", "x", "h-2"))
            assert time.monotonic() - started < 5  # fails closed, does not hang

            await asyncio.to_thread(cluster.start)
            deadline = time.monotonic() + 30
            while True:  # the pool drops dead connections and reconnects
                try:
                    await a.add_hold(a_hold("h-3"), AuditEntry(time.time(), "alice", "x", "h-3"))
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            kinds = set()
            while RESYNC not in kinds:  # B's notifications came back: read everything again
                kinds.add((await asyncio.wait_for(hints.get(), 30)).kind)
            pending = {h.id for h in await b.list_holds(HoldStatus.PENDING)}
            assert pending == {"h-1", "h-3"}  # h-2 was refused, nothing half-written
        finally:
            await a.close()
            await b.close()
