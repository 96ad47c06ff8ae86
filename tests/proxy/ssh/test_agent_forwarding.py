"""Agent forwarding (`ssh -A`): a per-target opt-in, refused quietly elsewhere, recorded.

A real ssh-agent holds a key made for the test; the caller runs the real `ssh -A` with that
agent; on the target (the real sshd), `ssh-add -l` shows what reached it and an onward `ssh`
to a second sshd logs in with the forwarded key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness, Result, only_recording
from tests.fixtures.processes import stop
from tests.fixtures.sshd import Sshd, keygen, start_sshd

pytestmark = pytest.mark.timeout(60)

# What the target prints: whether it got an agent socket, what is in the agent, and whether
# ssh-add could talk to an agent at all (0 keys listed, 1 agent empty, 2 no agent).
PROBE = 'echo "sock=${SSH_AUTH_SOCK:+set}"; ssh-add -l; echo "ssh-add=$?"'


@dataclass
class Agent:
    socket: Path
    fingerprint: str  # SHA256:... of the one key in it
    key: Path


def fingerprint(public_key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    """A real ssh-agent with one key in it (not the key alice logs in to the gateway with)."""
    key = tmp_path / "agent_key"
    keygen(key, "alice-agent-key")
    socket = tmp_path / "agent.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        for _ in range(500):
            if socket.exists():
                break
            subprocess.run(["sleep", "0.01"], check=True)
        subprocess.run(
            ["ssh-add", "-q", str(key)],
            check=True,
            env={**env, "SSH_AUTH_SOCK": str(socket)},
            capture_output=True,
        )
        yield Agent(socket, fingerprint(key.with_name("agent_key.pub")), key)
    finally:
        stop(process)


@pytest.fixture
async def onward(tmp_path: Path, agent: Agent) -> AsyncIterator[Sshd]:
    """A second sshd that accepts only the key in the agent: the next hop from the target."""
    server = await asyncio.to_thread(start_sshd, tmp_path / "onward")
    (server.directory / "authorized_keys").write_text(
        agent.key.with_name("agent_key.pub").read_text()
    )
    yield server
    stop(server.process)


# How a person runs `ssh -A` with their agent in $SSH_AUTH_SOCK (the harness's client config
# says `IdentityAgent none`; the command line wins over it).
AGENT_ARGS = ("-A", "-o", "IdentityAgent=SSH_AUTH_SOCK")


async def jump_with_agent(harness: GatewayHarness, agent: Agent, command: str) -> Result:
    """`ssh -A -J alice@gateway web1 command`: the inner connection carries the request."""
    return await harness.run(
        "ssh",
        *AGENT_ARGS,
        "-J",
        harness.jump("alice"),
        "web1",
        command,
        user="alice",
        extra_env={"SSH_AUTH_SOCK": str(agent.socket)},
    )


async def direct_with_agent(harness: GatewayHarness, agent: Agent, command: str) -> Result:
    """`ssh -A -p PORT alice+web1@gateway command`."""
    return await harness.run(
        "ssh",
        *AGENT_ARGS,
        "-p",
        str(harness.port),
        "alice+web1@127.0.0.1",
        command,
        user="alice",
        extra_env={"SSH_AUTH_SOCK": str(agent.socket)},
    )


async def start(harness: GatewayHarness, *, agent_forwarding: bool, **user: object) -> None:
    harness.add_user("alice", groups=("dev",), **user)
    harness.add_target("web1", agent_forwarding=agent_forwarding)
    await harness.start()


def gateway_fingerprint(harness: GatewayHarness) -> str:
    return fingerprint(harness.sshd.key_file.with_name(harness.sshd.key_file.name + ".pub"))


def hop_command(onward: Sshd) -> str:
    return (
        f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no "
        f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p {onward.port} "
        f"{onward.user}@127.0.0.1 echo hopped"
    )


async def test_jump_with_agent_reaches_the_target_and_hops_onward(
    harness: GatewayHarness, agent: Agent, onward: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hoop")
    await start(harness, agent_forwarding=True)
    result = await jump_with_agent(harness, agent, f"{PROBE}; {hop_command(onward)}")
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "sock=set"
    listed = [line for line in lines if "SHA256:" in line]
    assert len(listed) == 1 and agent.fingerprint in listed[0], result.out
    assert gateway_fingerprint(harness) not in result.out  # the gateway's key is not in it
    assert "ssh-add=0" in lines
    assert lines[-1] == "hopped"

    recorded = await only_recording(harness)
    notes = [event["text"] for event in recorded.of("annotation")]
    assert len(notes) == 1 and "agent forwarding granted" in notes[0]
    assert "web1" in notes[0] and "alice" in notes[0]
    uses = [event for event in recorded.of("channel_open") if event["kind"] == "agent"]
    assert len(uses) >= 2  # ssh-add -l, then the onward ssh
    closed = {event["channel"] for event in recorded.of("channel_close")}
    assert {event["channel"] for event in uses} <= closed
    names = [event.name for event in recorded.events]
    assert names.index("annotation") < names.index("exec")
    assert any("agent forwarding granted" in r.getMessage() for r in caplog.records)


async def test_direct_login_with_agent_reaches_the_target(
    harness: GatewayHarness, agent: Agent
) -> None:
    await start(harness, agent_forwarding=True)
    result = await direct_with_agent(harness, agent, PROBE)
    assert result.status == 0, result.err
    assert result.out.splitlines()[0] == "sock=set"
    assert agent.fingerprint in result.out
    assert gateway_fingerprint(harness) not in result.out
    assert "ssh-add=0" in result.out
    recorded = await only_recording(harness)
    assert recorded.header.extra["mode"] == "direct"
    assert any("agent forwarding granted" in event["text"] for event in recorded.of("annotation"))
    assert [e for e in recorded.of("channel_open") if e["kind"] == "agent"]


@pytest.mark.parametrize("way", ["jump", "direct"])
async def test_agent_is_refused_quietly_for_a_target_without_it(
    harness: GatewayHarness, agent: Agent, way: str
) -> None:
    await start(harness, agent_forwarding=False)
    run = jump_with_agent if way == "jump" else direct_with_agent
    result = await run(harness, agent, PROBE)
    assert result.status == 0, result.err  # the session itself works
    assert result.out.splitlines()[0] == "sock="
    assert "ssh-add=2" in result.out  # no agent on the target
    assert agent.fingerprint not in result.out
    # Refused quietly, as OpenSSH's sshd does: the only complaint is ssh-add's, on the target.
    assert result.err.splitlines() == ["Could not open a connection to your authentication agent."]
    recorded = await only_recording(harness)
    assert not recorded.of("annotation")
    assert not [e for e in recorded.of("channel_open") if e["kind"] == "agent"]


async def test_no_agent_on_an_opted_in_target_without_ssh_a(
    harness: GatewayHarness, agent: Agent
) -> None:
    await start(harness, agent_forwarding=True)
    result = await harness.ssh_jump(
        "alice", "web1", PROBE, extra_env={"SSH_AUTH_SOCK": str(agent.socket)}
    )
    assert result.status == 0, result.err
    assert result.out.splitlines()[0] == "sock="
    assert "ssh-add=2" in result.out
    assert not (await only_recording(harness)).of("annotation")


async def test_a_key_marked_no_agent_forwarding_gets_no_agent_through_the_jump(
    harness: GatewayHarness, agent: Agent
) -> None:
    key = harness.client_key("alice")
    await start(
        harness,
        agent_forwarding=True,
        key=False,
        authorized_keys=[f"no-agent-forwarding {key}"],
    )
    for run in (jump_with_agent, direct_with_agent):
        result = await run(harness, agent, PROBE)
        assert result.status == 0, result.err
        assert result.out.splitlines()[0] == "sock=", run.__name__
        assert "ssh-add=2" in result.out
