"""An agent's SQL that runs code the gateway cannot read is held like its writes (issue 16's
attack review): a function of the operator's in a SELECT that INSERTs (or an operator's),
`CALL`, `nextval`, `setval`, `lo_from_bytea`, `lo_create`. PostgreSQL's own readers still run
unheld, and a person's identical statements are unaffected. Through psycopg with a real
provider's token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from proxy.holds.broker import Person
from tests.fixtures.gateway import toml_table
from tests.fixtures.oidc_provider import Provider
from tests.proxy.oidc.conftest import oidc_toml
from tests.proxy.oidc.test_agent_policy import agent, hold_id
from tests.proxy.pg.harness import DIRECT_DSN, PgHarness

BOB = Person("bob", frozenset({"oncall"}))
READS = [
    "select count(*), now(), max(lower(relname)), coalesce(null, 1) from pg_class",
    """select '{"a": 1}'::jsonb -> 'a', '{"a": 1}'::jsonb ? 'a', jsonb_build_object('b', 2)""",
    "select pg_catalog.pg_get_userbyid(10), has_table_privilege('pg_class', 'select')",
    "select current_setting('search_path'), version(), to_char(now(), 'YYYY')",
]


@pytest.fixture
def objects() -> Iterator[str]:
    """A table, a function that INSERTs into it, a procedure that does, and a sequence, under
    one fresh name (the test database is shared), dropped afterwards."""
    name = f"agent_code_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DIRECT_DSN, autocommit=True) as conn:
        conn.execute(f"create table {name} (n text)")
        conn.execute(
            f"create function {name}_f() returns int language sql"
            f" as $$ insert into {name} values ('f') returning 1 $$"
        )
        conn.execute(
            f"create procedure {name}_p() language sql as $$ insert into {name} values ('p') $$"
        )
        conn.execute(f"create sequence {name}_s")
        conn.execute(
            f"create function {name}_o(int, int) returns bool language sql"
            f" as $$ insert into {name} values ('o') returning true $$"
        )
        conn.execute("drop operator if exists === (int, int)")
        conn.execute(f"create operator === (leftarg = int, rightarg = int, function = {name}_o)")
    try:
        yield name
    finally:
        with psycopg.connect(DIRECT_DSN, autocommit=True) as conn:
            conn.execute("drop operator === (int, int)")
            conn.execute(f"drop function {name}_f(), {name}_o(int, int); drop procedure {name}_p()")
            conn.execute(f"drop table {name}; drop sequence {name}_s")


def statements(name: str) -> list[str]:
    return [
        f"select {name}_f()",
        f"call {name}_p()",
        "select 1 === 2",  # an operator runs its function
        f"select nextval('{name}_s')",
        f"select setval('{name}_s', 41)",
        "select lo_unlink(lo_from_bytea(0, 'agent'))",
        "select lo_unlink(lo_create(0))",
    ]


def direct(sql: str) -> object:
    with psycopg.connect(DIRECT_DSN, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return row[0] if row else None


async def test_an_agents_calls_of_code_are_held_and_run_once_approved(
    pg: PgHarness, provider: Provider, objects: str
) -> None:
    pg.extra_toml = toml_table("[policy]", {"approvers": ["oncall"]}) + oidc_toml(provider)
    await pg.start()
    assert pg.service is not None
    async with await agent(pg, provider) as conn:
        for sql in statements(objects):
            task = asyncio.ensure_future(conn.execute(sql))
            held = await hold_id(pg)
            assert not task.done(), sql
            (hold,) = await pg.service.broker.pending_holds()
            assert hold.user == "ci-bot" and sql in hold.command  # what the approver sees
            await pg.service.decide_hold(held, BOB, approve=True, reason="looked at it")
            await asyncio.wait_for(task, 10)
        assert direct(f"select string_agg(n, ',' order by n) from {objects}") == "f,o,p"
        assert direct(f"select last_value from {objects}_s") == 41
        for sql in READS:  # PostgreSQL's own readers still run, unheld
            await asyncio.wait_for(conn.execute(sql), 10)
    assert not await pg.service.broker.pending_holds()


async def test_a_persons_identical_calls_run_unheld(
    pg: PgHarness, provider: Provider, objects: str
) -> None:
    pg.extra_toml = toml_table("[policy]", {"approvers": ["oncall"]}) + oidc_toml(provider)
    await pg.start()
    assert pg.service is not None
    person = pg.dsn(user="bob", sslmode="require")
    async with await psycopg.AsyncConnection.connect(person, autocommit=True) as conn:
        for sql in statements(objects) + READS:
            await asyncio.wait_for(conn.execute(sql), 10)
    assert not await pg.service.broker.pending_holds()
    assert direct(f"select string_agg(n, ',' order by n) from {objects}") == "f,o,p"
