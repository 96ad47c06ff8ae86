"""Issue 12, attacked: a deny rule written with short options (`rm -rf *`) must meet the other
spellings of the same options, since GNU getopt runs them the same: `-R` is `-r` for rm, and
`--recursive`, `--force` and their unique abbreviations (`--rec`, `--f`) are `-r` and `-f`.
Before the fix `ssh alice+t1@gw 'rm --recursive --force DIR'` (and `rm -Rf DIR`) deleted the
directory; fails on the code before (5 of 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "options",
    ["-Rf", "-R -f", "--recursive --force", "--rec --f", "-f --recursive"],
)
async def test_a_recursive_delete_spelt_otherwise_is_denied(
    harness: GatewayHarness, tmp_path: Path, options: str
) -> None:
    await start(harness)
    directory = tmp_path / "keep"
    directory.mkdir()
    (directory / "file").write_text("still here\n")
    result = await exec_as_alice(harness, f"rm {options} {directory}")
    assert result.status != 0, result
    assert "no" in result.err, result  # the rule's message
    assert (directory / "file").exists()
