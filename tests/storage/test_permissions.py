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

from proxy.config import load_config
from proxy.holds.broker import Person
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
    while not await harness.runtime.broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    # While the gateway runs: the held command sits in state.db (and its -wal).
    assert shared_with_others(harness.data_dir) == []
    (hold,) = await harness.runtime.broker.pending_holds()
    bob = Person("bob", frozenset({"oncall"}))
    await harness.runtime.approvals.decide_hold(hold.id, bob, approve=False, reason="no")
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


def readable_by_others(root: Path) -> list[str]:
    """Paths under `root` another account could read or list: readable by group or others,
    with every directory on the way there open to them too."""
    found = []

    def walk(directory: Path, reachable: bool) -> None:
        for path in sorted(directory.iterdir()):
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            if reachable and mode & 0o044:
                found.append(f"{path.relative_to(root)} {stat.filemode(mode)}")
            if stat.S_ISDIR(mode):
                walk(path, reachable and bool(mode & 0o011))

    root_mode = root.stat().st_mode
    if root_mode & 0o044:
        found.append(f". {stat.filemode(root_mode)}")
    walk(root, bool(root_mode & 0o011))
    return found


@pytest.mark.sshd  # starts the local target's sshd itself
async def test_the_up_setup_with_its_local_target_is_closed_to_others(
    tmp_path: Path, umask_022: None
) -> None:
    """What `hoop-tui up` makes in a terminal: the config, the local target's sshd (keys, log,
    pid file) and the gateway's files, under umask 022."""
    from hoop_tui.commands.local import ensure_default_setup
    from hoop_tui.localsshd import free_port, start_sshd, stop

    data_dir = tmp_path / "hoop-data"
    config_path, _ = ensure_default_setup(data_dir)
    port = free_port()
    config_path.write_text(config_path.read_text().replace("127.0.0.1:2222", f"127.0.0.1:{port}"))
    config = load_config(config_path)
    sshd = start_sshd(data_dir / "local-target", config.targets["local"].port)
    try:
        assert readable_by_others(data_dir) == []  # before the gateway narrows anything
    except AssertionError:
        stop(sshd.process)
        raise
    runtime = GatewayRuntime(config)
    await runtime.start()
    try:
        assert readable_by_others(data_dir) == []
    finally:
        await runtime.stop()
        stop(sshd.process)
    assert readable_by_others(data_dir) == []
