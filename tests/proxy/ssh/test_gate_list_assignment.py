"""Issue 12, class 8, attacked: `declare`, `local`, `readonly`, `typeset` and `export` given a
list assignment in quotes (`declare -a 'x=(...)'`) parse it again as shell, so what was quoted
for the gateway runs: a command substitution in an element or a subscript, and a subscript
naming a variable meets arithmetic evaluation, which runs `a[$(...)]` hidden in its value.
Before the fix each of these deleted the canary over real ssh (5 of 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import canary, exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "command",
    [
        "declare -a 'x=($(rm -f {split}))'",
        "declare -A 'h=([$(rm -f {split})]=1)'",
        "readonly -a 'x=(`rm -f {split}`)'",
        "read -r y < {payload}; declare -a 'x=([y]=1)'",
        "read -r y < {payload}; f() {{ local -a 'x=([$y]=1)'; }}; f",
    ],
)
async def test_a_quoted_list_assignment_does_not_run_what_it_hides(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    await start(harness)
    target = canary(tmp_path)
    split = str(target).replace("canary", 'c""anary')  # no "canary" in the text we judge
    payload = tmp_path / "payload"
    payload.write_text(f"a[$(rm -f {split})]\n")
    result = await exec_as_alice(harness, command.format(split=split, payload=payload))
    assert target.exists(), result
    assert result.status != 0, result
