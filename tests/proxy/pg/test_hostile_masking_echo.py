"""Masked values that come back beside the result rows (issue 13, attack): an error that
echoes the value it could not read (`password_hash::int`), an integrity error's detail
(`Key (v)=(...)`), and a NOTIFY payload (`pg_notify('c', password_hash)`), through the real
gateway with psql, psycopg (text and binary cursors) and asyncpg."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.proxy.pg.harness import PgHarness
from tests.proxy.pg.test_hostile_masking import CARD, TABLE, _leaks, masked

__all__ = ["masked"]

ECHOES = [
    f"select cast(password_hash as int) from {TABLE} order by id limit 1",
    f"select 1 from {TABLE} where password_hash::int = 1",
    f"select password_hash::date from {TABLE} limit 1",
    f"select card::int from {TABLE} limit 1",
    f"select to_number(password_hash, '9') from {TABLE} limit 1",
    f"select ('{{' || password_hash)::text[] from {TABLE} limit 1",
    f"create temp table k (v text primary key); insert into k select password_hash "
    f"from {TABLE} where id = 1; insert into k select password_hash from {TABLE} where id = 1",
    f"create temp table n (a text, b text not null); insert into n select password_hash, "
    f"null from {TABLE} limit 1",
]


async def test_errors_do_not_echo_a_masked_value(masked: PgHarness) -> None:
    for sql in ECHOES:
        result = await masked.psql("-c", sql)
        assert result.status != 0 and "ERROR" in result.err, (sql, result.err)
        assert "zebra" not in result.err and not _leaks(result.err), (sql, result.err)
    # the error itself is still the server's, and errors that echo no value are untouched
    result = await masked.psql("-c", ECHOES[0])
    assert "invalid input syntax for type integer" in result.err, result.err
    result = await masked.psql("-c", "select * from no_such_table_h13")
    assert 'relation "no_such_table_h13" does not exist' in result.err, result.err
    for binary in (False, True):
        async with await psycopg.AsyncConnection.connect(masked.dsn(), autocommit=True) as conn:
            cur = conn.cursor(binary=binary)
            for sql in ECHOES[:4]:
                with pytest.raises(psycopg.errors.DataError) as caught:
                    await cur.execute(sql)
                text = str(caught.value) + str(caught.value.diag.message_detail)
                assert "zebra" not in text and not _leaks(text), (sql, text)
    conn_a = await masked.asyncpg()
    try:
        for sql in ECHOES[:4]:
            with pytest.raises(Exception) as raised:
                await conn_a.fetch(sql)
            text = repr(raised.value) + str(getattr(raised.value, "detail", ""))
            assert "zebra" not in text and not _leaks(text), (sql, text)
    finally:
        await conn_a.close()


async def test_notify_payloads_do_not_carry_a_masked_value(masked: PgHarness) -> None:
    for column in ("password_hash", "card", "email"):
        sql = f"listen c; select pg_notify('c', {column}) is null from {TABLE} limit 1"
        result = await masked.psql("-c", sql)
        assert "Asynchronous notification" in result.out, (sql, result.out, result.err)
        assert "zebra" not in result.out and not _leaks(result.out), (sql, result.out)
    conn_a = await masked.asyncpg()
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await conn_a.add_listener(
            "c", lambda _conn, _pid, _channel, payload: got.put_nowait(payload)
        )
        await conn_a.execute(f"select pg_notify('c', card) from {TABLE} limit 1")
        await conn_a.execute("notify c, 'plain 4111 1111 1111 1111'")
        for _ in range(2):
            payload = await asyncio.wait_for(got.get(), 5)
            assert CARD not in payload.replace(" ", ""), payload
            assert payload, "the notification still arrives"
    finally:
        await conn_a.close()


STORES = [
    f"select set_config('my.x', password_hash, false) is null from {TABLE} limit 1; "
    "select current_setting('my.x')",
    f"select 1 from {TABLE} where set_config('my.x', password_hash || '', false) <> '' limit 1; "
    "show my.x",
    f"select set_config('application_name', substr(password_hash, 1, 99), false) from {TABLE} "
    "limit 1; show application_name",
    f"prepare s as select set_config('my.x', password_hash, false) from {TABLE} limit 1; "
    "execute s; select current_setting('my.x')",
    f"select lo_get(lo_from_bytea(0, convert_to(password_hash, 'UTF8'))) from {TABLE} limit 1",
    f"select lo_from_bytea(0, convert_to(password_hash, 'UTF8')) is null from {TABLE} "
    "limit 1; select convert_from(lo_get(max(oid)), 'UTF8') from pg_largeobject_metadata",
    "create temp sequence q minvalue 0; "
    f"select setval('q', ascii(substr(password_hash, 6, 1))) is null from {TABLE} limit 1; "
    "select chr(currval('q')::int)",
]


async def test_a_masked_value_is_not_smuggled_through_a_setting(masked: PgHarness) -> None:
    for sql in STORES:
        result = await masked.psql("-c", sql)
        assert "42501" in result.err or "refused" in result.err, (sql, result.err)
        assert "zebra" not in result.out + result.err, (sql, result.out)
        assert "\nz\n" not in result.out and "7a656272" not in result.out, (sql, result.out)
    conn_a = await masked.asyncpg()
    try:
        for sql in (STORES[0].split(";")[0], STORES[1].split(";")[0]):
            with pytest.raises(Exception) as raised:
                await conn_a.fetch(sql)
            assert "refused" in str(raised.value), (sql, raised.value)
            assert await conn_a.fetchval("select current_setting('my.x', true)") in (None, "")
        # a constant or a client's parameter is the client's own value, not the table's
        assert await conn_a.fetchval("select set_config('my.x', $1, false)", "mine") == "mine"
        assert await conn_a.fetchval("select set_config('my.y', 'k', false)") == "k"
        assert await conn_a.fetchval("select current_setting('my.x')") == "mine"
    finally:
        await conn_a.close()
    async with await psycopg.AsyncConnection.connect(masked.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with conn.pipeline():
                await conn.execute(STORES[0].split(";")[0])
        cur = await conn.execute("select current_setting('my.x', true)")
        assert (await cur.fetchone()) in ((None,), ("",))


HIDDEN = [
    f"select query_to_xml('select password_hash from {TABLE} limit 1', true, false, '')",
    f"select query_to_xml('select * from {TABLE} limit 1', true, false, '') as x",
    f"select table_to_xml('{TABLE}', true, false, '')",
    f"select xpath('//text()', query_to_xml('select password_hash from {TABLE} limit 1', "
    "true, false, ''))::text",
    f"select * from ts_stat('select to_tsvector(''simple'', password_hash) from {TABLE}')",
    f"select word from ts_stat('select to_tsvector(''simple'', password_hash) from {TABLE}') w",
    f"select pg_catalog.table_to_xml_and_xmlschema('{TABLE}', true, false, '')",
]


async def test_values_read_by_sql_given_as_text_are_masked(masked: PgHarness) -> None:
    for sql in HIDDEN:
        result = await masked.psql("-At", "-c", sql)
        assert result.status == 0 and result.out.strip(), (sql, result.err)
        assert "zebra" not in result.out, (sql, result.out[:300])
        copied = await masked.psql("-At", "-c", f"copy ({sql}) to stdout")
        assert copied.status == 0 and "zebra" not in copied.out, (sql, copied.out[:300])
    cursor = await masked.psql(
        "-At",
        "-c",
        f"begin; declare c cursor for select password_hash from {TABLE}; "
        "select cursor_to_xml('c', 1, true, false, ''); commit",
    )
    assert "zebra" not in cursor.out, cursor.out
    for binary in (False, True):
        async with await psycopg.AsyncConnection.connect(masked.dsn()) as conn:
            cur = conn.cursor(binary=binary)
            # (ts_stat's counts are masked too: as text, '********' no driver reads as int)
            for sql in [sql for sql in HIDDEN if "select *" not in sql or binary]:
                await cur.execute(sql)
                assert "zebra" not in repr(await cur.fetchall()), (sql, binary)
    conn_a = await masked.asyncpg()
    try:
        for sql in HIDDEN:
            assert "zebra" not in repr(await conn_a.fetch(sql)), sql
    finally:
        await conn_a.close()
    # a query of values no rule masks still shows them
    plain = await masked.psql("-At", "-c", "select query_to_xml('select 42 as n', true, false, '')")
    assert plain.status == 0, plain.err
