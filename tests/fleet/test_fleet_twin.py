"""A second gateway started with an instance id that a running instance already uses is
refused, and says so: otherwise it would take over the running one's row (its peer address),
drop its live sessions from the shared list and expire its pending holds as "session ended".
An instance restarted after a crash (kill -9, its row still "up") starts as before."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.processes import free_port
from tests.fixtures.sshd import Sshd
from tests.fleet.harness import ROOT, Fleet


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, state_url: str) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path / "fleet", sshd, state_url, names=("gw-a",))
    fleet.start()
    yield fleet
    fleet.stop()


def _live_on(fleet: Fleet, name: str) -> int:
    done = fleet.hoop_sync(name, "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return sum(i["live_sessions"] for i in report["instances"] if i["id"] == name)


async def test_a_twin_of_a_running_instance_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    first = fleet.instances["gw-a"]
    session = await fleet.ssh("alice", "sleep 60")
    try:
        deadline = time.monotonic() + 30
        while _live_on(fleet, "gw-a") != 1:
            assert time.monotonic() < deadline, "alice's session never showed in the fleet"
            await asyncio.sleep(0.2)

        twin = tmp_path / "twin"
        twin.mkdir()
        shutil.copytree(fleet.directory / "keys", twin / "data")  # the fleet's keys: allowed in
        config = first.config.read_text().replace(str(first.data_dir), str(twin / "data"))
        config = config.replace(f"127.0.0.1:{first.ssh_port}", f"127.0.0.1:{free_port()}")
        (twin / "gateway.toml").write_text(config)  # same instance = "gw-a"
        argv = [sys.executable, "-m", "hoop_tui", "gateway", "--config", str(twin / "gateway.toml")]
        started = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        try:
            _, err = started.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            started.kill()
            started.communicate()
            raise AssertionError("a second gw-a started beside the running one") from None
        assert started.returncode == 1
        text = err.decode()
        assert "gw-a" in text and "already running" in text, text
        assert "its own [gateway] instance" in text, text
        assert "Traceback" not in text

        assert _live_on(fleet, "gw-a") == 1  # the running instance's session is still listed
    finally:
        session.kill()
        await session.wait()


def test_an_instance_restarted_after_kill_9_starts(fleet: Fleet) -> None:
    fleet.kill("gw-a")
    began = time.monotonic()
    fleet.start_instance("gw-a")
    assert time.monotonic() - began < 30
    done = fleet.hoop_sync("gw-a", "status", "--json")
    assert done.returncode == 0, done.stderr
    assert [i["state"] for i in json.loads(done.stdout)["instances"]] == ["up"]
