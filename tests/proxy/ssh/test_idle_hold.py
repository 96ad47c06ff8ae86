"""The idle timeout ends sessions with no traffic; a caller waiting on a held command is not
idle: the wait is the gateway's, and ending the session would withdraw the hold the approver
is about to decide."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.state import HoldStatus
from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, start_guard
from tests.proxy.test_runtime import BOB, pending_hold

pytestmark = pytest.mark.timeout(120)


async def test_a_session_waiting_on_a_hold_does_not_idle_out(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    harness.gateway_settings["idle_timeout"] = "2s"
    await start_guard(harness)
    agent = await Agent.start(harness, tmp_path)
    try:
        at = len(agent.seen)
        agent.send(b"sudo -n true; echo after-''hold\r")
        hold = await pending_hold(harness)
        await agent.expect(b"held as", 10, after=at)
        await asyncio.sleep(5)
        assert harness.runtime is not None
        current = await harness.runtime.broker.get_hold(hold.id)
        assert current is not None and current.status is HoldStatus.PENDING, current
        await harness.runtime.approvals.decide_hold(hold.id, BOB, approve=True, reason="ok")
        await agent.expect(b"after-hold", 15, after=at)
    finally:
        await agent.close()
