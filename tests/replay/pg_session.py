"""A real PostgreSQL session through the gateway, recorded and catalogued, for the statement
timeline and mask review tests: rows with masked columns, a parameter, a database error, a
statement denied by a rule, and two holds (one approved, one denied).

`record_sql_session` runs it (psycopg against the machine's PostgreSQL) and returns where the
recording and the gateway configuration are. `todays_config` writes a second configuration for
the same data directory with one more mask rule (e-mail addresses), as if added after the
session.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from proxy.holds.broker import Person
from tests.proxy.pg.harness import PgHarness, pg_available

NO_TRUNCATE = {
    "name": "no-truncate",
    "targets": ["guarded"],
    "sql": ["truncate"],
    "action": "deny",
    "message": "truncate needs a change request",
}
REVIEW_WRITES = {
    "name": "review-writes",
    "targets": ["guarded"],
    "sql": ["write"],
    "action": "review",
    "approvers": ["oncall"],
}
RECORDED_MASKS = (
    '[[masks]]\nname = "passwords"\ncolumn = "*password*"\n'
    '[[masks]]\nname = "cards"\ndetector = "credit_card"\nstyle = "last4"\n'
)
SECRETS_QUERY = (
    "select 'user' || n as name, 'hunter' || n as password_hash, "
    "'paid with 4111 1111 1111 1111' as note from generate_series(1, 3) n"
)
PARAM_QUERY = "select upper(%t) as shout"  # %t: a parameter in text format
APPROVED_INSERT = "insert into h values (1, 'carol@example.org')"
DENIED_INSERT = "insert into h values (2, 'dave@example.org')"


@dataclass(frozen=True)
class RecordedSession:
    data_dir: Path
    config: Path
    recording: Path


async def _hold_id(pg: PgHarness) -> str:
    assert pg.service is not None
    for _ in range(200):
        pending = await pg.service.broker.pending_holds()
        if pending:
            return pending[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("no hold appeared")


async def record_sql_session(directory: Path) -> RecordedSession:
    """One session with every kind of statement outcome, on target `guarded`."""
    pg = PgHarness(directory, rules=[NO_TRUNCATE, REVIEW_WRITES], extra_toml=RECORDED_MASKS)
    await pg.start()
    try:
        async with await psycopg.AsyncConnection.connect(
            pg.dsn("guarded"), autocommit=True
        ) as conn:
            await conn.execute("create temp table h (id int, email text)")
            await (await conn.execute(SECRETS_QUERY)).fetchall()
            await (await conn.execute(PARAM_QUERY, ("hello",))).fetchall()
            with contextlib.suppress(psycopg.errors.DivisionByZero):
                await conn.execute("select 1/0")
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                await conn.execute("truncate h")
            for statement, approve, reason in (
                (APPROVED_INSERT, True, "ticket 42"),
                (DENIED_INSERT, False, "not during the freeze"),
            ):
                task = asyncio.ensure_future(conn.execute(statement))
                hold_id = await _hold_id(pg)
                assert pg.service is not None
                await pg.service.decide_hold(
                    hold_id, Person("bob", frozenset({"oncall"})), approve=approve, reason=reason
                )
                try:
                    await asyncio.wait_for(task, 10)
                except psycopg.errors.InsufficientPrivilege:
                    assert not approve
            await (await conn.execute("select count(*) from h")).fetchall()
        await pg.wait_closed_recordings(1)
        [recording] = pg.recordings()
    finally:
        await pg.stop()
    return RecordedSession(directory / "data", directory / "gateway.toml", recording)


def todays_config(session: RecordedSession) -> Path:
    """The session's configuration with a rule for e-mail addresses added afterwards."""
    path = session.config.with_name("today.toml")
    path.write_text(session.config.read_text() + '[[masks]]\nname = "emails"\ndetector = "email"\n')
    return path


def recorded_session(directory: Path) -> RecordedSession:
    """`record_sql_session` from synchronous code (a module-scoped fixture): recording once
    serves every test of a module. Its event loop runs in a thread of its own, so it leaves
    the test's event loop alone."""
    if not pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, record_sql_session(directory)).result(timeout=120)
