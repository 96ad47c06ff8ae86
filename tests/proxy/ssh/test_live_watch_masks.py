"""`hoop-tui watch` (the control socket's sessions.watch) shows a live session after the
recording's masks: an operator watching a guard shell never sees a card number the target
printed, a password assignment, or a password typed at a hidden prompt."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, start_guard

pytestmark = pytest.mark.timeout(120)

SECRETS = (
    b"4111 1111 1111 1111",
    b"4111111111111111",
    b"hunter2-Sup3rSecret",
    b"alice@example.org",
)


def flatten(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return b"\n".join(flatten(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return b"\n".join(flatten(v) for v in value)
    return str(value).encode()


async def test_the_live_watch_shows_output_and_typing_masked(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    from proxy.holds.control import ControlClient, socket_path

    await start_guard(harness)
    agent = await Agent.start(harness, tmp_path)
    watcher = await ControlClient.connect(socket_path(harness.data_dir))
    try:
        sessions = await watcher.call("sessions.list")
        (session,) = sessions
        watched = await watcher.call("sessions.watch", id=session["id"])
        seen = [flatten(watched)]
        events = watcher.events()

        async def collect() -> None:
            async for event in events:
                seen.append(flatten(event))

        collector = asyncio.ensure_future(collect())
        await agent.run(b"printf 'visa 4111 1111 1111 1111 for alice@example.org\\n'\r", "m1")
        await agent.run(b"echo password=hunter2-Sup3rSecret\r", "m2")
        agent.send(b"read -s -p 'Password: ' x\r")
        await agent.expect(b"Password: ")
        agent.send(b"hunter2-Sup3rSecret\r")
        await agent.run(b"echo done-${#x}\r", "m3")
        await asyncio.sleep(1.0)
        screen = await watcher.call("sessions.screen", id=session["id"])
        seen.append(flatten(screen))
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        everything = b"\n".join(seen)
        assert len(seen) > 3 and b"m3" in everything, everything[-2000:]
        for secret in SECRETS:
            assert secret not in everything, (secret, everything[-3000:])
    finally:
        await watcher.close()
        await agent.close()
