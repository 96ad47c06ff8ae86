"""Issue 12, class 9: an exec request with a terminal whose program is a shell in disguise
(`script`, `rbash`, a renamed copy of bash) meets the gate: its typed lines are judged like a
shell's. Only programs known not to read commands go ungated. Before the fix the gate was only
put on programs known to be shells, and `rm x-canary` typed into `script` ran."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import Terminal, canary, start

pytestmark = pytest.mark.timeout(120)


async def attack(terminal: Terminal, target: Path) -> bytes:
    """Try to delete the canary and to read it."""
    shown = await terminal.line(f"rm -f {target}")
    shown += await terminal.line(f"cat {target}")
    return shown


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1)")
async def test_typed_lines_in_script_meet_the_gate(harness: GatewayHarness, tmp_path: Path):
    await start(harness)
    target = canary(tmp_path)
    terminal = await Terminal.shell(harness, "SHELL=/bin/bash script -q /dev/null")
    try:
        shown = await attack(terminal, target)
    finally:
        await terminal.close()
    assert b"denied" in shown
    assert target.exists()


@pytest.mark.parametrize("program", ["rbash", "renamed", "top"])
async def test_typed_lines_in_a_shell_under_another_name_meet_the_gate(
    harness: GatewayHarness, tmp_path: Path, program: str
):
    await start(harness)
    target = canary(tmp_path)
    if program in ("renamed", "top"):  # a copy of bash, also under a known non-shell's name
        bash = shutil.which("bash")
        assert bash is not None
        copy = tmp_path / ("helper" if program == "renamed" else "top")
        shutil.copy(bash, copy)
        program = str(copy)
    elif shutil.which(program) is None:
        pytest.skip(f"needs {program}")
    terminal = await Terminal.shell(harness, f"{program} --norc -i")
    try:
        shown = await attack(terminal, target)
    finally:
        await terminal.close()
    assert b"denied" in shown
    assert target.exists()


async def test_a_known_non_shell_runs_ungated(harness: GatewayHarness, tmp_path: Path):
    """`tail -f` reads no commands: what is typed into it is not judged (nothing is held)."""
    await start(harness)
    log = tmp_path / "log"
    log.write_text("first line\n")
    terminal = await Terminal.open(harness, f"tail -f {log}", ready=b"first line")
    try:
        with log.open("a") as handle:
            handle.write("second line\n")
        await terminal.expect(b"second line")
        shown = await terminal.line("x-canary")
        assert b"denied" not in shown
    finally:
        await terminal.close()
