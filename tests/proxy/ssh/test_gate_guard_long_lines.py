"""Class 5 of issue 12: a line longer than the rows the gateway models. Its start (the real
prompt) scrolled out of the model, and a tail drawn to look like a prompt followed by `true`
was taken for the whole line."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import PROMPT, Agent, canary, start_guard

COLUMNS = 80


def long_line(rows: int) -> str:
    """`rm x-canary; : aaa…` padded so that `gw$ true` starts a row of its own."""
    head = "rm x-canary; : "
    width = rows * COLUMNS - len(PROMPT) - len(head) - 1
    return head + "a" * width + " " + PROMPT + "true"


async def test_a_line_longer_than_the_model_with_a_fake_prompt_at_its_end(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        line = long_line(70).encode()
        for start in range(0, len(line), 512):  # typed in pieces, each echoed
            agent.send(line[start : start + 512])
            await agent.quiet(0.3)
        await agent.run(b"\r", "done-1")
        assert target.exists(), bytes(agent.seen[-600:])
        assert b"[hoop]" in agent.seen
    finally:
        await agent.close()


async def test_a_line_of_many_rows_within_the_model_is_still_judged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """Forty rows: the prompt is still in the model, and the line is read whole."""
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        line = long_line(40).encode()
        for start in range(0, len(line), 512):
            agent.send(line[start : start + 512])
            await agent.quiet(0.3)
        await agent.run(b"\r", "done-1")
        assert target.exists(), bytes(agent.seen[-600:])
        assert b"[hoop] denied: deny by rule no-canary" in agent.seen
    finally:
        await agent.close()
