"""The PostgreSQL gate against a hostile caller (issue 13), through the real gateway with psql,
psycopg (text and binary cursors) and asyncpg, with the deny list docs/configuration.md
recommends: writes that reach every row without a WHERE the gateway recognises, SQL given to
a function as text, server files and libraries, table rewrites, statistics; and pg_dump with
pg_restore still round-tripping through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.proxy.pg.harness import PG_HOST, PG_PORT, PgHarness

SOURCE_DB = "hoop_h4_src"
RESTORE_DB = "hoop_h4_dst"
ROOT = f"host={PG_HOST} port={PG_PORT} user=root"
# docs/configuration.md's recommended deny list
RECOMMENDED = [
    "ddl",
    "truncate",
    "delete_without_where",
    "update_without_where",
    "copy_program",
    "copy_file",
    "do_block",
    "set_role",
    "server_file",
    "dynamic_sql",
    "statistics",
    "table_rewrite",
    "unparsable",
]
ROWS = 5


def _targets() -> list[dict[str, Any]]:
    base = {"protocol": "postgres", "host": PG_HOST, "port": PG_PORT, "user": "root"}
    return [
        {"name": "src", **base, "database": SOURCE_DB, "groups": ["*"]},
        {"name": "dst", **base, "database": RESTORE_DB, "groups": ["*"]},
    ]


async def _direct(database: str, *sql: str) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(
        f"{ROOT} dbname={database}", autocommit=True
    ) as conn:
        rows: list[Any] = []
        for statement in sql:
            cur = await conn.execute(statement)
            rows = await cur.fetchall() if cur.description else []
        return rows


async def _victim_rows() -> list[Any]:
    return await _direct(SOURCE_DB, "select id, v from victim order by id")


@pytest.fixture
async def gate(pg: PgHarness) -> AsyncIterator[PgHarness]:
    """A gateway whose `src` target has the recommended deny list, over a fresh database
    with a `victim` table of five rows (and dblink, as an attacker's superuser role has)."""
    async with await psycopg.AsyncConnection.connect(
        f"{ROOT} dbname=test", autocommit=True
    ) as conn:
        for database in (SOURCE_DB, RESTORE_DB):
            await conn.execute(f"drop database if exists {database} with (force)")
            for attempt in range(20):  # template1 may be in use by another test for a moment
                try:
                    await conn.execute(f"create database {database}")
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.25)
    await _direct(
        SOURCE_DB,
        "create extension dblink",
        "create table victim (id int primary key, v text)",
        f"insert into victim select i, 'row' || i from generate_series(1, {ROWS}) i",
        "create table secrets (id int, token text)",
        "insert into secrets select i, 'tok-' || i || '-zebra' from generate_series(1, 50) i",
        "create function run_sql(q text) returns void language plpgsql "
        "as $$ begin execute q; end $$",
    )
    pg.targets = _targets()
    pg.rules = [
        {
            "name": "recommended",
            "targets": ["src"],
            "sql": RECOMMENDED,
            "action": "deny",
            "message": "denied",
        }
    ]
    pg.extra_toml = "[postgres.sql_functions]\nrun_sql = 1\n"  # the operator's own
    await pg.start()
    yield pg


ALL_ROWS = [
    "merge into victim v using victim s on v.id = s.id when matched then delete",
    "merge into victim v using victim s on v.id = s.id when matched then update set v = 'x'",
    "merge into victim v using (select id from victim) s on v.id = s.id when matched then delete",
    "insert into victim select * from victim on conflict (id) do update set v = 'x'",
    "insert into victim select id, 'y' from victim on conflict (id) do update set v = 'x'",
    "delete from victim where 't'",
    "delete from victim where not false",
    "delete from victim where id = id",
    "delete from victim where id + 0 = id",
    "update victim set v = 'x' where 1 in (1)",
    "delete from victim where null is null",
    "delete from victim where 1 between 0 and 2",
    "delete from victim where coalesce(true)",
    "delete from victim where id = 1 or true",
    "delete from victim where true and id is not distinct from id",
    "delete from victim using pg_settings where name is not null",
    "delete from victim v using victim s where v.id = s.id",
    "update victim set v = 'x' from (select true as ok) s where ok",
    "with d as (delete from victim where 'yes'::bool returning 1) select count(*) from d",
    "delete from victim where id is not null",
    "delete from victim where (id = 5) is not false",
    "delete from victim where id in (select id from victim)",
    "update victim set v = 'x' where exists (select 1 from victim w where w.id = victim.id)",
    "prepare p(bool) as delete from victim where $1",
]


async def test_writes_to_every_row_are_refused_in_every_client(gate: PgHarness) -> None:
    before = await _victim_rows()
    assert len(before) == ROWS
    for sql in ALL_ROWS:
        result = await gate.psql("-c", sql, database="src")
        assert "42501" in result.err or "denied" in result.err, (sql, result.err)
        assert await _victim_rows() == before, sql
    for binary in (False, True):
        async with await psycopg.AsyncConnection.connect(gate.dsn("src"), autocommit=True) as conn:
            cur = conn.cursor(binary=binary)
            for sql, params in [
                ("delete from victim where %s", (True,)),
                ("update victim set v = 'x' where %s", (True,)),
                ("delete from victim where id = id or %s", (False,)),
                *[(sql, None) for sql in ALL_ROWS[:6]],
            ]:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await cur.execute(sql, params)
                assert await _victim_rows() == before, (sql, binary)
    import asyncpg

    conn_a = await asyncpg.connect(
        host="127.0.0.1",
        port=gate.port,
        user="alice",
        password="alice-pw",
        database="src",
    )
    try:
        for sql, args in [("delete from victim where $1", (True,)), (ALL_ROWS[0], ())]:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn_a.execute(sql, *args)
        # a WHERE on the target's own values still runs, prepared or not
        assert await conn_a.execute("update victim set v = $1 where id = $2", "z", 1) == (
            "UPDATE 1"
        )
        assert await conn_a.execute("delete from victim where id in (4, 5)") == "DELETE 2"
        merged = await conn_a.execute(
            "merge into victim v using (values (2)) s(id) on v.id = s.id "
            "when matched then update set v = 'm'"
        )
        assert merged == "MERGE 1"
        upsert = "insert into victim values (3, 'u') on conflict (id) do update set v = 'u'"
        assert await conn_a.execute(upsert) == "INSERT 0 1"
    finally:
        await conn_a.close()
    assert await _victim_rows() == [(1, "z"), (2, "m"), (3, "u")]


SERVER_SIDE = [
    "load 'auto_explain'",
    "vacuum full victim",
    "vacuum (full, analyze) victim",
    "cluster victim using victim_pkey",
    "select * from pg_ls_logdir()",
    "select pg_ls_waldir()",
    "select * from pg_catalog.pg_ls_tmpdir()",
    "select pg_ls_dir('.')",
    "select * from pg_file_settings",
    "select * from pg_catalog.pg_hba_file_rules",
    "select pg_show_all_file_settings()",
]


async def test_server_files_libraries_and_rewrites_are_refused(gate: PgHarness) -> None:
    for sql in SERVER_SIDE:
        result = await gate.psql("-c", sql, database="src")
        assert "denied" in result.err, (sql, result.out, result.err)
    async with await psycopg.AsyncConnection.connect(gate.dsn("src"), autocommit=True) as conn:
        for sql in SERVER_SIDE:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(sql)
        await conn.execute("vacuum victim")  # a plain vacuum is not a rewrite
        await conn.execute("analyze victim")


async def test_sql_given_as_text_is_judged_by_that_sql(gate: PgHarness) -> None:
    drop = (
        "select query_to_xml('select dblink_exec(''host=127.0.0.1 port=5432 user=root "
        f"dbname={SOURCE_DB}'', ''drop table victim'')', true, false, '')"
    )
    texts = [
        drop,
        f"select dblink_exec('dbname={SOURCE_DB} user=root host=127.0.0.1', 'delete from victim')",
        f"select * from dblink('dbname={SOURCE_DB} user=root host=127.0.0.1', "
        "'delete from victim returning id') as t(id int)",
        "select query_to_xml('select pg_read_file(''/etc/hostname'')', true, false, '')",
        # not a constant: only known when it runs
        "select query_to_xml(chr(115) || 'elect 1', true, false, '')",
        "select query_to_xml($q$select $q$ || 'pg_ls_logdir()', true, false, '')",
        "select schema_to_xml('public', true, false, '')",
        f"select dblink_exec((select 'dbname={SOURCE_DB}'), (select 'drop table victim'))",
    ]
    for sql in texts:
        result = await gate.psql("-c", sql, database="src")
        assert "denied" in result.err, (sql, result.out, result.err)
    assert len(await _victim_rows()) == ROWS
    async with await psycopg.AsyncConnection.connect(gate.dsn("src"), autocommit=True) as conn:
        for sql in texts[:2]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(sql)
        cur = await conn.execute("select query_to_xml('select id from victim', true, false, '')")
        assert "<id>1</id>" in str(await cur.fetchall())  # a constant read still runs
    assert len(await _victim_rows()) == ROWS


async def test_statistics_catalogues_are_refused(gate: PgHarness) -> None:
    await _direct(SOURCE_DB, "analyze secrets")
    reads = [
        "select histogram_bounds from pg_stats where tablename = 'secrets'",
        "select most_common_vals::text from pg_catalog.pg_stats",
        "select stavalues1 from pg_statistic",
        "select * from pg_stats_ext",
        "select (select array_agg(s) from pg_stats s)",
    ]
    for sql in reads:
        result = await gate.psql("-At", "-c", sql, database="src")
        assert "denied" in result.err, (sql, result.out)
        assert "zebra" not in result.out


async def test_pg_dump_and_pg_restore_round_trip_through_the_deny_list(
    gate: PgHarness, tmp_path: Path
) -> None:
    dump = tmp_path / "src.dump"
    result = await gate.run(
        "pg_dump", "--no-sync", "-Fc", "-f", str(dump), database="src", timeout=120
    )
    assert result.status == 0, result.err
    restored = await gate.run(
        "pg_restore", "--no-owner", "-d", RESTORE_DB, str(dump), database="dst", timeout=120
    )
    assert restored.status == 0, restored.err
    assert await _direct(RESTORE_DB, "select id, v from victim order by id") == (
        await _victim_rows()
    )
    assert await _direct(RESTORE_DB, "select count(*) from secrets") == [(50,)]


async def test_functions_the_operator_lists_are_judged_by_their_sql(gate: PgHarness) -> None:
    for sql in [
        "select run_sql('delete from victim')",
        "select public.run_sql($$drop table victim$$)",
        "select run_sql(chr(100) || 'elete from victim')",
        "select 1 from run_sql((select 'truncate victim'))",
    ]:
        result = await gate.psql("-c", sql, database="src")
        assert "denied" in result.err, (sql, result.out, result.err)
    assert len(await _victim_rows()) == ROWS
    ran = await gate.psql(
        "-c", "select run_sql('update victim set v = ''w'' where id = 1')", database="src"
    )
    assert ran.status == 0 and "denied" not in ran.err, ran.err
    assert (await _victim_rows())[0] == (1, "w")


async def test_a_rule_on_a_table_covers_reads_of_its_statistics(pg: PgHarness) -> None:
    async with await psycopg.AsyncConnection.connect(
        f"{ROOT} dbname=test", autocommit=True
    ) as conn:
        await conn.execute("drop table if exists hoop_h4_secrets")
        await conn.execute("create table hoop_h4_secrets (token text)")
        await conn.execute(
            "insert into hoop_h4_secrets select 'tok-' || i || '-zebra' "
            "from generate_series(1, 50) i"
        )
        await conn.execute("analyze hoop_h4_secrets")
    pg.rules = [
        {"name": "secrets", "tables": ["hoop_h4_secrets"], "action": "deny", "message": "no"}
    ]
    await pg.start()
    for sql in [
        "select histogram_bounds from pg_stats where tablename = 'hoop_h4_secrets'",
        "select s.most_common_vals from pg_stats s "
        "where s.schemaname = 'public' and s.tablename = 'hoop_h4_secrets'",
        "select stavalues1 from pg_statistic where starelid = 'hoop_h4_secrets'::regclass",
    ]:
        result = await pg.psql("-At", "-c", sql)
        assert "no (rule secrets)" in result.err, (sql, result.out[:200])
        assert "zebra" not in result.out
    other = await pg.psql("-At", "-c", "select count(*) from pg_stats where tablename = 'x'")
    assert other.out.strip() == "0"  # statistics of other tables: the rule is not about them
