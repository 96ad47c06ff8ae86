"""The approver console: live holds, decisions as the logged-in person, refusals explained."""

from __future__ import annotations

import asyncio

import pytest

from proxy.holds.broker import ApprovalBroker, Person
from proxy.holds.console import Console
from proxy.holds.control import ControlServer, socket_path
from proxy.holds.service import ApprovalService
from storage.sqlite_state import SqliteState
from storage.state import GrantStatus, HoldStatus

BOB = Person("bob", frozenset({"oncall"}))


@pytest.fixture
async def service(tmp_path):
    control = ControlServer(socket_path(tmp_path), lambda os_user: None)
    approvals = ApprovalService(ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw"), control)
    await approvals.start()
    yield approvals
    await approvals.stop()


class Screen:
    def __init__(self) -> None:
        self.text = ""
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()

    def write(self, text: str) -> None:
        self.text += text

    async def until(self, needle: str) -> None:
        for _ in range(200):
            if needle in self.text:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{needle!r} never shown; screen:\n{self.text}")


async def _run(service, person, screen):
    console = Console(service, person, screen.lines.get, screen.write)
    return asyncio.ensure_future(console.run())


def _held(service, user: str, command: str) -> asyncio.Future:
    """`user`'s command held by the rule `restarts` for one approval from oncall, waiting."""
    return asyncio.ensure_future(
        _wait(
            service,
            session_id="s",
            user=user,
            target="web1",
            command=command,
            rule="restarts",
            approvers=["oncall"],
            approvals=1,
            timeout_s=600,
        )
    )


async def _wait(service, **request):
    """Hold a command and wait for its outcome, as a held session does."""
    return await service.wait_for(await service.request_hold(**request))


async def test_a_new_hold_appears_and_is_approved_from_the_console(service):
    screen = Screen()
    running = await _run(service, BOB, screen)
    await screen.until("no held commands")
    waiting = _held(service, "alice", "systemctl restart nginx")
    await screen.until("[new hold]")
    (hold,) = await service.broker.pending_holds()
    assert f"{hold.id}  alice@web1  systemctl restart nginx" in screen.text
    assert "0/1 approvals from oncall, 10m00s left" in screen.text or "9m59s" in screen.text
    await screen.lines.put(f"approve {hold.id} looks fine")
    assert (await asyncio.wait_for(waiting, 5)).status is HoldStatus.APPROVED
    await screen.until(f"[{hold.id}] approved")
    await screen.lines.put("quit")
    await asyncio.wait_for(running, 5)


async def test_refusals_and_unknown_commands_are_explained(service):
    screen = Screen()
    running = await _run(service, Person("alice", frozenset({"oncall"})), screen)
    waiting = _held(service, "alice", "reboot")
    await screen.until("[new hold]")
    (hold,) = await service.broker.pending_holds()
    await screen.lines.put(f"approve {hold.id}")
    await screen.until("refused: you cannot decide your own request")
    await screen.lines.put("deny")
    await screen.until("usage: deny ID REASON")
    await screen.lines.put("frobnicate")
    await screen.until("unknown command 'frobnicate'; type help")
    await screen.lines.put(None)
    await asyncio.wait_for(running, 5)
    waiting.cancel()


async def test_grants_are_listed_and_decided(service):
    grant = await service.broker.request_grant(
        user="alice",
        target="db1",
        duration_s=3600,
        reason="migration",
        approvers=["oncall"],
        now=service.clock(),
    )
    screen = Screen()
    running = await _run(service, BOB, screen)
    await screen.lines.put("grants")
    await screen.until(f"{grant.id}  alice -> db1 for 1h: migration [requested]")
    await screen.lines.put(f"approve {grant.id}")
    await screen.until(f"{grant.id}: approved")
    assert (await service.broker.get_grant(grant.id)).status is GrantStatus.ACTIVE
    await screen.lines.put(f"revoke {grant.id} done")
    await screen.until(f"{grant.id}: revoked")
    await screen.lines.put("quit")
    await asyncio.wait_for(running, 5)


async def test_the_console_shows_only_what_concerns_its_person(service):
    screen = Screen()
    carol = Person("carol", frozenset({"dev"}))
    running = await _run(service, carol, screen)
    await screen.until("no held commands")
    others = _held(service, "alice", "cat /etc/shadow")
    own = _held(service, "carol", "systemctl reload app")
    await screen.until("[new hold]")
    await screen.lines.put("holds")
    for _ in range(200):  # the new-hold line, then the listing
        if screen.text.count("carol@web1  systemctl reload app") >= 2:
            break
        await asyncio.sleep(0.01)
    assert screen.text.count("carol@web1  systemctl reload app") == 2
    assert "cat /etc/shadow" not in screen.text
    await screen.lines.put("quit")
    await asyncio.wait_for(running, 5)
    for waiting in (others, own):
        waiting.cancel()


# -- through the real gateway --------------------------------------------------------------------


async def test_a_held_command_cannot_redraw_the_approvers_console(harness, tmp_path):
    """An exec request carries its command string byte for byte, control characters too. If
    the console printed it raw, alice could have bob's terminal erase what the command really
    is and show something harmless in its place: `touch .../restart.evil #` runs, bob reads
    `ls -la`. The console shows every control character as an escape instead."""
    import contextlib
    import getpass

    harness.add_restart_review()
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()
    console = await harness.line_console("bob")
    spoof = f"touch {tmp_path}/restart.evil #\r\x1b[2K\x1b]0;x\x07ls -la\u202e\x9b2J"
    try:
        await console.shown(b"hoop console for bob (oncall)")
        client = asyncio.ensure_future(harness.ssh_jump("alice", "web1", spoof))
        await console.shown(b"[new hold]")
        await console.shown(b"rule restarts-need-review")
        console.type("holds\nquit\n")
        await console.finish()
        (hold,) = await harness.runtime.broker.pending_holds()
        assert hold.command == spoof  # kept as it was sent: only its display is escaped
    finally:
        await console.close()
        with contextlib.suppress(BaseException):
            client.cancel()
            await client
    seen = console.seen
    text = bytes(seen).decode("utf-8", "replace")
    shown_as = f"touch {tmp_path}/restart.evil #\\r\\x1b[2K\\x1b]0;x\\x07ls -la\\u202e\\x9b2J"
    assert shown_as in text
    assert not [c for c in text.replace("\r\n", "").replace("\a", "") if not c.isprintable()]
