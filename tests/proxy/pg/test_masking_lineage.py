"""Column mask rules follow the value, not the result column's name: a query that renames or
wraps a masked column gets it masked, through the real gateway in front of the machine's
PostgreSQL, with psql, psycopg (text and binary) and asyncpg."""

from __future__ import annotations

from typing import Any

import psycopg

from storage.schema import EventType
from tests.proxy.pg.harness import DIRECT_DSN, PgHarness

TABLE = "hoop_lineage_users"
SECRET = "hunter2-secret"
MASKS = '[[masks]]\nname = "passwords"\ncolumn = "password"\n'

# Each query returns the password in its first column, under another name or wrapped.
BYPASSES = [
    f"select password as p, id from {TABLE}",
    f"select password || '' as x, id from {TABLE}",
    f"select lower(password), id from {TABLE}",
    f"select (select password from {TABLE} limit 1), id from {TABLE}",
    f"select coalesce(password, ''), id from {TABLE}",
    f"select upper(password)::varchar(40) as v, id from {TABLE}",
    f"select row_to_json(t), id from {TABLE} t",
    f"select t::text, id from {TABLE} t",
    f"select to_jsonb(u), id from {TABLE} u",
    f"select u, id from {TABLE} u",
    f"select (select array_agg(t) from {TABLE} t), id from {TABLE}",
    f"select * from (select password as pw, id from {TABLE}) s",
    f"select pw || '!', id from (select password as pw, id from {TABLE}) s",
    f"with c(q, i) as (select password, id from {TABLE}) select q, i from c",
    f"select name, id from {TABLE} where false union all select password, id from {TABLE}",
    f"select x, id from {TABLE}, lateral (select password as x) l",
]


async def _fresh_table() -> None:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {TABLE}")
        await conn.execute(f"create table {TABLE} (id int, name text, password text)")
        await conn.execute(f"insert into {TABLE} values (1, 'alice', '{SECRET}')")
        await conn.execute(f"insert into {TABLE} values (2, 'bob', '{SECRET}-2')")


async def _events(pg: PgHarness, count: int) -> list[Any]:
    await pg.wait_closed_recordings(count)
    events = []
    for path in pg.recordings():
        events.extend(pg.events(path))
    return events


async def test_renamed_and_wrapped_masked_columns_are_masked_in_every_client(
    pg: PgHarness,
) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    sessions = 0
    for query in BYPASSES:
        result = await pg.psql("-A", "-t", "-c", query)
        sessions += 1
        assert result.status == 0, (query, result.err)
        assert SECRET not in result.out, query
        lines = result.out.strip().splitlines()
        assert len(lines) == 2, (query, result.out)  # row counts intact
        assert [line.split("|")[-1] for line in lines] == ["1", "2"], query
    for binary in (False, True):
        async with (
            await psycopg.AsyncConnection.connect(pg.dsn()) as conn,
            conn.cursor(binary=binary) as cur,
        ):
            for query in BYPASSES:
                await cur.execute(query)
                rows = await cur.fetchall()
                assert len(rows) == 2, query
                assert SECRET not in repr(rows), (query, binary)
                assert [row[-1] for row in rows] == [1, 2], query  # types intact
        sessions += 1
    conn_a = await pg.asyncpg()
    try:
        for query in BYPASSES:
            records = await conn_a.fetch(query)
            assert len(records) == 2, query
            assert SECRET not in repr([tuple(r) for r in records]), query
            assert [r[-1] for r in records] == [1, 2], query
    finally:
        await conn_a.close()
    sessions += 1
    events = await _events(pg, sessions)
    masks = [e for e in events if e.type is EventType.MASK]
    assert masks and {m["rule"] for m in masks} == {"passwords"}
    columns = {m["column"] for m in masks}
    assert {"p", "x", "lower", "row_to_json", "pw", "q"} <= columns  # the output's name
    results = [e for e in events if e.type is EventType.SQL_RESULT]
    assert all(SECRET not in str(r["sample"]) for r in results)


async def test_unrelated_columns_and_plain_queries_are_untouched(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn()) as conn:
        rows = await (await conn.execute(f"select id, name from {TABLE} order by id")).fetchall()
        assert rows == [(1, "alice"), (2, "bob")]
        rows = await (
            await conn.execute(
                f"select id, upper(name), length(name) from {TABLE} "
                "where password is not null order by id"
            )
        ).fetchall()
        assert rows == [(1, "ALICE", 5), (2, "BOB", 3)]
        rows = await (
            await conn.execute(f"select id, name, password from {TABLE} order by id")
        ).fetchall()
        assert rows == [(1, "alice", "********"), (2, "bob", "********")]
        rows = await (await conn.execute(f"select * from {TABLE} order by id")).fetchall()
        assert rows == [(1, "alice", "********"), (2, "bob", "********")]
        cur = conn.cursor(binary=True)
        await cur.execute(f"select length(password), id from {TABLE} order by id")
        rows = await cur.fetchall()
        assert rows == [(None, 1), (None, 2)]  # a masked int in binary format: NULL


async def test_returning_and_prepared_statements_follow_the_value(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        cur = await conn.execute(
            f"update {TABLE} set name = name where id = 1 returning id, password as p"
        )
        assert await cur.fetchall() == [(1, "********")]
        await conn.execute(f"prepare leak as select password as p, id from {TABLE} order by id")
        cur = await conn.execute("execute leak")
        assert await cur.fetchall() == [("********", 1), ("********", 2)]
        cur = await conn.execute(
            f"select password as p, id from {TABLE} where id = %s", (1,), prepare=True
        )
        assert await cur.fetchall() == [("********", 1)]
        cur = await conn.execute(
            f"select password as p, id from {TABLE} where id = %s", (1,), prepare=True
        )
        assert await cur.fetchall() == [("********", 1)]


async def test_copy_of_a_query_follows_the_value(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    for command in (
        f"copy (select id, password as p from {TABLE} order by id) to stdout",
        f"copy (select id, md5(password) from {TABLE} order by id) to stdout with csv",
    ):
        result = await pg.psql("-c", command)
        assert result.status == 0, (command, result.err)
        assert SECRET not in result.out and "********" in result.out, command
        assert result.out.splitlines()[0].startswith("1")
