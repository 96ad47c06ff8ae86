"""The `hoop-tui` command line: one parser, subcommands registered by `hoop_tui.commands`.

Every command returns an exit code; errors a user can act on are printed as one line on stderr
(`hoop-tui: ...`), never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hoop_tui import __version__
from hoop_tui.commands import (
    approvals,
    gateway,
    local,
    login,
    masks,
    policy,
    recordings,
    replay,
    search,
    state,
    status,
    workstation,
)
from hoop_tui.commands.examples import add_examples
from hoop_tui.errors import CommandError
from storage.objectstore import ObjectStoreUnavailable

COMMAND_MODULES = (
    local,
    recordings,
    search,
    gateway,
    approvals,
    policy,
    replay,
    workstation,
    masks,
    state,
    status,
    login,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hoop-tui",
        description=(
            "A terminal-native access gateway for SSH and PostgreSQL: it authenticates callers, "
            "holds target credentials, inspects and records every command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hoop-tui {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    add_examples(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except CommandError as exc:
        print(f"hoop-tui: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("hoop-tui: interrupted", file=sys.stderr)
        return 130
    except ObjectStoreUnavailable as exc:  # the object store went away in the middle of a read
        print(f"hoop-tui: the recordings store failed: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
