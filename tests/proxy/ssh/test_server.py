"""End to end: real ssh clients through the gateway to a real sshd, every session recorded.

Each test asserts what the person at the ssh client sees (stdout, stderr, exit status) and
what the recording holds afterwards.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.fixtures.gateway import GatewayHarness, only_recording, recordings, sessions_finished

pytestmark = pytest.mark.timeout(60)


async def start_basic(harness: GatewayHarness, **target: object) -> None:
    harness.add_user("alice", password="alice-pw", groups=("dev",))
    harness.add_target("web1", **target)
    await harness.start()


async def test_proxyjump_exec_prints_output_and_records_it(harness: GatewayHarness) -> None:
    await start_basic(harness)
    result = await harness.ssh_jump("alice", "web1", "echo hi")
    assert (result.status, result.out, result.err) == (0, "hi\n", "")
    recorded = await only_recording(harness)
    assert recorded.complete
    assert recorded.end_reason == "client closed"
    header = recorded.header
    assert (header.user, header.target, header.protocol) == ("alice", "web1", "ssh")
    assert header.client.startswith("127.0.0.1:")
    assert header.service_account is False
    assert header.extra["mode"] == "jump"
    names = [event.name for event in recorded.events]
    assert names.index("exec") < names.index("output") < names.index("exit_status")
    assert recorded.of("exec")[0]["command"] == b"echo hi"
    assert recorded.output() == b"hi\n"
    assert recorded.of("exit_status")[0]["status"] == 0
    assert names[-1] == "session_end"


async def test_direct_login_passes_the_exit_status(harness: GatewayHarness) -> None:
    await start_basic(harness)
    result = await harness.ssh_direct("alice+web1", "echo hi; echo oops >&2; exit 3")
    assert (result.status, result.out, result.err) == (3, "hi\n", "oops\n")
    recorded = await only_recording(harness)
    assert recorded.header.extra["mode"] == "direct"
    assert recorded.of("exit_status")[0]["status"] == 3


async def test_password_login_through_the_jump(harness: GatewayHarness) -> None:
    await start_basic(harness)
    result = await harness.ssh_jump("alice", "web1", "echo pw", password="alice-pw")
    assert (result.status, result.out) == (0, "pw\n")


async def test_wrong_password_is_refused(harness: GatewayHarness) -> None:
    await start_basic(harness)
    result = await harness.ssh_direct("alice+web1", "echo hi", password="wrong")
    assert result.status == 255
    assert "Permission denied" in result.err
    assert result.out == ""


async def test_unknown_target_is_named_in_the_error(harness: GatewayHarness) -> None:
    await start_basic(harness)
    jumped = await harness.ssh_jump("alice", "nope", "echo hi")
    assert jumped.status == 255
    assert "no SSH target named 'nope'" in jumped.err
    direct = await harness.ssh_direct("alice+nope", "echo hi")
    assert direct.status == 1
    assert "no SSH target named 'nope'" in direct.err


async def test_target_outside_the_users_groups_is_refused(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("db1", groups=["dba"])
    await harness.start()
    jumped = await harness.ssh_jump("alice", "db1", "echo hi")
    assert jumped.status == 255
    assert "alice may not use target 'db1'" in jumped.err
    direct = await harness.ssh_direct("alice+db1", "echo hi")
    assert direct.status == 1
    assert "alice may not use target 'db1'" in direct.err
    assert await recordings(harness) == []


async def test_target_down_says_unreachable(harness: GatewayHarness) -> None:
    from tests.fixtures.processes import free_port

    await start_basic(harness, port=free_port())
    jumped = await harness.ssh_jump("alice", "web1", "echo hi")
    assert jumped.status == 255
    assert "target web1 is unreachable" in jumped.err
    direct = await harness.ssh_direct("alice+web1", "echo hi")
    assert direct.status == 255
    assert "target web1 is unreachable" in direct.err


async def test_target_host_key_mismatch_is_refused(harness: GatewayHarness) -> None:
    wrong = harness.client_key("impostor")
    await start_basic(harness, host_key=" ".join(wrong.split()[:2]))
    result = await harness.ssh_direct("alice+web1", "echo hi")
    assert result.status == 255
    assert "does not match the one pinned" in result.err
    assert result.out == ""


async def test_rejected_target_credential_is_reported(harness: GatewayHarness) -> None:
    harness.client_key("not-authorized")
    await start_basic(harness, key_file=str(harness.directory / "not-authorized_key"))
    result = await harness.ssh_jump("alice", "web1", "echo hi")
    assert result.status == 255
    assert "rejected the gateway's credential" in result.err
    assert str(harness.directory) not in result.err


async def test_stdin_and_binary_data_cross_unchanged(harness: GatewayHarness) -> None:
    await start_basic(harness)
    data = os.urandom(3 * 1024 * 1024)
    result = await harness.ssh_direct("alice+web1", "cat", stdin=data)
    assert result.status == 0
    assert result.stdout == data
    recorded = await only_recording(harness)
    assert recorded.input() == data
    assert recorded.output() == data


async def test_large_output_does_not_stall(harness: GatewayHarness) -> None:
    await start_basic(harness)
    result = await harness.ssh_jump("alice", "web1", "head -c 50000000 /dev/zero")
    assert result.status == 0
    assert len(result.stdout) == 50_000_000


async def test_environment_passes_only_the_allow_list(harness: GatewayHarness) -> None:
    harness.gateway_settings["env_allow"] = ["LANG", "HOOP_TEST_A"]
    await start_basic(harness)
    env = {"HOOP_TEST_A": "yes", "HOOP_TEST_B": "no", "LANG": "C.UTF-8"}
    result = await harness.run(
        "ssh",
        "-o",
        "SendEnv=HOOP_TEST_A HOOP_TEST_B LANG",
        "-p",
        str(harness.port),
        "alice+web1@127.0.0.1",
        'echo "a=$HOOP_TEST_A b=$HOOP_TEST_B lang=$LANG"',
        user="alice",
        extra_env=env,
    )
    assert result.out == "a=yes b= lang=C.UTF-8\n"


async def test_service_account_is_marked_in_the_recording(harness: GatewayHarness) -> None:
    harness.add_user("agent7", groups=("dev",), service_account=True)
    harness.add_target("web1")
    await harness.start()
    result = await harness.ssh_direct("agent7+web1", "uname -s")
    assert result.out == "Linux\n"
    recorded = await only_recording(harness)
    assert recorded.header.user == "agent7"
    assert recorded.header.service_account is True


async def test_service_account_cannot_use_a_password(harness: GatewayHarness) -> None:
    harness.add_user("agent7", groups=("dev",), service_account=True)
    harness.add_target("web1")
    await harness.start()
    result = await harness.ssh_direct("agent7+web1", "true", password="anything")
    assert result.status == 255
    assert "Permission denied" in result.err


async def test_unrecordable_session_is_refused(harness: GatewayHarness) -> None:
    await start_basic(harness)
    (harness.data_dir / "recordings").parent.mkdir(parents=True, exist_ok=True)
    (harness.data_dir / "recordings").write_text("not a directory")
    result = await harness.ssh_jump("alice", "web1", "echo hi")
    assert result.status == 255
    assert "cannot be recorded" in result.err
    assert "hi" not in result.out


async def test_gateway_stop_ends_live_sessions_with_a_message(harness: GatewayHarness) -> None:
    await start_basic(harness)
    client = await harness.spawn(
        "ssh", "-J", harness.jump("alice"), "web1", "echo started; sleep 30", user="alice"
    )
    assert client.stdout is not None and client.stderr is not None
    assert await asyncio.wait_for(client.stdout.readline(), 20) == b"started\n"
    await harness.gateway.stop()  # type: ignore[union-attr]
    assert await asyncio.wait_for(client.wait(), 20) == 255
    assert "gateway is shutting down" in (await client.stderr.read()).decode()
    recorded = await only_recording(harness)
    assert recorded.end_reason == "gateway stopped"
    assert recorded.complete


async def test_idle_session_times_out(harness: GatewayHarness) -> None:
    harness.gateway_settings["idle_timeout"] = "1s"
    await start_basic(harness)
    result = await harness.ssh_direct("alice+web1", "sleep 20")
    assert "idle" in result.err
    recorded = await only_recording(harness)
    assert recorded.end_reason == "idle timeout"


async def test_client_vanishing_mid_transfer_ends_the_session(harness: GatewayHarness) -> None:
    await start_basic(harness)
    process = await asyncio.create_subprocess_exec(
        "ssh",
        *harness.ssh_args("alice"),
        "-J",
        harness.jump("alice"),
        "web1",
        "cat /dev/zero",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    await process.stdout.readexactly(1_000_000)
    process.kill()
    await process.wait()
    recorded = await only_recording(harness)
    assert recorded.end_reason == "client closed"
    assert recorded.complete
    again = await harness.ssh_jump("alice", "web1", "echo still here")
    assert again.out == "still here\n"


async def test_sessions_finish_after_each_client(harness: GatewayHarness) -> None:
    await start_basic(harness)
    for _ in range(3):
        assert (await harness.ssh_direct("alice+web1", "true")).status == 0
    await sessions_finished(harness)
    assert len(await recordings(harness)) == 3


def use_ldap(harness: GatewayHarness, url: str) -> None:
    from tests.fixtures.slapd import GROUP_BASE, USER_DN

    harness.ldap = {"url": url, "user_dn": USER_DN, "group_base": GROUP_BASE, "timeout": 2}


async def test_ldap_user_logs_in_with_a_password(harness: GatewayHarness, slapd) -> None:  # type: ignore[no-untyped-def]
    use_ldap(harness, slapd.url)
    harness.add_target("web1", groups=["dev"])
    await harness.start()
    result = await harness.ssh_jump("carol", "web1", "echo ldap", password="carol-pw")
    assert (result.status, result.out) == (0, "ldap\n")
    recorded = await only_recording(harness)
    assert recorded.header.user == "carol"
    assert recorded.header.extra["identity_source"] == "ldap"
    wrong = await harness.ssh_jump("carol", "web1", "echo ldap", password="nope")
    assert wrong.status == 255 and "Permission denied" in wrong.err


async def test_ldap_user_logs_in_with_a_key_and_a_member_of_group(
    harness: GatewayHarness,
    slapd,
    ldap_keys,  # type: ignore[no-untyped-def]
) -> None:
    import shutil

    use_ldap(harness, slapd.url)
    harness.add_target("blue1", groups=["team-blue"])
    await harness.start()
    shutil.copy(ldap_keys["erin"], harness.directory / "erin_key")
    result = await harness.ssh_direct("erin+blue1", "echo key")
    assert (result.status, result.out) == (0, "key\n")


async def test_unreachable_ldap_says_so_and_local_users_still_log_in(
    harness: GatewayHarness,
) -> None:
    from tests.fixtures.processes import free_port

    use_ldap(harness, f"ldap://127.0.0.1:{free_port()}")
    await start_basic(harness)
    refused = await harness.ssh_jump("carol", "web1", "echo hi", password="carol-pw")
    assert refused.status == 255
    assert "directory (LDAP) is unreachable" in refused.err
    local = await harness.ssh_jump("alice", "web1", "echo local")
    assert local.out == "local\n"


async def test_password_guessing_burst_does_not_stop_other_users(harness: GatewayHarness) -> None:
    import asyncssh

    harness.add_user("bob", groups=("dev",))
    await start_basic(harness)

    async def guess(number: int) -> bool:
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                harness.port,
                username="alice",
                password=f"guess{number}",
                known_hosts=None,
                client_keys=None,
                agent_path=None,
                config=None,
                preferred_auth="password",
                login_timeout=20,
            ):
                return True
        except (asyncssh.PermissionDenied, asyncssh.DisconnectError, OSError, TimeoutError):
            return False

    guesses = [asyncio.ensure_future(guess(n)) for n in range(100)]
    await asyncio.sleep(1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await harness.ssh_jump("bob", "web1", "echo bob")
    assert result.out == "bob\n"
    assert loop.time() - started < 15  # the guesses wait their turn; bob does not
    for task in guesses:
        task.cancel()
    outcomes = await asyncio.gather(*guesses, return_exceptions=True)
    assert True not in outcomes


async def test_target_going_away_ends_the_session_with_a_message(harness: GatewayHarness) -> None:
    await start_basic(harness)
    # The shell kills the sshd process serving it: the target connection drops.
    result = await harness.ssh_direct(
        "alice+web1", "echo before; sleep 0.5; kill -9 $PPID; sleep 5"
    )
    assert result.out == "before\n"
    assert result.status == 255
    assert "hoop: connection to web1 lost" in result.err
    recorded = await only_recording(harness)
    assert recorded.end_reason == "target closed"
    assert recorded.complete


async def test_exit_by_signal_is_passed_on_and_recorded(harness: GatewayHarness) -> None:
    await start_basic(harness)
    result = await harness.ssh_jump("alice", "web1", "echo bye; kill -TERM $$")
    assert result.out == "bye\n"
    assert result.status == 255  # what OpenSSH's client reports for a remote exit by signal
    recorded = await only_recording(harness)
    assert recorded.of("exit_status")[0]["status"] == 128 + 15
    assert [e["name"] for e in recorded.of("signal")] == ["exit-signal TERM"]


async def test_the_banner_tells_the_caller_before_login_that_sessions_are_recorded(
    harness: GatewayHarness,
) -> None:
    """`[gateway] banner` is shown by OpenSSH before the password prompt (issue 17, 11)."""
    harness.gateway_settings["banner"] = "This session is recorded by hoop_tui."
    await start_basic(harness)
    result = await harness.ssh_direct("alice+web1", "true")
    assert result.status == 0, result.err
    assert "This session is recorded by hoop_tui." in result.err
