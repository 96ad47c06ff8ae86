"""Issue 12, class 8: bash's arithmetic evaluates a variable's value as an expression, and
`a[$(cmd)]` in that value runs cmd. A value read from a file is invisible to the gateway, so
arithmetic fed by anything but literals is opaque (refused here, no approvers configured).
Before the fix `read -r x < p; [[ x -eq 0 ]]` deleted the canary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import Terminal, canary, exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "use",
    [
        "[[ x -eq 0 ]]",
        "let y=x",
        "declare -i y=x",
        "declare -i y; y=$x",
        "((x))",
        "echo $((x))",
        "b=(1); echo ${{b[x]}}",
        "echo ${{x:x}}",
        "echo ${{!x}}",
        "[[ -v $x ]]",
        "declare -n r=$x; echo $r",
    ],
)
async def test_arithmetic_on_a_value_read_from_a_file_never_runs_it(
    harness: GatewayHarness, tmp_path: Path, use: str
) -> None:
    await start(harness)
    target = canary(tmp_path)
    payload = tmp_path / "p"
    payload.write_text(f"a[$(rm -f {target})]\n")
    result = await exec_as_alice(harness, f"read -r x < {payload}; " + use.format())
    assert result.status == 126, result
    assert "denied" in result.err
    assert target.exists()


async def test_a_subscript_in_a_quoted_name_never_runs(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start(harness)
    target = canary(tmp_path)
    for command in (
        f"read 'a[$(rm -f {target})]' <<< 1",
        f"printf -v 'a[$(rm -f {target})]' 1",
    ):
        result = await exec_as_alice(harness, command)
        assert result.status == 126, result
        assert target.exists()


async def test_typed_arithmetic_on_a_read_value_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start(harness)
    target = canary(tmp_path)
    (tmp_path / "p").write_text("a[$(rm -f x-canary)]\n")
    terminal = await Terminal.bash(harness, tmp_path)
    try:
        await terminal.line("read -r x < p")
        shown = await terminal.line("[[ x -eq 0 ]]")
        assert b"denied" in shown
        shown = await terminal.line("let x")
        assert b"denied" in shown
        shown = await terminal.line("[[ 1 -eq 1 ]] && echo li''teral-ok")
        assert b"literal-ok" in shown
    finally:
        await terminal.close()
    assert target.exists()
