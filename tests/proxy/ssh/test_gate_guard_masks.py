"""Class 14 of issue 12: masking changed what the gate reads. The masker holds back text that
may be the start of a secret (`hostname` could begin a password assignment) and rewrites what
it finds; the gate read that output, so `cat /etc/hostname` reached the queue as `cat /etc/`
and a deny rule for `head /etc/hostname` let it run. The gate reads the target's own output."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, start_guard

HOSTNAME = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""


@pytest.fixture
async def masked(harness: GatewayHarness) -> GatewayHarness:
    """The `hoop-tui up` rules (deny `rm -rf *`, hold `cat /etc/*`), masks as a new user adds
    them, and a deny rule for `head /etc/hostname`."""
    if not HOSTNAME:
        pytest.skip("no /etc/hostname")
    await start_guard(
        harness,
        **{
            "etc-needs-review": {
                "shell": "cat /etc/*",
                "action": "review",
                "approvers": ["oncall"],
            },
            "no-head": {"shell": "head /etc/hostname", "action": "deny", "message": "no head"},
        },
    )
    return harness


@pytest.mark.parametrize("one_write", [True, False])
async def test_a_deny_rule_meets_the_whole_line_under_masks(
    masked: GatewayHarness, tmp_path: Path, one_write: bool
) -> None:
    agent = await Agent.start(masked, tmp_path)
    try:
        if one_write:
            end = await agent.run(b"head /etc/hostname\r", "done-1")
        else:
            for key in b"head /etc/hostname":
                agent.send(bytes([key]))
                await asyncio.sleep(0.02)
            await agent.quiet(0.5)
            end = await agent.run(b"\r", "done-1")
        assert b"[hoop] denied: deny by rule no-head" in agent.seen[:end], bytes(agent.seen)
        assert f"\r\n{HOSTNAME}\r\n".encode() not in agent.seen[:end]
    finally:
        await agent.close()


async def test_a_held_line_reaches_the_queue_whole_under_masks(
    masked: GatewayHarness, tmp_path: Path
) -> None:
    agent = await Agent.start(masked, tmp_path)
    try:
        agent.send(b"cat /etc/hostname\r")
        assert masked.runtime is not None
        deadline = time.monotonic() + 15
        while not await masked.runtime.broker.pending_holds():
            assert time.monotonic() < deadline, bytes(agent.seen)
            await asyncio.sleep(0.05)
        assert (await masked.runtime.broker.pending_holds())[0].command == "cat /etc/hostname"
    finally:
        await agent.close()
