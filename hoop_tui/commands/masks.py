"""`hoop-tui masks dry-run`: what new mask rules would mask in past recordings, before they go
live. It prints counts per rule and sample positions (session, time, where), never a value.

The rule file is TOML with `[[masks]]` tables, as in the gateway configuration (a whole
gateway configuration works too). Recordings are the last N sessions of the catalogue in the
data directory, or files given on the command line.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tomllib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hoop_tui.commands.common import add_config_arguments, data_dir_from
from hoop_tui.errors import CommandError
from proxy.config import ConfigError
from replay.asciicast import CastError
from replay.masking_view import DryRunReport, dry_run
from replay.sources import EventSource, open_source
from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.masking import MaskPolicy
from storage.reader import RecordingError, format_time

DEFAULT_LAST = 20


def load_rules(path_text: str) -> MaskPolicy:
    path = Path(path_text)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"{path}: not valid TOML: {exc}") from None
    if "masks" not in raw:
        raise CommandError(f"{path}: no [[masks]] tables")
    try:
        # tokens are never shown by a dry run: any key will do
        return MaskPolicy.from_raw_config(raw, path, secrets.token_bytes(32))
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def recording_paths(args: argparse.Namespace) -> list[Path]:
    if args.recordings:
        return [Path(p) for p in args.recordings]
    catalogue = SqliteCatalogue.in_data_dir(data_dir_from(args))
    rows = catalogue.find_sessions(SessionQuery(limit=args.last))
    return [Path(row.path) for row in rows]


def print_report(report: DryRunReport, out: Any) -> None:
    out.write(f"{len(report.sessions)} recording(s) scanned\n")
    width = max((len(name) for name in report.counts), default=4)
    for rule, count in report.counts.items():
        sessions = len(report.sessions_by_rule.get(rule, ()))
        out.write(f"  {rule:<{width}}  {count:>6} match(es) in {sessions} session(s)\n")
    if report.samples:
        out.write("samples (values are never shown):\n")
    for sample in report.samples:
        where = f"column {sample.column}" if sample.column else f"channel {sample.channel}"
        out.write(
            f"  {sample.rule:<{width}}  {sample.session_id}  at {format_time(sample.time_us)}  "
            f"{sample.kind} {where}, byte {sample.position}, {sample.length} long\n"
        )
    for problem in report.problems:
        out.write(f"warning: {problem}\n")


def cmd_dry_run(args: argparse.Namespace) -> int:
    policy = load_rules(args.rule_file)
    paths = recording_paths(args)
    with ExitStack() as stack:
        sources: list[EventSource] = []
        for path in paths:
            try:
                source = open_source(path)
            except OSError as exc:
                print(f"hoop-tui: warning: {path}: {exc.strerror or exc}", file=sys.stderr)
                continue
            except (RecordingError, CastError) as exc:
                print(f"hoop-tui: warning: {path}: {exc}", file=sys.stderr)
                continue
            stack.callback(source.close)
            sources.append(source)
        report = dry_run(policy, sources, samples_per_rule=args.samples)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report, sys.stdout)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "masks",
        help="tune [[masks]] rules against past recordings",
        description="Commands for masking rules.",
    )
    commands = parser.add_subparsers(dest="masks_command", metavar="SUBCOMMAND")
    dry = commands.add_parser(
        "dry-run",
        help="what these rules would mask in the last N recordings",
        description="Runs the rules of --rule-file over past recordings (terminal output and "
        "input, commands, SQL statements, errors and sampled rows) and prints, per rule, how "
        "many values it would mask and where: session, time, channel or column, byte offset. "
        "Values are never printed. Group scoping is ignored; `targets` is honoured.",
    )
    dry.add_argument("--rule-file", required=True, metavar="FILE", help="TOML with [[masks]]")
    dry.add_argument(
        "--last",
        type=int,
        default=DEFAULT_LAST,
        metavar="N",
        help=f"the N most recent sessions of the catalogue (default {DEFAULT_LAST})",
    )
    dry.add_argument(
        "--recording",
        dest="recordings",
        action="append",
        metavar="FILE",
        help="scan this recording instead of the catalogue (repeatable)",
    )
    dry.add_argument("--samples", type=int, default=5, metavar="K", help="samples per rule")
    dry.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_arguments(dry)
    dry.set_defaults(handler=cmd_dry_run)
    parser.set_defaults(handler=lambda _args: parser.print_help() or 2)
