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
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.config import ConfigError, GatewayConfig
from proxy.fleet.settings import StateSettings, state_settings
from storage.state import LiveSession, StoreUnavailable

log = logging.getLogger("hoop.fleet")

SYNC_BATCH = 500  # catalogue rows copied to the shared store per transaction


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


def _session_registry(runtime: Any) -> Any:
    """The runtime's `proxy.session.SessionRegistry` (SSH and PostgreSQL), where it has one."""
    for owner in (runtime, getattr(runtime.ssh, "context", None)):
        for name in ("sessions", "session_registry"):
            registry = getattr(owner, name, None)
            if registry is not None and callable(getattr(registry, "live", None)):
                return registry
    return None


def live_sessions_of(runtime: Any) -> list[LiveSession]:
    """The sessions a running gateway carries now (SSH and PostgreSQL)."""
    gateway_id = runtime.config.gateway_id
    registry = _session_registry(runtime)
    if registry is not None:
        return [
            LiveSession(
                session_id,
                gateway_id,
                session.identity.name,
                str(session.target),
                session.protocol,
                session.client,
                session.header.started_at_us / 1e6 if session.header is not None else time.time(),
            )
            for session_id, session in registry.live().items()
        ]
    found = []
    for link in list(runtime.ssh.context.registry.links):
        if not link.session_id:
            continue
        header = link.recording.header if link.recording is not None else None
        started = header.started_at_us / 1e6 if header is not None else time.time()
        found.append(
            LiveSession(
                link.session_id,
                gateway_id,
                link.identity.name,
                link.target.name,
                "ssh",
                link.client,
                started,
            )
        )
    pg = getattr(runtime, "pg", None)
    for conn in list(getattr(pg, "connections", ()) or ()):
        if not conn.session_id or conn.identity is None or conn.target is None:
            continue
        header = conn.recording.header if conn.recording is not None else None
        started = header.started_at_us / 1e6 if header is not None else time.time()
        found.append(
            LiveSession(
                conn.session_id,
                gateway_id,
                conn.identity.name,
                conn.target.name,
                "postgres",
                conn.client,
                started,
            )
        )
    return found


class FleetMember:
    """The heartbeat and the reaper of one instance; it also keeps the shared registry of live
    sessions and the shared catalogue in step with this instance's own (the local catalogue.db
    goes on being written, so a database outage loses no row: the next beat copies it)."""

    def __init__(
        self,
        store: Any,
        settings: StateSettings,
        *,
        data_dir: Path | None = None,
        peer_address: str = "",
    ) -> None:
        self.store = store
        self.settings = settings
        self.data_dir = data_dir
        self.peer_address = peer_address
        self.host = socket.gethostname()
        self._task: asyncio.Task[None] | None = None
        self.reaped: list[str] = []
        self.live: Callable[[], list[LiveSession]] = list
        self._registered: set[str] = set()
        self._synced_us = 0  # catalogue rows changed since then are copied at the next beat
        self.throttle: Any = None  # a FleetThrottle: pulled at every beat

    async def start(self) -> None:
        gone = await self.store.forget_own_leftovers()
        if gone:
            log.warning("%d live session(s) of a previous run of this instance removed", len(gone))
        await self.store.heartbeat(
            host=self.host, peer_address=self.peer_address, version=_version(), starting=True
        )
        self._task = asyncio.ensure_future(self._beat_forever())

    async def sync(self) -> None:
        """Live sessions and catalogue rows of this instance, into the shared store."""
        now = {s.id: s for s in self.live()}
        # what the store really holds for this instance: a reaper that took it for lost (a
        # stall past lost_after) deleted its rows, and they must come back while they run
        stored = {s.id for s in await self.store.live_sessions(self.store.gateway_id)}
        if self._registered - stored:
            log.warning(
                "%d live session(s) of this instance were missing from the fleet's list (taken"
                " for lost?): registered again",
                len((self._registered - stored) & now.keys()),
            )
        self._registered &= stored
        for session_id in self._registered - now.keys():
            await self.store.unregister_live(session_id)
            self._registered.discard(session_id)
        for session_id, session in now.items():
            if session_id not in self._registered:
                await self.store.register_live(session)
                self._registered.add(session_id)
        if self.data_dir is not None:
            since = self._synced_us
            started = int(time.time() * 1e6)
            rows = await asyncio.to_thread(_catalogue_changes, self.data_dir, since)
            for first in range(0, len(rows), SYNC_BATCH):  # each batch well within timeout
                await self.store.upsert_sessions(rows[first : first + SYNC_BATCH])
            self._synced_us = started - 5_000_000  # rows written while we read come again
        if self.throttle is not None:
            await self.throttle.pull()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.store.heartbeat(host=self.host, peer_address=self.peer_address)
                await self.sync()
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
        """After the runtime stopped: the sessions it ended leave the shared registry, the
        catalogue gets their ends, and the instance is marked stopped (not lost)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):
            await self.sync()
            await self.store.stopped()


def _catalogue_changes(data_dir: Path, since_us: int) -> list[dict[str, Any]]:
    """This data directory's catalogue rows started or ended since `since_us`, or unfinished."""
    from storage.catalogue import CATALOGUE_NAME

    path = data_dir / CATALOGUE_NAME
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute(
            "SELECT * FROM sessions WHERE started_at_us >= ? OR ended_at_us IS NULL"
            " OR ended_at_us >= ?",
            (since_us, since_us),
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [dict(row) for row in rows]


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
        await _refuse_a_twin(store, settings)
    except (KeyMismatch, StoreUnavailable, FleetStartRefused) as exc:
        await store.close()
        raise FleetStartRefused(f"{config.gateway_id}: {exc}") from None
    return store, FleetMember(store, settings, data_dir=config.data_dir)


async def _refuse_a_twin(store: Any, settings: StateSettings) -> None:
    """Refuse to start beside a running instance with this id: its twin would take over its
    row (peer address), drop its live sessions and expire its holds as "session ended". A row
    still "up" is either that, or a run of this instance that crashed: wait until its
    heartbeat moves (a twin: refuse) or goes silent for `lost_after` (the crash: go on)."""

    async def mine() -> Any:
        return next((i for i in await store.instances() if i.id == store.gateway_id), None)

    first = await mine()
    if first is None or first.state != "up":
        return
    announced = False
    while True:
        now = await store.now()
        current = await mine()
        if current is None or current.state != "up":
            return
        if current.heartbeat_at > first.heartbeat_at:
            raise FleetStartRefused(
                f"an instance with this id is already running (on host {current.host}, heartbeat"
                f" {max(0.0, now - current.heartbeat_at):.1f} s ago); give each instance its own"
                " [gateway] instance"
            )
        if now - current.heartbeat_at > settings.lost_after_s:
            return  # a previous run that crashed
        if not announced:
            log.warning(
                "%s is marked up: waiting up to %g s to tell a crashed previous run from a twin",
                store.gateway_id,
                settings.lost_after_s,
            )
            announced = True
        await asyncio.sleep(min(settings.heartbeat_s / 2, 1.0))


async def join_fleet(runtime: Any, store: Any, member: FleetMember) -> Any:
    """Everything a fleet adds to a started runtime: the shared live list (`sessions.list`
    shows every instance's sessions), fleet-wide login throttling, and with
    `[gateway] peer_listen` the peer channel through which watch, screen and end reach a
    session on another instance; then the heartbeat. Returns the FleetWatch to stop."""
    from proxy.fleet.peer import fleet_secret
    from proxy.fleet.settings import peer_settings
    from proxy.fleet.throttle import FleetThrottle
    from proxy.fleet.watch import FleetWatch

    config = runtime.config
    member.live = lambda: live_sessions_of(runtime)
    # failed logins count across the fleet (SSH and PostgreSQL share the authenticator)
    member.throttle = FleetThrottle.like(runtime.auth.throttle, store)
    runtime.auth.throttle = member.throttle
    peer = peer_settings(config)
    watch = FleetWatch(
        control=runtime.control,
        store=store,
        gateway_id=config.gateway_id,
        secret=await asyncio.to_thread(fleet_secret, config.data_dir) if peer else b"",
        local_sessions=lambda: {s.id for s in live_sessions_of(runtime)},
    )
    control = runtime.control  # each op wrapped around whoever serves it locally
    if (local := control.handler("sessions.list")) is not None:
        runtime.control.register("sessions.list", watch.lister(local))
    if peer is not None:
        host, port, advertise = peer
        await watch.start(host, port)
        if port == 0:  # tests: the port the system picked
            advertise = f"{advertise.rpartition(':')[0]}:{watch.server.port}"
        member.peer_address = advertise
        if (local := control.handler("sessions.watch")) is not None:
            runtime.control.register("sessions.watch", watch.handler(local))
        for op in ("sessions.screen", "sessions.end"):
            if (local := control.handler(op)) is not None:
                runtime.control.register(op, watch.relay(op, local))
    await member.start()
    return watch
