"""Agents log in with a client-credentials access token from a real OpenID provider, as the
PostgreSQL password over TLS; every token the gateway must not trust is refused with a reason
the client shows (issue 16)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import jwt
import psycopg
import pytest

from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.reader import RecordingReader
from tests.fixtures.oidc_provider import (
    RESOURCE,
    Provider,
    hs256_with,
    new_key,
    unsigned_token,
)
from tests.proxy.oidc.conftest import oidc_toml
from tests.proxy.pg.harness import PgHarness


async def connect(pg: PgHarness, user: str, token: str) -> psycopg.AsyncConnection:
    dsn = pg.dsn(user=user, sslmode="require", password=token)
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def refused(pg: PgHarness, user: str, token: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        await connect(pg, user, token)
    return str(caught.value)


async def test_an_agent_token_is_its_postgres_password_and_the_recording_names_the_agent(
    pg: PgHarness, provider: Provider
) -> None:
    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    token = provider.agent_token("ci-bot")
    async with await connect(pg, "ci-bot", token) as conn:
        row = await (await conn.execute("select 41 + 1")).fetchone()
    assert row == (42,)
    await pg.wait_closed_recordings(1)
    with RecordingReader.open(pg.recordings()[0]) as reader:
        assert reader.header.user == "ci-bot"
        extra = reader.header.extra or {}
    assert extra["caller_kind"] == "agent"
    assert (extra["owner"], extra["client_id"], extra["identity_source"]) == (
        "alice",
        "ci-bot",
        "oidc",
    )
    shown = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hoop_tui",
        "info",
        str(pg.recordings()[0]),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await shown.communicate()
    assert "user:       ci-bot (agent of alice, client ci-bot)" in out.decode()
    rows = SqliteCatalogue.in_data_dir(pg.directory / "data").find_sessions(SessionQuery())
    assert [row.caller for row in rows] == [
        {"caller_kind": "agent", "owner": "alice", "client_id": "ci-bot", "subject": "ci-bot"}
    ]


def _claims(provider: Provider, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": provider.issuer,
        "sub": "ci-bot",
        "client_id": "ci-bot",
        "aud": RESOURCE,
        "iat": now,
        "exp": now + 300,
        "scope": "gateway",
    }
    claims.update(changes)
    return claims


REFUSALS: dict[str, tuple[Callable[[Provider, Provider], str], str]] = {
    "expired": (
        lambda p, o: p.keys[0].sign(
            _claims(p, iat=int(time.time()) - 900, exp=int(time.time()) - 120)
        ),
        "the token has expired",
    ),
    "wrong audience": (
        lambda p, o: p.agent_token("ci-bot", resource="urn:other:service"),
        "not meant for this gateway",
    ),
    "wrong issuer": (
        lambda p, o: p.keys[0].sign(_claims(p, iss="https://evil.example")),
        "was issued by 'https://evil.example'",
    ),
    "alg none": (lambda p, o: unsigned_token(_claims(p)), "alg none is never accepted"),
    "HS256 signed with the public key": (
        lambda p, o: hs256_with(p.keys[0].public_pem(), _claims(p), p.keys[0].kid),
        "shared-secret algorithm",
    ),
    "a token from another provider": (
        lambda p, o: o.agent_token("ci-bot"),
        "was issued by",
    ),
    "another provider's key claiming our issuer": (
        lambda p, o: o.keys[0].sign(_claims(p)),
        "a key the provider does not publish",
    ),
    "a revoked client": (lambda p, o: p.agent_token("gone-bot"), "has been revoked"),
    "a client that is no agent": (
        lambda p, o: p.agent_token("stranger-bot"),
        "is not an agent of this gateway",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_tokens_the_gateway_must_not_trust_are_refused_with_a_reason(
    pg: PgHarness, provider: Provider, other_provider: Provider, case: str
) -> None:
    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    make, reason = REFUSALS[case]
    user = "gone-bot" if "revoked" in case else "stranger-bot" if "no agent" in case else "ci-bot"
    message = await refused(pg, user, make(provider, other_provider))
    assert "token refused" in message and reason in message, message
    assert not pg.recordings()


async def test_an_agent_token_is_refused_under_another_callers_name(
    pg: PgHarness, provider: Provider
) -> None:
    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    message = await refused(pg, "bob", provider.agent_token("ci-bot"))
    assert "it is agent ci-bot's; log in as ci-bot" in message


async def test_the_gateway_follows_the_providers_key_rotation(
    pg: PgHarness, provider: Provider
) -> None:
    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    old = provider.keys
    async with await connect(pg, "ci-bot", provider.agent_token("ci-bot")):
        pass
    fresh = new_key(f"key-3-{time.time_ns()}")
    provider.rotate([fresh, old[0]])
    try:
        token = provider.agent_token("ci-bot")
        assert jwt.get_unverified_header(token)["kid"] == fresh.kid
        time.sleep(2.1)  # the gateway fetches a key set again at most every 2 s
        async with await connect(pg, "ci-bot", token) as conn:
            assert await (await conn.execute("select 1")).fetchone() == (1,)
    finally:
        provider.rotate(old)


async def test_local_and_directory_users_keep_their_passwords_beside_oidc(
    pg: PgHarness, provider: Provider
) -> None:
    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    async with await psycopg.AsyncConnection.connect(
        pg.dsn(user="bob", sslmode="require"), autocommit=True
    ) as conn:
        assert await (await conn.execute("select 1")).fetchone() == (1,)
