"""Issue 12, classes 7-8, attacked: a variable whose value bash runs (PS4 under `set -x`, also
in a non-interactive shell; PS0-PS3, PROMPT_COMMAND, BASH_ENV, ENV) given a value the gateway
cannot read by a builtin that assigns by name: `read`, `mapfile`, `for NAME in`. The file's
`$(rm ...)` ran. Assignments written out (`PS4='$(...)'`) were already opaque; these were
allowed. Fails on the code before (3 of 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import canary, exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "command",
    [
        "read -r PS4 < {payload}; set -x; true",
        "mapfile -t PS4 < {payload}; set -x; true",
        'for PS4 in "$(cat {payload})"; do set -x; true; done',
    ],
)
async def test_a_code_variable_read_from_a_file_does_not_run_it(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    await start(harness)
    target = canary(tmp_path)
    split = str(target).replace("canary", 'c""anary')  # no "canary" in what is judged
    payload = tmp_path / "payload"
    payload.write_text(f"$(rm -f {split})\n")
    result = await exec_as_alice(harness, command.format(payload=payload))
    assert target.exists(), result
    assert result.status != 0, result
