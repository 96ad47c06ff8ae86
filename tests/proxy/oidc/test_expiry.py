"""A session opened with a token ends when the token expires: the caller is told why (issue 16)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.gateway import GatewayHarness, toml_table
from tests.fixtures.oidc_provider import Provider
from tests.proxy.oidc.conftest import AGENTS, PEOPLE, _start, oidc_toml
from tests.proxy.pg.harness import PgHarness


@pytest.fixture
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """A provider whose access tokens live five seconds."""
    yield from _start(
        tmp_path_factory.mktemp("oidc-short"), agents=AGENTS, people=PEOPLE, access_token_ttl=5
    )


async def test_an_agents_ssh_session_ends_when_its_token_expires(
    harness: GatewayHarness, short_lived: Provider, tmp_path: Path
) -> None:
    harness.add_target("web1", groups=["dev"])
    harness.extra_toml = oidc_toml(short_lived, clock_skew="0s")
    await harness.start()
    token = short_lived.agent_token("ci-bot")
    started = time.monotonic()
    result = await harness.run(
        "ssh",
        "-p",
        str(harness.port),
        "ci-bot+web1@127.0.0.1",
        "echo started; sleep 60; echo not-reached",
        user="ci-bot",
        password=token,
        timeout=40,
    )
    took = time.monotonic() - started
    assert "started" in result.out and "not-reached" not in result.out
    assert result.status != 0
    assert "sign-in has expired" in result.err, result.err
    assert took < 20


@pytest.fixture
async def pg(tmp_path: Path, postgres: object) -> AsyncIterator[PgHarness]:
    harness = PgHarness(tmp_path / "pg")
    yield harness
    await harness.stop()


async def test_with_on_expiry_deny_a_session_stays_but_refuses_what_comes_after(
    pg: PgHarness, short_lived: Provider
) -> None:
    pg.extra_toml = toml_table("[policy]", {"on_expiry": "deny"}) + oidc_toml(
        short_lived, clock_skew="0s"
    )
    await pg.start()
    token = short_lived.agent_token("ci-bot")
    dsn = pg.dsn(user="ci-bot", sslmode="require", password=token)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await (await conn.execute("select 1")).fetchone() == (1,)
        await asyncio.sleep(6)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="sign-in has expired"):
            await conn.execute("select 2")


async def test_an_agents_postgres_session_ends_when_its_token_expires(
    pg: PgHarness, short_lived: Provider
) -> None:
    pg.extra_toml = oidc_toml(short_lived, clock_skew="0s")
    await pg.start()
    token = short_lived.agent_token("ci-bot")
    dsn = pg.dsn(user="ci-bot", sslmode="require", password=token)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await (await conn.execute("select 1")).fetchone() == (1,)
        await asyncio.sleep(6)
        with pytest.raises(psycopg.OperationalError, match="sign-in has expired"):
            await conn.execute("select 2")


async def test_a_reconnect_with_an_expired_token_is_refused_though_it_passed_moments_ago(
    pg: PgHarness, short_lived: Provider
) -> None:
    """The gateway remembers verified passwords for a minute; never past a token's expiry."""
    pg.extra_toml = oidc_toml(short_lived, clock_skew="0s")
    await pg.start()
    dsn = pg.dsn(user="ci-bot", sslmode="require", password=short_lived.agent_token("ci-bot"))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True):
        pass
    await asyncio.sleep(6)
    with pytest.raises(psycopg.OperationalError, match="the token has expired"):
        await psycopg.AsyncConnection.connect(dsn, autocommit=True)
