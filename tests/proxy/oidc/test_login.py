"""`hoop-tui login` signs in once (a person through the device flow, an agent with its token)
and leaves an SSH certificate that plain `ssh` uses, and a password `psql` uses, until the
token's expiry (issue 16)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.fixtures.oidc_provider import Provider
from tests.proxy.oidc.conftest import oidc_toml
from tests.proxy.pg.harness import PgHarness


async def hoop_login(
    harness: GatewayHarness, home: Path, user: str, env: dict[str, str] | None = None, *extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hoop_tui",
        "login",
        "--gateway",
        f"127.0.0.1:{harness.port}",
        "--user",
        user,
        "--dir",
        str(home),
        "--known-hosts",
        str(harness.directory / "known_hosts"),
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


async def plain_ssh(
    harness: GatewayHarness, home: Path, login: str, command: str
) -> tuple[int, str, str]:
    """`ssh -i ~/.hoop/id_hoop` with BatchMode: the certificate beside the key, nothing else."""
    process = await asyncio.create_subprocess_exec(
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        f"UserKnownHostsFile={harness.directory / 'known_hosts'}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "PreferredAuthentications=publickey",
        "-i",
        str(home / "id_hoop"),
        "-p",
        str(harness.port),
        f"{login}@127.0.0.1",
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def gateway(harness: GatewayHarness, provider: Provider) -> None:
    harness.add_target("web1", groups=["dev"])
    harness.extra_toml = oidc_toml(provider)
    await harness.start()


async def test_a_person_logs_in_once_then_uses_plain_ssh_and_psql(
    harness: GatewayHarness, provider: Provider, tmp_path: Path, postgres: object
) -> None:
    await gateway(harness, provider)
    home = tmp_path / "home"
    before, _, err = await plain_ssh(harness, home, "dana+web1", "true")
    assert before != 0  # no key, no certificate yet
    login = await hoop_login(harness, home, "dana")
    assert login.stderr is not None
    shown = b""
    while not re.search(rb"enter the code [A-Z]{4}-[A-Z]{4}", shown):
        chunk = await asyncio.wait_for(login.stderr.read(1024), 30)
        assert chunk, shown
        shown += chunk
    code = re.search(rb"enter the code ([A-Z]{4}-[A-Z]{4})", shown)
    assert code is not None
    await asyncio.to_thread(provider.approve_device, code.group(1).decode(), "alice-oidc")
    out, err_bytes = await asyncio.wait_for(login.communicate(), 60)
    assert login.returncode == 0, err_bytes.decode()
    assert "Signed in as dana (person) until" in out.decode()
    assert (home / "id_hoop-cert.pub").read_text().startswith("ssh-ed25519-cert-v01@openssh.com ")
    assert oct((home / "pgpass").stat().st_mode & 0o777) == "0o600"

    status, out_text, err = await plain_ssh(harness, home, "dana+web1", "echo cert-ok")
    assert status == 0, err
    assert out_text.strip() == "cert-ok"

    pg = PgHarness(harness.directory)  # the same data directory: the same issued credentials
    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    try:
        env = {**pg.env(user="dana"), "PGSSLMODE": "require", "PGPASSFILE": str(home / "pgpass")}
        env.pop("PGPASSWORD")
        done = await pg.run("psql", "-X", "-tAc", "select 'pg-ok'", env=env)
        assert done.status == 0, done.err
        assert done.out.strip() == "pg-ok"
        env["PGPASSWORD"] = "hoopgw_" + "x" * 43
        wrong = await pg.run("psql", "-X", "-tAc", "select 1", env=env)
        assert wrong.status != 0 and "run `hoop-tui login`" in wrong.err
    finally:
        await pg.stop()


async def test_an_agent_exchanges_its_token_for_a_short_lived_certificate(
    harness: GatewayHarness, provider: Provider, tmp_path: Path
) -> None:
    await gateway(harness, provider)
    home = tmp_path / "agent"
    env = {"CI_TOKEN": provider.agent_token("ci-bot")}
    login = await hoop_login(harness, home, "ci-bot", env, "--token-env", "CI_TOKEN")
    out, err = await asyncio.wait_for(login.communicate(), 60)
    assert login.returncode == 0, err.decode()
    assert "Signed in as ci-bot (agent) until" in out.decode()
    status, out_text, err_text = await plain_ssh(harness, home, "ci-bot+web1", "echo agent-cert-ok")
    assert status == 0, err_text
    assert out_text.strip() == "agent-cert-ok"

    revoked = await hoop_login(
        harness,
        tmp_path / "gone",
        "gone-bot",
        {"T": provider.agent_token("gone-bot")},
        "--token-env",
        "T",
    )
    _, err = await asyncio.wait_for(revoked.communicate(), 60)
    assert revoked.returncode != 0
    assert "has been revoked" in err.decode()
    assert not (tmp_path / "gone" / "id_hoop-cert.pub").exists()
