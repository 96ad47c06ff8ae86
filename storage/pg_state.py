"""The shared `StateStore` of a fleet: holds, grants, audit, the session catalogue, live
sessions and failed logins in one PostgreSQL database (`[state] url`), used by every gateway.

psycopg 3, async, with a pool; every method is one transaction. A change to a hold or grant
locks its row (`SELECT ... FOR UPDATE`), so two approvers on two instances deciding at once
are serialised by PostgreSQL: the second change function sees the first's result and refuses.

Wake-ups: each committed change sends `NOTIFY hoop_hints` in its transaction (delivered on
commit). `listen_forever` keeps one dedicated connection (outside the pool) on `LISTEN`; a
notification is only a hint ("read it again"), and after that connection is lost and comes
back every receiver gets `Hint("resync", ...)`: re-read all pending work, since notifications
sent meanwhile are gone.

Also here, for the fleet (not part of `StateStore`): instances and their heartbeats, the reaper
that ends a silent instance's sessions and withdraws its holds, and the keys every instance
must share. Schema: storage/pg_migrations.py, applied by `hoop-tui state migrate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from storage.catalogue import SessionQuery, SessionRow
from storage.pg_migrations import LATEST, MIGRATIONS, Migration
from storage.schema import RecordingHeader
from storage.state import (
    AuditEntry,
    Change,
    DuplicateId,
    Grant,
    GrantStatus,
    Hint,
    HintReceiver,
    Hold,
    HoldStatus,
    LiveSession,
    StoreUnavailable,
)
from storage.writer import RecordingSummary

log = logging.getLogger("hoop.state")

CHANNEL = "hoop_hints"
RESYNC = "resync"  # a Hint kind: the listener was away, re-read everything pending
ENDED_UNKNOWN = "ended-unknown"
DEFAULT_TIMEOUT_S = 5.0
MIGRATION_STEPS = 30  # a migration's SQL may take this many steps' time (a big table)
WHAT_TO_CHECK = "check that PostgreSQL is running and reachable from here ([state] url, timeout)"
LOCK_TIMEOUT = "5s"  # a row another instance keeps locked longer than this: StoreUnavailable

T = TypeVar("T", Hold, Grant)
R = TypeVar("R")
_KINDS: dict[type[Any], tuple[str, str, str]] = {
    Hold: ("holds", "created_at", "hold"),
    Grant: ("grants", "requested_at", "grant"),
}


class SchemaMismatch(Exception):
    """The database's schema is not the one this gateway was built for."""


class KeyMismatch(Exception):
    """A key that every instance must share differs from what the state database holds."""


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    host: str
    peer_address: str
    version: str
    started_at: float
    heartbeat_at: float
    state: str  # "up" | "lost" | "stopped"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "peer_address": self.peer_address,
            "version": self.version,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
            "state": self.state,
        }


def connect_kwargs(password: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"options": f"-c lock_timeout={LOCK_TIMEOUT}"}
    if password is not None:
        kwargs["password"] = password
    return kwargs


def redact(url: str) -> str:
    """The URL as logs may show it: no password even if someone put one there."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable PostgreSQL URL)"
    host, db = info.get("host", "localhost"), info.get("dbname", "")
    return f"postgresql://{info.get('user', '')}@{host}:{info.get('port', 5432)}/{db}"


# -- migrations --------------------------------------------------------------------------------


async def schema_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The highest migration applied; 0 for an empty database."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(
    url: str,
    password: str | None = None,
    migrations: Iterable[Migration] = MIGRATIONS,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Migration]:
    """Apply the migrations the database lacks, each in its own transaction, under an advisory
    lock (two instances migrating at once: the second waits, then finds nothing to do).
    A database that does not answer (refused, or silent: a stalled host) is StoreUnavailable
    after `timeout_s` for the connection and twice that for each step; a migration's own SQL
    gets `MIGRATION_STEPS` times as long (it may rewrite a big table)."""
    applied: list[Migration] = []
    step = 2 * timeout_s

    async def bounded(sql: str | bytes, params: Any = None, *, factor: float = 1.0) -> Any:
        return await _within(step * factor, conn.execute(sql, params))

    try:
        async with asyncio.timeout(timeout_s + 1):
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=max(1, round(timeout_s)),
                **connect_kwargs(password),
            )  # fmt: skip
        async with conn:
            await bounded("SELECT pg_advisory_lock(hashtext('hoop_tui schema'))")
            try:
                await bounded(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                current = await _within(step, schema_version(conn))
                for migration in migrations:
                    if migration.version <= current:
                        continue
                    # BEGIN/COMMIT by hand: a transaction block's rollback would wait
                    # unbounded on a silent database; closing the connection rolls back
                    await bounded("BEGIN")
                    try:
                        await bounded(migration.sql.encode(), factor=MIGRATION_STEPS)
                        await bounded(
                            "INSERT INTO schema_migrations (version, name, applied_at)"
                            " VALUES (%s, %s, %s)",
                            (migration.version, migration.name, time.time()),
                        )
                        await bounded("COMMIT")
                    except psycopg.Error:
                        with contextlib.suppress(psycopg.Error, TimeoutError):
                            await bounded("ROLLBACK")
                        raise
                    applied.append(migration)
            finally:
                with contextlib.suppress(psycopg.Error, TimeoutError):
                    await bounded("SELECT pg_advisory_unlock(hashtext('hoop_tui schema'))")
    except TimeoutError:
        raise StoreUnavailable(
            f"the state database {redact(url)} did not answer within {step:g} s"
            f"{_applied_note(applied)}; {WHAT_TO_CHECK}"
        ) from None
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(
            f"the state database {redact(url)} did not answer: {_first_line(exc)}"
            f"{_applied_note(applied)}; {WHAT_TO_CHECK}"
        ) from None
    return applied


def _applied_note(applied: list[Migration]) -> str:
    return f" (after applying {applied[-1].version}: {applied[-1].name})" if applied else ""


# -- the store ---------------------------------------------------------------------------------


class PgState:
    """See the module docstring. `await PgState.open(url, gateway_id=...)`, use it from one
    event loop, `await close()`."""

    def __init__(
        self,
        url: str,
        *,
        gateway_id: str = "",
        password: str | None = None,
        pool_size: int = 10,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.gateway_id = gateway_id
        self.timeout_s = timeout_s
        self._password = password
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            url,
            kwargs=connect_kwargs(password),
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout_s,
            check=AsyncConnectionPool.check_connection,  # a restarted database: drop dead ones
        )
        self._receivers: list[HintReceiver] = []
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # set while the LISTEN connection is up

    @classmethod
    async def open(
        cls, url: str, *, gateway_id: str = "", password: str | None = None, **options: Any
    ) -> PgState:
        """Connect and check the schema; SchemaMismatch or StoreUnavailable if that fails."""
        store = cls(url, gateway_id=gateway_id, password=password, **options)
        try:
            await store._pool.open(wait=True, timeout=store.timeout_s)
        except PoolTimeout:
            await store._pool.close()
            raise StoreUnavailable(
                f"the state database {redact(url)} did not answer within {store.timeout_s:g} s;"
                f" {WHAT_TO_CHECK}"
            ) from None
        try:  # a database gone silent after the pool's first connection: bounded too
            found = await _within(2 * store.timeout_s, store._schema_version())
        except (TimeoutError, psycopg.OperationalError, PoolTimeout) as exc:
            await store._pool.close()
            said = "" if isinstance(exc, TimeoutError) else f": {_first_line(exc)}"
            raise StoreUnavailable(
                f"the state database {redact(url)} did not answer within"
                f" {2 * store.timeout_s:g} s{said}; {WHAT_TO_CHECK}"
            ) from None
        if found != LATEST:
            await store._pool.close()
            raise SchemaMismatch(
                f"the state database {redact(url)} has schema version {found}, this gateway needs"
                f" {LATEST}: run `hoop-tui state migrate`"
                + (" with the newer hoop-tui" if found > LATEST else "")
            )
        store._listener = asyncio.ensure_future(store._listen_forever())
        return store

    async def _schema_version(self) -> int:
        async with self._pool.connection() as conn:
            return await schema_version(conn)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _cursor(
        self, *, bounded: bool = True
    ) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
        """One transaction. A database that does not answer becomes StoreUnavailable, also
        one that stays silent (a stalled host or network: no error ever comes), after twice
        `timeout_s` (a connection from the pool, then the statements); `bounded=False` for
        a bulk copy an operator runs and watches (`state copy`)."""
        try:
            async with (
                asyncio.timeout(2 * self.timeout_s if bounded else None),
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=dict_row) as cur,
            ):
                yield cur
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(
                f"the state database {redact(self.url)} did not answer: {_first_line(exc)}"
            ) from None
        except TimeoutError:
            raise StoreUnavailable(
                f"the state database {redact(self.url)} did not answer within"
                f" {2 * self.timeout_s:g} s"
            ) from None

    async def _notify(self, cur: psycopg.AsyncCursor[Any], kind: str, item_id: str) -> None:
        payload = json.dumps({"kind": kind, "id": item_id, "origin": self.gateway_id})
        await cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    # -- hints ---------------------------------------------------------------------------------

    def on_hint(self, receiver: HintReceiver) -> Callable[[], None]:
        self._receivers.append(receiver)
        return lambda: self._receivers.remove(receiver) if receiver in self._receivers else None

    def _deliver(self, hint: Hint) -> None:
        for receiver in list(self._receivers):
            try:
                receiver(hint)
            except Exception:  # one broken receiver must not silence the others
                log.exception("a hint receiver failed on %s", hint)

    async def _listen_forever(self) -> None:
        """The dedicated LISTEN connection; after a reconnect, a resync hint."""
        first = True
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    application_name=f"hoop-tui {self.gateway_id} notifications"[:63],
                    **connect_kwargs(self._password),
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.1
                    if not first:
                        log.warning("state database notifications are back; reading all again")
                        self._deliver(Hint(RESYNC, "", ""))
                    first = False
                    while True:
                        async for note in conn.notifies(timeout=self.timeout_s):
                            try:
                                data = json.loads(note.payload)
                                kind, item, origin = data["kind"], data["id"], data["origin"]
                                hint = Hint(str(kind), str(item), str(origin))
                            except (ValueError, KeyError, TypeError):
                                continue
                            self._deliver(hint)
                        await self._still_there(conn)
            except psycopg.Error as exc:
                if self.listening.is_set():
                    log.warning("lost the state database's notifications: %s", _first_line(exc))
                self.listening.clear()
                first = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _still_there(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """After `timeout_s` without a notification: whether the LISTEN connection still
        answers. One that died without a word (a firewall dropping an idle connection's state,
        a stalled host) would otherwise leave this instance deaf to every other instance's
        changes for good (a grant revoked elsewhere never revoked here): it is dropped, and the
        next one starts with a resync."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await conn.execute("SELECT 1")
        except TimeoutError:
            raise psycopg.OperationalError(
                f"no answer within {self.timeout_s:g} s on the notification connection"
            ) from None

    # -- holds and grants ----------------------------------------------------------------------

    async def _add(self, item: Hold | Grant, audit: AuditEntry) -> None:
        table, time_column, kind = _KINDS[type(item)]
        created = item.created_at if isinstance(item, Hold) else item.requested_at
        extra_col, extra_val = (", gateway_id", ", %s") if isinstance(item, Hold) else ("", "")
        params: tuple[Any, ...] = (item.id, str(item.status), created, json.dumps(item.to_json()))
        if isinstance(item, Hold):
            params += (item.gateway_id,)
        async with self._cursor() as cur:
            await cur.execute(
                f"INSERT INTO {table} (id, status, {time_column}, body{extra_col})"
                f" VALUES (%s, %s, %s, %s{extra_val}) ON CONFLICT (id) DO NOTHING",
                params,
            )
            if cur.rowcount != 1:
                raise DuplicateId(item.id)
            await _insert_audit(cur, audit)
            await self._notify(cur, kind, item.id)

    async def _get(self, cls: type[T], item_id: str) -> T | None:
        table = _KINDS[cls][0]
        async with self._cursor() as cur:
            await cur.execute(f"SELECT body FROM {table} WHERE id = %s", (item_id,))
            row = await cur.fetchone()
        return None if row is None else cls.from_json(row["body"])

    async def _list(self, cls: type[T], status: str | None) -> list[T]:
        table, order, _ = _KINDS[cls]
        sql = f"SELECT body FROM {table}"
        params: tuple[str, ...] = ()
        if status is not None:
            sql, params = sql + " WHERE status = %s", (status,)
        async with self._cursor() as cur:
            await cur.execute(f"{sql} ORDER BY {order}", params)
            rows = await cur.fetchall()
        return [cls.from_json(row["body"]) for row in rows]

    async def _change(self, cls: type[T], item_id: str, change: Change[T]) -> T | None:
        table, _, kind = _KINDS[cls]
        async with self._cursor() as cur:
            await cur.execute(f"SELECT body FROM {table} WHERE id = %s FOR UPDATE", (item_id,))
            row = await cur.fetchone()
            if row is None:
                return None
            item = cls.from_json(row["body"])
            entries = change(item)  # Refused: the transaction rolls back, nothing written
            await cur.execute(
                f"UPDATE {table} SET status = %s, body = %s WHERE id = %s",
                (str(item.status), json.dumps(item.to_json()), item_id),
            )
            for entry in entries:
                await _insert_audit(cur, entry)
            await self._notify(cur, kind, item_id)
        return item

    async def add_hold(self, hold: Hold, audit: AuditEntry) -> None:
        await self._add(hold, audit)

    async def get_hold(self, hold_id: str) -> Hold | None:
        return await self._get(Hold, hold_id)

    async def list_holds(self, status: HoldStatus | None = None) -> list[Hold]:
        return await self._list(Hold, None if status is None else str(status))

    async def change_hold(self, hold_id: str, change: Change[Hold]) -> Hold | None:
        return await self._change(Hold, hold_id, change)

    async def add_grant(self, grant: Grant, audit: AuditEntry) -> None:
        await self._add(grant, audit)

    async def get_grant(self, grant_id: str) -> Grant | None:
        return await self._get(Grant, grant_id)

    async def list_grants(self, status: GrantStatus | None = None) -> list[Grant]:
        return await self._list(Grant, None if status is None else str(status))

    async def change_grant(self, grant_id: str, change: Change[Grant]) -> Grant | None:
        return await self._change(Grant, grant_id, change)

    # -- audit ---------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> None:
        async with self._cursor() as cur:
            await _insert_audit(cur, entry)

    async def audit_log(self, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT at, actor, action, subject, detail FROM audit ORDER BY seq DESC"
        params: tuple[int, ...] = ()
        if limit is not None:
            sql, params = sql + " LIMIT %s", (limit,)
        async with self._cursor() as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        return [
            AuditEntry(r["at"], r["actor"], r["action"], r["subject"], r["detail"])
            for r in reversed(rows)
        ]

    # -- the session catalogue -----------------------------------------------------------------

    async def add_session(self, header: RecordingHeader, path: Path | str) -> None:
        async with self._cursor() as cur:
            await cur.execute(
                'INSERT INTO sessions (id, path, "user", service_account, target, protocol,'
                " client, gateway_id, started_at_us) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    header.session_id,
                    str(path),
                    header.user,
                    header.service_account,
                    header.target,
                    header.protocol,
                    header.client,
                    header.gateway_id,
                    header.started_at_us,
                ),
            )

    async def finish_session(self, summary: RecordingSummary) -> None:
        header, verdicts = summary.header, summary.verdicts
        async with self._cursor() as cur:
            await cur.execute(
                "UPDATE sessions SET ended_at_us = %s, end_reason = %s, size = %s, events = %s,"
                " denies = %s, holds = %s, counts = %s, verdicts = %s WHERE id = %s",
                (
                    header.started_at_us + summary.end_us,
                    summary.end_reason,
                    summary.size,
                    summary.event_count,
                    verdicts.get("deny", 0),
                    summary.counts.get("hold_requested", 0),
                    json.dumps(summary.counts, sort_keys=True),
                    json.dumps(verdicts, sort_keys=True),
                    header.session_id,
                ),
            )

    async def find_sessions(self, query: SessionQuery) -> list[SessionRow]:
        sql, params = sessions_sql(query)
        async with self._cursor() as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
        return [session_row(r) for r in rows]

    async def get_session(self, session_id: str) -> SessionRow | None:
        async with self._cursor() as cur:
            await cur.execute("SELECT * FROM sessions WHERE id = %s", (session_id,))
            row = await cur.fetchone()
        return None if row is None else session_row(row)

    async def remove_session(self, session_id: str) -> None:
        async with self._cursor() as cur:
            await cur.execute("DELETE FROM sessions WHERE id = %s", (session_id,))

    async def upsert_sessions(self, rows: list[dict[str, Any]]) -> None:
        """Catalogue rows as an instance's local catalogue.db holds them (the fleet member
        copies them every heartbeat); an end already known is not forgotten."""
        await _upsert_sessions(self, rows)

    # -- live sessions -------------------------------------------------------------------------

    async def register_live(self, session: LiveSession) -> None:
        async with self._cursor() as cur:
            await cur.execute(
                'INSERT INTO live_sessions (id, gateway_id, "user", target, protocol, client,'
                " started_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
                " SET gateway_id = EXCLUDED.gateway_id",
                (
                    session.id,
                    session.gateway_id,
                    session.user,
                    session.target,
                    session.protocol,
                    session.client,
                    session.started_at,
                ),
            )
            await self._notify(cur, "session", session.id)

    async def unregister_live(self, session_id: str) -> None:
        async with self._cursor() as cur:
            await cur.execute("DELETE FROM live_sessions WHERE id = %s", (session_id,))
            await self._notify(cur, "session", session_id)

    async def live_sessions(self, gateway_id: str | None = None) -> list[LiveSession]:
        sql = (
            'SELECT id, gateway_id, "user", target, protocol, client, started_at FROM live_sessions'
        )
        params: tuple[str, ...] = ()
        if gateway_id is not None:
            sql, params = sql + " WHERE gateway_id = %s", (gateway_id,)
        async with self._cursor() as cur:
            await cur.execute(sql + " ORDER BY started_at", params)
            rows = await cur.fetchall()
        return [LiveSession(**row) for row in rows]

    # -- failed logins -------------------------------------------------------------------------

    async def note_login_failure(self, key: str, at: float, forget_after: float) -> int:
        async with self._cursor() as cur:
            await cur.execute(
                "DELETE FROM login_failures WHERE key = %s AND at < %s", (key, at - forget_after)
            )
            await cur.execute("INSERT INTO login_failures (key, at) VALUES (%s, %s)", (key, at))
            await cur.execute("SELECT COUNT(*) AS n FROM login_failures WHERE key = %s", (key,))
            row = await cur.fetchone()
        return int(row["n"]) if row is not None else 1

    async def login_failure_counts(self, since: float) -> dict[str, int]:
        """Failures per key since `since` (epoch seconds), across the fleet."""
        return await _login_failure_counts(self, since)

    async def clear_login_failures(self, key: str) -> None:
        async with self._cursor() as cur:
            await cur.execute("DELETE FROM login_failures WHERE key = %s", (key,))

    # -- instances (the fleet) -----------------------------------------------------------------

    async def heartbeat(
        self, *, host: str, peer_address: str = "", version: str = "", starting: bool = False
    ) -> None:
        """This instance is alive (`starting`: it just started, a new run). Times are the
        database's clock, so instances whose clocks differ still judge each other fairly."""
        async with self._cursor() as cur:
            now = await _db_now(cur)
            if starting:
                await cur.execute(
                    "INSERT INTO instances (id, host, peer_address, version, started_at,"
                    " heartbeat_at, state) VALUES (%s, %s, %s, %s, %s, %s, 'up')"
                    " ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host,"
                    " peer_address = EXCLUDED.peer_address, version = EXCLUDED.version,"
                    " started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,"
                    " state = 'up'",
                    (self.gateway_id, host, peer_address, version, now, now),
                )
            else:
                await cur.execute(
                    "UPDATE instances SET heartbeat_at = %s, state = 'up' WHERE id = %s",
                    (now, self.gateway_id),
                )

    async def stopped(self) -> None:
        """This instance stops cleanly: not lost, nothing for the reaper."""
        async with self._cursor() as cur:
            await cur.execute(
                "UPDATE instances SET state = 'stopped', heartbeat_at = %s WHERE id = %s",
                (await _db_now(cur), self.gateway_id),
            )

    async def now(self) -> float:
        """The database's clock (epoch seconds): what heartbeats are measured against."""
        async with self._cursor() as cur:
            return await _db_now(cur)

    async def instances(self) -> list[Instance]:
        async with self._cursor() as cur:
            await cur.execute(
                "SELECT id, host, peer_address, version, started_at, heartbeat_at, state"
                " FROM instances ORDER BY id"
            )
            rows = await cur.fetchall()
        return [Instance(**row) for row in rows]

    async def forget_own_leftovers(self) -> list[str]:
        """At start: what a previous run of this instance left registered as live (it crashed)
        is not live. Returns the session ids removed."""
        async with self._cursor() as cur:
            await cur.execute(
                "DELETE FROM live_sessions WHERE gateway_id = %s RETURNING id", (self.gateway_id,)
            )
            gone = [row["id"] for row in await cur.fetchall()]
            for session_id in gone:
                await self._notify(cur, "session", session_id)
        return gone

    async def reap(self, stale_after_s: float, now: float | None = None) -> list[str]:
        """Instances silent for `stale_after_s`: mark them lost, their live sessions
        ended-unknown in the catalogue, their pending holds withdrawn. One reaper per instance
        (rows locked, SKIP LOCKED): two instances reaping at once do it once. Returns the ids
        of the instances reaped."""
        reaped: list[str] = []
        async with self._cursor() as cur:
            now = await _db_now(cur) if now is None else now
            await cur.execute(
                "SELECT id, heartbeat_at FROM instances WHERE state = 'up' AND heartbeat_at < %s"
                " AND id <> %s FOR UPDATE SKIP LOCKED",
                (now - stale_after_s, self.gateway_id),
            )
            for row in await cur.fetchall():
                lost, last = row["id"], float(row["heartbeat_at"])
                reason = f"{ENDED_UNKNOWN}: gateway {lost} stopped heart-beating"
                await cur.execute("UPDATE instances SET state = 'lost' WHERE id = %s", (lost,))
                await cur.execute(
                    "DELETE FROM live_sessions WHERE gateway_id = %s RETURNING id", (lost,)
                )
                for live in await cur.fetchall():
                    await self._notify(cur, "session", live["id"])
                await cur.execute(
                    "UPDATE sessions SET ended_at_us = GREATEST(started_at_us, %s),"
                    " end_reason = %s WHERE gateway_id = %s AND ended_at_us IS NULL",
                    (int(last * 1e6), reason, lost),
                )
                await cur.execute(
                    "SELECT body FROM holds WHERE status = %s AND gateway_id = %s FOR UPDATE",
                    (str(HoldStatus.PENDING), lost),
                )
                for held in await cur.fetchall():
                    hold = Hold.from_json(held["body"])
                    hold.status = HoldStatus.WITHDRAWN
                    hold.decided_at = now
                    hold.note = f"gateway {lost} stopped"
                    await cur.execute(
                        "UPDATE holds SET status = %s, body = %s WHERE id = %s",
                        (str(hold.status), json.dumps(hold.to_json()), hold.id),
                    )
                    entry = AuditEntry(
                        now, self.gateway_id, "hold_withdrawn", hold.id, {"reason": hold.note}
                    )
                    await _insert_audit(cur, entry)
                    await self._notify(cur, "hold", hold.id)
                await _insert_audit(
                    cur,
                    AuditEntry(now, self.gateway_id, "instance_lost", lost, {"last_seen": last}),
                )
                reaped.append(lost)
        return reaped

    async def check_keys(self, fingerprints: dict[str, str]) -> None:
        """Every instance must hold the same SSH host keys and recording signing key: the first
        instance records their fingerprints, every later start compares. KeyMismatch names the
        key and both fingerprints; nothing is overwritten."""
        now = time.time()
        async with self._cursor() as cur:
            for name, fingerprint in sorted(fingerprints.items()):
                await cur.execute(
                    "INSERT INTO fleet_keys (name, fingerprint, set_by, set_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                    (name, fingerprint, self.gateway_id, now),
                )
                await cur.execute(
                    "SELECT fingerprint, set_by FROM fleet_keys WHERE name = %s", (name,)
                )
                row = await cur.fetchone()
                if row is not None and row["fingerprint"] != fingerprint:
                    raise KeyMismatch(
                        f"this instance's {name} is {fingerprint}, but the fleet's (first"
                        f" registered by {row['set_by']}) is {row['fingerprint']}: copy the"
                        " fleet's keys into this data directory (docs/deployment.md)"
                    )


async def _db_now(cur: psycopg.AsyncCursor[Any]) -> float:
    await cur.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now")
    row = await cur.fetchone()
    assert row is not None
    return float(row["now"])


async def _insert_audit(cur: psycopg.AsyncCursor[Any], entry: AuditEntry) -> None:
    await cur.execute(
        "INSERT INTO audit (at, actor, action, subject, detail) VALUES (%s, %s, %s, %s, %s)",
        (entry.at, entry.actor, entry.action, entry.subject, json.dumps(entry.detail)),
    )


def sessions_sql(query: SessionQuery) -> tuple[str, list[Any]]:
    """The SELECT on the shared catalogue for `query`, newest first (PgState.find_sessions and
    the readers' proxy.fleet.catalogue run the same)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ('"user"', query.user),
        ("target", query.target),
        ("protocol", query.protocol),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if query.since_us is not None:
        clauses.append("COALESCE(ended_at_us, 9223372036854775807) >= %s")
        params.append(query.since_us)
    if query.until_us is not None:
        clauses.append("started_at_us <= %s")
        params.append(query.until_us)
    if query.unfinished_only:
        clauses.append("ended_at_us IS NULL")
    sql = "SELECT * FROM sessions"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY started_at_us DESC"
    if query.limit is not None:
        sql += " LIMIT %s"
        params.append(query.limit)
    return sql, params


def session_row(row: dict[str, Any]) -> SessionRow:
    return SessionRow(
        id=row["id"],
        path=row["path"],
        user=row["user"],
        service_account=bool(row["service_account"]),
        target=row["target"],
        protocol=row["protocol"],
        client=row["client"],
        gateway_id=row["gateway_id"],
        started_at_us=row["started_at_us"],
        ended_at_us=row["ended_at_us"],
        end_reason=row["end_reason"],
        size=row["size"],
        events=row["events"],
        denies=row["denies"],
        holds=row["holds"],
        counts=dict(row["counts"]),
        verdicts=dict(row["verdicts"]),
    )


async def _within(seconds: float, work: Awaitable[R]) -> R:
    """`work`'s result, or TimeoutError after `seconds`. On a silent database psycopg answers
    a cancelled query with a server-side cancel and waits up to 10 s more for it (which a
    silent database never confirms); a second cancellation makes it close the connection at
    once, so giving up takes `seconds`, not `seconds` + 10."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.2)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
            await task
        raise TimeoutError
    return task.result()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# -- moving an embedded gateway's state in -------------------------------------------------------


async def copy_from_sqlite(store: PgState, data_dir: Path) -> dict[str, int]:
    """Copy state.db and catalogue.db of an embedded gateway's data directory into `store`,
    in one transaction. Rows already there (same id) are kept, so a second run copies nothing
    twice; the audit log is copied once per source directory. Returns what was added."""
    import sqlite3

    from storage.catalogue import CATALOGUE_NAME
    from storage.state import STATE_NAME

    source = str(data_dir.resolve())
    state_path, catalogue_path = data_dir / STATE_NAME, data_dir / CATALOGUE_NAME
    if not state_path.exists() and not catalogue_path.exists():
        raise FileNotFoundError(f"{data_dir} holds neither {STATE_NAME} nor {CATALOGUE_NAME}")

    def read(path: Path, sql: str) -> list[sqlite3.Row]:
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            return list(db.execute(sql))
        except sqlite3.OperationalError:  # a table an older gateway did not have
            return []
        finally:
            db.close()

    holds = await asyncio.to_thread(read, state_path, "SELECT body FROM holds")
    grants = await asyncio.to_thread(read, state_path, "SELECT body FROM grants")
    audit = await asyncio.to_thread(
        read, state_path, "SELECT at, actor, action, subject, detail FROM audit ORDER BY seq"
    )
    sessions = await asyncio.to_thread(read, catalogue_path, "SELECT * FROM sessions")
    added = {"holds": 0, "grants": 0, "audit": 0, "sessions": 0}
    async with store._cursor(bounded=False) as cur:
        # one copy at a time: a second one waits, then finds the audit log copied already
        await cur.execute("SELECT pg_advisory_xact_lock(hashtext('hoop_tui state copy'))")
        for row in holds:
            hold = Hold.from_json(json.loads(row["body"]))
            await cur.execute(
                "INSERT INTO holds (id, status, gateway_id, created_at, body) VALUES"
                " (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (hold.id, str(hold.status), hold.gateway_id, hold.created_at, row["body"]),
            )
            added["holds"] += cur.rowcount
        for row in grants:
            grant = Grant.from_json(json.loads(row["body"]))
            await cur.execute(
                "INSERT INTO grants (id, status, requested_at, body) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (grant.id, str(grant.status), grant.requested_at, row["body"]),
            )
            added["grants"] += cur.rowcount
        await cur.execute(
            "SELECT 1 FROM audit WHERE action = 'state_copied' AND subject = %s", (source,)
        )
        if await cur.fetchone() is None:
            for row in audit:
                entry = AuditEntry(
                    row["at"],
                    row["actor"],
                    row["action"],
                    row["subject"],
                    json.loads(row["detail"]),
                )
                await _insert_audit(cur, entry)
                added["audit"] += 1
            await _insert_audit(
                cur, AuditEntry(time.time(), "hoop-tui", "state_copied", source, dict(added))
            )
        for row in sessions:
            await cur.execute(
                'INSERT INTO sessions (id, path, "user", service_account, target, protocol,'
                " client, gateway_id, started_at_us, ended_at_us, end_reason, size, events,"
                " denies, holds, counts, verdicts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (
                    row["id"],
                    row["path"],
                    row["user"],
                    bool(row["service_account"]),
                    row["target"],
                    row["protocol"],
                    row["client"],
                    row["gateway_id"],
                    row["started_at_us"],
                    row["ended_at_us"],
                    row["end_reason"],
                    row["size"],
                    row["events"],
                    row["denies"],
                    row["holds"],
                    row["counts"],
                    row["verdicts"],
                ),
            )
            added["sessions"] += cur.rowcount
    return added


async def _upsert_sessions(store: PgState, rows: list[dict[str, Any]]) -> None:
    async with store._cursor() as cur:
        for row in rows:
            await cur.execute(
                'INSERT INTO sessions (id, path, "user", service_account, target, protocol,'
                " client, gateway_id, started_at_us, ended_at_us, end_reason, size, events,"
                " denies, holds, counts, verdicts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
                # the carrying instance says the session is open: the reaper's ended-unknown
                # (it took a stalled instance for lost) is undone; any other end stands
                " path = EXCLUDED.path,"
                " ended_at_us = CASE WHEN EXCLUDED.ended_at_us IS NULL AND"
                " sessions.end_reason LIKE %s THEN NULL ELSE COALESCE(EXCLUDED.ended_at_us,"
                " sessions.ended_at_us) END,"
                " end_reason = CASE WHEN EXCLUDED.ended_at_us IS NULL AND"
                " sessions.end_reason LIKE %s THEN NULL ELSE COALESCE(EXCLUDED.end_reason,"
                " sessions.end_reason) END, size = EXCLUDED.size, events = EXCLUDED.events,"
                " denies = EXCLUDED.denies, holds = EXCLUDED.holds, counts = EXCLUDED.counts,"
                " verdicts = EXCLUDED.verdicts",
                (
                    row["id"],
                    row["path"],
                    row["user"],
                    bool(row["service_account"]),
                    row["target"],
                    row["protocol"],
                    row["client"],
                    row["gateway_id"],
                    row["started_at_us"],
                    row["ended_at_us"],
                    row["end_reason"],
                    row["size"],
                    row["events"],
                    row["denies"],
                    row["holds"],
                    row["counts"],
                    row["verdicts"],
                    f"{ENDED_UNKNOWN}:%",
                    f"{ENDED_UNKNOWN}:%",
                ),
            )


async def _login_failure_counts(store: PgState, since: float) -> dict[str, int]:
    async with store._cursor() as cur:
        await cur.execute(
            "SELECT key, COUNT(*) AS n FROM login_failures WHERE at >= %s GROUP BY key", (since,)
        )
        return {row["key"]: int(row["n"]) for row in await cur.fetchall()}
