"""The PostgreSQL state schema, as numbered migrations applied in order by `hoop-tui state
migrate` (never by a gateway starting: a fleet upgrades its schema once, on purpose).

Each migration is one transaction; `schema_migrations` records which ran. A gateway refuses to
start on a schema older or newer than the one it was built for, and says which command to run.
Migrations only add: a gateway one version behind keeps working during a rolling upgrade as long
as the migration it lacks added only what it does not read (docs/deployment.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "holds, grants, audit, catalogue, live sessions, login failures, instances, keys",
        """
CREATE TABLE holds (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    body        JSONB NOT NULL
);
CREATE INDEX holds_status ON holds (status, created_at);
CREATE TABLE grants (
    id           TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL,
    body         JSONB NOT NULL
);
CREATE INDEX grants_status ON grants (status, requested_at);
CREATE TABLE audit (
    seq     BIGSERIAL PRIMARY KEY,
    at      DOUBLE PRECISION NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  JSONB NOT NULL
);
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    path            TEXT NOT NULL,
    "user"          TEXT NOT NULL,
    service_account BOOLEAN NOT NULL DEFAULT FALSE,
    target          TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    client          TEXT NOT NULL DEFAULT '',
    gateway_id      TEXT NOT NULL DEFAULT '',
    started_at_us   BIGINT NOT NULL,
    ended_at_us     BIGINT,
    end_reason      TEXT,
    size            BIGINT NOT NULL DEFAULT 0,
    events          BIGINT NOT NULL DEFAULT 0,
    denies          BIGINT NOT NULL DEFAULT 0,
    holds           BIGINT NOT NULL DEFAULT 0,
    counts          JSONB NOT NULL DEFAULT '{}',
    verdicts        JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX sessions_user ON sessions ("user", started_at_us);
CREATE INDEX sessions_target ON sessions (target, started_at_us);
CREATE INDEX sessions_started ON sessions (started_at_us);
CREATE INDEX sessions_open ON sessions (gateway_id) WHERE ended_at_us IS NULL;
CREATE TABLE live_sessions (
    id          TEXT PRIMARY KEY,
    gateway_id  TEXT NOT NULL,
    "user"      TEXT NOT NULL,
    target      TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    client      TEXT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX live_sessions_gateway ON live_sessions (gateway_id);
CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (key, at);
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    peer_address TEXT NOT NULL DEFAULT '',
    version      TEXT NOT NULL DEFAULT '',
    started_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    state        TEXT NOT NULL DEFAULT 'up'
);
CREATE TABLE fleet_keys (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    set_by      TEXT NOT NULL,
    set_at      DOUBLE PRECISION NOT NULL
);
""",
    ),
)

LATEST = MIGRATIONS[-1].version
