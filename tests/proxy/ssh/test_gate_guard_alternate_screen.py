"""Class 2 of issue 12: the alternate screen drawn by the shell itself (or by any command the
gate did not let start a full-screen program) must not switch judging off."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, canary, start_guard


async def test_printf_of_the_alternate_screen_does_not_stop_judging(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(b"printf '\\e[?1049h'\r", "done-1")
        await agent.run(f"rm {target}\r".encode(), "done-2")
        assert target.exists(), bytes(agent.seen)
        assert b"[hoop] denied" in agent.seen
    finally:
        await agent.close()


async def test_a_prompt_that_draws_the_alternate_screen_does_not_stop_judging(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The shell itself enters it before every prompt."""
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(b"PROMPT_COMMAND=\"printf '\\e[?1049h'\"\r", "done-1")
        await agent.run(f"rm {target}\r".encode(), "done-2")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()


async def test_a_file_that_draws_the_alternate_screen_does_not_stop_judging(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    (tmp_path / "screen").write_bytes(b"\x1b[?47h\x1b[H\x1b[2J")
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(b"cat screen\r", "done-1")
        await agent.run(f"rm {target}\r".encode(), "done-2")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()


async def test_leaving_a_pager_then_redrawing_the_alternate_screen_does_not_stop_judging(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`less` is a full-screen program: what is typed into it is not judged (a search for
    the canary's name is no command). Once it left the alternate screen, the allowance is
    spent: a prompt entering it again does not switch judging off."""
    await start_guard(harness)
    target = canary(tmp_path)
    (tmp_path / "notes").write_text("".join(f"line {n}\n" for n in range(200)))
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(b"PROMPT_COMMAND=\"printf '\\e[?1049h'\"\r", "done-1")
        start = len(agent.seen)
        agent.send(b"less notes\r")
        await agent.expect(b"line 1", after=start)
        await agent.quiet(0.5)
        agent.send(b"/x-canary\r")
        await agent.expect(b"Pattern not found", after=start)
        assert b"[hoop]" not in agent.seen[start:], bytes(agent.seen[start:])
        agent.send(b"q")
        await agent.expect(b"\x1b[?1049l", after=start)
        await agent.quiet(0.5)
        agent.send(b"\x15")  # whatever a key left on the line
        await agent.quiet(0.5)
        await agent.run(f"rm {target}\r".encode(), "done-2")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()


async def test_a_full_screen_program_killed_on_the_alternate_screen_does_not_stop_judging(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """An allowed `vim` killed with SIGKILL never leaves the alternate screen; once the shell's
    prompt is back under the cursor, lines are judged again."""
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(b"(sleep 2; pkill -9 -f '^vim guard-kill') &\r", "done-1")
        start = len(agent.seen)
        agent.send(b"vim guard-kill\r")
        await agent.expect(b"\x1b[?1049h", after=start)
        await agent.expect(b"gw$ ", after=start)  # vim was killed; the shell prompts again
        await agent.quiet(0.5)
        await agent.run(f"rm {target}\r".encode(), "done-2")
        assert target.exists(), bytes(agent.seen[start:])
    finally:
        await agent.close()
