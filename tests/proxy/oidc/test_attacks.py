"""Attacks on single sign-on through the real components (issue 16's review): each test is a
way in that once worked, or a confusion a hostile agent or outsider would try."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.fixtures.gateway import GatewayHarness, toml_table
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


async def test_a_provider_name_that_only_looks_like_alice_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """A provider account named with a Cyrillic 'а' ("аlice") folds to no local name, so it
    used to get in under a name that the queue, the live list and recordings show as alice.
    The gateway names people in plain ASCII, as [[users]] names are."""
    from tests.fixtures.oidc_provider import start_provider
    from tests.proxy.oidc.test_ssh_device_flow import read_until, start_ssh

    lookalike = "\u0430lice"
    people = {"mallory-oidc": {"preferred_username": lookalike, "groups": ["dev"]}}
    provider = start_provider(tmp_path / "provider", agents=["ci-bot"], people=people)
    try:
        harness.add_user("alice", password="alice-pw", key=False)
        harness.add_target("web1", groups=["dev"])
        harness.extra_toml = oidc_toml(provider)
        await harness.start()
        ssh = await start_ssh(harness, f"{lookalike}+web1", "echo in-as-alice")
        assert ssh.stderr is not None
        shown = await read_until(ssh.stderr, r"enter the code [A-Z]{4}-[A-Z]{4}")
        code = re.search(r"enter the code ([A-Z]{4}-[A-Z]{4})", shown)
        assert code is not None, shown
        await asyncio.to_thread(provider.approve_device, code.group(1), "mallory-oidc")
        out, err = await asyncio.wait_for(ssh.communicate(), 60)
        assert ssh.returncode != 0 and b"in-as-alice" not in out
        assert "letters, digits" in err.decode()
    finally:
        provider.stop()


async def test_an_agents_rm_through_ssh_exec_is_a_write(
    harness: GatewayHarness, provider: Provider, tmp_path: Path
) -> None:
    """Only redirects counted as an agent's shell writes, so `ssh ci-bot+web1 'rm -f FILE'`
    (or cp, sed -i, an interpreter) ran with no hold. Any program not known to only read is
    an agent's write now; cat still runs."""
    victim = tmp_path / "important.txt"
    victim.write_text("keep me\n")
    harness.add_target("web1", groups=["dev"])
    harness.policy = {"agent_writes": "deny"}
    harness.extra_toml = oidc_toml(provider)
    await harness.start_runtime()

    async def agent(command: str) -> tuple[int, str, str]:
        done = await harness.run(
            "ssh",
            "-p",
            str(harness.port),
            "ci-bot+web1@127.0.0.1",
            command,
            user="ci-bot",
            password=provider.agent_token("ci-bot"),
        )
        return done.status, done.out, done.err

    status, out, err = await agent(f"cat {victim}")
    assert status == 0 and out.strip() == "keep me", err
    for command in (
        f"rm -f {victim}",
        f"sed -i s/keep/lose/ {victim}",
        f"python3 -c 'import os; os.remove(\"{victim}\")'",
    ):
        status, _, err = await agent(command)
        assert status != 0 and "agents may not write here" in err, (command, err)
    assert victim.read_text() == "keep me\n"


async def test_an_agent_in_an_approver_group_cannot_approve_from_the_console(
    harness: GatewayHarness, provider: Provider, tmp_path: Path
) -> None:
    """ci-bot is in group dev, the approvers of alice's restarts. Through `ssh ci-bot@gw
    console` (with the certificate hoop-tui login issued it) it approved her held command: an
    approval is a person's judgement, and an agent never gives one."""
    from tests.fixtures.gateway import LineConsole

    harness.add_user("alice", password="alice-pw", groups=("dev",))
    harness.add_target("web1", groups=["dev"])
    harness.add_rule(
        "restarts-need-review", shell="touch *restart*", action="review", approvers=["dev"]
    )
    harness.extra_toml = oidc_toml(provider)
    await harness.start_runtime()
    home = tmp_path / "agent"
    login = await hoop_login(
        harness, home, "ci-bot", {"T": provider.agent_token("ci-bot")}, "--token-env", "T"
    )
    _, err = await asyncio.wait_for(login.communicate(), 60)
    assert login.returncode == 0, err.decode()
    marker = tmp_path / "x-restart"
    held = asyncio.ensure_future(
        harness.ssh_direct("alice+web1", f"touch {marker}", password="alice-pw")
    )
    assert harness.runtime is not None
    for _ in range(200):
        pending = await harness.runtime.broker.pending_holds()
        if pending:
            break
        await asyncio.sleep(0.05)
    (hold,) = pending
    process = await asyncio.create_subprocess_exec(
        "ssh",
        "-T",
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
        "-i",
        str(home / "id_hoop"),
        "-p",
        str(harness.port),
        "ci-bot@127.0.0.1",
        "console",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    console = LineConsole(process)
    try:
        await console.shown(b"hoop console for ci-bot")
        console.type(f"approve {hold.id} looks fine\nquit\n")
        await console.finish()
    finally:
        await console.close()
        held.cancel()
    assert "agents may not decide" in console.seen.decode()
    (still,) = await harness.runtime.broker.pending_holds()
    assert still.id == hold.id and not still.decisions
    assert not marker.exists()


OPAQUE = "urn:hoop:gateway:opaque"


async def test_with_introspection_a_token_revoked_at_the_provider_is_refused(
    pg: PgHarness, provider: Provider
) -> None:
    """[oidc] introspection: the provider's word on whether an agent's token is still active.
    The test provider issues opaque tokens for this resource (it cannot introspect its JWTs):
    one works as ci-bot's password until ci-bot revokes it at the provider; then the next
    login is refused with the reason. With the provider gone, logins fail closed."""
    import httpx
    import psycopg

    pg.extra_toml = oidc_toml(
        provider, audience=OPAQUE, introspection=True, introspection_cache="0s"
    )
    await pg.start()
    token = provider.agent_token("ci-bot", resource=OPAQUE)
    assert not token.startswith("eyJ")  # opaque: only introspection can read it
    dsn = pg.dsn(user="ci-bot", sslmode="require", password=token)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await (await conn.execute("select 'opaque-ok'")).fetchone() == ("opaque-ok",)
    agent = provider.agents["ci-bot"]
    revoked = await asyncio.to_thread(
        httpx.post,
        f"{provider.issuer}/token/revocation",
        data={"token": token, "client_id": agent.client_id, "client_secret": agent.secret},
    )
    assert revoked.status_code == 200, revoked.text
    try:
        await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        raise AssertionError("a revoked token logged in")
    except psycopg.OperationalError as exc:
        assert "no longer active" in str(exc), exc
    fresh = provider.agent_token("ci-bot", resource=OPAQUE)
    provider.stop()
    try:
        await psycopg.AsyncConnection.connect(
            pg.dsn(user="ci-bot", sslmode="require", password=fresh), autocommit=True
        )
        raise AssertionError("a token nobody could vouch for logged in")
    except psycopg.OperationalError as exc:
        assert "did not answer" in str(exc) or "could not say" in str(exc), exc
    finally:
        provider.start()


def test_a_request_is_ones_own_under_any_spelling_of_the_name() -> None:
    """An operator mapped to `Dana` (an OS user's [control.operators] entry) decided the hold
    of dana, the OIDC person: `==` on names let a person approve their own request."""
    from proxy.holds.broker import DecisionRefused, Person
    from storage.state import Hold

    hold = Hold("h-1", "s", "gw", "dana", "web1", "touch x", "r", ["dev"], 1, 0.0, 600.0)
    for approver in (Person("Dana", frozenset({"dev"})), Person("DANA ", frozenset({"dev"}))):
        try:
            approver.may_decide(hold)
            raise AssertionError(f"{approver.name!r} decided dana's own request")
        except DecisionRefused as refused:
            assert "your own request" in str(refused)
    owner = Person("alice", frozenset({"dev"}), answers_for=frozenset({"ci-bot"}))
    try:
        owner.may_decide(Hold("h-2", "s", "gw", "CI-Bot", "web1", "x", "r", ["dev"], 1, 0, 9))
        raise AssertionError("the owner decided their agent's request")
    except DecisionRefused as refused:
        assert "answers for agent" in str(refused)


async def test_a_certificate_voided_by_deleting_its_entry_stays_void_after_a_new_login(
    harness: GatewayHarness, provider: Provider, tmp_path: Path
) -> None:
    """Deleting a caller's entry in issued.json revokes what hoop-tui login issued (a key was
    leaked). Any certificate from the user CA naming the caller used to pass, so the leaked
    one worked again as soon as its owner logged in anew. Parallel logins both keep working."""
    import json

    harness.add_target("web1", groups=["dev"])
    harness.extra_toml = oidc_toml(provider)
    await harness.start()

    async def login(home: Path) -> None:
        env = {"T": provider.agent_token("ci-bot")}
        done = await hoop_login(harness, home, "ci-bot", env, "--token-env", "T")
        _, err = await asyncio.wait_for(done.communicate(), 60)
        assert done.returncode == 0, err.decode()

    leaked, runner, again = tmp_path / "leaked", tmp_path / "runner", tmp_path / "again"
    await login(leaked)
    await login(runner)  # a second runner: both certificates work
    for home in (leaked, runner):
        status, _, err = await plain_ssh(harness, home, "ci-bot+web1", "true")
        assert status == 0, err
    issued = harness.data_dir / "oidc" / "issued.json"
    issued.write_text(json.dumps({}))  # the administrator revokes everything ci-bot holds
    status, _, _ = await plain_ssh(harness, leaked, "ci-bot+web1", "true")
    assert status != 0
    await login(again)
    status, _, err = await plain_ssh(harness, again, "ci-bot+web1", "echo new-ok")
    assert status == 0, err
    status, out, _ = await plain_ssh(harness, leaked, "ci-bot+web1", "echo leaked-in")
    assert status != 0 and "leaked-in" not in out


def test_an_agent_cannot_share_the_gateways_own_client(tmp_path: Path) -> None:
    """An [[agents]] entry with the gateway's client_id would make every access token the
    gateway's client obtains (a person's, through the device flow) that agent's."""
    import pytest

    from proxy.config import ConfigError, load_config
    from tests.proxy.oidc.test_settings import BASE, config

    agents = '[[agents]]\nname = "ci-bot"\nclient_id = "hoop"\nowner = "alice"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(config(tmp_path, BASE + 'audience = "urn:hoop:gateway"\n', agents))
    assert caught.value.key == "agents[0].client_id"
    assert "the gateway's own client" in caught.value.problem
    # the introspection cache is bounded like the clock skew
    with pytest.raises(ConfigError) as caught:
        load_config(config(tmp_path, BASE + 'introspection_cache = "1h"\n'))
    assert caught.value.key == "oidc.introspection_cache"


def test_a_program_a_rule_names_for_the_agent_runs_and_a_catch_all_does_not_vouch() -> None:
    """The way out of the new hold: a rule whose shell pattern names the program for the
    agent. A catch-all allow does not (it names nothing), and a redirect stays held."""
    from proxy.policy import Action, Caller, decide_exec, parse_policy

    bot = Caller("ci-bot", kind="agent", owner="alice")
    named = parse_policy(
        {
            "rules": [
                {
                    "name": "ci-deploys",
                    "callers": ["agent:ci-bot"],
                    "shell": ["deploy.sh *"],
                    "action": "allow",
                }
            ]
        },
        "gateway.toml",
    )
    assert decide_exec(named, bot, "web1", "./deploy.sh web").action is Action.ALLOW
    assert decide_exec(named, bot, "web1", "rm -rf /srv").action is Action.REVIEW
    assert decide_exec(named, bot, "web1", "./deploy.sh web > /etc/x").action is Action.REVIEW
    catch_all = parse_policy(
        {"rules": [{"name": "anything", "callers": ["agent:*"], "action": "allow"}]},
        "gateway.toml",
    )
    assert decide_exec(catch_all, bot, "web1", "rm -rf /srv").action is Action.REVIEW
    assert decide_exec(catch_all, bot, "web1", "ls /srv").action is Action.ALLOW


def _forged(provider: Provider, attacker: object, **headers: object) -> str:
    """A token with ci-bot's claims, signed by the attacker's key, with extra header fields."""
    from tests.proxy.oidc.test_agent_tokens import _claims

    assert hasattr(attacker, "sign")
    token: str = attacker.sign(_claims(provider), **headers)
    return token


def _header_attacks() -> dict[str, tuple[object, str]]:
    import json
    import time as clock

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.fixtures.oidc_provider import new_key
    from tests.proxy.oidc.test_agent_tokens import _claims

    attacker = new_key("attacker")

    def embedded_jwk(p: Provider) -> str:  # the key to check it with, in the token itself
        return _forged(p, attacker, kid=p.keys[0].kid, jwk=attacker.jwk())

    def jku(p: Provider) -> str:  # "fetch my keys from here"
        return _forged(p, attacker, kid=p.keys[0].kid, jku="http://127.0.0.1:1/jwks")

    def x5u(p: Provider) -> str:
        return _forged(p, attacker, kid=p.keys[0].kid, x5u="http://127.0.0.1:1/cert.pem")

    def es256_with_rsa_kid(p: Provider) -> str:  # alg confusion: EC key, RSA key's kid
        key = ec.generate_private_key(ec.SECP256R1())
        return pyjwt.encode(_claims(p), key, algorithm="ES256", headers={"kid": p.keys[0].kid})

    def ps256_is_not_rs256(p: Provider) -> str:  # a published RS256 key used for PS256
        return pyjwt.encode(
            _claims(p), p.keys[0].private, algorithm="PS256", headers={"kid": p.keys[0].kid}
        )

    def future_nbf(p: Provider) -> str:
        now = int(clock.time())
        return p.keys[0].sign(_claims(p, nbf=now + 600, exp=now + 900))

    def huge(p: Provider) -> str:  # 40 kB of claims: refused by signature, not a crash
        return _forged(p, attacker, kid=p.keys[0].kid, pad="x" * 40_000)

    def duplicate_aud(p: Provider) -> str:  # two "aud" members: the parser keeps one
        body = json.dumps(_claims(p))[:-1] + ', "aud": "urn:other:service"}'
        return pyjwt.api_jws.encode(
            body.encode(), p.keys[0].private, algorithm="RS256", headers={"kid": p.keys[0].kid}
        )

    return {
        "jwk header": (embedded_jwk, "signature does not verify"),
        "jku header": (jku, "signature does not verify"),
        "x5u header": (x5u, "signature does not verify"),
        "ES256 under an RSA key's kid": (es256_with_rsa_kid, "does not publish"),
        "PS256 with an RS256 key": (ps256_is_not_rs256, "does not publish"),
        "nbf in the future": (future_nbf, "not valid yet"),
        "a huge forged token": (huge, "signature does not verify"),
        "a duplicate aud": (duplicate_aud, "not meant for this gateway"),
    }


HEADER_ATTACKS = _header_attacks()


@pytest.mark.parametrize("case", list(HEADER_ATTACKS))
async def test_forged_and_confused_tokens_are_refused_through_psycopg(
    pg: PgHarness, provider: Provider, case: str
) -> None:
    """Keys come only from the provider's published set (never from the token's jwk, jku or
    x5u), of the algorithm's own type and `alg`; nbf is honoured; a duplicated claim is read
    once, as the signature covers it."""
    from tests.proxy.oidc.test_agent_tokens import refused

    pg.extra_toml = oidc_toml(provider)
    await pg.start()
    make, reason = HEADER_ATTACKS[case]
    assert callable(make)
    message = await refused(pg, "ci-bot", make(provider))
    assert "token refused" in message and reason in message, message


async def test_an_agents_sftp_and_scp_writes_are_writes(
    harness: GatewayHarness, provider: Provider, tmp_path: Path
) -> None:
    """Files reach a target by SFTP (and scp, which speaks SFTP) as well as by a shell: an
    agent's upload is a write too, its download is not."""
    harness.add_target("web1", groups=["dev"])
    harness.policy = {"agent_writes": "deny"}
    harness.extra_toml = oidc_toml(provider)
    await harness.start_runtime()
    home = tmp_path / "agent"
    login = await hoop_login(
        harness, home, "ci-bot", {"T": provider.agent_token("ci-bot")}, "--token-env", "T"
    )
    _, err = await asyncio.wait_for(login.communicate(), 60)
    assert login.returncode == 0, err.decode()
    source = tmp_path / "payload.txt"
    source.write_text("payload\n")
    readable = tmp_path / "readable.txt"
    readable.write_text("read me\n")
    options = [
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={harness.directory / 'known_hosts'}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-i", str(home / "id_hoop"),
    ]  # fmt: skip

    async def run(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, (out + err).decode()

    batch = tmp_path / "batch"
    batch.write_text(f"put {source} {tmp_path}/uploaded-sftp.txt\n")
    status, text = await run(
        "sftp", *options, "-P", str(harness.port), "-b", str(batch), "ci-bot+web1@127.0.0.1"
    )
    assert status != 0, text
    assert not (tmp_path / "uploaded-sftp.txt").exists()
    status, text = await run(
        "scp", *options, "-P", str(harness.port), str(source),
        f"ci-bot+web1@127.0.0.1:{tmp_path}/uploaded-scp.txt",
    )  # fmt: skip
    assert status != 0, text
    assert not (tmp_path / "uploaded-scp.txt").exists()
    status, text = await run(
        "scp", *options, "-P", str(harness.port),
        f"ci-bot+web1@127.0.0.1:{readable}", str(tmp_path / "downloaded.txt"),
    )  # fmt: skip
    assert status == 0, text
    assert (tmp_path / "downloaded.txt").read_text() == "read me\n"


async def test_an_agents_server_functions_are_writes(pg: PgHarness, provider: Provider) -> None:
    """`select lo_import(...)` writes a large object, lo_export a file on the database server,
    pg_terminate_backend ends another session: as "read" statements they ran for an agent
    unheld. They are its writes now; a plain select still runs."""
    import psycopg

    pg.extra_toml = toml_table("[policy]", {"agent_writes": "deny"}) + oidc_toml(provider)
    await pg.start()
    dsn = pg.dsn(user="ci-bot", sslmode="require", password=provider.agent_token("ci-bot"))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await (await conn.execute("select 41 + 1")).fetchone() == (42,)
        for statement in (
            "select pg_cancel_backend(0)",
            "select lo_import('/etc/hostname')",
            "select pg_terminate_backend(0)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="agents may not"):
                await conn.execute(statement)


async def test_an_agent_gets_no_port_forward_where_a_person_does(
    harness: GatewayHarness, provider: Provider
) -> None:
    """A forward carries traffic to the target's services that no gate reads, so on a target
    that allows `-L` an agent's strict shell was walked around with `ssh -W`: the agent reached
    a service on the target's loopback. Agents get no forward; a person still does."""
    reached: list[bytes] = []

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(await reader.read(100))
        writer.write(b"service-answer\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(service, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    harness.add_user("alice", password="alice-pw", groups=("dev",))
    harness.add_target("web1", groups=["dev"], port_forwarding=["local"])
    harness.extra_toml = oidc_toml(provider)
    await harness.start_runtime()
    try:
        agent = await harness.run(
            "ssh", "-p", str(harness.port), "-W", f"127.0.0.1:{port}", "ci-bot+web1@127.0.0.1",
            user="ci-bot", password=provider.agent_token("ci-bot"), stdin=b"agent-hello\n",
        )  # fmt: skip
        assert agent.status != 0
        assert "agents may not forward ports" in agent.err, agent.err
        assert "service-answer" not in agent.out
        person = await harness.run(
            "ssh", "-p", str(harness.port), "-W", f"127.0.0.1:{port}", "alice+web1@127.0.0.1",
            user="alice", password="alice-pw", stdin=b"person-hello\n",
        )  # fmt: skip
        assert "service-answer" in person.out, person.err
        assert reached == [b"person-hello\n"]
    finally:
        server.close()
        await server.wait_closed()
