"""`hoop-tui up` (the main job on an embedded default) and `hoop-tui rec` (record a local
program), both writing signed recordings into a data directory and its catalogue."""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import time
from pathlib import Path

from hoop_tui.commands.common import add_config_arguments, data_dir_from, gateway_id_from
from hoop_tui.errors import CommandError
from hoop_tui.localrec import record_program, terminal_size
from replay.export import export_text
from storage.reader import RecordingReader
from storage.recorder import RecordingFailed, new_session_id, start_recording
from storage.schema import RecordingHeader
from storage.signing import PUBLIC_KEY_NAME, load_public_key
from storage.verify import verify_recording

DEFAULT_DATA_DIR = "hoop-data"
CONFIG_NAME = "gateway.toml"
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


def ensure_default_setup(data_dir: Path) -> Path:
    """A data directory with a working default configuration; returns the config path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / CONFIG_NAME
    if not config.exists():
        config.write_text(
            "# hoop_tui gateway configuration, made by `hoop-tui up`.\n"
            "# See docs/configuration.md for every key.\n"
            "[gateway]\n"
            'data_dir = "."          # relative to this file\n'
            'ssh_listen = "127.0.0.1:2222"\n',
            encoding="utf-8",
        )
    return config


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    config = ensure_default_setup(data_dir)
    print(f"data directory: {data_dir}\nconfiguration:  {config}\n")
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
    exe = (shutil.which("hoop-tui") and "hoop-tui") or f"{sys.executable} -m hoop_tui.cli"
    print(
        "\nNext:\n"
        f"  export HOOP_CONFIG={config}\n"
        f"  {exe} sessions                    # the session catalogue\n"
        f"  {exe} rec                         # record your own shell\n"
        f"  {exe} export {path} --format asciicast -o demo.cast\n"
        f"  {exe} verify {path}"
    )
    return 0 if report.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = subparsers.add_parser(
        "up",
        help="set up a data directory with a default configuration and run the demo",
        description="Creates ./hoop-data (or --data-dir) with a default configuration and a "
        "signing key, records a demo session of a real program, verifies it and shows it.",
    )
    up.add_argument("--data-dir", metavar="DIR", help=f"default: ./{DEFAULT_DATA_DIR}")
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
