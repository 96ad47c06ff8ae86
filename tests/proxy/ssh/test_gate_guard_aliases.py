"""An alias set at one prompt changes what a later line runs: `ll`, judged as `ll`, runs the
alias's text, which was only ever judged as an argument of `alias` (a glob `x-c?nary` names the
canary without spelling it). Under guard an alias definition is its own class, held like `bind`;
listing aliases still runs."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, canary, start_guard


async def test_an_alias_cannot_carry_a_command_to_a_later_line(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await Agent.start(harness, tmp_path)
    try:
        for number, line in enumerate(
            (
                "alias ll='rm -f x-c?nary'",
                "alias -- ll='rm -f x-c?nary'",
                "builtin alias ll='rm -f x-c?nary'",
                "command alias ll='rm -f x-c?nary'",
                'a=ll; alias "$a=rm -f x-c?nary"',
                "eval \"alias ll='rm -f x-c?nary'\"",
                "true && alias ll='rm -f x-c?nary'",
            )
        ):
            start = len(agent.seen)
            await agent.run(f"{line}\r".encode(), f"done-{number}")
            assert b"[hoop]" in agent.seen[start:], (line, bytes(agent.seen[start:]))
            await agent.run(b"ll\r", f"used-{number}")
            assert target.exists(), bytes(agent.seen)
        start = len(agent.seen)
        await agent.run(b"alias; alias ll; unalias -a\r", "done-ok")
        assert b"[hoop]" not in agent.seen[start:], bytes(agent.seen[start:])
    finally:
        await agent.close()
