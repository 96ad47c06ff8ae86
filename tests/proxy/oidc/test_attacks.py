"""Attacks on single sign-on through the real components (issue 16's review): each test is a
way in that once worked, or a confusion a hostile agent or outsider would try."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.oidc_provider import Provider
from tests.proxy.oidc.conftest import oidc_toml
from tests.proxy.oidc.test_login import hoop_login, plain_ssh
from tests.proxy.pg.harness import PgHarness

CI_BOT = 'name = "ci-bot"\nclient_id = "ci-bot"\nowner = "alice"\ngroups = ["dev"]\n'


def revoked_ci_bot(provider: Provider) -> str:
    text = oidc_toml(provider)
    assert CI_BOT in text
    return text.replace(CI_BOT, CI_BOT + "revoked = true\n")


async def test_a_revoked_agent_cannot_use_what_hoop_tui_login_issued_it(
    harness: GatewayHarness, provider: Provider, tmp_path: Path, postgres: object
) -> None:
    """Revoking an agent in [[agents]] must end its certificate and gateway password too,
    not leave them working until the token they were exchanged for would have expired."""
    harness.add_target("web1", groups=["dev"])
    harness.extra_toml = oidc_toml(provider)
    await harness.start()
    home = tmp_path / "agent"
    login = await hoop_login(
        harness, home, "ci-bot", {"T": provider.agent_token("ci-bot")}, "--token-env", "T"
    )
    _, err = await asyncio.wait_for(login.communicate(), 60)
    assert login.returncode == 0, err.decode()
    status, _, err_text = await plain_ssh(harness, home, "ci-bot+web1", "true")
    assert status == 0, err_text

    await harness.stop()
    harness.extra_toml = revoked_ci_bot(provider)
    await harness.start()
    status, out, err_text = await plain_ssh(harness, home, "ci-bot+web1", "echo still-in")
    assert status != 0 and "still-in" not in out

    pg = PgHarness(harness.directory)
    pg.extra_toml = revoked_ci_bot(provider)
    await pg.start()
    try:
        env = {**pg.env(user="ci-bot"), "PGSSLMODE": "require", "PGPASSFILE": str(home / "pgpass")}
        env.pop("PGPASSWORD")
        done = await pg.run("psql", "-X", "-tAc", "select 'still-in'", env=env)
        assert done.status != 0 and "still-in" not in done.out
        assert "revoked" in done.err
    finally:
        await pg.stop()
