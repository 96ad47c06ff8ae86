"""Fixtures of the OIDC tests: a real OpenID provider (tests/fixtures/oidc_provider.py), and
the PostgreSQL gateway harness configured to trust it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fixtures.gateway import toml_table
from tests.fixtures.oidc_provider import (
    GATEWAY_CLIENT,
    RESOURCE,
    Provider,
    node_ready,
    start_provider,
)
from tests.proxy.pg.harness import PgHarness, pg_available

PEOPLE = {
    "alice-oidc": {"preferred_username": "dana", "groups": ["/dev", "oncall"]},
    "erin-oidc": {"preferred_username": "erin", "groups": ["ops"]},
}
AGENTS = ["ci-bot", "gone-bot", "stranger-bot"]
SECRET_ENV = "HOOP_TEST_OIDC_SECRET"


def oidc_toml(provider: Provider, **extra: object) -> str:
    """The gateway's [oidc] and [[agents]] sections for `provider`."""
    text = toml_table(
        "[oidc]",
        {
            "issuer": provider.issuer,
            "client_id": GATEWAY_CLIENT,
            "client_secret_env": SECRET_ENV,
            "audience": RESOURCE,
            "scopes": ["openid", "profile", "groups"],
            **extra,
        },
    )
    text += toml_table(
        "[[agents]]", {"name": "ci-bot", "client_id": "ci-bot", "owner": "alice", "groups": ["dev"]}
    )
    text += toml_table(
        "[[agents]]",
        {"name": "gone-bot", "client_id": "gone-bot", "owner": "alice", "revoked": True},
    )
    return text


def _start(directory: Path, **kwargs: object) -> Iterator[Provider]:
    why = node_ready()
    if why is not None:
        pytest.skip(why)
    provider = start_provider(directory, **kwargs)  # type: ignore[arg-type]
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from _start(tmp_path_factory.mktemp("oidc"), agents=AGENTS, people=PEOPLE)


@pytest.fixture(scope="module")
def other_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """Another provider, with a client of the same name: its tokens are not ours."""
    yield from _start(tmp_path_factory.mktemp("oidc-other"), agents=AGENTS, people=PEOPLE)


@pytest.fixture(autouse=True)
def gateway_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.oidc_provider import GATEWAY_SECRET

    monkeypatch.setenv(SECRET_ENV, GATEWAY_SECRET)


@pytest.fixture
async def pg(tmp_path: Path, postgres: tuple[str, int]) -> AsyncIterator[PgHarness]:
    if not pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    harness = PgHarness(tmp_path)
    yield harness
    await harness.stop()
