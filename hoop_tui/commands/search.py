"""`hoop-tui search TEXT`: find sessions by what happened in them.

Lists each hit with its session, the moment (UTC, and seconds into the session: what
`hoop-tui screen FILE --at` and the workstation's replay take) and the line around it. Sessions
that ended while no gateway indexed them are indexed first, with a progress bar.
"""

from __future__ import annotations

import argparse
import json
import sys

from hoop_tui.commands.common import (
    Progress,
    add_config_arguments,
    catalogue_from,
    data_dir_from,
    warn_catalogue,
)
from hoop_tui.commands.recordings import format_epoch_us, parse_when
from hoop_tui.errors import CommandError
from proxy.holds.console import printable
from replay.search import index_missing
from storage.catalogue import SessionQuery
from storage.search import SearchIndex


def cmd_search(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args)
    try:
        since_us = parse_when(args.since) if args.since else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    catalogue = catalogue_from(args)  # the fleet's with [state]: other instances' sessions too
    progress = Progress("indexing recordings")
    _, problems = index_missing(data_dir, progress, catalogue)
    progress.finish()
    for session_id, problem in problems:
        print(f"hoop-tui: session {session_id[:8]} not indexed: {problem}", file=sys.stderr)
    rows = catalogue.find_sessions(
        SessionQuery(user=args.user, target=args.target, since_us=since_us)
    )
    warn_catalogue(catalogue)
    sessions = {row.id: row for row in rows}
    try:
        hits = SearchIndex.in_data_dir(data_dir).search(
            args.text, sessions=sessions, limit=args.limit
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    hits.sort(key=lambda hit: (-sessions[hit.session_id].started_at_us, hit.t_us))
    if args.json:
        print(json.dumps([{**hit.to_json(), "path": sessions[hit.session_id].path}
                          for hit in hits], indent=2))  # fmt: skip
        return 0
    if not hits:
        print(f"nothing matches {args.text!r}", file=sys.stderr)
        return 1
    for hit in hits:
        row = sessions[hit.session_id]
        moment = format_epoch_us(row.started_at_us + hit.t_us)
        print(
            f"{hit.session_id[:8]}  {moment}  +{hit.t_us / 1e6:8.1f}s  "
            f"{row.user}@{row.target}  {hit.kind:<14} {printable(hit.context)}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    search = subparsers.add_parser(
        "search",
        help="find sessions by what was shown, typed as commands, or run as SQL in them",
        description=(
            "Search the recordings of a data directory for TEXT, as a phrase: terminal output, "
            "commands, exec requests, SQL statements, verdicts and holds. Masked values are "
            "indexed masked; keystrokes are not indexed. Exit status 1 when nothing matches."
        ),
    )
    search.add_argument("text", metavar="TEXT", help="words to find, in this order")
    search.add_argument("--user", help="only sessions of this user")
    search.add_argument("--target", help="only sessions on this target")
    search.add_argument("--since", help="ISO date/time, or a duration ago (7d)")
    search.add_argument("--limit", type=int, default=100, help="at most this many hits (100)")
    search.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_arguments(search)
    search.set_defaults(handler=cmd_search)
