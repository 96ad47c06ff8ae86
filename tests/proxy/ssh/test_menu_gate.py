"""The menu (`ssh -t alice@gateway`, then a target's name): what is typed after the choice
meets the target's gate, even when the choice, its Enter and the next line come in one write
(an agent or a paste), before the bridge to the target is up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.test_channels import Terminal

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("choice", ["web1", "1"])
async def test_a_line_sent_with_the_choice_meets_the_gate(
    harness: GatewayHarness, tmp_path: Path, choice: str
) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    harness.add_rule("no-canary", shell="*canary*", action="deny", message="canary")
    await harness.start_runtime()
    victim = tmp_path / "x-canary"
    victim.write_text("still here\n")
    terminal = await Terminal.start(harness, "-p", str(harness.port), "alice@127.0.0.1")
    try:
        await terminal.expect(b"Target (number or name")
        terminal.type(f"{choice}\rrm -f {victim}\r")
        await terminal.expect(b"denied", 20)
        await asyncio.sleep(1.0)
    finally:
        terminal.type("exit\r")
        await terminal.close()
    assert victim.exists()


async def test_a_caller_left_at_the_target_prompt_idles_out(harness: GatewayHarness) -> None:
    """[gateway] idle_timeout ended idle sessions but not a terminal left at the menu's
    prompt, which stayed logged in to the gateway (able to pick any of its targets) for ever."""
    harness.gateway_settings["idle_timeout"] = "1s"
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()
    terminal = await Terminal.start(harness, "-p", str(harness.port), "alice@127.0.0.1")
    try:
        await terminal.expect(b"Target (number or name")
        await terminal.expect(b"idle for 1 s, closed by the gateway", 10)
    finally:
        terminal.type("\x03")
        await terminal.close()
