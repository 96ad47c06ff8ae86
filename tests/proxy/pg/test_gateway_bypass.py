"""Attacks on the PostgreSQL gateway by a caller with a valid login, through the real gateway
in front of the machine's PostgreSQL: each test shows that a trick which once let a denied
statement run (or read a setting the gateway relies on) is now refused."""

from __future__ import annotations

import asyncio

import psycopg

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
