"""A refusal inside a batch (a multi-statement Query, an extended-protocol pipeline, an
executemany) never leaves part of the batch done: PostgreSQL runs a batch as one implicit
transaction, and the gateway keeps it that way. Checked on a real table, directly."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from proxy.holds.broker import Person
from tests.proxy.pg.harness import DIRECT_DSN, REVIEW_WRITES, PgHarness

TABLE = "hoop_batch"

DENY_DDL = {"name": "no-ddl", "sql": ["ddl"], "action": "deny", "message": "no schema changes"}
BOB = Person("bob", frozenset({"oncall"}))


async def _fresh_table() -> None:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {TABLE}")
        await conn.execute(f"create table {TABLE} (a int)")


async def _rows() -> list[int]:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        cur = await conn.execute(f"select a from {TABLE} order by a")
        return [row[0] for row in await cur.fetchall()]


async def _hold_id(pg: PgHarness, seen: set[str]) -> str:
    assert pg.service is not None
    for _ in range(200):
        for hold in await pg.service.broker.pending_holds():
            if hold.id not in seen:
                seen.add(hold.id)
                return hold.id
        await asyncio.sleep(0.05)
    raise AssertionError("no hold appeared")


async def test_a_denied_statement_refuses_the_whole_simple_query(pg: PgHarness) -> None:
    pg.rules = [DENY_DDL]
    await _fresh_table()
    await pg.start()
    script = f"insert into {TABLE} values (1); drop table {TABLE}; insert into {TABLE} values (2)"
    result = await pg.psql("-c", script)
    assert "no schema changes" in result.err
    assert await _rows() == []  # nothing of the string was sent
    result = await pg.psql("-c", f"insert into {TABLE} values (3)")
    assert result.status == 0, result.err
    assert await _rows() == [3]


async def test_a_denied_parse_in_a_pipeline_rolls_back_the_earlier_statements(
    pg: PgHarness,
) -> None:
    pg.rules = [DENY_DDL]
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            async with conn.pipeline():
                await conn.execute(f"insert into {TABLE} values (%s)", (1,))
                await conn.execute(f"insert into {TABLE} values (%s)", (2,))
                await conn.execute(f"alter table {TABLE} add column b int")
                await conn.execute(f"insert into {TABLE} values (%s)", (4,))
        assert "no schema changes" in str(caught.value)
        assert await _rows() == []  # as PostgreSQL does after an error in a pipeline
        # The connection goes on, and a good pipeline commits.
        async with conn.pipeline():
            await conn.execute(f"insert into {TABLE} values (%s)", (5,))
            await conn.execute(f"insert into {TABLE} values (%s)", (6,))
        assert await _rows() == [5, 6]
        # Inside an explicit transaction the refusal fails the transaction, as an error
        # there would; nothing of it is committed.
        await conn.execute("begin")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with conn.pipeline():
                await conn.execute(f"insert into {TABLE} values (%s)", (7,))
                await conn.execute(f"drop table {TABLE}")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await conn.execute("select 1")
        await conn.execute("rollback")
        assert await _rows() == [5, 6]


async def test_an_upstream_error_before_the_refusal_is_the_only_error(pg: PgHarness) -> None:
    pg.rules = [DENY_DDL]
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with conn.pipeline():
                await conn.execute(f"insert into {TABLE} values (%s)", (1,))
                await conn.execute("select 1 / %s", (0,))
                await conn.execute(f"drop table {TABLE}")
        cur = await conn.execute("select %s::int", (9,))
        assert await cur.fetchone() == (9,)
    assert await _rows() == []


async def test_a_hold_denied_mid_executemany_leaves_no_row(pg: PgHarness) -> None:
    pg.rules = [REVIEW_WRITES]
    await _fresh_table()
    await pg.start()
    assert pg.service is not None
    conn = await pg.asyncpg()
    try:
        task = asyncio.ensure_future(
            conn.executemany(f"insert into {TABLE} values ($1)", [(1,), (2,), (3,)])
        )
        seen: set[str] = set()
        await pg.service.decide_hold(await _hold_id(pg, seen), BOB, approve=True, reason="ok")
        denied = await _hold_id(pg, seen)
        await pg.service.decide_hold(denied, BOB, approve=False, reason="not that")
        with pytest.raises(asyncpg.InsufficientPrivilegeError) as caught:
            await asyncio.wait_for(task, 20)
        assert "not that" in str(caught.value)
        assert await _rows() == []  # the approved first row went with the batch
        assert await conn.fetchval("select 7") == 7
    finally:
        await conn.close()
