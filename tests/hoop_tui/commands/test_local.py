"""`hoop-tui up` and `hoop-tui rec`, run as a user would: as processes, with and without a
terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.reader import RecordingReader
from storage.schema import EventType
from tests.fixtures.waiting import readable

pytestmark = pytest.mark.programs


@pytest.mark.sshd  # `up` starts the local target's sshd
def test_up_sets_up_records_verifies_and_shows_the_demo(tmp_path):
    data_dir = tmp_path / "hoop-data"
    result = subprocess.run(
        [sys.executable, "-m", "hoop_tui.cli", "up", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert ": OK," in result.stdout
    assert "UTF-8 survives: \u2713 \u6f22\u5b57" in result.stdout
    assert "session end: exit status 0" in result.stdout
    (row,) = SqliteCatalogue.in_data_dir(data_dir).find_sessions(SessionQuery())
    assert row.protocol == "local" and row.end_reason == "exit status 0"


def _read_until(fd: int, needle: bytes, timeout: float = 15) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        if readable(fd, 0.1):
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_rec_relays_an_interactive_shell_and_records_both_directions(tmp_path):
    data_dir = tmp_path / "data"
    env = dict(os.environ, PS1="rec$ ", TERM="xterm")
    pid, master = pty.fork()
    if pid == 0:
        os.execvpe(
            sys.executable,
            [
                sys.executable,
                "-m",
                "hoop_tui.cli",
                "rec",
                "--data-dir",
                str(data_dir),
                "--",
                "/bin/sh",
            ],
            env,
        )
    try:
        assert b"rec$ " in _read_until(master, b"rec$ ")
        os.write(master, b"echo hello-$((6*7))\r")
        assert b"hello-42" in _read_until(master, b"hello-42")
        os.write(master, b"exit 3\r")
        _read_until(master, b"recorded")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 3
    (row,) = SqliteCatalogue.in_data_dir(data_dir).find_sessions(SessionQuery())
    with RecordingReader.open(Path(row.path)) as reader:
        events = list(reader.events())
    typed = b"".join(e["data"] for e in events if e.type is EventType.INPUT)
    shown = b"".join(e["data"] for e in events if e.type is EventType.OUTPUT)
    assert b"echo hello-$((6*7))\r" in typed
    assert b"hello-42" in shown
    assert [e["status"] for e in events if e.type is EventType.EXIT_STATUS] == [3]


@pytest.mark.sshd  # `up` starts the local target's sshd
async def test_the_default_setup_is_a_working_gateway_with_a_local_target(tmp_path):
    """What `hoop-tui up` starts in a terminal: the generated configuration, the private sshd
    of the `local` target and the gateway, reached by a real SSH client as the demo user."""
    import asyncssh

    from hoop_tui.commands.local import ensure_default_setup
    from hoop_tui.localsshd import free_port, start_sshd, stop
    from proxy.config import load_config
    from proxy.runtime import GatewayRuntime

    data_dir = tmp_path / "hoop-data"
    config_path, passwords = ensure_default_setup(data_dir)
    assert set(passwords) == {"demo", "admin"}
    assert ensure_default_setup(data_dir) == (config_path, {})  # shown once, never again
    port = free_port()
    text = config_path.read_text().replace("127.0.0.1:2222", f"127.0.0.1:{port}")
    config_path.write_text(text)
    config = load_config(config_path)
    sshd = start_sshd(data_dir / "local-target", config.targets["local"].port)
    runtime = GatewayRuntime(config)
    await runtime.start()
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="demo+local",
            password=passwords["demo"],
            known_hosts=None,
            client_keys=None,
        ) as conn:
            allowed = await conn.run("echo through-the-gateway", check=False)
            denied = await conn.run("rm -rf /tmp/hoop-demo-never", check=False)
            masked = await conn.run("echo 4111 1111 1111 1111 password=hunter2", check=False)
        assert allowed.stdout == "through-the-gateway\n"
        assert "4111 1111 1111 1111" not in masked.stdout and "1111" in masked.stdout
        assert "hunter2" not in masked.stdout
        assert denied.exit_status == 126
        assert "no-recursive-delete" in str(denied.stderr)
    finally:
        await runtime.stop()
        stop(sshd.process)


@pytest.mark.sshd  # `up` starts the local target's sshd
def test_commands_run_in_the_folder_up_ran_in(tmp_path):
    """After `hoop-tui up` set up ./hoop-data, `sessions`, `policy check` (with or without
    --data-dir) find its configuration instead of failing on a missing ./gateway.toml."""
    from hoop_tui.commands.local import ensure_default_setup

    ensure_default_setup(tmp_path / "hoop-data")

    def hoop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hoop_tui", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    sessions = hoop("sessions", "--json")
    assert sessions.returncode == 0, sessions.stderr
    assert sessions.stdout.strip() == "[]"
    for where in ([], ["--data-dir", "hoop-data"]):
        check = hoop(
            "policy",
            "check",
            *where,
            "--user",
            "demo",
            "--target",
            "local",
            "--command",
            "rm -rf /srv",
        )
        assert check.returncode == 4, check.stderr
        assert "no-recursive-delete" in check.stdout
    unknown = hoop("policy", "check", "--user", "nobody", "--target", "local", "--command", "ls")
    assert "no user named 'nobody'" in unknown.stdout


@pytest.mark.sshd  # `up` starts the local target's sshd
def test_first_run_passwords_outlive_the_screen_that_covers_them(tmp_path):
    """`up` showed its passwords once, in text the full-screen workstation then covered; they
    are kept owner-only beside the configuration, and the hint says where (issue 17, 11)."""
    from hoop_tui.commands.local import (
        connect_hint,
        ensure_default_setup,
        save_first_run_passwords,
    )

    previous = os.umask(0o022)
    try:
        config, passwords = ensure_default_setup(tmp_path / "hoop-data")
        kept = save_first_run_passwords(config, passwords)
    finally:
        os.umask(previous)
    assert kept.stat().st_mode & 0o777 == 0o600
    assert f"demo {passwords['demo']}" in kept.read_text()
    assert str(kept) in connect_hint(passwords, config)
    again = connect_hint({}, config)  # the next `up`: nothing new to show, but where they are
    assert str(kept) in again and passwords["demo"] not in again
    assert "recorded" in again
