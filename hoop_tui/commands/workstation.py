"""`hoop-tui tui`: the Textual workstation attached to a running gateway."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from hoop_tui.commands.common import add_config_arguments, data_dir_from
from hoop_tui.errors import CommandError
from proxy.config import resolve_config_path
from proxy.holds.control import TICKET_ENV

# How the workstation tells a person of a new hold (hoop_tui/workstation/alerts.py).
ALERTS = ("osc9", "osc777", "bell", "off")

if TYPE_CHECKING:
    from hoop_tui.workstation.app import Workstation


def workstation_from(args: argparse.Namespace) -> Workstation:
    from hoop_tui.workstation.app import Workstation  # Textual loads only for this command

    # Set only by the gateway for `ssh -t bob@gateway console`: act as bob, once. Taken out of
    # the environment at once, so nothing this process starts inherits it.
    ticket = os.environ.pop(TICKET_ENV, None)
    if ticket is not None and args.offline:
        raise CommandError("the remote console has no --offline mode")
    config = None if args.data_dir else resolve_config_path(args.config)
    return Workstation(
        data_dir_from(args),
        offline=args.offline,
        config=config,
        ticket=ticket,
        alert=args.alert,
    )


def cmd_tui(args: argparse.Namespace) -> int:
    app = workstation_from(args)
    app.run()
    return app.return_code or 0


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
    tui.add_argument(
        "--alert",
        choices=ALERTS,
        default="osc9",
        help="on a new hold: ring the bell and send a desktop notification by OSC 9 (iTerm2, "
        "kitty, WezTerm, Windows Terminal) or OSC 777 (foot, Konsole, VTE terminals); `bell` "
        "only rings; `off` does neither (default: osc9)",
    )
    add_config_arguments(tui)
    tui.set_defaults(handler=cmd_tui)
