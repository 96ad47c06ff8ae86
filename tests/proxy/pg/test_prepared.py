"""SQL-level PREPARE / EXECUTE through the gateway: an EXECUTE is judged by the body it runs,
whoever prepared it (SQL PREPARE or a driver's Parse), so a held statement cannot be run
later under a name."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from proxy.holds.broker import Person
from tests.proxy.pg.harness import DIRECT_DSN, REVIEW_WRITES, PgHarness

TABLE = "hoop_prepared"
BOB = Person("bob", frozenset({"oncall"}))


async def _fresh_table() -> None:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {TABLE}")
        await conn.execute(f"create table {TABLE} as select generate_series(1, 3) as a")


async def _count() -> int:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        cur = await conn.execute(f"select count(*) from {TABLE}")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def _decide_next_hold(pg: PgHarness, approve: bool, reason: str) -> None:
    assert pg.service is not None
    for _ in range(200):
        pending = await pg.service.broker.pending_holds()
        if pending:
            await pg.service.decide_hold(pending[0].id, BOB, approve=approve, reason=reason)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no hold appeared")


async def test_execute_is_held_like_the_body_it_runs(pg: PgHarness) -> None:
    pg.rules = [REVIEW_WRITES]
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        task = asyncio.ensure_future(conn.execute(f"prepare wipe as delete from {TABLE}"))
        await _decide_next_hold(pg, True, "prepare is fine")
        await asyncio.wait_for(task, 10)
        # Running it is held again, and a denial runs nothing.
        task = asyncio.ensure_future(conn.execute("execute wipe"))
        await _decide_next_hold(pg, False, "not the whole table")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            await asyncio.wait_for(task, 10)
        assert "not the whole table" in str(caught.value)
        assert await _count() == 3
        # A name the gateway never saw prepared is refused, not passed on.
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            await conn.execute("execute made_elsewhere")
        assert "not known to the gateway" in str(caught.value)
        await conn.execute("deallocate wipe")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("explain analyze execute wipe")
        # Preparing and running a read needs nobody.
        await conn.execute("prepare look as select count(*) from " + TABLE)
        cur = await conn.execute("execute look")
        assert await cur.fetchone() == (3,)
    assert await _count() == 3


async def test_a_driver_prepared_statement_run_by_sql_execute_is_held(pg: PgHarness) -> None:
    pg.rules = [REVIEW_WRITES]
    await _fresh_table()
    await pg.start()
    conn = await pg.asyncpg()
    try:
        statement = await conn.prepare(f"delete from {TABLE}")  # Parse: held at each run
        task = asyncio.ensure_future(conn.execute(f'execute "{statement.get_name()}"'))
        await _decide_next_hold(pg, False, "no bypass")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncio.wait_for(task, 10)
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
    assert await _count() == 3
