"""Everything the gateway writes is owner-only whatever the umask (issue 12, class 15): the data
directory, its databases with their -wal and -shm files, recordings, keys and sockets. Made
through the real gateway with a real `ssh` session and a held command, under umask 022."""

from __future__ import annotations

import asyncio
import getpass
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.broker import Person
from proxy.config import load_config
from proxy.runtime import GatewayRuntime
from tests.fixtures.gateway import GatewayHarness

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def shared_with_others(root: Path) -> list[str]:
    """Every path under `root` (and root itself) that a group or other account may read."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


async def test_a_gateway_run_under_umask_022_leaves_nothing_others_can_read(
    harness: GatewayHarness, tmp_path: Path, umask_022: None
) -> None:
    harness.add_restart_review()
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    assert harness.runtime is not None
    result = await harness.ssh_direct("alice+web1", "echo hello")
    assert result.out == "hello\n"
    client = asyncio.ensure_future(
        harness.ssh_direct("alice+web1", f"touch {tmp_path}/restart.done")
    )
    deadline = time.monotonic() + 20
    while not harness.runtime.broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    # While the gateway runs: the held command sits in state.db (and its -wal).
    assert shared_with_others(harness.data_dir) == []
    (hold,) = harness.runtime.broker.pending_holds()
    bob = Person("bob", frozenset({"oncall"}))
    harness.runtime.approvals.decide_hold(hold.id, bob, approve=False, reason="no")
    await client
    await harness.stop()
    names = {path.name for path in harness.data_dir.rglob("*")}
    assert {"state.db", "catalogue.db"} <= names
    assert any(name.endswith(".hrec") for name in names)
    assert shared_with_others(harness.data_dir) == []


async def test_an_existing_world_readable_data_dir_is_closed_at_start(
    harness: GatewayHarness, umask_022: None
) -> None:
    data = harness.directory / "data"
    data.mkdir(mode=0o755)
    (data / "state.db").touch(mode=0o644)
    harness.add_restart_review()
    GatewayRuntime(load_config(harness.write_config()))
    assert shared_with_others(data) == []
