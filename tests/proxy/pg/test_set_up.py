"""Connection set-up (issue 19, class 8): the target login a client waits for is made ahead
of time for the next client like the last admitted one, and never for a client that has not
authenticated."""

from __future__ import annotations

import asyncio
import datetime
import secrets
import shutil
import socket

import psycopg
import pytest

from tests.proxy.pg.harness import DIRECT_DSN, PgHarness

APP = "hoop-set-up-test"
BACKENDS = (
    "select count(*) from pg_stat_activity where application_name = %s and pid <> pg_backend_pid()"
)


async def _backends(app: str) -> int:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as admin:
        cur = await admin.execute(BACKENDS, [app])
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_the_next_client_starts_on_a_target_login_made_before_it_came(
    pg: PgHarness,
) -> None:
    await pg.start()
    dsn = pg.dsn(application_name=APP)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as first:
        await first.execute("select 1")
    await asyncio.sleep(0.3)
    came = datetime.datetime.now(datetime.UTC)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as second:
        cur = await second.execute(
            "select backend_start from pg_stat_activity where pid = pg_backend_pid()"
        )
        row = await cur.fetchone()
        assert row is not None
        assert row[0] < came  # logged in while no client was waiting for it
        cur = await second.execute("select current_setting('application_name')")
        assert await cur.fetchone() == (APP,)  # with this client's own startup parameters


async def test_a_client_that_fails_to_log_in_causes_no_target_login(pg: PgHarness) -> None:
    app = f"{APP}-wrong"
    await pg.start()
    wrong = pg.dsn(application_name=app).replace("alice-pw", "wrong")
    for _ in range(3):
        with pytest.raises(psycopg.OperationalError):
            await psycopg.AsyncConnection.connect(wrong)
    await asyncio.sleep(0.3)
    assert await _backends(app) == 0


async def test_spare_logins_can_be_turned_off(pg: PgHarness) -> None:
    app = f"{APP}-off"
    pg.postgres["spare_logins"] = 0
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(application_name=app)) as conn:
        await conn.execute("select 1")
    await asyncio.sleep(0.3)
    assert await _backends(app) == 0


async def test_clients_arriving_together_never_share_a_target_login(pg: PgHarness) -> None:
    await pg.start()
    dsn = pg.dsn(application_name=f"{APP}-together")
    async with await psycopg.AsyncConnection.connect(dsn) as first:
        await first.execute("select 1")  # its spare for the next client is being made
    clients = await asyncio.gather(
        *(psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(6))
    )
    try:
        assert len({client.info.backend_pid for client in clients}) == len(clients)
        for client in clients:
            cur = await client.execute("select pg_backend_pid()")
            assert await cur.fetchone() == (client.info.backend_pid,)
    finally:
        for client in clients:
            await client.close()


async def test_a_target_login_under_way_goes_to_one_client_only(pg: PgHarness) -> None:
    await pg.start()
    assert pg.gateway is not None
    spares, target = pg.gateway.spares, pg.gateway.settings.targets["test"]
    params = {"application_name": f"{APP}-one"}
    spares.refill(target, params)
    taken = await asyncio.gather(*(spares.take(target, params) for _ in range(4)))
    logins = [upstream for upstream in taken if upstream is not None]
    assert len(logins) == 1  # the others log in on their own
    logins[0].writer.close()


async def test_a_session_that_cannot_be_recorded_runs_nothing(pg: PgHarness) -> None:
    """The client may be greeted while its recording opens, but what it sends is read only
    once the recording is open: when it cannot be, the client gets the refusal in place of its
    first statement's answer and the statement never reaches the target (fail closed)."""
    table = "hoop_set_up_unrecorded"
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as admin:
        await admin.execute(f"drop table if exists {table}")
        await admin.execute(f"create table {table} (n int)")
        try:
            await pg.start()
            recordings = pg.directory / "data" / "recordings"
            if recordings.exists():
                shutil.rmtree(recordings)
            recordings.write_text("a file where the recordings' directory should be\n")
            done = await pg.psql("-c", f"insert into {table} values (1)")
            assert done.status != 0
            assert "the gateway cannot record this session" in done.err
            cur = await admin.execute(f"select count(*) from {table}")
            assert await cur.fetchone() == (0,)
        finally:
            await admin.execute(f"drop table if exists {table}")


async def test_a_full_recording_spool_refuses_a_login_and_says_why(
    pg: PgHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recordings go to an object store that does not answer: they wait in the spool, and once
    it holds more than its limit a new session is refused, with the reason a caller may read
    (as over SSH) and nothing of the gateway's paths or the store's address."""
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    monkeypatch.setenv("HOOP_TEST_S3_ACCESS", "key")
    monkeypatch.setenv("HOOP_TEST_S3_SECRET", "secret")
    pg.extra_toml = (
        '[recordings]\nurl = "s3://nowhere/recordings"\n'
        f'endpoint = "http://127.0.0.1:{dead}"\nregion = "us-east-1"\n'
        'access_key_env = "HOOP_TEST_S3_ACCESS"\nsecret_key_env = "HOOP_TEST_S3_SECRET"\n'
        'spool_limit = "1KiB"\n'
    )
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        # recorded (random text does not compress): the spool passes its limit
        await conn.execute("select %s::text", [secrets.token_hex(4000)])
    said = ""
    for _ in range(50):  # once the first session's recording is closed into the spool
        try:
            async with await psycopg.AsyncConnection.connect(pg.dsn()) as conn:
                await conn.execute("select 1")
        except psycopg.OperationalError as exc:
            said = str(exc)
            break
        await asyncio.sleep(0.1)
    assert "the gateway cannot record this session" in said
    assert "recording spool holds" in said and "limit" in said, said
    assert str(pg.directory) not in said and f"127.0.0.1:{dead}" not in said
