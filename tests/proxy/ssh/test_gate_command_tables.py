"""Issue 12, attacked: bash's command tables make one name run another program, as an alias
does: `hash -p /bin/rm ls` and `BASH_CMDS[ls]=/bin/rm`, then `ls -rf DIR` is `rm -rf DIR`
past the deny rule `rm -rf *`. Both are opaque now. Fails on the code before (2 of 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("setup", ["hash -p /bin/rm ls", "BASH_CMDS[ls]=/bin/rm"])
async def test_a_name_made_to_run_rm_meets_the_gate(
    harness: GatewayHarness, tmp_path: Path, setup: str
) -> None:
    await start(harness)
    directory = tmp_path / "keep"
    directory.mkdir()
    (directory / "file").write_text("still here\n")
    result = await exec_as_alice(harness, f"{setup}; ls -rf {directory}")
    assert (directory / "file").exists(), result
    assert result.status != 0, result
