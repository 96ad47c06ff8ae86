"""`hoop-tui gateway` runs the gateway in the foreground; `hoop-tui hash-password` makes the
`password_hash` of a local user."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from hoop_tui.errors import CommandError
from proxy.config import ConfigError, GatewayConfig, load_config, resolve_config_path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = subparsers.add_parser(
        "gateway",
        help="run the gateway in the foreground (logs on stderr; SIGTERM stops it cleanly)",
        description=(
            "Run the gateway in the foreground until SIGTERM or Ctrl-C, which end every live "
            "session and close its recording."
        ),
    )
    gateway.add_argument(
        "--config",
        metavar="FILE",
        help="gateway configuration (default: $HOOP_CONFIG, then ./gateway.toml)",
    )
    gateway.add_argument(
        "--known-hosts",
        action="store_true",
        help="print the @cert-authority line callers add to ~/.ssh/known_hosts, and exit",
    )
    gateway.add_argument(
        "--check", action="store_true", help="only check the configuration, and exit"
    )
    gateway.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    gateway.set_defaults(handler=run_gateway_command)

    hasher = subparsers.add_parser(
        "hash-password",
        help="print a password hash for a local user's password_hash",
        description=(
            "Read a password (from stdin when it is not a terminal, otherwise by prompting "
            "twice) and print its scrypt hash for [[users]] password_hash."
        ),
    )
    hasher.set_defaults(handler=hash_password_command)


def _load(args: argparse.Namespace) -> GatewayConfig:
    try:
        return load_config(resolve_config_path(args.config))
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def run_gateway_command(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.check:
        from proxy.runtime import check_config

        try:
            check_config(config)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        print(f"{config.path}: ok ({len(config.users)} users, {len(config.targets)} targets)")
        return 0
    if args.known_hosts:
        from proxy.ssh.hostkeys import HostKeys

        print(HostKeys(config.data_dir / "ssh").known_hosts_line())
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncssh").setLevel(logging.INFO if args.verbose else logging.WARNING)
    from proxy.fleet.member import FleetStartRefused
    from proxy.runtime import run

    try:
        run_event_loop(run(config))
    except (FleetStartRefused, ConfigError) as exc:  # keys, schema or [state] database
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(
            f"cannot start the SSH listener on {config.ssh.listen_host}:"
            f"{config.ssh.listen_port}: {exc.strerror or exc}"
        ) from None
    return 0


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the gateway on uvloop where it is installed: the same asyncio API with transports
    written in C, about a sixth less CPU per relayed PostgreSQL statement here
    (bench/pg.py --uvloop); asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def hash_password_command(args: argparse.Namespace) -> int:
    from proxy.auth import hash_password

    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise CommandError("the passwords do not match")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("refusing an empty password")
    print(hash_password(password))
    return 0
