"""Attacks on the PostgreSQL gateway by a caller with a valid login, through the real gateway
in front of the machine's PostgreSQL: each test shows that a trick which once let a denied
statement run (or read a setting the gateway relies on) is now refused."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.proxy.pg.harness import DIRECT_DSN, PgHarness

TABLE = "hoop_bypass"
DENY_WRITES = {"name": "no-writes", "sql": ["write"], "action": "deny", "message": "no writes"}
DENY_DDL = {"name": "no-ddl", "sql": ["ddl"], "action": "deny", "message": "no schema changes"}


async def _fresh_table() -> None:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {TABLE}")
        await conn.execute(f"create table {TABLE} (a int)")
        await conn.execute(f"insert into {TABLE} values (1)")


async def _count() -> int | None:
    """Rows of the table, None when it is gone."""
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        cur = await conn.execute("select to_regclass(%s) is not null", (TABLE,))
        row = await cur.fetchone()
        if not (row and row[0]):
            return None
        cur = await conn.execute(f"select count(*) from {TABLE}")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_a_bind_name_that_is_not_utf8_cannot_borrow_another_statements_verdict(
    pg: PgHarness,
) -> None:
    """Under LATIN1 the server reads the Bind name b"\\xff" as "ÿ", a statement dynamic SQL
    prepared out of the gateway's sight. The gateway once decoded the name with
    errors="replace", as U+FFFD, and judged the Bind by an allowed statement it had seen
    prepared under that name: the DELETE ran."""
    pg.rules = [DENY_WRITES]
    await _fresh_table()
    await pg.start()

    def attack() -> str:
        with psycopg.connect(pg.dsn(client_encoding="LATIN1"), autocommit=True) as conn:
            conn.execute(
                "DO $$ BEGIN EXECUTE 'PREPARE ' || quote_ident(chr(255)) || "
                f"' AS DELETE FROM {TABLE}'; END $$"
            )
            pgconn = conn.pgconn
            pgconn.prepare("\ufffd".encode(), b"select 1")  # the gateway's U+FFFD: allowed
            result = pgconn.exec_prepared(b"\xff", [])  # the server's "ÿ": the DELETE
            return (result.error_message or b"").decode(errors="replace")

    error = await asyncio.to_thread(attack)
    assert error  # the gateway ends the session (FATAL 08P01: a name that is not UTF-8)
    assert await _count() == 1


SPLIT_BY_BACKSLASH = f"select 'x\\'' ; drop table {TABLE}; --'"


async def test_standard_conforming_strings_off_cannot_hide_a_statement(pg: PgHarness) -> None:
    """With standard_conforming_strings off the server ends `'x\\''` where the gateway's
    parser reads on: the DROP after it was a string to the gateway and ran."""
    pg.rules = [DENY_DDL]
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        for turn_off in (
            "set standard_conforming_strings = off",
            "SET standard_conforming_strings TO 'fal'",
            "set local standard_conforming_strings = 0",
            "select set_config('standard_conforming_strings', 'off', false)",
            "select set_config('standard_conforming_strings', %s, false)",
            "do $$ begin perform set_config('standard_conforming_strings', 'no', false); end $$",
        ):
            with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
                await conn.execute(turn_off, ("off",) if "%s" in turn_off else None)
            assert "standard_conforming_strings must stay on" in str(caught.value)
            await conn.execute(SPLIT_BY_BACKSLASH)  # one SELECT, as the gateway reads it
        await conn.execute("set standard_conforming_strings = on")  # on is fine
        await conn.execute("reset standard_conforming_strings")
    assert await _count() == 1


async def test_standard_conforming_strings_off_from_dynamic_sql_ends_the_session(
    pg: PgHarness,
) -> None:
    pg.rules = [DENY_DDL]
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
            await conn.execute(
                "do $$ begin execute 'set standard_conforming_strings = ' || 'off'; end $$"
            )
        assert "so the session ends" in str(caught.value)
        with pytest.raises(psycopg.OperationalError):
            await conn.execute(SPLIT_BY_BACKSLASH)
    assert await _count() == 1


async def test_a_login_with_standard_conforming_strings_off_is_refused(pg: PgHarness) -> None:
    import asyncpg

    pg.rules = [DENY_DDL]
    await _fresh_table()
    await pg.start()
    with pytest.raises(asyncpg.PostgresError) as caught:
        await asyncpg.connect(
            host="127.0.0.1",
            port=pg.port,
            user="alice",
            password="alice-pw",
            database="test",
            ssl=False,
            server_settings={"standard_conforming_strings": "off"},
        )
    assert "standard_conforming_strings must stay on" in str(caught.value)


async def test_a_read_only_target_stays_read_only_for_every_spelling_of_false(
    pg: PgHarness,
) -> None:
    """PostgreSQL reads `fal`, `fa`, `FALS` as false; the gateway only knew `off`, `false`,
    `no`, `0`, `f`, `n`, `of`, so `SET default_transaction_read_only = fal` passed on a
    read-only target and a write hidden in a function a SELECT calls then ran."""
    await _fresh_table()
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(
            "create or replace function hoop_bypass_write() returns int language sql "
            f"as 'insert into {TABLE} values (2) returning 1'"
        )
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn("readonly"), autocommit=True) as conn:
        for read_write in (
            "set default_transaction_read_only = fal",
            "SET default_transaction_read_only TO 'FA'",
            "set session characteristics as transaction read write",
            "set default_transaction_read_only = 2",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(read_write)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await conn.execute("select hoop_bypass_write()")
        await conn.execute("set default_transaction_read_only = 'tru'")  # true stays allowed
    assert await _count() == 1


@pytest.mark.parametrize(
    ("target", "rule", "first", "then"),
    [
        # (A WHERE made of constants is judged by its shape now, `1 = 2` as `1 = 1`: both
        # restrict no row by its values. SQL given as text still depends on a constant.)
        (
            "test",
            {"name": "no-wholesale", "sql": ["delete_without_where"], "action": "deny"},
            "select query_to_xml('select 1', true, false, '')",
            f"select query_to_xml('delete from {TABLE}', true, false, '')",
        ),
        (
            "test",
            {"name": "no-wholesale", "sql": ["update_without_where"], "action": "deny"},
            f"explain (analyze 0) update {TABLE} set a = 3",
            f"explain (analyze 1) update {TABLE} set a = 3",
        ),
        # The fingerprint leaves out schema names: the tables of public.t were hoop_secret.t's.
        (
            "test",
            {"name": "no-secret", "tables": ["hoop_secret.*"], "action": "deny"},
            f"delete from public.{TABLE} where a = 5",
            f"delete from hoop_secret.{TABLE} where a = 1",
        ),
        # Classes that depend on a constant were never shared, but the session's verdict
        # cache, keyed by the fingerprint, still shared their verdicts.
        (
            "test",
            DENY_WRITES,
            "do $$ begin perform 1; end $$",
            f"do $$ begin delete from {TABLE}; end $$",
        ),
        (
            "test",
            {"name": "no-role", "sql": ["set_role"], "action": "deny"},
            "select set_config('search_path', 'public', false)",
            "select set_config('role', 'pg_monitor', false)",
        ),
        ("readonly", None, "begin read only", "begin read write"),
        (
            "readonly",
            None,
            "set default_transaction_read_only = on",
            "set default_transaction_read_only = off",
        ),
        (
            "readonly",
            None,
            "set session characteristics as transaction read only",
            "set session characteristics as transaction read write",
        ),
    ],
)
async def test_a_statement_is_never_judged_by_the_classes_of_a_look_alike(
    pg: PgHarness, target: str, rule: dict | None, first: str, then: str
) -> None:
    """The classifier shared classes between texts with the same pglast fingerprint, which
    leaves out constants and schema names that decide classes and tables: once a harmless
    look-alike had been seen, the harmful statement got its classes."""
    pg.rules = [rule] if rule else []
    await _fresh_table()
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute("create schema if not exists hoop_secret")
        await conn.execute(f"drop table if exists hoop_secret.{TABLE}")
        await conn.execute(f"create table hoop_secret.{TABLE} (a int)")
        await conn.execute(f"insert into hoop_secret.{TABLE} values (1)")
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(target), autocommit=True) as conn:
        await conn.execute(first)
        if first.startswith("begin"):
            await conn.execute("commit")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(then)
    assert await _count() == 1
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        cur = await conn.execute(f"select count(*) from hoop_secret.{TABLE} where a = 1")
        assert await cur.fetchone() == (1,)
