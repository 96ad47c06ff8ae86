"""A held exec whose caller has gone is withdrawn at once (issue 12, class 16), through a real
`ssh` that is killed while its command waits for approval."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from storage.state import HoldStatus
from tests.fixtures.gateway import GatewayHarness

pytestmark = pytest.mark.timeout(90)


async def hoop(harness: GatewayHarness, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hoop_tui.cli",
        *args,
        "--config",
        str(harness.directory / "gateway.toml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return process.returncode, out.decode()


async def test_killing_the_client_of_a_held_exec_withdraws_the_hold_at_once(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    harness.add_restart_review()
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    assert harness.runtime is not None
    marker = tmp_path / "restart.done"
    client = await harness.spawn(
        "ssh", "-p", str(harness.port), "alice+web1@127.0.0.1", f"touch {marker}", user="alice"
    )
    broker = harness.runtime.broker
    deadline = time.monotonic() + 20
    while not await broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    (hold,) = await broker.pending_holds()

    client.send_signal(signal.SIGKILL)
    await client.wait()
    killed = time.monotonic()
    while (current := await broker.get_hold(hold.id)) is not None and (
        current.status is HoldStatus.PENDING
    ):
        assert time.monotonic() - killed < 1.5, "the hold is still pending after its client died"
        await asyncio.sleep(0.05)
    assert current is not None and current.status is HoldStatus.WITHDRAWN

    _, pending = await hoop(harness, "holds")
    assert hold.id not in pending
    _, listing = await hoop(harness, "holds", "--all")
    (row,) = [line for line in listing.splitlines() if line.startswith(hold.id)]
    assert "withdrawn" in row and "the caller disconnected" in row
    _, as_json = await hoop(harness, "holds", "--all", "--json")
    (shown,) = [h for h in json.loads(as_json) if h["id"] == hold.id]
    assert shown["status"] == "withdrawn" and shown["note"] == "the caller disconnected"
    # Approving it now is refused, and the command never ran.
    assert not marker.exists()


async def test_killing_the_client_of_a_held_sftp_request_withdraws_it_at_once(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("web1")
    harness.add_rule(
        "reads-need-review",
        files=[f"{tmp_path}/held/*"],
        operations=["read"],
        action="review",
        approvers=["oncall"],
        timeout="1m",
    )
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "report.txt").write_text("quarterly\n")
    await harness.start_runtime()
    assert harness.runtime is not None
    client = await harness.spawn(
        "sftp",
        "-P",
        str(harness.port),
        "alice+web1@127.0.0.1",
        user="alice",
        stdin=asyncio.subprocess.PIPE,
    )
    assert client.stdin is not None
    client.stdin.write(f"get {tmp_path}/held/report.txt {tmp_path}/copy\n".encode())
    broker = harness.runtime.broker
    deadline = time.monotonic() + 20
    while not await broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    (hold,) = await broker.pending_holds()
    client.send_signal(signal.SIGKILL)
    await client.wait()
    killed = time.monotonic()
    while (current := await broker.get_hold(hold.id)) is not None and (
        current.status is HoldStatus.PENDING
    ):
        assert time.monotonic() - killed < 1.5, "the hold is still pending after its client died"
        await asyncio.sleep(0.05)
    assert current is not None and current.status is HoldStatus.WITHDRAWN
    assert current.note == "the caller disconnected"
    assert not (tmp_path / "copy").exists()


async def test_killing_the_terminal_of_a_held_shell_line_withdraws_it_at_once(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    from tests.proxy.ssh.test_typed_secrets import PROMPT, Terminal

    harness.add_user("alice", groups=("dev",))
    harness.add_user("bob", groups=("oncall",))
    harness.add_target("t1")
    harness.add_rule(
        "restarts-need-review",
        shell="touch *restart*",
        action="review",
        approvers=["oncall"],
        timeout="1m",
    )
    await harness.start_runtime()
    assert harness.runtime is not None
    terminal = Terminal(harness)
    try:
        await terminal.until(PROMPT)
        await terminal.type(f"touch {tmp_path}/restart.done\r")
        await terminal.until(b"held as h-")
        (hold,) = await harness.runtime.broker.pending_holds()
        os.kill(terminal.pid, signal.SIGKILL)
        killed = time.monotonic()
        broker = harness.runtime.broker
        while (current := await broker.get_hold(hold.id)) is not None and (
            current.status is HoldStatus.PENDING
        ):
            assert time.monotonic() - killed < 1.5, "the hold is still pending"
            await asyncio.sleep(0.05)
        assert current is not None and current.status is HoldStatus.WITHDRAWN
    finally:
        terminal.close()
    assert not (tmp_path / "restart.done").exists()
