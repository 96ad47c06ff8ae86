"""COPY ... TO STDOUT through the gateway, masked: psql, psycopg, asyncpg and pg_dump, on a
real table; the masked dump still restores."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import psycopg
import pytest

from storage.schema import EventType
from tests.proxy.pg.harness import DIRECT_DSN, PgHarness

TABLE = "hoop_copy_users"
CARD = "4111 1111 1111 1111"
MASKS = (
    '[[masks]]\nname = "passwords"\ncolumn = "password*"\n'
    '[[masks]]\nname = "cards"\ndetector = "credit_card"\nstyle = "last4"\n'
)


async def _fresh_table() -> None:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {TABLE}")
        await conn.execute(
            f"create table {TABLE} (id int primary key, name text not null,"
            " password_hash text not null, note text)"
        )
        await conn.execute(
            f"insert into {TABLE} values (1, 'alice', 'hunter2', %s),"
            " (2, 'bob', 'tab\there', null), (3, 'carol', 'line\nbreak', 'plain')",
            (f"paid with {CARD}",),
        )


async def _events(pg: PgHarness, count: int = 1) -> list[Any]:
    await pg.wait_closed_recordings(count)
    return [event for path in pg.recordings() for event in pg.events(path)]


def _assert_masked(text: str) -> None:
    assert "hunter2" not in text and "tab\there" not in text and "break" not in text
    assert CARD not in text and "**** **** **** 1111" in text
    assert "********" in text and "alice" in text and "carol" in text


async def test_psql_copy_text_and_csv_are_masked(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    for command in (
        f"copy {TABLE} to stdout",  # no column list: the gateway asks the catalogue
        f"copy {TABLE} (id, name, password_hash, note) to stdout with (format csv, header)",
        f"copy (select name, password_hash as password, note from {TABLE} order by id)"
        " to stdout with csv",  # a query: the gateway asks for its description
        f"\\copy {TABLE} to stdout with csv header",
    ):
        result = await pg.psql("-c", command)
        assert result.status == 0, (command, result.err)
        _assert_masked(result.out)
        assert result.out.count("\n") >= 3
    csv = await pg.psql("-c", f"copy {TABLE} to stdout with (format csv, header)")
    assert csv.out.splitlines()[0] == "id,name,password_hash,note"
    assert '2,bob,"********",' in csv.out
    events = await _events(pg, 5)
    masks = [e for e in events if e.type is EventType.MASK]
    assert {m["rule"] for m in masks} == {"passwords", "cards"}
    # Each act names its column (the query's alias where it has one).
    assert {m["column"] for m in masks if m["rule"] == "passwords"} == {
        "password_hash",
        "password",
    }
    assert {m["column"] for m in masks if m["rule"] == "cards"} == {"note"}
    results = [e for e in events if e.type is EventType.SQL_RESULT and e["rows"] == 3]
    assert results and all("hunter2" not in str(r["sample"]) for r in results)
    assert any(r["columns"] == ["id", "name", "password_hash", "note"] for r in results)


async def test_temp_tables_binary_and_strings_of_several_statements(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        # The catalogue question runs on the client's own connection: it sees temp tables.
        await conn.execute("create temp table secrets (password text, n int)")
        await conn.execute("insert into secrets values ('s3cret', 1)")
        async with conn.cursor().copy("copy secrets to stdout") as copy:
            data = b"".join([bytes(chunk) async for chunk in copy])
        assert data == b"********\t1\n"
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            async with conn.cursor().copy(f"copy {TABLE} to stdout (format binary)") as copy:
                async for _ in copy:
                    pass
        assert "binary" in str(caught.value)
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            await conn.execute(f"select 1; copy {TABLE} to stdout")
        assert "column list" in str(caught.value)
        cur = await conn.execute("select 1")
        assert await cur.fetchone() == (1,)
        # A value detector may find a secret in any column: a binary COPY is refused even
        # when it names no masked column.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with conn.cursor().copy(f"copy {TABLE} (id) to stdout (format binary)") as copy:
                async for _ in copy:
                    pass


async def test_asyncpg_copy_out_is_masked(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    conn = await pg.asyncpg()
    try:
        sink = io.BytesIO()
        await conn.copy_from_table(TABLE, output=sink, format="csv")
        _assert_masked(sink.getvalue().decode())
        sink = io.BytesIO()
        await conn.copy_from_query(f"select * from {TABLE}", output=sink)
        _assert_masked(sink.getvalue().decode())
        assert await conn.fetchval("select 2") == 2
    finally:
        await conn.close()


async def test_pg_dump_is_masked_and_restores(pg: PgHarness, tmp_path) -> None:
    pg.extra_toml = MASKS
    await _fresh_table()
    await pg.start()
    dump_file = tmp_path / "dump.sql"
    dump = await pg.run(
        "pg_dump", "--no-sync", "--no-owner", "-t", TABLE, "-f", str(dump_file), timeout=90
    )
    assert dump.status == 0, dump.err
    text = dump_file.read_text()
    _assert_masked(text)
    assert f"COPY public.{TABLE} (id, name, password_hash, note) FROM stdin;" in text
    scratch = f"hoop_restore_{tmp_path.name[-8:].replace('-', '_').lower()}"
    env = pg.env()
    env.update(PGPORT="5432", PGUSER="root", PGDATABASE="postgres")
    await pg.run("dropdb", "--if-exists", scratch, env=env)
    created = await pg.run("createdb", scratch, env=env)
    assert created.status == 0, created.err
    try:
        env["PGDATABASE"] = scratch
        restored = await pg.run(
            "psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(dump_file), env=env, timeout=90
        )
        assert restored.status == 0, restored.err
        rows = await pg.run(
            "psql", "-X", "-At", "-c", f"select * from {TABLE} order by id", env=env
        )
        assert rows.out.splitlines() == [
            "1|alice|********|paid with **** **** **** 1111",
            "2|bob|********|",
            "3|carol|********|plain",
        ]
    finally:
        env["PGDATABASE"] = "postgres"
        await pg.run("dropdb", "--if-exists", scratch, env=env)
    await asyncio.sleep(0)
