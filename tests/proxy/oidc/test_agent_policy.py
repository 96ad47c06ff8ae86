"""Agents are callers policy knows: rules name them with `callers`, their writes are held by
default, and what a person may do is unchanged. Through psycopg with a real provider's token
(issue 16)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from proxy.holds.broker import Person
from tests.fixtures.gateway import toml_table
from tests.fixtures.oidc_provider import Provider
from tests.proxy.oidc.conftest import oidc_toml
from tests.proxy.pg.harness import PgHarness

BOB = Person("bob", frozenset({"oncall"}))


async def hold_id(pg: PgHarness, timeout: float = 10.0) -> str:
    assert pg.service is not None
    for _ in range(int(timeout / 0.05)):
        pending = await pg.service.broker.pending_holds()
        if pending:
            return pending[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("no hold appeared")


async def agent(pg: PgHarness, provider: Provider) -> psycopg.AsyncConnection:
    dsn = pg.dsn(user="ci-bot", sslmode="require", password=provider.agent_token("ci-bot"))
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def test_an_agents_writes_are_held_and_a_persons_are_not(
    pg: PgHarness, provider: Provider
) -> None:
    pg.extra_toml = toml_table("[policy]", {"approvers": ["oncall"]}) + oidc_toml(provider)
    await pg.start()
    assert pg.service is not None
    async with await agent(pg, provider) as conn:
        assert await (await conn.execute("select 7")).fetchone() == (7,)  # reads run
        task = asyncio.ensure_future(conn.execute("create temp table scratch (a int)"))
        held = await hold_id(pg)
        assert not task.done()
        await pg.service.decide_hold(held, BOB, approve=False, reason="agents ask first")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            await asyncio.wait_for(task, 10)
        assert "agents ask first" in str(caught.value)
    person = pg.dsn(user="bob", sslmode="require")
    async with await psycopg.AsyncConnection.connect(person, autocommit=True) as conn:
        await asyncio.wait_for(conn.execute("create temp table scratch (a int)"), 10)
    assert not await pg.service.broker.pending_holds()


async def test_a_rule_for_agents_applies_to_agents_only(pg: PgHarness, provider: Provider) -> None:
    pg.rules = [
        {
            "name": "agents-read-nothing-here",
            "callers": ["agent:*"],
            "sql": ["read"],
            "action": "deny",
        },
        {"name": "oncall-reads", "callers": ["group:oncall"], "sql": ["read"], "action": "allow"},
    ]
    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    async with await agent(pg, provider) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="agents-read-nothing-here"):
            await conn.execute("select 1")
    person = pg.dsn(user="bob", sslmode="require")
    async with await psycopg.AsyncConnection.connect(person, autocommit=True) as conn:
        assert await (await conn.execute("select 1")).fetchone() == (1,)
