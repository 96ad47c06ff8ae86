"""A guard shell with review approvers: `echo before-$((6*7))` is a line the parser cannot read
(bashlex has no arithmetic expansion), so [policy] holds it for review. Reported as "no output for
15 s": the hold's notice named no rule and no reason (`held as h-... by rule :`), and the
approvers' list showed an empty RULE."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, start_guard

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("enter", [b"\r", b""], ids=["one-write", "enter-apart"])
async def test_a_held_line_says_why_when_no_rule_held_it(
    harness: GatewayHarness, tmp_path: Path, enter: bytes
) -> None:
    """With [policy] approvers, the line the parser cannot read is held: the caller is told at
    once that it is held and why (it read `held as h-... by rule :`, naming no rule and no
    reason, and looked like a stall)."""
    harness.policy["approvers"] = ["oncall"]
    await start_guard(harness)
    agent = await Agent.start(harness, tmp_path)
    try:
        at = len(agent.seen)
        agent.send(b"echo before-$((6*7))" + enter)
        if not enter:
            await agent.quiet(0.3)
            agent.send(b"\r")
        end = await agent.expect(b"approval(s) from oncall", 5.0, after=at)
        shown = bytes(agent.seen[at:end])
        assert b"held as h-" in shown, shown
        assert b"by rule :" not in shown, shown
        assert b"arithmetic expansion" in shown, shown
        _, listed, _ = await harness.hoop("holds")
        assert "[policy] unparsable" in listed and "echo before-$((6*7))" in listed, listed
    finally:
        await agent.close()
