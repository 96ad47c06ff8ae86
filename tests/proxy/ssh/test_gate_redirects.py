"""Issue 12, class 6: a deny rule sees the files a line opens through redirects, through real
`ssh` (exec and terminal). Before the fix `cat < x-canary` passed `shell = "*canary*"`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import Terminal, canary, exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    "command",
    [
        "cat < {dir}/x-canary",
        "exec 3<{dir}/x-c''anary; cat <&3",
        ": > {dir}/x-canary",
        "echo gone >| {dir}/x-canary",
        "{{ cat; }} < {dir}/x-canary",
        "while read -r l; do echo $l; done < {dir}/x-c\\anary",
    ],
)
async def test_an_exec_reading_or_writing_a_denied_path_by_redirect_is_refused(
    harness: GatewayHarness, tmp_path: Path, command: str
) -> None:
    await start(harness)
    target = canary(tmp_path)
    result = await exec_as_alice(harness, command.format(dir=tmp_path))
    assert result.status == 126, result
    assert "canary" in result.err
    assert "still here" not in result.out
    assert target.read_text() == "still here\n"


async def test_a_typed_redirect_to_a_denied_path_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start(harness)
    target = canary(tmp_path)
    terminal = await Terminal.bash(harness, tmp_path)
    try:
        shown = await terminal.line("cat < x-canary")
        assert b"denied" in shown and b"still here" not in shown
        shown = await terminal.line("exec 3<x-c''anary")
        assert b"denied" in shown
        shown = await terminal.line(": > x-canary")
        assert b"denied" in shown
        shown = await terminal.line("echo fi''ne")  # the shell is still usable
        assert b"fine" in shown and b"denied" not in shown
    finally:
        await terminal.close()
    assert target.read_text() == "still here\n"
