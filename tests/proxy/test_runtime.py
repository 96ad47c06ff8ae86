"""The whole gateway as `hoop-tui gateway` runs it, end to end with real OpenSSH: exec requests
denied, held and approved from the command line, shell lines judged at Enter in a real PTY,
just-in-time access, grants ending live sessions, and the approver console."""

from __future__ import annotations

import asyncio
import fcntl
import getpass
import os
import pty
import re
import struct
import termios
import time
from pathlib import Path

import pytest

from proxy.holds.broker import Person
from storage.state import HoldStatus
from tests.fixtures.gateway import GatewayHarness, recordings

pytestmark = pytest.mark.timeout(90)

ALICE = Person("alice", frozenset({"dev"}))
BOB = Person("bob", frozenset({"oncall"}))


async def start(harness: GatewayHarness, **target: object) -> None:
    harness.add_rule("no-recursive-delete", shell="rm -rf *", action="deny", message="not on web1")
    harness.add_restart_review(**target)
    harness.operators[getpass.getuser()] = "bob"
    await harness.start_runtime()


async def hoop(harness: GatewayHarness, *args: str) -> tuple[int, str, str]:
    return await harness.hoop(*args)


async def pending_hold(harness: GatewayHarness, timeout: float = 15):
    assert harness.runtime is not None
    deadline = time.monotonic() + timeout
    while not await harness.runtime.broker.pending_holds():
        assert time.monotonic() < deadline, "no hold appeared"
        await asyncio.sleep(0.05)
    return (await harness.runtime.broker.pending_holds())[0]


async def test_a_denied_exec_never_runs_and_says_why(harness: GatewayHarness, tmp_path: Path):
    await start(harness)
    keep = tmp_path / "keep"
    keep.mkdir()
    result = await harness.ssh_jump("alice", "web1", f"rm -rf {keep}")
    assert result.status == 126
    assert result.err.startswith(
        f"hoop: denied: deny by rule no-recursive-delete: rm -rf {keep} (not on web1) {{"
    )
    assert '"verdict": "deny"' in result.err and '"rule": "no-recursive-delete"' in result.err
    assert keep.is_dir()
    (recorded,) = await recordings(harness)
    assert [(e["action"], e["rule"]) for e in recorded.of("verdict")] == [
        ("deny", "no-recursive-delete")
    ]


async def test_a_held_exec_runs_once_approved_from_the_command_line(
    harness: GatewayHarness, tmp_path: Path
):
    await start(harness)
    marker = tmp_path / "restart.done"
    client = asyncio.ensure_future(harness.ssh_jump("alice", "web1", f"touch {marker}; echo ran"))
    hold = await pending_hold(harness)
    assert hold.command == f"touch {marker}; echo ran" and hold.user == "alice"
    await asyncio.sleep(0.3)
    assert not marker.exists()
    code, listing, _ = await hoop(harness, "holds")
    assert hold.id in listing and "pending 0/1" in listing
    code, out, err = await hoop(harness, "approve", hold.id, "--reason", "ok")
    assert (code, out.strip()) == (0, f"{hold.id}: approved"), err
    result = await client
    assert (result.status, result.out) == (0, "ran\n")
    assert f"held as {hold.id} by rule restarts-need-review" in result.err
    assert marker.exists()
    (recorded,) = await recordings(harness)
    decided = recorded.of("hold_decided")
    assert [(d["hold_id"], d["decision"], d["by"]) for d in decided] == [
        (hold.id, "approved", "bob")
    ]


async def test_a_held_exec_denied_exits_non_zero_with_the_reason(
    harness: GatewayHarness, tmp_path: Path
):
    await start(harness)
    marker = tmp_path / "restart.done"
    client = asyncio.ensure_future(harness.ssh_jump("alice", "web1", f"touch {marker}"))
    hold = await pending_hold(harness)
    code, _, err = await hoop(harness, "deny", hold.id, "--reason", "not during the incident")
    assert code == 0, err
    result = await client
    assert result.status == 126
    assert f"{hold.id} denied by bob: not during the incident" in result.err
    assert not marker.exists()


async def test_the_requester_cannot_approve_their_own_hold(harness: GatewayHarness, tmp_path):
    await start(harness)
    harness.runtime.operators[getpass.getuser()] = "alice"
    client = asyncio.ensure_future(
        harness.ssh_jump("alice", "web1", f"touch {tmp_path}/restart.done")
    )
    hold = await pending_hold(harness)
    code, _, err = await hoop(harness, "approve", hold.id)
    assert code == 1 and "cannot decide your own request" in err
    await harness.runtime.approvals.decide_hold(hold.id, BOB, approve=False, reason="cleanup")
    assert (await client).status == 126


def _pty_ssh(harness: GatewayHarness, *args: str) -> tuple[int, int]:
    argv = ["ssh", *harness.ssh_args("alice"), "-tt", *args]
    pid, master = pty.fork()
    if pid == 0:
        os.environ.update(harness.env(None))
        os.execvp("ssh", argv)
    # a terminal has a size (pty.fork gives 0x0, and readline then scrolls long lines sideways,
    # which the guard gate cannot read whole and so holds)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    os.set_blocking(master, False)
    return pid, master


PROMPT = re.compile(rb"[#$] $")


def _finish(pid: int, master: int) -> None:
    """Reap the ssh client; kill it first if the test left it running."""
    for _ in range(100):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    os.close(master)


async def _read_some(master: int, seen: bytearray) -> None:
    try:
        seen += os.read(master, 65536)
    except BlockingIOError:
        await asyncio.sleep(0.02)
    except OSError:
        raise AssertionError(f"the terminal closed; it showed {bytes(seen)[-600:]!r}") from None


async def _prompt(master: int, seen: bytearray, timeout: float = 20) -> None:
    """Wait for a shell prompt (`$ ` or `# `) at the end of what the terminal shows."""
    deadline = time.monotonic() + timeout
    while not PROMPT.search(bytes(seen)):
        assert time.monotonic() < deadline, f"no prompt in {bytes(seen)[-300:]!r}"
        await _read_some(master, seen)


async def _read_until(master: int, needle: bytes, seen: bytearray, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, f"{needle!r} not in {bytes(seen)[-600:]!r}"
        await _read_some(master, seen)


async def test_shell_lines_are_judged_at_enter_in_a_real_pty(
    harness: GatewayHarness, tmp_path: Path
):
    from proxy.holds.control import ControlClient, socket_path

    await start(harness)
    assert harness.runtime is not None
    keep = tmp_path / "keep"
    keep.mkdir()
    pid, master = _pty_ssh(harness, "-J", harness.jump("alice"), "web1")
    seen = bytearray()
    try:
        await _prompt(master, seen)
        os.write(master, f"echo ok && rm -rf {keep}\r".encode())
        await _read_until(master, b"[hoop] denied: deny by rule no-recursive-delete", seen)
        assert keep.is_dir()
        os.write(master, f"touch {tmp_path}/restart.done\r".encode())
        await _read_until(master, b"held as h-", seen)
        # the status counts the time left down; it used to say "expires in 10m" for ever
        deadline = time.monotonic() + 15
        while len(set(re.findall(rb"\((\d+:\d\d) left; Ctrl-C withdraws\)", seen))) < 2:
            assert time.monotonic() < deadline, bytes(seen)[-400:]
            await _read_some(master, seen)
        shown_left = re.findall(rb"\((\d+):(\d\d) left;", seen)
        seconds_left = [int(m) * 60 + int(s) for m, s in shown_left]
        assert seconds_left == sorted(seconds_left, reverse=True) and seconds_left[0] <= 600
        assert b"expires in" not in seen
        hold = await pending_hold(harness)
        # the approver's remote workstation asks for the requester's terminal beside the hold
        bob = await ControlClient.connect(
            socket_path(harness.data_dir), ticket=harness.runtime.control.tickets.issue(BOB)
        )
        shown = await bob.call("sessions.screen", id=hold.session_id)
        await bob.close()
        screen = "".join(shown["lines"])  # the requester's terminal, long lines wrapped
        assert f"touch {tmp_path}/restart.done" in screen and "held as h-" in screen, shown
        await harness.runtime.approvals.decide_hold(hold.id, BOB, approve=True, reason="fine")
        await _read_until(master, b"approved by bob", seen)
        os.write(master, b"echo still-$USER-usable\r")
        await _read_until(master, b"usable\r\n", seen)
        assert (tmp_path / "restart.done").exists()
        os.write(master, b"exit\r")
    finally:
        _finish(pid, master)
    (recorded,) = await recordings(harness)
    commands = [e["command"] for e in recorded.of("command")]
    assert f"echo ok && rm -rf {keep}" in commands
    assert [e["action"] for e in recorded.of("verdict")][:2] == ["deny", "review"]


async def test_jit_targets_need_a_live_grant_and_a_revoke_ends_the_session(
    harness: GatewayHarness,
):
    await start(harness, jit=True, jit_approvers=["oncall"])
    refused = await harness.ssh_jump("alice", "web1", "echo hi")
    assert refused.status != 0
    assert "requires just-in-time access and alice has no live grant" in refused.err
    runtime = harness.runtime
    assert runtime is not None
    grant = await runtime.approvals.request_grant(
        ALICE, "web1", duration_s=3600, reason="incident 7", approvers=[]
    )
    assert grant.approvers == ["oncall"]
    code, _, err = await hoop(harness, "approve", grant.id)
    assert code == 0, err
    assert (await harness.ssh_jump("alice", "web1", "echo hi")).out == "hi\n"
    long_running = asyncio.ensure_future(
        harness.ssh_jump("alice", "web1", "echo started; sleep 30")
    )
    await asyncio.sleep(1.5)
    code, _, err = await hoop(harness, "revoke", grant.id, "--reason", "done")
    assert code == 0, err
    result = await asyncio.wait_for(long_running, 20)
    assert result.out == "started\n"
    assert f"your access grant {grant.id} has ended" in result.err
    found = await recordings(harness)
    assert found[-1].end_reason == "access grant ended"
    again = await harness.ssh_jump("alice", "web1", "echo hi")
    assert again.status != 0


async def test_the_line_console_over_ssh_without_a_terminal(
    harness: GatewayHarness, tmp_path: Path
):
    """`ssh bob@gateway console` without a PTY (a script): the line-mode console. With a PTY
    it is the full-screen workstation (tests/proxy/test_console_pty.py)."""
    await start(harness)
    console = await harness.line_console("bob")
    try:
        await console.shown(b"hoop console for bob (oncall)")
        client = asyncio.ensure_future(
            harness.ssh_jump("alice", "web1", f"touch {tmp_path}/restart.done; echo done")
        )
        await console.shown(b"[new hold]")
        hold = await pending_hold(harness)
        console.type(f"approve {hold.id} go\n")
        result = await asyncio.wait_for(client, 20)
        assert (result.status, result.out) == (0, "done\n")
        await console.shown(f"[{hold.id}] approved".encode())
        console.type("quit\n")
        assert await console.finish() == 0
    finally:
        await console.close()
    assert (await harness.runtime.broker.get_hold(hold.id)).status is HoldStatus.APPROVED


async def test_live_sessions_are_listed_watched_and_ended(harness: GatewayHarness):
    from proxy.holds.control import ControlClient, socket_path

    await start(harness)
    client = asyncio.ensure_future(
        harness.ssh_jump(
            "alice", "web1", "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick-$i; sleep 0.5; done"
        )
    )
    code, out, err = "", "", ""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        code, out, err = await hoop(harness, "live")
        if "alice" in out:
            break
        await asyncio.sleep(0.2)
    assert "alice" in out and "web1" in out, (out, err)
    session_id = out.splitlines()[1].split()[0]
    watcher = await ControlClient.connect(socket_path(harness.data_dir))
    watched = await watcher.call("sessions.watch", id=session_id)
    assert (watched["user"], watched["target"]) == ("alice", "web1")
    events = watcher.events()
    pushed = await asyncio.wait_for(anext(events), 10)
    assert pushed["event"] == "session.output" and b"tick-" in pushed["data"]["data"]
    code, out, err = await hoop(harness, "end", session_id, "--reason", "incident over")
    assert code == 0, err
    result = await asyncio.wait_for(client, 20)
    assert "hoop: bob ended this session: incident over" in result.err
    assert "tick-10" not in result.out
    await watcher.close()
    found = await recordings(harness)
    assert found[-1].end_reason == "ended by bob: incident over"
    code, out, _ = await hoop(harness, "audit")
    assert "session_ended" in out and "incident over" in out


async def test_a_remote_approver_sees_the_session_of_a_hold_they_may_decide_and_no_other(
    harness: GatewayHarness, tmp_path: Path
):
    """The remote workstation (a console ticket) shows the requester's terminal beside a held
    command, and lets the approver watch that session; someone who may not decide the hold
    gets the answer an unknown session gets."""
    from proxy.holds.control import ControlClient, ControlError, socket_path

    await start(harness)
    assert harness.runtime is not None
    marker = tmp_path / "restart.done"
    client = asyncio.ensure_future(harness.ssh_jump("alice", "web1", f"touch {marker}"))
    hold = await pending_hold(harness)
    tickets = harness.runtime.control.tickets
    bob = await ControlClient.connect(socket_path(harness.data_dir), ticket=tickets.issue(BOB))
    carol = await ControlClient.connect(
        socket_path(harness.data_dir), ticket=tickets.issue(Person("carol", frozenset({"dev"})))
    )
    try:
        (listed,) = await bob.call("sessions.list")
        assert listed["id"] == hold.session_id and listed["user"] == "alice"
        screen = await bob.call("sessions.screen", id=hold.session_id)
        assert screen["id"] == hold.session_id and isinstance(screen["lines"], list)
        watched = await bob.call("sessions.watch", id=hold.session_id)
        assert (watched["user"], watched["target"]) == ("alice", "web1")
        assert await carol.call("sessions.list") == []
        for op in ("sessions.screen", "sessions.watch"):
            with pytest.raises(ControlError, match="no single live session"):
                await carol.call(op, id=hold.session_id)
        with pytest.raises(ControlError, match="not available in the remote console"):
            await bob.call("sessions.end", id=hold.session_id, reason="no")
    finally:
        await bob.close()
        await carol.close()
    code, _, err = await hoop(harness, "approve", hold.id, "--reason", "ok")
    assert code == 0, err
    assert (await client).status == 0


async def test_secrets_in_command_output_are_masked_before_the_caller_sees_them(
    harness: GatewayHarness, tmp_path: Path
):
    harness.masks.append({"name": "cards", "detector": "credit_card", "style": "last4"})
    harness.masks.append({"name": "passwords", "detector": "password_assignment"})
    await start(harness)
    secrets_file = tmp_path / "secrets.txt"
    secrets_file.write_text("card 4111 1111 1111 1111 ok\npassword=hunter2 end\nplain line\n")
    result = await harness.ssh_jump("alice", "web1", f"cat {secrets_file}")
    assert result.status == 0
    assert "4111 1111 1111 1111" not in result.out and "hunter2" not in result.out
    assert "1111 ok" in result.out and "plain line" in result.out
    assert "password=" in result.out and " end" in result.out
    (recorded,) = await recordings(harness)
    assert b"hunter2" not in recorded.output() and b"4111 1111 1111 1111" not in recorded.output()
    assert sorted(e["rule"] for e in recorded.of("mask")) == ["cards", "passwords"]
    copied = tmp_path / "copied.txt"
    scp = await harness.run(
        "scp",
        "-O",
        "-J",
        harness.jump("alice"),
        f"web1:{secrets_file}",
        str(copied),
        user="alice",
    )
    assert scp.status == 0, scp.err
    assert copied.read_bytes() == secrets_file.read_bytes()  # file transfers stay byte-exact


async def test_a_slow_reader_never_gets_a_secret_through_the_quiet_flush(
    harness: GatewayHarness, tmp_path: Path
):
    """The caller reads slowly, so the gateway keeps pausing the target mid-stream. That quiet
    is the gateway's own and must not release the start of a secret: every address in the
    file stays masked, however the pauses fall."""
    harness.masks.append({"name": "emails", "detector": "email"})
    await start(harness)
    addresses = tmp_path / "addresses.txt"
    addresses.write_bytes(b"".join(b"user%06d@example.org\n" % n for n in range(1_000_000)))
    client = await harness.spawn(
        "ssh", "-p", str(harness.port), "alice+web1@127.0.0.1", f"cat {addresses}", user="alice"
    )
    assert client.stdout is not None
    received = bytearray()
    while chunk := await asyncio.wait_for(client.stdout.read(16384), 60):
        received += chunk
        await asyncio.sleep(0.003)  # a reader slower than the gateway, pausing it again and again
    assert await asyncio.wait_for(client.wait(), 30) == 0
    assert received.count(b"\n") == 1_000_000
    leaked = [line for line in received.splitlines() if b"@example.org" in line]
    assert leaked == [], f"{len(leaked)} addresses got through, e.g. {leaked[:3]}"


async def test_a_hold_nobody_decides_expires_and_the_exec_fails(harness: GatewayHarness, tmp_path):
    harness.add_rule(
        "quick-review", shell="touch *quick*", action="review", approvers=["oncall"], timeout="1s"
    )
    await start(harness)
    marker = tmp_path / "quick.done"
    started = time.monotonic()
    result = await harness.ssh_jump("alice", "web1", f"touch {marker}")
    assert result.status == 126
    assert "expired without a decision" in result.err
    assert 0.9 < time.monotonic() - started < 15
    assert not marker.exists()


async def test_an_expiring_grant_ends_the_session_that_relied_on_it(harness: GatewayHarness):
    await start(harness, jit=True, jit_approvers=["oncall"])
    runtime = harness.runtime
    assert runtime is not None
    grant = await runtime.approvals.request_grant(
        ALICE, "web1", duration_s=3, reason="quick look", approvers=[]
    )
    await runtime.approvals.decide_grant(grant.id, BOB, approve=True, reason="ok")
    result = await asyncio.wait_for(harness.ssh_jump("alice", "web1", "echo started; sleep 30"), 30)
    assert result.out == "started\n"
    assert f"your access grant {grant.id} has ended" in result.err
    found = await recordings(harness)
    assert found[-1].end_reason == "access grant ended"
