"""The control API over a real UNIX socket: pushed hold events, decisions from the command
line, withdrawal, expiry, identities and bad input."""

from __future__ import annotations

import asyncio
import getpass
import os
import signal
import stat
import sys
import time

import pytest

from proxy.holds.broker import ApprovalBroker, Person
from proxy.holds.control import (
    ControlClient,
    ControlCodec,
    ControlError,
    ControlServer,
    Tickets,
    socket_path,
)
from proxy.holds.service import ApprovalService
from storage.sqlite_state import SqliteState
from storage.state import HoldStatus

OS_USER = getpass.getuser()
BOB = Person("bob", frozenset({"oncall"}))


@pytest.fixture
async def gateway(tmp_path):
    """The approval side of a gateway: broker, control socket, expiry task."""
    operators = {OS_USER: BOB}
    control = ControlServer(socket_path(tmp_path), operators.get)
    ended = []
    service = ApprovalService(
        ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw-1"),
        control,
        on_grant_ended=ended.append,
        grant_approvers=lambda target: ["oncall"],
    )
    await control.start()
    await service.start()
    service.ended_grants = ended
    service.operators = operators
    service.data_dir = tmp_path
    service.control = control
    yield service
    await service.stop()
    await control.stop()


def _hold_request(**overrides):
    request = {
        "session_id": "s1",
        "user": "alice",
        "target": "web1",
        "command": "systemctl restart nginx",
        "rule": "restarts-need-review",
        "approvers": ["oncall"],
        "approvals": 1,
        "timeout_s": 600,
    }
    request.update(overrides)
    return request


async def hoop(data_dir, *args):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hoop_tui.cli",
        *args,
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def _held(service, **request):
    """Hold a command and wait for its outcome, as a held session does."""
    return await service.wait_for(await service.request_hold(**request))


async def test_the_socket_is_owner_only(gateway):
    mode = stat.S_IMODE(os.stat(socket_path(gateway.data_dir)).st_mode)
    assert mode == 0o600


@pytest.mark.programs
async def test_a_hold_is_pushed_at_once_and_released_from_the_command_line(gateway):
    watcher = await ControlClient.connect(socket_path(gateway.data_dir))
    assert await watcher.call("subscribe", topics=["holds"]) == ["holds"]
    events = watcher.events()
    created_at = time.monotonic()
    session = asyncio.ensure_future(_held(gateway, **_hold_request()))
    created = await asyncio.wait_for(anext(events), 5)
    pushed_after = time.monotonic() - created_at
    assert created["event"] == "hold.created"
    hold_id = created["data"]["id"]
    assert created["data"]["command"] == "systemctl restart nginx"
    assert pushed_after < 0.5

    code, out, err = await hoop(gateway.data_dir, "holds")
    assert code == 0, err
    assert hold_id in out and "systemctl restart nginx" in out and "pending 0/1" in out

    code, out, err = await hoop(gateway.data_dir, "approve", hold_id, "--reason", "go ahead")
    assert code == 0, err
    assert f"{hold_id}: approved" in out
    decided = await asyncio.wait_for(session, 5)
    assert decided.status is HoldStatus.APPROVED and decided.approved_by == ["bob"]
    pushed = await asyncio.wait_for(anext(events), 5)
    assert pushed["event"] == "hold.decided" and pushed["data"]["status"] == "approved"

    code, out, _ = await hoop(gateway.data_dir, "audit")
    assert "bob" in out and "hold_approve" in out and "go ahead" in out
    await watcher.close()


async def test_a_topic_is_watched_only_while_someone_subscribes_to_it(gateway):
    control = gateway.control
    assert not control.watched("session:abc")
    watcher = await ControlClient.connect(socket_path(gateway.data_dir))
    await watcher.call("subscribe", topics=["session:abc"])
    assert control.watched("session:abc") and not control.watched("session:other")
    await watcher.call("unsubscribe", topics=["session:abc"])
    assert not control.watched("session:abc")
    heard: list[str] = []
    stop = control.listen(lambda topic, event, data: heard.append(topic), ("holds",))
    assert not control.watched("session:other")  # a listener of holds watches no session
    control.publish("session:other", "session.output", {})
    control.publish("holds", "hold.created", {})
    assert heard == ["holds"]
    stop()
    stop = control.listen(lambda topic, event, data: None, ("session:other",))
    assert control.watched("session:other")
    stop()
    await watcher.close()


@pytest.mark.programs
async def test_deny_needs_a_reason_and_reaches_the_session(gateway):
    session = asyncio.ensure_future(_held(gateway, **_hold_request()))
    await asyncio.sleep(0.05)
    (hold,) = await gateway.broker.pending_holds()
    code, _, err = await hoop(gateway.data_dir, "deny", hold.id)
    assert code == 2 and "--reason" in err
    code, _, err = await hoop(gateway.data_dir, "deny", hold.id, "--reason", "not now")
    assert code == 0, err
    assert (await asyncio.wait_for(session, 5)).status is HoldStatus.DENIED


@pytest.mark.programs
async def test_self_approval_is_refused_with_the_reason(gateway):
    gateway.operators[OS_USER] = Person("alice", frozenset({"oncall"}))
    session = asyncio.ensure_future(_held(gateway, **_hold_request()))
    await asyncio.sleep(0.05)
    (hold,) = await gateway.broker.pending_holds()
    code, _, err = await hoop(gateway.data_dir, "approve", hold.id)
    assert code == 1
    assert err.strip() == "hoop-tui: you cannot decide your own request; another approver must"
    assert not session.done()
    session.cancel()


async def test_cancelling_the_wait_withdraws_the_hold(gateway):
    watcher = await ControlClient.connect(socket_path(gateway.data_dir))
    await watcher.call("subscribe", topics=["holds"])
    events = watcher.events()
    session = asyncio.ensure_future(_held(gateway, **_hold_request()))
    created = await asyncio.wait_for(anext(events), 5)
    session.cancel()  # Ctrl-C at the user's terminal, or the client vanished
    withdrawn = await asyncio.wait_for(anext(events), 5)
    assert withdrawn["data"]["id"] == created["data"]["id"]
    assert withdrawn["data"]["status"] == "withdrawn"
    await watcher.close()


async def test_a_hold_times_out_on_its_own(gateway):
    started = time.monotonic()
    hold = await asyncio.wait_for(_held(gateway, **_hold_request(timeout_s=0.3)), 5)
    assert hold.status is HoldStatus.EXPIRED
    assert 0.25 < time.monotonic() - started < 2


@pytest.mark.programs
async def test_grants_from_request_to_revoke_end_sessions(gateway):
    gateway.operators[OS_USER] = Person("alice", frozenset({"dev"}))
    code, out, err = await hoop(
        gateway.data_dir, "request", "web1", "--for", "1h", "--reason", "incident 7"
    )
    assert code == 0, err
    grant_id = out.split(":")[0]
    gateway.operators[OS_USER] = BOB
    code, out, err = await hoop(gateway.data_dir, "approve", grant_id)
    assert code == 0, err
    assert await gateway.broker.live_grant("alice", "web1", time.time()) is not None
    code, out, _ = await hoop(gateway.data_dir, "grants")
    assert grant_id in out and "active" in out
    code, out, err = await hoop(gateway.data_dir, "revoke", grant_id, "--reason", "done")
    assert code == 0, err
    assert [g.id for g in gateway.ended_grants] == [grant_id]
    assert await gateway.broker.live_grant("alice", "web1", time.time()) is None


async def test_an_unmapped_os_user_is_turned_away(gateway):
    gateway.operators.clear()
    client = await ControlClient.connect(socket_path(gateway.data_dir))
    with pytest.raises(ControlError, match="not mapped to a gateway identity"):
        await client.call("whoami")
    await client.close()


async def test_garbage_on_the_socket_gets_an_error_and_others_are_unaffected(gateway):
    reader, writer = await asyncio.open_unix_connection(str(socket_path(gateway.data_dir)))
    writer.write(b"\xc1\xc1\xc1 definitely not msgpack")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(1000), 5)
    assert b"malformed control message" in reply
    writer.close()
    client = await ControlClient.connect(socket_path(gateway.data_dir))
    assert (await client.call("whoami"))["name"] == "bob"
    with pytest.raises(ControlError, match="unknown operation 'nope'"):
        await client.call("nope")
    await client.close()


@pytest.mark.programs
async def test_no_gateway_running_says_what_to_do(tmp_path):
    code, _, err = await hoop(tmp_path, "holds")
    assert code == 1
    assert "cannot reach the gateway" in err and "is `hoop-tui gateway` running?" in err


# -- console tickets: `ssh -t bob@gateway console` runs a workstation that acts as bob ---------


async def _ticket_client(gateway, ticket):
    return await ControlClient.connect(socket_path(gateway.data_dir), ticket=ticket)


@pytest.mark.programs
async def test_a_ticket_binds_the_connection_to_its_person_not_the_os_user(gateway):
    gateway.operators[OS_USER] = Person("admin", frozenset({"oncall", "admins"}))
    ticket = gateway.control.tickets.issue(BOB)
    client = await _ticket_client(gateway, ticket)
    assert await client.call("whoami") == {"name": "bob", "groups": ["oncall"]}
    session = asyncio.ensure_future(_held(gateway, **_hold_request()))
    await asyncio.sleep(0.05)
    (hold,) = await client.call("holds.list")
    await client.call("holds.decide", id=hold["id"], approve=True, reason="from afar")
    decided = await asyncio.wait_for(session, 5)
    assert decided.approved_by == ["bob"]
    code, out, err = await hoop(gateway.data_dir, "audit")  # the operator's own view
    assert code == 0, err
    assert "bob" in out and "from afar" in out
    await client.close()


async def test_a_ticket_only_narrows_what_the_connection_may_do(gateway):
    async def operator_only(caller, args):
        return "secret"

    gateway.control.register("sessions.end", operator_only)
    gateway.control.register("later.op", operator_only)  # added later: refused until listed
    client = await _ticket_client(gateway, gateway.control.tickets.issue(BOB))
    for op in ("audit", "sessions.end", "later.op"):
        with pytest.raises(ControlError, match=f"{op} is not available in the remote console"):
            await client.call(op)
    with pytest.raises(ControlError, match="cannot subscribe to session:abc"):
        await client.call("subscribe", topics=["holds", "session:abc"])
    assert await client.call("subscribe", topics=["holds", "grants"]) == ["grants", "holds"]
    with pytest.raises(ControlError, match="already acts as bob"):
        await client.call("ticket", ticket=gateway.control.tickets.issue(BOB))
    assert (await client.call("whoami"))["name"] == "bob"  # still bob, still connected
    await client.close()
    operator = await ControlClient.connect(socket_path(gateway.data_dir))
    assert await operator.call("later.op") == "secret"  # the OS operator keeps every op
    await operator.close()


async def test_a_used_ticket_is_refused(gateway):
    ticket = gateway.control.tickets.issue(BOB)
    first = await _ticket_client(gateway, ticket)
    await first.close()
    with pytest.raises(ControlError, match="console ticket refused: it was already used"):
        await _ticket_client(gateway, ticket)


async def test_a_wrong_ticket_is_refused_and_never_falls_back_to_the_os_user(gateway):
    gateway.control.tickets.issue(BOB)
    with pytest.raises(ControlError, match="console ticket refused: unknown ticket"):
        await _ticket_client(gateway, "x" * 43)
    with pytest.raises(ControlError, match="console ticket refused: not a console ticket"):
        await _ticket_client(gateway, "short")
    # by hand: the refused connection is closed, not left acting as the mapped OS user
    reader, writer = await asyncio.open_unix_connection(str(socket_path(gateway.data_dir)))
    writer.write(ControlCodec.encode({"id": 1, "op": "ticket", "args": {"ticket": "y" * 43}}))
    writer.write(ControlCodec.encode({"id": 2, "op": "whoami", "args": {}}))
    await writer.drain()
    replies = ControlCodec().feed(await asyncio.wait_for(reader.read(65536), 5))
    assert replies == [{"id": 1, "ok": False, "error": "console ticket refused: unknown ticket"}]
    assert await asyncio.wait_for(reader.read(65536), 5) == b""  # closed
    writer.close()


async def test_an_expired_ticket_is_refused(gateway):
    now = [1000.0]
    gateway.control.tickets = Tickets(ttl_s=60, clock=lambda: now[0])
    ticket = gateway.control.tickets.issue(BOB)
    now[0] += 61
    with pytest.raises(ControlError, match="console ticket refused: it has expired"):
        await _ticket_client(gateway, ticket)
    fresh = gateway.control.tickets.issue(BOB)
    now[0] += 59
    client = await _ticket_client(gateway, fresh)
    assert (await client.call("whoami"))["name"] == "bob"
    await client.close()


async def test_a_ticket_works_for_an_unmapped_gateway_user(gateway):
    gateway.operators.clear()  # the gateway's OS user is nobody on the control socket
    client = await _ticket_client(gateway, gateway.control.tickets.issue(BOB))
    assert (await client.call("whoami"))["name"] == "bob"
    await client.close()


async def test_a_ticket_sees_only_the_holds_and_grants_that_concern_its_person(gateway):
    carol = Person("carol", frozenset({"dev"}))  # neither the requester nor an approver
    client = await _ticket_client(gateway, gateway.control.tickets.issue(carol))
    await client.call("subscribe", topics=["holds", "grants"])
    others = asyncio.ensure_future(_held(gateway, **_hold_request(command="cat /etc/shadow")))
    own = asyncio.ensure_future(
        _held(gateway, **_hold_request(user="carol", command="systemctl reload app"))
    )
    events = client.events()
    pushed = await asyncio.wait_for(anext(events), 5)
    assert pushed["data"]["command"] == "systemctl reload app"
    assert [hold["command"] for hold in await client.call("holds.list")] == ["systemctl reload app"]
    await gateway.request_grant(BOB, "web1", duration_s=600, reason="deploy", approvers=["oncall"])
    assert await client.call("grants.list") == []
    operator = await ControlClient.connect(socket_path(gateway.data_dir))  # sees everything
    assert len(await operator.call("holds.list")) == 2
    assert len(await operator.call("grants.list")) == 1
    await operator.close()
    await client.close()
    for waiting in (others, own):
        waiting.cancel()


async def test_a_ticket_cannot_pick_the_approvers_of_its_own_grant(gateway):
    carol = Person("carol", frozenset({"dev", "friends"}))
    client = await _ticket_client(gateway, gateway.control.tickets.issue(carol))
    grant = await client.call(
        "grants.request", target="web1", duration_s=600, reason="x", approvers=["friends"]
    )
    assert grant["approvers"] == ["oncall"]  # the target's approvers, not the ones named
    await client.close()


async def test_deciding_a_hold_one_cannot_see_answers_as_for_an_unknown_id(gateway):
    carol = Person("carol", frozenset({"dev"}))
    waiting = asyncio.ensure_future(_held(gateway, **_hold_request()))
    await asyncio.sleep(0.05)
    (hold,) = await gateway.broker.pending_holds()
    client = await _ticket_client(gateway, gateway.control.tickets.issue(carol))
    with pytest.raises(ControlError) as unseen:
        await client.call("holds.decide", id=hold.id, approve=True, reason="x")
    with pytest.raises(ControlError) as unknown:
        await client.call("holds.decide", id="h-000000", approve=True, reason="x")
    assert str(unseen.value) == f"no hold {hold.id}"
    assert str(unknown.value) == "no hold h-000000"
    await client.close()
    waiting.cancel()


# -- a slow or stopped directory: operators wait and are told why, sessions go on ---------------


@pytest.mark.slapd  # starts a slapd of its own, to stop it
@pytest.mark.timeout(120)
async def test_a_stopped_directory_holds_control_connections_not_live_sessions(harness, tmp_path):
    """slapd stopped (SIGSTOP): three control connections of an operator whose identity comes
    from the directory wait and then fail with the reason, while a live SSH session's echo stays
    fast; once the directory answers again, the operator is carol, named as the entry is."""
    from tests.fixtures.processes import stop
    from tests.fixtures.slapd import GROUP_BASE, USER_DN, LdapUser, start_slapd

    slapd = start_slapd(tmp_path / "slapd", [LdapUser("carol", "carol-pw", [], ["oncall"])])
    try:
        harness.ldap = {"url": slapd.url, "user_dn": USER_DN, "group_base": GROUP_BASE}
        harness.ldap["timeout"] = 2
        harness.add_user("alice", groups=("dev",))
        harness.add_target("web1")
        harness.operators[OS_USER] = "CAROL"
        await harness.start_runtime()
        path = socket_path(harness.data_dir)
        session = await harness.spawn(
            "ssh", "-T", "-p", str(harness.port), "alice+web1@127.0.0.1", "cat",
            user="alice", stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert session.stdin is not None and session.stdout is not None

        async def echo(n: int) -> float:
            started = time.monotonic()
            session.stdin.write(f"ping {n}\n".encode())
            line = await asyncio.wait_for(session.stdout.readline(), 20)
            assert line == f"ping {n}\n".encode()
            return time.monotonic() - started

        await echo(0)  # the session is up
        os.kill(slapd.process.pid, signal.SIGSTOP)
        try:

            async def operator() -> str:
                client = await ControlClient.connect(path)
                try:
                    await client.call("whoami")
                except ControlError as exc:
                    return str(exc)
                finally:
                    await client.close()
                return "answered"

            waiting = [asyncio.ensure_future(operator()) for _ in range(3)]
            slowest = 0.0
            for n in range(1, 15):  # about three seconds of typing
                slowest = max(slowest, await echo(n))
                await asyncio.sleep(0.2)
            assert slowest < 0.5, f"an echo took {slowest:.2f} s while the directory was stopped"
            errors = await asyncio.wait_for(asyncio.gather(*waiting), 30)
            for error in errors:
                assert "cannot tell which gateway identity the OS user" in error
                assert "the user directory did not answer, try again later" in error
        finally:
            os.kill(slapd.process.pid, signal.SIGCONT)
        client = await ControlClient.connect(path)
        assert await client.call("whoami") == {"name": "carol", "groups": ["oncall"]}
        await client.close()
        session.stdin.close()
        await asyncio.wait_for(session.wait(), 20)
    finally:
        stop(slapd.process)


# -- grant lengths ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [float("inf"), float("nan"), 10.0**300, 2**63 - 1, -1, True])
async def test_an_impossible_grant_length_is_refused_and_the_connection_lives(gateway, length):
    client = await ControlClient.connect(socket_path(gateway.data_dir))
    try:
        with pytest.raises(ControlError, match="a grant"):
            await client.call("grants.request", target="web1", duration_s=length, reason="x")
        assert (await client.call("whoami"))["name"] == "bob"
        assert await client.call("grants.list") == []
    finally:
        await client.close()


@pytest.mark.timeout(60)
async def test_policy_max_grant_bounds_what_anyone_may_ask_for(harness):
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1", jit=True, jit_approvers=["oncall"])
    harness.policy["max_grant"] = "1h"
    harness.operators[OS_USER] = "alice"
    await harness.start_runtime()
    code, _, err = await hoop(harness.data_dir, "request", "web1", "--for", "2h", "--reason", "x")
    assert code == 1 and "a grant lasts at most 1h ([policy] max_grant); ask for less" in err
    code, _, err = await hoop(harness.data_dir, "request", "web1", "--for", "1h", "--reason", "x")
    assert code == 0, err
    console = await harness.line_console("alice")
    try:
        await console.shown(b"hoop> ")
        console.type("request web1 2h fix\nquit\n")
        await console.finish()
    finally:
        await console.close()
    assert b"a grant lasts at most 1h ([policy] max_grant); ask for less" in console.seen


@pytest.mark.programs
def test_connections_open_at_shutdown_end_without_a_traceback(tmp_path):
    """Quitting `hoop-tui up` with the workstation attached printed a CancelledError traceback
    from the control socket (issue 17, item 5): asyncio cancels the connection's task at loop
    shutdown, and its stream callback reported the cancelled task."""
    script = (
        "import asyncio, getpass, sys\n"
        "from pathlib import Path\n"
        "from proxy.holds.broker import Person\n"
        "from proxy.holds.control import ControlClient, ControlServer, socket_path\n"
        "async def main(d):\n"
        "    people = {getpass.getuser(): Person('bob', frozenset())}\n"
        "    server = ControlServer(socket_path(d), people.get)\n"
        "    await server.start()\n"
        "    client = await ControlClient.connect(socket_path(d))\n"
        "    await client.call('whoami')\n"
        "asyncio.run(main(Path(sys.argv[1])))\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stderr == ""
