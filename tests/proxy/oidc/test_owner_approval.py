"""An agent's owner may not approve the agent's held command, as a caller may not approve their
own; another approver may, and `[oidc] owner_may_approve = true` allows it. Through the whole
gateway: the agent's ssh with its token, `hoop-tui approve` over the control socket
(issue 16)."""

from __future__ import annotations

import asyncio
import getpass
import time
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.oidc_provider import Provider
from tests.proxy.oidc.conftest import oidc_toml

pytestmark = pytest.mark.timeout(120)


async def held_agent_command(
    harness: GatewayHarness, provider: Provider, marker: Path, **oidc: object
) -> tuple[asyncio.Future[object], str]:
    harness.add_user("alice", password="alice-pw", groups=("dev", "oncall"))  # ci-bot's owner
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1", groups=["dev"])
    harness.add_rule(
        "restarts-need-review", shell="touch *restart*", action="review", approvers=["oncall"]
    )
    harness.extra_toml = oidc_toml(provider, **oidc)
    harness.operators[getpass.getuser()] = "alice"
    runtime = await harness.start_runtime()
    client = asyncio.ensure_future(
        harness.run(
            "ssh",
            "-p",
            str(harness.port),
            "ci-bot+web1@127.0.0.1",
            f"touch {marker}",
            user="ci-bot",
            password=provider.agent_token("ci-bot"),
            timeout=60,
        )
    )
    deadline = time.monotonic() + 20
    while not await runtime.broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    (hold,) = await runtime.broker.pending_holds()
    assert hold.user == "ci-bot"
    return client, hold.id


async def test_the_owner_cannot_approve_their_agents_hold_and_another_approver_can(
    harness: GatewayHarness, provider: Provider, tmp_path: Path
) -> None:
    marker = tmp_path / "restart.done"
    client, hold_id = await held_agent_command(harness, provider, marker)
    code, live, err = await harness.hoop("live")
    assert code == 0, err
    assert "agent of alice, client ci-bot" in live, live
    code, queue, err = await harness.hoop("holds")
    assert code == 0, err
    assert hold_id in queue and "agent of alice, client ci-bot" in queue, queue
    code, _, err = await harness.hoop("approve", hold_id, "--reason", "mine anyway")
    assert code == 1 and "alice answers for agent ci-bot (its owner)" in err, err
    assert harness.runtime is not None
    harness.runtime.operators[getpass.getuser()] = "bob"
    code, _, err = await harness.hoop("approve", hold_id, "--reason", "ok")
    assert code == 0, err
    result = await client
    assert result.status == 0, result.err  # type: ignore[attr-defined]
    assert marker.exists()


async def test_owner_may_approve_when_the_configuration_says_so(
    harness: GatewayHarness, provider: Provider, tmp_path: Path
) -> None:
    marker = tmp_path / "restart.done"
    client, hold_id = await held_agent_command(harness, provider, marker, owner_may_approve=True)
    code, _, err = await harness.hoop("approve", hold_id, "--reason", "mine, allowed")
    assert code == 0, err
    await client
    assert marker.exists()
