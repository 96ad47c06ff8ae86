"""The workstation's live screen says when a session is an agent's, and whose (issue 16)."""

from __future__ import annotations

import asyncio
import getpass
import time

import pytest
from textual.widgets import DataTable

from hoop_tui.workstation.app import Workstation
from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.oidc_provider import Provider
from tests.proxy.oidc.conftest import oidc_toml

pytestmark = pytest.mark.timeout(120)


async def test_an_agents_live_session_is_shown_as_the_agent_of_its_owner(
    harness: GatewayHarness, provider: Provider
) -> None:
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1", groups=["dev"])
    harness.extra_toml = oidc_toml(provider)
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    client = asyncio.ensure_future(
        harness.run(
            "ssh",
            "-p",
            str(harness.port),
            "ci-bot+web1@127.0.0.1",
            "sleep 20",
            user="ci-bot",
            password=provider.agent_token("ci-bot"),
            timeout=60,
        )
    )
    app = Workstation(harness.data_dir)
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            deadline = time.monotonic() + 20
            while app.person != "bob":
                assert time.monotonic() < deadline
                await pilot.pause(0.1)
            await pilot.press("3")
            table = app.live.query_one("#live", DataTable)
            while table.row_count != 1:
                assert time.monotonic() < deadline, "the agent's session was not listed"
                await pilot.pause(0.1)
            assert "ci-bot (agent of alice)" in str(table.get_row_at(0))
    finally:
        client.cancel()


async def test_an_agents_hold_pushed_to_the_queue_is_shown_as_the_agent_of_its_owner(
    harness: GatewayHarness, provider: Provider, tmp_path: object
) -> None:
    """The queue says who asks: a hold pushed while the workstation is open (hold.created)
    carries the caller, so an agent's row reads `ci-bot (agent of alice)`."""
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1", groups=["dev"])
    harness.policy = {"approvers": ["oncall"]}
    harness.extra_toml = oidc_toml(provider)
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    app = Workstation(harness.data_dir)
    client: asyncio.Future[object] | None = None
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            deadline = time.monotonic() + 30
            while app.person != "bob":
                assert time.monotonic() < deadline
                await pilot.pause(0.1)
            client = asyncio.ensure_future(
                harness.run(
                    "ssh",
                    "-p",
                    str(harness.port),
                    "ci-bot+web1@127.0.0.1",
                    "echo x > /tmp/hoop-agent-queue-test",
                    user="ci-bot",
                    password=provider.agent_token("ci-bot"),
                    timeout=60,
                )
            )
            table = app.queue.query_one("#holds", DataTable)
            while table.row_count != 1:
                assert time.monotonic() < deadline, "the agent's hold was not pushed"
                await pilot.pause(0.1)
            assert "ci-bot (agent of alice)" in str(table.get_row_at(0))
            detail = str(app.queue.query_one("#hold-detail").render())
            assert "agent of alice, client ci-bot" in detail
    finally:
        if client is not None:
            client.cancel()
