"""`hoop-tui up` (the main job on an embedded default) and `hoop-tui rec` (record a local
program), both writing signed recordings into a data directory and its catalogue."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
import time
from pathlib import Path

from hoop_tui.commands.common import add_config_arguments, data_dir_from, gateway_id_from
from hoop_tui.errors import CommandError
from hoop_tui.localrec import record_program, terminal_size
from proxy.config import UP_DATA_DIR
from replay.export import export_text
from storage.private import private_dir, private_file
from storage.reader import RecordingReader
from storage.recorder import RecordingFailed, new_session_id, start_recording
from storage.schema import RecordingHeader
from storage.signing import PUBLIC_KEY_NAME, load_public_key
from storage.verify import verify_recording

DEFAULT_DATA_DIR = UP_DATA_DIR
CONFIG_NAME = "gateway.toml"
FIRST_RUN_NAME = "first-run-passwords.txt"
DEMO_SCRIPT = (
    "printf '\\033[1;32mhoop_tui demo:\\033[0m a recorded session\\n'; "
    'echo "user: $(id -un)  host: $(uname -n)"; '
    "ls -la --color=always /; "
    "printf 'UTF-8 survives: \\342\\234\\223 \\346\\274\\242\\345\\255\\227\\n'"
)


def record_local(
    data_dir: Path, argv: list[str], *, target: str, gateway_id: str
) -> tuple[Path, int]:
    """Record `argv` in a PTY into `data_dir`; returns the recording's path and exit status."""
    cols, rows = terminal_size(sys.stdout.fileno())
    env = dict(os.environ, TERM=os.environ.get("TERM", "xterm-256color"))
    header = RecordingHeader(
        session_id=new_session_id(),
        user=getpass.getuser(),
        target=target,
        protocol="local",
        started_at_us=time.time_ns() // 1000,
        client="local",
        term=env["TERM"],
        cols=cols,
        rows=rows,
        gateway_id=gateway_id,
    )
    try:
        writer = start_recording(data_dir, header)
    except RecordingFailed as exc:
        raise CommandError(f"{exc}; nothing was run") from None
    try:
        status = record_program(argv, writer, cols, rows, env)
    except RecordingFailed as exc:
        writer.close("recording failed")
        raise CommandError(f"recording failed, the program was stopped: {exc}") from None
    except BaseException:
        writer.close("recorder interrupted")
        raise
    summary = writer.close(f"exit status {status}")
    return summary.path, status


def cmd_rec(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args)
    argv = args.argv or [os.environ.get("SHELL") or "/bin/sh"]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.command:
        argv = ["/bin/sh", "-c", args.command]
    print(f"hoop-tui: recording {' '.join(argv)} (exit the program to stop)", file=sys.stderr)
    path, status = record_local(
        data_dir, argv, target=args.target, gateway_id=gateway_id_from(args)
    )
    print(f"hoop-tui: recorded {path}", file=sys.stderr)
    return status


DEMO_RULES = """
[[rules]]                          # try: rm -rf /tmp/hoop-demo
name = "no-recursive-delete"
shell = "rm -rf *"
action = "deny"
message = "recursive delete is not allowed through this gateway"

[[rules]]                          # try: cat /etc/hostname  (held until admin approves)
name = "reading-system-files-needs-review"
shell = "cat /etc/*"
action = "review"
approvers = ["oncall"]
timeout = "10m"

[[masks]]                          # try: echo 4111 1111 1111 1111  (shown as **** ... 1111)
name = "cards"
detector = "credit_card"
style = "last4"

[[masks]]                          # try: echo password=hunter2
name = "passwords"
detector = "password_assignment"
"""


def ensure_default_setup(data_dir: Path) -> tuple[Path, dict[str, str]]:
    """A data directory with a working default configuration: a `demo` user, an `admin`
    approver, a `local` target (a login shell on this host, through a private sshd), two rules
    and two masks. Returns the config path and, on first setup only, the passwords to show once."""
    from hoop_tui.localsshd import free_port, start_sshd, stop
    from proxy.auth import hash_password

    private_dir(data_dir)
    config = data_dir / CONFIG_NAME
    if config.exists():
        return config, {}
    target_dir = data_dir / "local-target"
    sshd = start_sshd(target_dir, free_port())  # makes its keys; the port is kept in the config
    stop(sshd.process)
    passwords = {"demo": secrets.token_urlsafe(9), "admin": secrets.token_urlsafe(9)}
    config.write_text(
        f"""# hoop_tui gateway configuration, made by `hoop-tui up` (see docs/configuration.md)
[gateway]
data_dir = "."                     # relative to this file
ssh_listen = "127.0.0.1:2222"
banner = "This session is recorded by hoop_tui; risky commands wait for an approver."

[[users]]                          # the person connecting: ssh -p 2222 demo+local@127.0.0.1
name = "demo"
password_hash = "{hash_password(passwords["demo"])}"
groups = ["dev"]

[[users]]                          # the approver; the workstation acts as admin
name = "admin"
password_hash = "{hash_password(passwords["admin"])}"
groups = ["oncall"]

[control.operators]
{getpass.getuser()} = "admin"

[[targets]]                        # a login shell on this host, as {sshd.user}
name = "local"
host = "127.0.0.1"
port = {sshd.port}
user = "{sshd.user}"
key_file = "local-target/gateway_target_key"
host_key = "{sshd.host_key}"
groups = ["dev"]
{DEMO_RULES}""",
        encoding="utf-8",
    )
    config.chmod(0o600)
    return config, passwords


def run_recording_demo(data_dir: Path) -> int:
    """Without a terminal: record a demo session of a real program, verify it, show it."""
    private_dir(data_dir)
    print(f"data directory: {data_dir}\n")
    print("Recording a demo session of a real program in a pseudo-terminal...\n")
    path, _ = record_local(
        data_dir,
        ["/bin/sh", "-c", DEMO_SCRIPT],
        target="local",
        gateway_id=os.uname().nodename,
    )
    report = verify_recording(path, load_public_key(data_dir / PUBLIC_KEY_NAME))
    print("\nThe recording, verified against this gateway's signing key:")
    print("  " + report.summary())
    print("\nIts transcript (`hoop-tui export FILE --format text`):")
    with RecordingReader.open(path) as reader:
        export_text(reader, sys.stdout)
    print(
        "\nRun `hoop-tui up` in a terminal for the gateway and the workstation; "
        f"`hoop-tui verify {path} --data-dir {data_dir}` checks the recording again."
    )
    return 0 if report.ok else 1


def first_run_file(config: Path) -> Path:
    """Where `up` keeps the passwords it made, owner-only, so that the workstation covering
    the terminal does not lose them."""
    return config.parent / FIRST_RUN_NAME


def save_first_run_passwords(config: Path, passwords: dict[str, str]) -> Path:
    path = private_file(first_run_file(config))
    path.write_text(
        "# Made by `hoop-tui up`; readable by you only. Delete it once you have noted them.\n"
        + "".join(f"{user} {password}\n" for user, password in passwords.items()),
        encoding="utf-8",
    )
    return path


def connect_hint(passwords: dict[str, str], config: Path) -> str:
    lines = [
        "hoop_tui is up. In another terminal:",
        "  ssh -p 2222 demo+local@127.0.0.1          # a shell on this host, through the gateway",
        "  then try:  rm -rf /tmp/hoop-demo  (denied)   cat /etc/hostname  (held for approval)",
        "Approve the held command here (a, then Enter); replay sessions under 2 (Recordings).",
        "Every session through the gateway is recorded.",
    ]
    kept = first_run_file(config)
    if passwords:
        lines.append(
            f"Passwords: demo {passwords['demo']}   admin {passwords['admin']}   "
            f"(also in {kept}, yours only)"
        )
    elif kept.is_file():
        lines.append(f"The passwords made at first run are in {kept}.")
    else:
        lines.append(
            f"The passwords were shown when {config} was made; `hoop-tui hash-password` "
            "makes a new password_hash for it."
        )
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    if args.demo or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_recording_demo(data_dir)
    config, passwords = ensure_default_setup(data_dir)
    if passwords:
        save_first_run_passwords(config, passwords)
    hint = connect_hint(passwords, config)
    print(hint)
    asyncio.run(_serve_with_workstation(config, data_dir, hint))
    print(hint)
    return 0


async def _serve_with_workstation(config_path: Path, data_dir: Path, hint: str) -> None:
    """The gateway and the workstation in one process, and the local target's sshd."""
    from hoop_tui.localsshd import start_sshd, stop
    from hoop_tui.workstation.app import Workstation
    from proxy.config import ConfigError, load_config
    from proxy.runtime import GatewayRuntime

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    local = config.targets.get("local")
    sshd = start_sshd(data_dir / "local-target", local.port if local else None)
    runtime = GatewayRuntime(config)
    try:
        await runtime.start()
    except OSError as exc:
        stop(sshd.process)
        raise CommandError(
            f"cannot listen on {config.ssh.listen_host}:{config.ssh.listen_port}: "
            f"{exc.strerror or exc} (change ssh_listen in {config_path})"
        ) from None
    try:
        app = Workstation(data_dir, welcome=hint)
        await app.run_async()
    finally:
        await runtime.stop()
        stop(sshd.process)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser(
        "up",
        help="run a gateway on this host with a default configuration, and the workstation",
        description="Creates ./hoop-data (or --data-dir) with a default configuration (a demo "
        "user, an admin approver, a `local` target and two rules), starts the gateway and "
        "opens the workstation. Without a terminal it records, verifies and shows a demo "
        "session instead.",
    )
    up.add_argument("--data-dir", metavar="DIR", help=f"default: ./{DEFAULT_DATA_DIR}")
    up.add_argument(
        "--demo",
        action="store_true",
        help="only record, verify and show a demo session (what runs without a terminal)",
    )
    up.set_defaults(handler=cmd_up)

    rec = subparsers.add_parser(
        "rec",
        help="record a local program (default: your shell) like asciinema rec",
    )
    rec.add_argument("-c", "--command", help="run this shell command instead of a program")
    rec.add_argument("--target", default="local", help="target name to catalogue it under")
    rec.add_argument("argv", nargs=argparse.REMAINDER, help="program and arguments")
    add_config_arguments(rec)
    rec.set_defaults(handler=cmd_rec)
