"""`hoop-tui status`: what this gateway, and its fleet, look like right now. Reads the state
(PostgreSQL when `[state]` is set, else the data directory's SQLite); needs no running gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from hoop_tui.commands.common import add_config_arguments
from hoop_tui.errors import CommandError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="this gateway's state store, the fleet's instances, live sessions and pending holds",
    )
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(handler=run_status)


async def _fleet_status(config: Any, settings: Any) -> dict[str, Any]:
    from storage.pg_state import PgState, redact
    from storage.state import HoldStatus

    report: dict[str, Any] = {"instance": config.gateway_id, "state": redact(settings.url)}
    store = await PgState.open(
        settings.url, gateway_id=config.gateway_id, password=settings.password()
    )
    try:
        now = await store.now()  # heartbeats are the database's clock
        instances = await store.instances()
        live = await store.live_sessions()
        report["instances"] = [
            {
                **instance.to_json(),
                "heartbeat_age_s": round(now - instance.heartbeat_at, 1),
                "live_sessions": sum(1 for s in live if s.gateway_id == instance.id),
            }
            for instance in instances
        ]
        report["live_sessions"] = len(live)
        report["pending_holds"] = len(await store.list_holds(HoldStatus.PENDING))
    finally:
        await store.close()
    return report


def run_status(args: argparse.Namespace) -> int:
    from proxy.config import ConfigError, load_config, resolve_config_path
    from proxy.fleet.settings import state_settings
    from storage.pg_state import SchemaMismatch
    from storage.state import StoreUnavailable

    try:
        config = load_config(resolve_config_path(args.config))
        settings = state_settings(config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if settings is None:
        report: dict[str, Any] = {
            "instance": config.gateway_id,
            "state": f"SQLite in {config.data_dir}",
        }
    else:
        try:
            report = asyncio.run(_fleet_status(config, settings))
        except (SchemaMismatch, StoreUnavailable, ValueError) as exc:
            raise CommandError(str(exc)) from None
    if config.recordings is not None:  # the spool in front of object storage: files only
        from storage.spool import spool_status

        spool = spool_status(config.recordings, config.data_dir)
        report["recordings"] = spool.to_json()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"instance  {report['instance']}")
    print(f"state     {report['state']}")
    for instance in report.get("instances", []):
        print(
            f"  {instance['id']:<12} {instance['state']:<8} heartbeat"
            f" {instance['heartbeat_age_s']:>6.1f} s ago  {instance['live_sessions']} live"
            f"  {instance['host']} {instance['peer_address']}"
        )
    if "pending_holds" in report:
        print(f"live sessions {report['live_sessions']}, pending holds {report['pending_holds']}")
    if config.recordings is not None:
        print("\n".join(spool.lines()))
    return 0
