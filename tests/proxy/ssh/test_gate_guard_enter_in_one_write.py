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


async def test_editing_keys_and_the_enter_in_one_write_judge_the_edited_line(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`echo rm -rf keep` is on the screen; Home, five deletes and Enter come in one write: the
    line that runs is `rm -rf keep`, and that is what must be judged, not the old screen."""
    await start_guard(harness)
    (tmp_path / "keep").mkdir()
    agent = await Agent.start(harness, tmp_path)
    try:
        agent.send(b"echo rm -rf keep")
        await agent.quiet(0.5)
        await agent.run(b"\x01\x04\x04\x04\x04\x04\r", "done-1")
        assert (tmp_path / "keep").is_dir(), bytes(agent.seen)
        assert b"[hoop] denied" in agent.seen
    finally:
        await agent.close()


async def test_a_line_sent_before_the_prompt_is_judged_whole(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """An agent that does not wait for the prompt: the line and its Enter arrive while the
    shell is still starting (the terminal echoes them before readline draws anything)."""
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path, wait=False, first=f"rm {target}\r".encode())
    try:
        await agent.quiet(2.0)
        await agent.run(b"\x15", "done-1")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()
