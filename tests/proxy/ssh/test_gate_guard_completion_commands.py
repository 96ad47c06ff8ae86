"""`complete -C CMD name` makes bash run CMD at every Tab on `name`, and `compgen -C CMD` runs
it at once: CMD is a command line given as an argument, which the gate read as a word. It is
judged as the line it is (both modes read the line the same way; under guard the Tab that
would run it later is otherwise not judged at all). Ordinary completion still works."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, start_guard


@pytest.mark.parametrize(
    "lines",
    [
        ["complete -C 'rm -rf victim' foo", "foo \t\t"],
        ["compgen -C 'rm -rf victim' x"],
        ["compgen -o default -C'rm -rf victim' x"],
        ["o=-C; compgen $o 'rm -rf victim' x"],
    ],
)
async def test_a_completion_command_is_judged_as_the_line_it_runs(
    harness: GatewayHarness, tmp_path: Path, lines: list[str]
) -> None:
    await start_guard(harness)
    (tmp_path / "victim").mkdir()
    agent = await Agent.start(harness, tmp_path)
    try:
        for number, line in enumerate(lines):
            await agent.run(f"{line}\r".encode(), f"done-{number}")
            agent.send(b"\x03")  # withdraw a hold
        await agent.run(b"true\r", "done-end")
        assert (tmp_path / "victim").exists(), bytes(agent.seen)
        assert b"[hoop]" in agent.seen, bytes(agent.seen)
    finally:
        await agent.close()


async def test_ordinary_completion_still_works(harness: GatewayHarness, tmp_path: Path) -> None:
    await start_guard(harness)
    agent = await Agent.start(harness, tmp_path)
    try:
        end = await agent.run(b"complete -W 'alpha beta' foo; compgen -W 'gamma' g\r", "done-1")
        assert b"gamma" in agent.seen[:end], bytes(agent.seen)
        start = len(agent.seen)
        agent.send(b"foo al\t")
        await agent.expect(b"alpha", after=start)
        agent.send(b"\x15")
        await agent.run(b"echo fine\r", "done-2")
        assert b"[hoop]" not in agent.seen, bytes(agent.seen)
    finally:
        await agent.close()
