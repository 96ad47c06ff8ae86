"""`hoop-tui state migrate` and `hoop-tui state copy --from DIR`: the shared PostgreSQL state
of a fleet (`[state] url`, docs/deployment.md)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from hoop_tui.commands.common import add_config_arguments
from hoop_tui.errors import CommandError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "state", help="the shared PostgreSQL state of a fleet: migrate its schema, copy into it"
    )
    commands = parser.add_subparsers(dest="state_command", metavar="SUBCOMMAND")
    migrate = commands.add_parser(
        "migrate",
        help="apply the schema migrations the state database lacks",
        description=(
            "Bring the [state] database's schema to the version this hoop-tui needs. Run it once "
            "before starting the first gateway, and once per upgrade (docs/deployment.md). "
            "Safe to run again: migrations already applied are skipped."
        ),
    )
    add_config_arguments(migrate)
    migrate.set_defaults(handler=run_migrate)
    copy = commands.add_parser(
        "copy",
        help="copy an embedded gateway's state (SQLite) into the state database",
        description=(
            "Copy holds, grants, the audit log and the session catalogue of an embedded gateway's "
            "data directory into the [state] database. Rows already there are kept; running it "
            "twice copies nothing twice. Recordings stay where they are."
        ),
    )
    copy.add_argument("--from", dest="source", required=True, metavar="SQLITE_DATA_DIR", type=Path)
    add_config_arguments(copy)
    copy.set_defaults(handler=run_copy)
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _settings(args: argparse.Namespace) -> tuple[Any, Any]:
    from proxy.config import ConfigError, load_config, resolve_config_path
    from proxy.fleet.settings import state_settings

    try:
        config = load_config(resolve_config_path(args.config))
        settings = state_settings(config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if settings is None:
        raise CommandError(
            f"{config.path} has no [state] section: this gateway keeps its state in SQLite"
        )
    return config, settings


def _password(settings: Any) -> str | None:
    try:
        password: str | None = settings.password()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return password


def run_migrate(args: argparse.Namespace) -> int:
    import psycopg

    from storage.pg_migrations import LATEST
    from storage.pg_state import migrate, redact
    from storage.state import StoreUnavailable

    _, settings = _settings(args)
    try:
        applied = asyncio.run(
            migrate(settings.url, _password(settings), timeout_s=settings.timeout_s)
        )
    except StoreUnavailable as exc:
        raise CommandError(str(exc)) from None
    except psycopg.Error as exc:
        raise CommandError(f"{redact(settings.url)}: {str(exc).strip().splitlines()[0]}") from None
    for migration in applied:
        print(f"applied {migration.version}: {migration.name}")
    print(f"{redact(settings.url)} is at schema version {LATEST}")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    from storage.pg_state import PgState, SchemaMismatch, copy_from_sqlite, redact
    from storage.state import StoreUnavailable

    config, settings = _settings(args)

    async def go() -> dict[str, int]:
        store = await PgState.open(
            settings.url,
            gateway_id=config.gateway_id,
            password=_password(settings),
            timeout_s=settings.timeout_s,
        )
        try:
            return await copy_from_sqlite(store, args.source)
        finally:
            await store.close()

    try:
        added = asyncio.run(go())
    except (SchemaMismatch, StoreUnavailable, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    summary = ", ".join(f"{count} {kind}" for kind, count in added.items())
    print(f"copied from {args.source} into {redact(settings.url)}: {summary}")
    return 0
