"""Issue 12, class 7: `.`, `source` or a shell given its input as the script file
(/dev/stdin, /dev/fd/N, /proc/self/fd/N, a process substitution) is opaque: the gateway never
sees those commands, so with no approvers configured they are refused. Before the fix
`. /dev/stdin <<< "$(echo ... | base64 -d)"` ran whatever the base64 said."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.gate_attacks import Terminal, canary, exec_as_alice, start

pytestmark = pytest.mark.timeout(120)


def hidden(command: str) -> str:
    return base64.b64encode(command.encode()).decode()


@pytest.mark.parametrize(
    ("template", "stdin"),
    [
        ('. /dev/stdin <<< "$(echo {b64} | base64 -d)"', ""),
        ('source /dev/stdin <<< "$(echo {b64} | base64 -d)"', ""),
        ('bash /dev/stdin <<< "$(echo {b64} | base64 -d)"', ""),
        ('sh /dev/fd/3 3<<< "$(echo {b64} | base64 -d)"', ""),
        ('. /proc/self/fd/0 <<< "$(echo {b64} | base64 -d)"', ""),
        ("bash <(echo {b64} | base64 -d)", ""),
        ("source /dev//stdin", "{plain}\n"),  # the script is the caller's channel
        ("BASH_ENV=/dev/stdin bash -c true", "{plain}\n"),  # a startup file read from input
        ("bash --rcfile <(echo {b64} | base64 -d) -i", ""),
    ],
)
async def test_a_script_read_from_the_input_does_not_run_unseen(
    harness: GatewayHarness, tmp_path: Path, template: str, stdin: str
) -> None:
    await start(harness)
    target = canary(tmp_path)
    plain = f"rm -f {target}"
    command = template.format(b64=hidden(plain))
    result = await exec_as_alice(harness, command, stdin=stdin.format(plain=plain).encode())
    assert result.status == 126, result
    assert "denied" in result.err
    assert target.exists()


async def test_a_typed_source_of_stdin_is_refused(harness: GatewayHarness, tmp_path: Path) -> None:
    await start(harness)
    target = canary(tmp_path)
    terminal = await Terminal.bash(harness, tmp_path)
    try:
        shown = await terminal.line(
            f'. /dev/stdin <<< "$(echo {hidden("rm -f x-canary")} | base64 -d)"'
        )
        assert b"denied" in shown
    finally:
        await terminal.close()
    assert target.exists()


async def test_a_script_file_still_runs(harness: GatewayHarness, tmp_path: Path) -> None:
    await start(harness)
    script = tmp_path / "hello.sh"
    script.write_text("echo hello from a script\n")
    result = await exec_as_alice(harness, f". {script}; bash {script}")
    assert result.status == 0, result
    assert result.out.count("hello from a script") == 2
