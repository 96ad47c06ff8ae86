"""People sign in to the SSH gateway with the OIDC device flow, through plain `ssh`: the
gateway shows the verification URL and code, the test plays the person approving it on a real
provider, and the session runs as the provider's user with its groups. Agents paste their
token; local users keep their passwords (issue 16)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from storage.reader import RecordingReader
from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.oidc_provider import Provider
from tests.fixtures.processes import free_port
from tests.fixtures.slapd import GROUP_BASE, USER_DN, Slapd
from tests.proxy.oidc.conftest import oidc_toml


def kbdint_config(harness: GatewayHarness) -> Path:
    """An ssh_config that signs in with keyboard-interactive only (no keys, no agent)."""
    path = harness.directory / "ssh_config-kbdint"
    path.write_text(
        f"""Host *
  UserKnownHostsFile {harness.directory}/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  IdentitiesOnly yes
  IdentityAgent none
  PubkeyAuthentication no
  BatchMode no
  PreferredAuthentications keyboard-interactive
  ConnectTimeout 15
  ControlMaster no
"""
    )
    return path


async def start_ssh(
    harness: GatewayHarness, login: str, command: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ssh",
        "-F",
        str(kbdint_config(harness)),
        "-p",
        str(harness.port),
        f"{login}@127.0.0.1",
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=harness.env(None),
        start_new_session=True,
    )


async def read_until(stream: asyncio.StreamReader, pattern: str, timeout: float = 20) -> str:
    seen = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not re.search(pattern, seen.decode(errors="replace")):
        chunk = await asyncio.wait_for(stream.read(4096), max(0.1, deadline - loop.time()))
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


async def oidc_gateway(harness: GatewayHarness, provider: Provider) -> None:
    harness.add_user("alice", password="alice-pw", key=False)
    harness.add_target("web1", groups=["dev"])
    harness.extra_toml = oidc_toml(provider)
    await harness.start()


async def test_a_person_signs_in_with_the_device_flow_through_plain_ssh(
    harness: GatewayHarness, provider: Provider
) -> None:
    await oidc_gateway(harness, provider)
    ssh = await start_ssh(harness, "dana+web1", "echo signed-in-as-$((6*7))")
    assert ssh.stderr is not None and ssh.stdout is not None
    shown = await read_until(ssh.stderr, r"enter the code [A-Z]{4}-[A-Z]{4}")
    assert f"open {provider.issuer}/device" in shown, shown
    code = re.search(r"enter the code ([A-Z]{4}-[A-Z]{4})", shown)
    assert code is not None, shown
    await asyncio.to_thread(provider.approve_device, code.group(1), "alice-oidc")
    out, err = await asyncio.wait_for(ssh.communicate(), 60)
    assert ssh.returncode == 0, err.decode()
    assert out.decode().strip() == "signed-in-as-42"
    recorded = list((harness.data_dir / "recordings").rglob("*.hrec"))
    assert recorded
    with RecordingReader.open(recorded[0]) as reader:
        assert reader.header.user == "dana"
        extra = reader.header.extra or {}
    assert (extra["caller_kind"], extra["subject"]) == ("person", "alice-oidc")


async def test_a_device_flow_sign_in_under_another_name_is_refused(
    harness: GatewayHarness, provider: Provider
) -> None:
    await oidc_gateway(harness, provider)
    ssh = await start_ssh(harness, "mallory+web1", "true")
    assert ssh.stderr is not None
    shown = await read_until(ssh.stderr, r"enter the code [A-Z]{4}-[A-Z]{4}")
    code = re.search(r"enter the code ([A-Z]{4}-[A-Z]{4})", shown)
    assert code is not None, shown
    await asyncio.to_thread(provider.approve_device, code.group(1), "alice-oidc")
    _, err = await asyncio.wait_for(ssh.communicate(), 60)
    assert ssh.returncode != 0
    assert "you signed in as 'dana'; connect as dana" in err.decode()


async def test_an_agent_pastes_its_token_and_a_local_user_its_password(
    harness: GatewayHarness, provider: Provider
) -> None:
    await oidc_gateway(harness, provider)
    token = provider.agent_token("ci-bot")
    agent = await harness.run(
        "ssh",
        "-p",
        str(harness.port),
        "ci-bot+web1@127.0.0.1",
        "echo agent-ok",
        user="ci-bot",
        password=token,
    )
    assert agent.status == 0, agent.err
    assert agent.out.strip() == "agent-ok"
    person = await harness.ssh_direct("alice+web1", "echo person-ok", password="alice-pw")
    assert person.status == 0, person.err
    assert person.out.strip() == "person-ok"
    wrong = await harness.run(
        "ssh",
        "-p",
        str(harness.port),
        "ci-bot+web1@127.0.0.1",
        "true",
        user="ci-bot",
        password=provider.agent_token("gone-bot"),
    )
    assert wrong.status != 0
    assert "has been revoked" in wrong.err


async def test_directory_people_keep_their_password_prompt_beside_oidc(
    harness: GatewayHarness, provider: Provider, slapd: Slapd
) -> None:
    """With [ldap] and [oidc] both set, a directory person typing their password in the
    keyboard-interactive prompt (what plain ssh offers first) gets in as before."""
    harness.ldap = {"url": slapd.url, "user_dn": USER_DN, "group_base": GROUP_BASE}
    harness.add_target("web1", groups=["*"])
    harness.extra_toml = oidc_toml(provider)
    await harness.start()
    config = harness.directory / "ssh_config-kbdint-password"
    config.write_text(kbdint_config(harness).read_text() + "  NumberOfPasswordPrompts 1\n")
    result = await harness.run_plain(
        "ssh",
        "-F",
        str(config),
        "-p",
        str(harness.port),
        "carol+web1@127.0.0.1",
        "echo ldap-ok",
        extra_env={
            "SSH_ASKPASS": str(harness.directory / "askpass"),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": ":0",
            "HOOP_TEST_PASSWORD": "carol-pw",
        },
    )
    assert result.status == 0, result.err
    assert result.out.strip() == "ldap-ok"


async def test_a_device_flow_sign_in_is_refused_while_the_directory_cannot_say_whose_name_it_is(
    harness: GatewayHarness, provider: Provider
) -> None:
    """With [ldap] down, an OIDC name might be a directory person's: fail closed."""
    harness.ldap = {"url": f"ldap://127.0.0.1:{free_port()}", "user_dn": USER_DN, "timeout": 1}
    harness.add_target("web1", groups=["*"])
    harness.extra_toml = oidc_toml(provider)
    await harness.start()
    ssh = await start_ssh(harness, "erin+web1", "true")
    assert ssh.stderr is not None
    shown = await read_until(ssh.stderr, r"enter the code [A-Z]{4}-[A-Z]{4}")
    code = re.search(r"enter the code ([A-Z]{4}-[A-Z]{4})", shown)
    assert code is not None, shown
    await asyncio.to_thread(provider.approve_device, code.group(1), "erin-oidc")
    _, err = await asyncio.wait_for(ssh.communicate(), 60)
    assert ssh.returncode != 0
    assert "the user directory cannot be asked whether that name is taken" in err.decode()
