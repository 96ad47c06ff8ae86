"""Class 1 of issue 12: a line and its Enter arrive in one write. The Enter must not be judged
before the echo of every key typed ahead of it has been read, or the gate judges half a line
(`rm /tmp/` for `rm /tmp/x-canary`) and lets the whole of it run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, canary, start_guard


@pytest.mark.parametrize("runs", range(3))
async def test_a_line_and_its_enter_in_one_write_is_judged_whole(
    harness: GatewayHarness, tmp_path: Path, runs: int
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(f"rm {target}\r".encode(), "done-1")
        assert target.exists(), bytes(agent.seen)
        assert b"[hoop]" in agent.seen
    finally:
        await agent.close()


async def test_a_long_line_and_its_enter_in_one_write_is_judged_whole(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """Long enough to wrap several rows of the 80-column terminal."""
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        line = "true " + "a" * 200 + f" ; rm {target}"
        await agent.run(f"{line}\r".encode(), "done-1")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()


async def test_an_allowed_line_in_one_write_still_runs(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The fix must not make agents wait for ever or refuse what is allowed."""
    await start_guard(harness)
    agent = await Agent.start(harness, tmp_path)
    try:
        end = await agent.run(b"echo hel''lo-agent\r", "done-1")
        assert b"hello-agent" in agent.seen[:end], bytes(agent.seen)
        assert b"[hoop]" not in agent.seen, bytes(agent.seen)
        assert (tmp_path / "made").exists() is False
        await agent.run(b"touch made\r", "done-2")
        assert (tmp_path / "made").exists(), bytes(agent.seen)
    finally:
        await agent.close()
