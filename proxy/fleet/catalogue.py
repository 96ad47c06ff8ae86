"""The session catalogue as readers see it (`hoop-tui sessions`, the session-id lookups of
info/verify/screen/play/export, search, the workstation's recordings).

Without `[state]` that is the data directory's catalogue.db. With `[state]` it is the fleet's:
the shared `sessions` table in PostgreSQL, which every instance's FleetMember fills from its
own catalogue.db at each heartbeat, with this data directory's own rows laid over it. The local
row stays the source for this instance's sessions (it is written at session start and end
whatever the database does, so an outage loses nothing); the shared copy may be a heartbeat
behind, and a row the mirror has not reached yet is still listed here from the local file. A
database that does not answer leaves the local rows, with a warning from `problem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config import DEFAULT_CONFIG_NAME, ConfigError, GatewayConfig, load_config
from storage.catalogue import CATALOGUE_NAME, SessionQuery, SessionRow, SqliteCatalogue


@dataclass
class FleetCatalogue:
    """Read-only: the shared rows merged with `local` (this data directory's catalogue)."""

    url: str
    password: str | None = None
    timeout_s: float = 5.0
    local: SqliteCatalogue | None = None
    lost_after_s: float = 10.0  # an instance silent this long carries nothing any more
    problem: str | None = field(default=None, init=False)  # why only local rows were read

    def _shared(self, sql: str, params: list[Any]) -> list[SessionRow]:
        import psycopg
        from psycopg.rows import dict_row

        from storage.pg_state import connect_kwargs, redact, session_row

        try:
            with psycopg.connect(
                self.url, connect_timeout=max(1, int(self.timeout_s)),
                **connect_kwargs(self.password),
            ) as conn, conn.cursor(row_factory=dict_row) as cur:  # fmt: skip
                cur.execute(sql, params)
                return [session_row(row) for row in cur.fetchall()]
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.problem = f"the state database {redact(self.url)} did not answer: {first}"
            return []

    def move_session(self, session_id: str, path: Path | str) -> bool:
        """The shared row's recording is now at `path` (push-recordings moved it to the object
        store): the heartbeat mirror re-sends a row only when it starts or ends. Moves the
        local row too. False (and `problem` set) when the database did not answer: the shared
        row keeps its old path until this instance's next start copies every row again."""
        import psycopg

        from storage.pg_state import connect_kwargs, redact

        if self.local is not None:
            self.local.move_session(session_id, path)
        try:
            with psycopg.connect(
                self.url, connect_timeout=max(1, int(self.timeout_s)),
                **connect_kwargs(self.password),
            ) as conn:  # fmt: skip
                conn.execute("UPDATE sessions SET path = %s WHERE id = %s", (str(path), session_id))
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.problem = f"the state database {redact(self.url)} did not answer: {first}"
            return False
        return True

    def find_sessions(self, query: SessionQuery) -> list[SessionRow]:
        from storage.pg_state import sessions_sql

        sql, params = sessions_sql(query)
        merged = {row.id: row for row in self._shared(sql, params)}
        if self.local is not None:  # the source of this instance's rows, possibly newer
            merged.update({row.id: row for row in self.local.find_sessions(query)})
        rows = sorted(merged.values(), key=lambda row: row.started_at_us, reverse=True)
        return rows[: query.limit] if query.limit is not None else rows

    def find_prefix(self, prefix: str, limit: int = 6) -> list[SessionRow]:
        """The sessions whose id starts with `prefix` (newest first, at most `limit` of them:
        enough to tell one from several). The database matches the prefix, so a lookup reads
        a handful of rows however large the shared catalogue grows."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found = self._shared(
            "SELECT * FROM sessions WHERE id LIKE %s || '%%' ESCAPE '\\'"
            " ORDER BY started_at_us DESC LIMIT %s",
            [pattern, limit],
        )
        merged = {row.id: row for row in found}
        if self.local is not None:  # the source of this instance's rows, possibly newer
            merged.update({row.id: row for row in self.local.find_prefix(prefix, limit)})
        rows = sorted(merged.values(), key=lambda row: row.started_at_us, reverse=True)
        return rows[:limit]

    def get_session(self, session_id: str) -> SessionRow | None:
        if self.local is not None and (row := self.local.get_session(session_id)) is not None:
            return row
        found = self._shared("SELECT * FROM sessions WHERE id = %s", [session_id])
        return found[0] if found else None

    def writer_alive(self, session_id: str) -> bool:
        """Evidence that some instance is writing this session's recording now: the shared
        live registry lists it, and its instance is up with a heartbeat fresher than
        `lost_after` (by the database's clock). No answer: no evidence."""
        found = self._shared(
            "SELECT s.* FROM sessions s JOIN live_sessions l ON l.id = s.id"
            " JOIN instances i ON i.id = l.gateway_id WHERE s.id = %s AND i.state = 'up'"
            " AND i.heartbeat_at > EXTRACT(EPOCH FROM clock_timestamp()) - %s",
            [session_id, self.lost_after_s],
        )
        return bool(found)

    def close(self) -> None:
        if self.local is not None:
            self.local.close()


def config_of(data_dir: Path | None, config_path: Path | None) -> GatewayConfig | None:
    """The gateway configuration that goes with a data directory: the one named, else the
    gateway.toml inside it; None when there is none (or it does not load)."""
    candidates = [config_path] if config_path is not None else []
    if data_dir is not None:
        candidates.append(data_dir / DEFAULT_CONFIG_NAME)
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            try:
                return load_config(candidate)
            except ConfigError:
                return None
    return None


def open_catalogue(
    data_dir: Path, config: GatewayConfig | None = None, *, existing: bool = False
) -> SqliteCatalogue | FleetCatalogue | None:
    """The catalogue readers use: the fleet's with `[state]` in `config`, else catalogue.db
    (None when `existing` and there is no catalogue.db to read)."""
    from proxy.fleet.settings import state_settings

    local_exists = (data_dir / CATALOGUE_NAME).exists()
    settings = None
    if config is not None:
        try:
            settings = state_settings(config)
        except ConfigError:
            settings = None
    if settings is None:
        return SqliteCatalogue.in_data_dir(data_dir) if local_exists or not existing else None
    try:
        password = settings.password()
    except ValueError:
        password = None
    return FleetCatalogue(
        settings.url,
        password=password,
        timeout_s=settings.timeout_s,
        lost_after_s=settings.lost_after_s,
        local=SqliteCatalogue.in_data_dir(data_dir) if local_exists else None,
    )
