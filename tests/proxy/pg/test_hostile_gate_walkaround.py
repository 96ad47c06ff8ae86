"""Walking around the issue-13 gate (attack): conditions that hold for every row but read as a
restricting WHERE (`not (id is null)`, `id is distinct from null` or from `$1` bound to NULL,
`(id = id) = true`), and a
listed SQL-text procedure run by `CALL`, through the real gateway with psql, psycopg and
asyncpg (the `gate` fixture of test_hostile_gate: the recommended deny list)."""

from __future__ import annotations

from typing import Any

import asyncpg
import psycopg
import pytest

from tests.proxy.pg.harness import PgHarness
from tests.proxy.pg.test_hostile_gate import SOURCE_DB, _direct, _victim_rows, gate

__all__ = ["gate"]


async def _asyncpg(gate: PgHarness) -> Any:
    """asyncpg (binary results, every statement prepared) to the `src` target."""
    return await asyncpg.connect(
        host="127.0.0.1", port=gate.port, user="alice", password="alice-pw", database="src"
    )


# Each holds for every row of victim (its key is never NULL), so each deletes or updates all.
EVERY_ROW = [
    "delete from victim where not (id is null)",
    "delete from victim where not (id is not distinct from null)",
    "delete from victim where id is distinct from null",
    "delete from victim where id is distinct from null::int",
    "delete from victim where id is distinct from (select null::int)",
    "delete from victim where not (id is not distinct from (select null))",
    "delete from victim where id - id = 0",
    "delete from victim where not (not (id is not null))",
    "delete from victim where not (id is true and id is null)",
    "delete from victim where (id = id) = true",
    "delete from victim where (id = id) is true",
    "delete from victim where (id = id) <> false",
    "delete from victim where (id = id) is not distinct from true",
    "delete from victim where not ((id = id) = false)",
    "delete from victim where ((id = id) = true) = true",
    "delete from victim where (id is not null) = true",
    "delete from victim where (id is null) = false",
    "delete from victim where (v is null) is false",
    # a CTE over the target is the target again: its values are the target's own
    "with w as (select id from victim) delete from victim where id in (select id from w)",
    "with w as (select id from victim) update victim set v = 'x' where id in (table w)",
    "with a as (select id from victim), b as (select id from a) "
    "delete from victim where id = any(array(select id from b))",
    "with w as (select id from victim) delete from victim using w where victim.id = w.id",
    "with w as (select * from victim) merge into victim v using w s on v.id = s.id "
    "when matched then delete",
    "with w as (select id from victim), d as (delete from victim where id in "
    "(select id from w) returning 1) select count(*) from d",
    # SQL given as text reads the target where the tree does not show it
    "delete from victim where id::text in (select unnest(xpath('//id/text()', "
    "query_to_xml('select id from victim', true, false, '')))::text)",
    "delete from victim where id::text = any(xpath('//id/text()', "
    "query_to_xml('select id from victim', true, false, ''))::text[])",
    "delete from victim where id in (select (xpath('//id/text()', x))[1]::text::int "
    "from unnest(xpath('//row', table_to_xml('victim', true, false, ''))) x)",
    "update victim set v = 'x' where not (id is null)",
    "update victim set v = 'x' where (id = id) = true",
    "merge into victim v using (select 1 as id) s on v.id = s.id "
    "when not matched by source and not (v.id is null) then delete",
]


async def test_conditions_true_for_every_row_are_no_where(gate: PgHarness) -> None:
    before = await _victim_rows()
    for sql in EVERY_ROW:
        result = await gate.psql("-c", sql, database="src")
        assert "42501" in result.err or "denied" in result.err, (sql, result.err)
        assert await _victim_rows() == before, sql
    async with await psycopg.AsyncConnection.connect(gate.dsn("src"), autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            for sql, params in [
                ("delete from victim where not (id is null) or %s", (False,)),
                ("delete from victim where (id = id) = %s", (True,)),
                ("update victim set v = 'x' where (id = id) is not distinct from %s", (True,)),
            ]:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await cur.execute(sql, params)
                assert await _victim_rows() == before, (sql, binary)
    conn_a = await _asyncpg(gate)
    try:
        for sql in ("delete from victim where id is distinct from $1", EVERY_ROW[6]):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn_a.execute(sql, *((None,) if "$1" in sql else ()))
            assert await _victim_rows() == before, sql
    finally:
        await conn_a.close()
    # a condition on the target's own values still runs, negated or compared to a constant
    for sql, tag in [
        ("delete from victim where not (id is not null) or id = 5", "DELETE 1"),
        ("update victim set v = 'n' where (id = 4) = true", "UPDATE 1"),
        ("update victim set v = 'm' where (id = 3) is true", "UPDATE 1"),
        ("update victim set v = 'k' where not (v is not null) or id = 2", "UPDATE 1"),
        ("with w as (select 3 as id) update victim set v = 'm' where id in (table w)", "UPDATE 1"),
    ]:
        result = await gate.psql("-c", sql, database="src")
        assert tag in result.out, (sql, result.err)
    assert await _victim_rows() == [(1, "row1"), (2, "k"), (3, "m"), (4, "n")]


async def test_a_listed_procedure_run_by_call_is_judged_by_its_sql(gate: PgHarness) -> None:
    await _direct(
        SOURCE_DB,
        "create procedure run_sql(q text, n int) language plpgsql as $$ begin execute q; end $$",
    )
    before = await _victim_rows()
    for sql in [
        "call run_sql('delete from victim', 0)",
        "call public.run_sql('update victim set v = ''x''', 0)",
        "call run_sql('drop table victim', 0)",
        "call run_sql(chr(100) || 'elete from victim', 0)",
    ]:
        result = await gate.psql("-c", sql, database="src")
        assert "42501" in result.err or "denied" in result.err, (sql, result.err)
        assert await _victim_rows() == before, sql
    conn_a = await _asyncpg(gate)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn_a.execute("call run_sql($1, 0)", "delete from victim")
        await conn_a.execute("call run_sql('delete from victim where id = 5', 0)")
    finally:
        await conn_a.close()
    assert len(await _victim_rows()) == len(before) - 1


async def test_a_table_named_as_text_is_read_as_postgresql_reads_it(gate: PgHarness) -> None:
    """`table_to_xml` takes its table as regclass text: quotes, blanks and an OID name the
    denied table as surely as `secrets` does."""
    await gate.stop()
    gate.rules = [
        {
            "name": "no-secrets",
            "targets": ["src"],
            "tables": ["secrets"],
            "action": "deny",
            "message": "no secrets",
        },
        *gate.rules,
    ]
    await gate.start()
    (oid,) = (await _direct(SOURCE_DB, "select 'secrets'::regclass::oid"))[0]
    for table in ['"secrets"', " secrets ", 'public."secrets"', str(oid), "SECRETS"]:
        for function in ("table_to_xml", "table_to_xml_and_xmlschema"):
            sql = f"select {function}('{table}', true, false, '')"
            result = await gate.psql("-At", "-c", sql, database="src")
            assert (
                "42501" in result.err or "denied" in result.err or "no secrets" in (result.err)
            ), (sql, result.err)
            assert "zebra" not in result.out, (sql, result.out[:200])
    conn_a = await _asyncpg(gate)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn_a.fetchval(f"select table_to_xml('{oid}', true, false, '')")
        # another table named the same ways still reads
        xml = await conn_a.fetchval("select table_to_xml(' \"victim\" ', true, false, '')")
        assert "row1" in xml
    finally:
        await conn_a.close()
