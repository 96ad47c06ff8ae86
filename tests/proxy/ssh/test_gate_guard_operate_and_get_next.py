"""`C-o` (operate-and-get-next) runs the line and puts the next history line on the new prompt
before any key is typed. The gate took the row up to the cursor as the prompt, so the line
bash drew there was read as part of the prompt and an Enter judged an empty line while bash
ran the recalled one (`rm -rf victim`, from a history file the shell read at start)."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, start_guard


async def test_the_line_operate_and_get_next_recalls_is_judged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    (tmp_path / "victim").mkdir()
    (tmp_path / "history").write_text("echo first\nrm -rf victim\n")
    agent = await Agent.start(harness, tmp_path)
    try:
        agent.send(b"\x10\x10")  # C-p C-p: `echo first`
        await agent.quiet(0.5)
        agent.send(b"\x0f")  # C-o: runs it, then `rm -rf victim` waits on the new prompt
        await agent.quiet(0.8)
        await agent.run(b"\r", "done-1")
        agent.send(b"\x03")  # withdraw a hold
        await agent.run(b"true\r", "done-2")
        assert (tmp_path / "victim").exists(), bytes(agent.seen)
        assert b"[hoop]" in agent.seen, bytes(agent.seen)
    finally:
        await agent.close()


async def test_operate_and_get_next_still_runs_allowed_lines(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    (tmp_path / "history").write_text("echo fir''st\necho sec''ond\n")
    agent = await Agent.start(harness, tmp_path)
    try:
        agent.send(b"\x10\x10")
        await agent.quiet(0.5)
        agent.send(b"\x0f")
        await agent.quiet(0.8)
        end = await agent.run(b"\r", "done-1")
        assert b"\rfirst\r\n" in agent.seen[:end], bytes(agent.seen)
        assert b"\rsecond\r\n" in agent.seen[:end], bytes(agent.seen)
    finally:
        await agent.close()
