"""`hoop-tui tui`: the Textual workstation attached to a running gateway."""

from __future__ import annotations

import argparse

from hoop_tui.commands.common import add_config_arguments, data_dir_from


def cmd_tui(args: argparse.Namespace) -> int:
    from hoop_tui.workstation.app import Workstation  # Textual loads only for this command

    Workstation(data_dir_from(args), offline=args.offline).run()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tui = subparsers.add_parser(
        "tui",
        help="the workstation: live approval queue and recordings",
        description="Attaches to the running gateway's control socket in its data directory; "
        "you act as the gateway identity your OS user is mapped to.",
    )
    tui.add_argument(
        "--offline",
        action="store_true",
        help="browse and replay recordings without a running gateway",
    )
    add_config_arguments(tui)
    tui.set_defaults(handler=cmd_tui)
