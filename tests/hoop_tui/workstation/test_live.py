"""The live-sessions screen against a real gateway: a real ssh session is listed, watched as
it prints, and ended with a reason from the keyboard."""

from __future__ import annotations

import asyncio
import getpass
import time

import pytest
from textual.widgets import DataTable, Input

from hoop_tui.workstation.app import Workstation
from hoop_tui.workstation.live import EndDialog, WatchScreen
from tests.fixtures.gateway import GatewayHarness

pytestmark = pytest.mark.timeout(90)


async def _until(pilot, condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await pilot.pause(0.1)


async def test_a_live_session_is_listed_watched_and_ended(harness: GatewayHarness):
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1")
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    client = asyncio.ensure_future(
        harness.ssh_jump(
            "alice", "web1", "for i in $(seq 1 200); do echo tick-$i; sleep 0.25; done"
        )
    )
    app = Workstation(harness.data_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.person == "bob")
        await pilot.press("3")
        table = app.live.query_one("#live", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        assert "alice" in str(table.get_row_at(0)) and "web1" in str(table.get_row_at(0))
        await pilot.press("w")
        await _until(pilot, lambda: isinstance(app.screen, WatchScreen))
        watch = app.screen
        await _until(pilot, lambda: "tick-" in watch.terminal.text())
        await pilot.press("escape")
        await _until(pilot, lambda: app.screen is app.live)
        await pilot.press("e")
        await _until(pilot, lambda: isinstance(app.screen, EndDialog))
        app.screen.query_one("#reason", Input).value = "maintenance window"
        await pilot.press("enter")
        await _until(pilot, lambda: not isinstance(app.screen, EndDialog))
        result = await asyncio.wait_for(client, 20)
        assert "bob ended this session: maintenance window" in result.err
        assert "tick-200" not in result.out
        await _until(pilot, lambda: table.row_count == 0)


async def test_a_real_ssh_command_held_and_approved_with_keys_in_the_workstation(
    harness: GatewayHarness, tmp_path
):
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1")
    harness.add_rule("restarts", shell="touch *restart*", action="review", approvers=["oncall"])
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    marker = tmp_path / "restart.done"
    app = Workstation(harness.data_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.person == "bob")
        client = asyncio.ensure_future(
            harness.ssh_jump("alice", "web1", f"touch {marker} && echo restarted")
        )
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        assert not marker.exists()
        await pilot.press("a")
        await pilot.press(*"go ahead")
        await pilot.press("enter")
        result = await asyncio.wait_for(client, 20)
        assert (result.status, result.out) == (0, "restarted\n")
        assert marker.exists()
        await _until(pilot, lambda: table.row_count == 0)


async def test_watching_starts_with_the_screen_as_it_is_now(harness: GatewayHarness):
    """Watch used to start blank and show only what came after (issue 17, item 9)."""
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1")
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    client = asyncio.ensure_future(
        harness.ssh_jump("alice", "web1", "echo printed-before-watching; sleep 20; echo late")
    )
    app = Workstation(harness.data_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: app.person == "bob")
        await pilot.press("3")
        table = app.live.query_one("#live", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        await pilot.pause(1.5)  # the line is printed and recorded well before watching
        await pilot.press("w")
        await _until(pilot, lambda: isinstance(app.screen, WatchScreen))
        assert "printed-before-watching" in app.screen.terminal.text()
        assert "late" not in app.screen.terminal.text()
    client.cancel()
