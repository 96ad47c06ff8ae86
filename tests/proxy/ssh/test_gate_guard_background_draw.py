"""A background job draws a harmless line over the one the shell holds. The gate reads the
line off the screen; output that arrives within one answer's burst of a key's echo was taken
as part of that answer, so a job timed to draw then (a prompt and `echo hi`, over a typed
`rm x-canary`) had the drawing judged and the held line run. Keys that were all plain text
say exactly what the shell holds: the screen must show them, or the line is uncertain."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import PROMPT, Agent, canary, start_guard


async def test_a_background_job_drawing_a_line_during_typing_is_not_judged(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        fake = f"\\r\\e[K{PROMPT}echo hi"
        job = f"(sleep 0.5; printf 'AR''MED\\n'; sleep 1.5; printf '{fake}') &\r"
        start = len(agent.seen)
        agent.send(job.encode())
        armed = await agent.expect(b"ARMED", after=start)
        agent.send(b"\r")
        await agent.expect(PROMPT.encode(), after=armed)
        agent.send(b"rm x-can")
        await asyncio.sleep(0.2)
        agent.send(b"ary")
        for _ in range(60):  # spaces keep the shell answering while the job draws
            await asyncio.sleep(0.04)
            agent.send(b" ")
        await asyncio.sleep(0.3)
        agent.send(b"\r")
        await agent.quiet(2.0)
        agent.send(b"\x03")  # withdraw the hold, if the line was held
        await agent.run(b"", "done-1")
        assert target.exists(), bytes(agent.seen)
        assert b"[hoop]" in agent.seen, bytes(agent.seen)
    finally:
        await agent.close()


async def test_plain_text_typed_slowly_still_runs(harness: GatewayHarness, tmp_path: Path) -> None:
    """The check must not refuse an ordinary line typed key by key, spaces and all."""
    await start_guard(harness)
    agent = await Agent.start(harness, tmp_path)
    try:
        for key in "echo  wi'd'e  ":
            agent.send(key.encode())
            await asyncio.sleep(0.03)
        end = await agent.run(b"\r", "done-1")
        assert b"\rwide\r\n" in agent.seen[:end], bytes(agent.seen)
        assert b"[hoop]" not in agent.seen, bytes(agent.seen)
    finally:
        await agent.close()
