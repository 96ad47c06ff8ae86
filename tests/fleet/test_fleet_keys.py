"""An instance whose SSH host keys or recording signing key differ from the fleet's refuses to
start, and says which key and what to do; with the fleet's keys copied in, it starts."""

from __future__ import annotations

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


def test_an_instance_with_its_own_keys_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    first = fleet.instances["gw-a"]
    stranger = tmp_path / "gw-x"
    stranger.mkdir()
    config = first.config.read_text()
    config = config.replace(str(first.data_dir), str(stranger / "data"))
    config = config.replace('instance = "gw-a"', 'instance = "gw-x"')
    config = config.replace(f"127.0.0.1:{first.ssh_port}", f"127.0.0.1:{free_port()}")
    (stranger / "gateway.toml").write_text(config)
    argv = [sys.executable, "-m", "hoop_tui", "gateway", "--config", str(stranger / "gateway.toml")]

    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode == 1
    assert "gw-x: this instance's" in refused.stderr
    assert "copy the fleet's keys" in refused.stderr
    assert "Traceback" not in refused.stderr

    shutil.rmtree(stranger / "data")  # the operator copies the fleet's keys, as documented
    shutil.copytree(fleet.directory / "keys", stranger / "data")
    started = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        status = None
        for _ in range(100):
            done = fleet.hoop_sync("gw-a", "status", "--json")
            if '"gw-x"' in done.stdout:
                status = done.stdout
                break
            assert started.poll() is None, started.stdout.read() if started.stdout else ""
            time.sleep(0.2)
        assert status is not None and '"up"' in status
    finally:
        started.terminate()
        started.wait(30)
