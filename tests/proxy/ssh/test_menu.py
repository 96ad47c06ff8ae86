"""`ssh alice@gateway` with no target: the list of targets alice may use, and picking one."""

from __future__ import annotations

import pytest

from tests.fixtures.gateway import GatewayHarness, only_recording
from tests.proxy.ssh.test_channels import Terminal

pytestmark = pytest.mark.timeout(60)


async def start(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    harness.add_target("web2")
    harness.add_target("db1", groups=["dba"])
    await harness.start()


async def test_without_a_terminal_the_list_is_printed(harness: GatewayHarness) -> None:
    await start(harness)
    result = await harness.run(
        "ssh", "-p", str(harness.port), "alice@127.0.0.1", "list", user="alice"
    )
    assert result.status == 0
    assert "web1" in result.out and "web2" in result.out
    assert "db1" not in result.out
    assert "ssh -J alice@GATEWAY TARGET" in result.out


async def test_with_a_terminal_picking_a_number_opens_that_target(
    harness: GatewayHarness,
) -> None:
    await start(harness)
    terminal = await Terminal.start(harness, "-p", str(harness.port), "alice@127.0.0.1")
    await terminal.expect(b"Target (number or name")
    terminal.type("db1\r")
    await terminal.expect(b"No target 'db1' for you here.")
    terminal.type("2\r")
    await terminal.expect(b"# ")
    terminal.type("echo picked-$((40+2)); exit 5\r")
    await terminal.expect(b"picked-42")
    assert await terminal.close() == 5
    recorded = await only_recording(harness)
    assert (recorded.header.target, recorded.header.extra["mode"]) == ("web2", "menu")
