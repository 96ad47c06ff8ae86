"""One gateway as a member of a fleet: it opens the shared state, proves it holds the fleet's
keys, registers itself with a heartbeat, and reaps instances that stopped heart-beating.

`open_state(config)` is what the runtime calls first: without `[state]` it returns the
embedded SQLite store and no member, exactly as a lone gateway always ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, GatewayConfig
from proxy.fleet.settings import StateSettings, state_settings
from storage.state import StoreUnavailable

log = logging.getLogger("hoop.fleet")


class FleetStartRefused(Exception):
    """This instance must not start (keys differ from the fleet's, schema mismatch, no
    database): the message says what to do."""


def key_fingerprints(data_dir: Path) -> dict[str, str]:
    """The fingerprints of the keys every instance must share: the SSH host CA (what callers'
    known_hosts trust), the SSH host key, and the recording signing key. Keys a fresh data
    directory lacks are created, as the gateway would at start; then they differ, and the
    start is refused, which is the point."""
    from proxy.ssh.hostkeys import HostKeys
    from storage.signing import key_id, load_or_create_signing_key

    host = HostKeys(data_dir / "ssh")
    signing = load_or_create_signing_key(data_dir)
    return {
        "ssh_host_ca": str(host.ca.get_fingerprint("sha256")),
        "ssh_host_key": str(host.host_key.get_fingerprint("sha256")),
        "recording_signing_key": key_id(signing.public_key()),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hoop_tui")
    except PackageNotFoundError:
        return ""


class FleetMember:
    """The heartbeat and the reaper of one instance."""

    def __init__(self, store: Any, settings: StateSettings, *, peer_address: str = "") -> None:
        self.store = store
        self.settings = settings
        self.peer_address = peer_address
        self.host = socket.gethostname()
        self._task: asyncio.Task[None] | None = None
        self.reaped: list[str] = []

    async def start(self) -> None:
        gone = await self.store.forget_own_leftovers()
        if gone:
            log.warning("%d live session(s) of a previous run of this instance removed", len(gone))
        await self.store.heartbeat(
            host=self.host, peer_address=self.peer_address, version=_version(), starting=True
        )
        self._task = asyncio.ensure_future(self._beat_forever())

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.store.heartbeat(host=self.host, peer_address=self.peer_address)
                lost = await self.store.reap(self.settings.lost_after_s)
            except StoreUnavailable as exc:
                log.warning("heartbeat: %s", exc)
                continue
            for instance in lost:
                log.warning(
                    "instance %s stopped heart-beating: its live sessions are ended-unknown,"
                    " its holds withdrawn",
                    instance,
                )
            self.reaped.extend(lost)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):
            await self.store.stopped()


async def open_state(config: GatewayConfig) -> tuple[Any, FleetMember | None]:
    """The state store this gateway uses, and its fleet membership (None: embedded)."""
    settings = state_settings(config)
    if settings is None:
        from storage.sqlite_state import SqliteState

        return SqliteState.in_data_dir(config.data_dir, gateway_id=config.gateway_id), None
    from storage.pg_state import KeyMismatch, PgState, SchemaMismatch

    try:
        password = settings.password()
    except ValueError as exc:
        raise ConfigError(config.path, "state.password_env", str(exc)) from None
    try:
        store = await PgState.open(
            settings.url,
            gateway_id=config.gateway_id,
            password=password,
            pool_size=settings.pool_size,
            timeout_s=settings.timeout_s,
        )
    except (SchemaMismatch, StoreUnavailable) as exc:
        raise FleetStartRefused(str(exc)) from None
    try:
        fingerprints = await asyncio.to_thread(key_fingerprints, config.data_dir)
        await store.check_keys(fingerprints)
    except (KeyMismatch, StoreUnavailable) as exc:
        await store.close()
        raise FleetStartRefused(f"{config.gateway_id}: {exc}") from None
    return store, FleetMember(store, settings)
