"""`hoop-tui gateway` and `hoop-tui hash-password`, run as a person would run them."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.auth import verify_password
from tests.fixtures.gateway import GatewayHarness, only_recording
from tests.fixtures.processes import wait_for_port

pytestmark = [pytest.mark.programs, pytest.mark.timeout(60)]
HOOP = [sys.executable, "-m", "hoop_tui.cli"]


def test_hash_password_reads_stdin_when_it_is_not_a_terminal() -> None:
    result = subprocess.run(
        [*HOOP, "hash-password"], input="s3cret\n", capture_output=True, text=True, check=True
    )
    assert verify_password("s3cret", result.stdout.strip())


def test_hash_password_refuses_an_empty_password() -> None:
    result = subprocess.run([*HOOP, "hash-password"], input="\n", capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "hoop-tui: refusing an empty password\n"


def run_on_terminal(answers: list[str]) -> tuple[int, str]:
    pid, master = pty.fork()
    if pid == 0:  # the child: hoop-tui with the pty as its terminal
        os.execv(sys.executable, [*HOOP, "hash-password"])
    output = b""
    for answer in answers:
        while b": " not in output.split(b"\n")[-1]:
            output += os.read(master, 1024)
        os.write(master, answer.encode() + b"\n")
        output += os.read(master, 1024)
    while True:
        try:
            chunk = os.read(master, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), output.decode()


def test_hash_password_prompts_twice_on_a_terminal() -> None:
    status, output = run_on_terminal(["pw-one", "pw-one"])
    assert status == 0
    assert "Password: " in output and "Again: " in output
    hashed = [line for line in output.splitlines() if line.startswith("$scrypt$")]
    assert verify_password("pw-one", hashed[0].strip())
    status, output = run_on_terminal(["pw-one", "pw-two"])
    assert status == 1
    assert "the passwords do not match" in output


def test_a_broken_config_names_file_and_key_and_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\ndata_dir = "d"\nssh_listen = "nowhere:port"\n')
    result = subprocess.run(
        [*HOOP, "gateway", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"hoop-tui: {config}: gateway.ssh_listen: must be")


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (
            '[gateway]\ndata_dir = "d"\nssh_listne = "127.0.0.1:2222"\n',
            "gateway.ssh_listne",
            "unknown key",
        ),
        ('[gateway]\ndata_dir = "d"\nidd = "gw"\n', "gateway.idd", "unknown key"),
        (
            '[gateway]\ndata_dir = "d"\n[[users]]\nname = "alice"\npassword_hash = '
            '"$scrypt$ln=14,r=8,p=1$REPLACE$WITH-THE-OUTPUT-OF-hoop-tui-hash-password"\n',
            "users[0].password_hash",
            "hoop-tui hash-password",
        ),
    ],
    ids=["typo-listen", "typo-id", "placeholder-hash"],
)
def test_check_refuses_typos_and_placeholders(
    tmp_path: Path, text: str, key: str, says: str
) -> None:
    """`--check` passed unknown [gateway] keys and the example's placeholder hash (issue 17, 7)."""
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    result = subprocess.run(
        [*HOOP, "gateway", "--check", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"hoop-tui: {config}: {key}: ")
    assert says in result.stderr


async def test_sigterm_ends_sessions_and_closes_recordings(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    await harness.start()
    port = harness.port
    await harness.stop()  # the in-process gateway made the keys; now run the real command
    config = harness.directory / "gateway.toml"
    with (harness.directory / "gateway.log").open("wb") as log:
        process = subprocess.Popen(
            [*HOOP, "gateway", "--config", str(config)], stderr=log, stdout=log
        )
    try:
        await asyncio.to_thread(wait_for_port, port, process, harness.directory / "gateway.log")
        client = await harness.spawn(
            "ssh", "-J", f"alice@127.0.0.1:{port}", "web1", "echo up; sleep 30", user="alice"
        )
        assert client.stdout is not None and client.stderr is not None
        assert await asyncio.wait_for(client.stdout.readline(), 20) == b"up\n"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(client.wait(), 20) == 255
        assert "gateway is shutting down" in (await client.stderr.read()).decode()
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    recorded = await only_recording(harness)
    assert recorded.end_reason == "gateway stopped"
    assert recorded.complete
    log_text = (harness.directory / "gateway.log").read_text()
    assert "SSH gateway stopped" in log_text


async def test_known_hosts_prints_the_one_line_callers_need(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")
    config = harness.write_config()
    checked = subprocess.run(
        [*HOOP, "gateway", "--config", str(config), "--check"], capture_output=True, text=True
    )
    assert checked.returncode == 0
    assert checked.stdout == f"{config}: ok (1 users, 1 targets)\n"
    shown = subprocess.run(
        [*HOOP, "gateway", "--config", str(config), "--known-hosts"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = shown.stdout.strip()
    assert line.startswith("@cert-authority * ssh-ed25519 ")
    await harness.start()  # the running gateway presents certificates from that same CA
    assert harness.gateway is not None and harness.gateway.known_hosts_line() == line
