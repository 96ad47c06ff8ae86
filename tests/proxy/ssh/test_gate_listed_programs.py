"""Issue 12, class 9, attacked: a terminal exec of a program on the known-non-shell list is left
ungated, so that list must hold only programs that cannot be made to run a shell. Found by
trying: a path that leaves a system directory by `..`, an environment the caller sets
(`LD_PRELOAD=`, also through `env`), and listed programs that run commands of their own
(`dmesg -H` opens a pager with `!cmd`, `sort --compress-program` feeds its data to a program).
Each gave an interactive shell whose typed lines nobody judged; all fail on the code before."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import PROMPT, Terminal, canary, start

pytestmark = pytest.mark.timeout(120)

_PRELOAD = r"""
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void shell(void) {
    unsetenv("LD_PRELOAD");
    execl("/bin/bash", "bash", "--norc", "-i", (char *)0);
}
"""


async def attack(terminal: Terminal, target: Path) -> bytes:
    """Try to delete the canary and to read it."""
    shown = await terminal.line(f"rm -f {target}")
    shown += await terminal.line(f"cat {target}")
    return shown


def bash_named(directory: Path, name: str) -> Path:
    bash = shutil.which("bash")
    assert bash is not None
    directory.mkdir(exist_ok=True)
    copy = directory / name
    shutil.copy(bash, copy)
    return copy


@pytest.mark.parametrize(
    "way", ["dot-dot", "LD_PRELOAD", "env LD_PRELOAD", "sort --compress-program"]
)
async def test_a_listed_program_made_to_run_a_shell_meets_the_gate(
    harness: GatewayHarness, tmp_path: Path, way: str
) -> None:
    await start(harness)
    target = canary(tmp_path)
    if way == "dot-dot":  # starts with /usr/bin/ yet is a copy of bash
        command = f"/usr/bin/../..{bash_named(tmp_path / 'd', 'top')} --norc -i"
    elif way.endswith("LD_PRELOAD"):  # a library of the caller's that starts a shell
        if shutil.which("cc") is None:
            pytest.skip("needs a C compiler")
        source = tmp_path / "shell.c"
        source.write_text(_PRELOAD)
        library = tmp_path / "shell.so"
        subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True)
        command = f"{way}={library} top"
    else:  # sort runs its compress program with the data as input: bash runs the lines
        data = tmp_path / "data"
        lines = ["exec bash --norc -i </dev/tty >/dev/tty 2>&1"]
        lines += [f"#{n}" for n in range(300_000)]
        data.write_text("\n".join(lines) + "\n")
        command = f"sort -S 10K -T {tmp_path} --compress-program=bash {data}"
    terminal = await Terminal.shell(harness, command)
    try:
        shown = await attack(terminal, target)
    finally:
        await terminal.close()
    assert b"denied" in shown
    assert target.exists()


async def test_the_pager_of_dmesg_cannot_start_a_shell_unjudged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`dmesg -H` pages through less, whose `!cmd` runs a shell."""
    if shutil.which("less") is None or subprocess.run(["dmesg"], capture_output=True).returncode:
        pytest.skip("needs less and a readable kernel log")
    await start(harness)
    target = canary(tmp_path)
    terminal = await Terminal.open(harness, "dmesg -H", ready=b"")
    try:
        await terminal.quiet(1.0)
        start_at = len(terminal.seen)
        terminal.send(b"!bash --norc -i\r")
        await terminal.quiet(1.0)
        terminal.send(f"PS1='{PROMPT}'\r".encode())
        await terminal.quiet(1.0)
        shown = bytes(terminal.seen[start_at:]) + await attack(terminal, target)
    finally:
        await terminal.close()
    assert target.exists(), shown
