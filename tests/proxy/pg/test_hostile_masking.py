"""SQL masking against a hostile caller (issue 13), through the real gateway with psql,
psycopg (text and binary cursors) and asyncpg: set-returning functions in FROM fed a masked
value, the statistics catalogues, and binary-format values the detectors must read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.proxy.pg.harness import DIRECT_DSN, PgHarness

TABLE = "hoop_h4_customers"
CARD = "4111111111111111"
HASH = "hash-zebra-secret"
MAIL = "alice@example.com"
MASKS = """
[[masks]]
name = "hashes"
column = "password*"

[[masks]]
name = "cards"
detector = "credit_card"

[[masks]]
name = "mail"
detector = "email"
"""


@pytest.fixture
async def masked(pg: PgHarness) -> AsyncIterator[PgHarness]:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {TABLE}")
        await conn.execute(
            f"create table {TABLE} (id int, email text, card text, password_hash text)"
        )
        await conn.execute(
            f"insert into {TABLE} select i, %s, %s, %s || i from generate_series(1, 40) i",
            (MAIL, CARD, HASH),
        )
        await conn.execute(f"analyze {TABLE}")
    pg.extra_toml = MASKS
    await pg.start()
    yield pg


def _leaks(text: str) -> list[str]:
    return [secret for secret in (CARD, HASH, MAIL) if secret in text]


FUNCTIONS = [
    f"select key, value from {TABLE} c, jsonb_each_text(to_jsonb(c))",
    f"select key, value from {TABLE} c, json_each_text(row_to_json(c))",
    f"select j.value from {TABLE} c, jsonb_each_text(to_jsonb(c)) j",
    f"select jsonb_each_text.value from {TABLE} c, jsonb_each_text(to_jsonb(c))",
    f"select c.id, j.* from {TABLE} c, jsonb_each(to_jsonb(c)) j",
    f"select v from {TABLE} c, unnest(array[c.password_hash]) v",
    f"select x from {TABLE} c, unnest(array[c.password_hash]) u(x)",
    f"select x from xmltable('/r' passing (select xmlelement(name r, password_hash) "
    f"from {TABLE} limit 1) columns x text path '.') t",
    f"select t.* from {TABLE} c, lateral jsonb_each_text(to_jsonb(c)) t",
    f"select w from {TABLE} c, regexp_split_to_table(c.password_hash, '-') w",
    f"select (jsonb_each_text(to_jsonb(c))).* from {TABLE} c",
    f"select (x).* from (select row('a'::text, password_hash) as x from {TABLE}) s",
]


async def test_functions_in_from_fed_a_masked_value_are_masked(masked: PgHarness) -> None:
    for sql in FUNCTIONS:
        result = await masked.psql("-At", "-c", sql)
        assert result.status == 0 and result.out.strip(), (sql, result.err)
        assert "zebra" not in result.out and HASH not in result.out, (sql, result.out[:300])
        copied = await masked.psql("-At", "-c", f"copy ({sql}) to stdout")
        assert copied.status == 0, (sql, copied.err)
        assert "zebra" not in copied.out, (sql, copied.out[:300])
    for binary in (False, True):
        async with await psycopg.AsyncConnection.connect(masked.dsn()) as conn:
            cur = conn.cursor(binary=binary)
            for sql in FUNCTIONS:
                await cur.execute(sql)
                rows = await cur.fetchall()
                assert rows and "zebra" not in repr(rows), (sql, binary)
    conn_a = await masked.asyncpg()
    try:
        for sql in FUNCTIONS:
            records = await conn_a.fetch(sql)
            assert records and "zebra" not in repr([tuple(r) for r in records]), sql
    finally:
        await conn_a.close()
    # `*` may be any of the function's columns: all are masked (psql shows them; a typed
    # driver would refuse `********` as an integer)
    starred = await masked.psql("-At", "-c", f"select * from {TABLE} c, jsonb_each(to_jsonb(c))")
    assert starred.status == 0 and "zebra" not in starred.out and CARD not in starred.out
    # a function fed nothing masked is left alone
    plain = await masked.psql(
        "-At", "-c", f"select id, g from {TABLE}, generate_series(1, 2) g order by 1, 2"
    )
    assert plain.out.splitlines()[:2] == ["1|1", "1|2"]


STATISTICS = [
    f"select histogram_bounds from pg_stats where tablename = '{TABLE}'",
    f"select most_common_vals::text from pg_catalog.pg_stats where tablename = '{TABLE}'",
    f"select * from pg_stats where tablename = '{TABLE}'",
    f"select s from pg_stats s where tablename = '{TABLE}'",
    f"select array_to_string(histogram_bounds, ',') x from pg_stats where tablename = '{TABLE}'",
    f"select stavalues1::text v from pg_statistic where starelid = '{TABLE}'::regclass",
    "select (select string_agg(histogram_bounds::text, ',') from pg_stats) as q",
]


async def test_statistics_of_masked_columns_are_masked(masked: PgHarness) -> None:
    for sql in STATISTICS:
        result = await masked.psql("-At", "-c", sql)
        assert result.status == 0 and result.out.strip(), (sql, result.err)
        assert "zebra" not in result.out, (sql, result.out[:300])
    for sql in (
        "copy pg_statistic to stdout",
        "copy pg_catalog.pg_statistic (starelid, stavalues1, stavalues2) to stdout with csv",
        f"copy (select * from pg_stats where tablename = '{TABLE}') to stdout",
    ):
        copied = await masked.psql("-At", "-c", sql)
        assert copied.status == 0 and copied.out.strip(), (sql, copied.err)
        assert "zebra" not in copied.out, (sql, copied.out[:300])
    names = await masked.psql(
        "-At", "-c", f"select attname from pg_stats where tablename = '{TABLE}' order by 1"
    )
    assert names.out.split() == ["card", "email", "id", "password_hash"]  # not values
    async with await psycopg.AsyncConnection.connect(masked.dsn()) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            for sql in STATISTICS:
                await cur.execute(sql)
                assert "zebra" not in repr(await cur.fetchall()), (sql, binary)


BINARY = [
    (f"select card::int8 as n, id from {TABLE} order by id", None),
    (f"select card::numeric as n, id from {TABLE} order by id", None),
    (f"select card::int8 + 0 as n, id from {TABLE} order by id", None),
    (f"select array[card::int8] as n, id from {TABLE} order by id", None),
    (f"select array[card] as n, id from {TABLE} order by id", None),
    (f"select (select array_agg(card::numeric) from {TABLE}) as n, id from {TABLE}", None),
    (f"select row(card::int8, 1) as n, id from {TABLE} order by id", None),
    (f"select card::float8 as n, id from {TABLE} order by id", None),
    (f"select int8range(card::int8, card::int8 + 1) as n, id from {TABLE} order by id", None),
]


async def test_binary_values_are_read_by_the_detectors(masked: PgHarness) -> None:
    for sql, _ in BINARY[:6]:  # in text they were masked before (a float reads 4.1e+15)
        shown = await masked.psql("-At", "-c", sql)
        assert shown.status == 0 and not _leaks(shown.out), (sql, shown.out[:200])
    async with await psycopg.AsyncConnection.connect(masked.dsn()) as conn:
        cur = conn.cursor(binary=True)
        for sql, _ in BINARY:
            await cur.execute(sql)
            rows = await cur.fetchall()
            assert len(rows) == 40, sql
            assert not _leaks(repr(rows).replace(".0", "")), (sql, rows[:2])
            assert CARD[-8:] not in repr(rows), (sql, rows[:2])
            assert [row[-1] for row in rows[:3]] == [1, 2, 3] or "array_agg" in sql
        # numbers no detector finds pass unchanged, in binary too
        await cur.execute(f"select id::int8 * 1000, 12.5::numeric from {TABLE} order by id")
        assert (await cur.fetchall())[:2] == [(1000, 12.5), (2000, 12.5)]
    conn_a = await masked.asyncpg()
    try:
        for sql, _ in BINARY:
            records = await conn_a.fetch(sql)
            shown = repr([tuple(r) for r in records])
            assert len(records) == 40 and not _leaks(shown), (sql, shown[:200])
            assert CARD[-8:] not in shown, sql
    finally:
        await conn_a.close()


CURSOR_QUERIES = [
    f"select password_hash as p, id from {TABLE} order by id",
    f"select key, value from {TABLE} c, jsonb_each_text(to_jsonb(c))",
]


async def test_cursors_return_what_their_query_masks(masked: PgHarness) -> None:
    for sql in CURSOR_QUERIES:
        # psql with FETCH_COUNT reads through DECLARE and FETCH
        paged = await masked.psql("-At", "-v", "FETCH_COUNT=7", "-c", sql)
        assert paged.status == 0 and paged.out.strip(), (sql, paged.err)
        assert "zebra" not in paged.out, (sql, paged.out[:200])
        script = f"begin; declare c cursor for {sql}; fetch 3 from c; fetch all in c; commit;"
        explicit = await masked.psql("-At", "-c", script)
        assert explicit.status == 0 and "zebra" not in explicit.out, (sql, explicit.out[:200])
    for binary in (False, True):
        async with await psycopg.AsyncConnection.connect(masked.dsn()) as conn:
            for sql in CURSOR_QUERIES:
                async with conn.cursor(name="named", binary=binary) as cur:
                    await cur.execute(sql)
                    rows = await cur.fetchmany(5) + await cur.fetchall()
                assert len(rows) >= 40 and "zebra" not in repr(rows), (sql, binary)
                await conn.commit()
    conn_a = await masked.asyncpg()
    try:
        async with conn_a.transaction():
            for sql in CURSOR_QUERIES:
                rows = [tuple(r) async for r in conn_a.cursor(sql, prefetch=6)]
                assert len(rows) >= 40 and "zebra" not in repr(rows), sql
    finally:
        await conn_a.close()
    # a cursor over nothing masked is left alone
    plain = await masked.psql(
        "-At", "-v", "FETCH_COUNT=3", "-c", f"select id from {TABLE} order by id limit 4"
    )
    assert plain.out.split() == ["1", "2", "3", "4"]
