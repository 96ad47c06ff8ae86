"""Through the gateway, PostgreSQL behaves like PostgreSQL (issue 19): a refusal fails the
transaction on both sides, single-byte client encodings work, the client knows its backend,
a server-side disconnect reaches the client as the server sent it, typos are syntax errors,
and the refusal of a plain connection names its setting. Real psycopg, asyncpg and psql
through the gateway to the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, pq
from psycopg.pq import TransactionStatus

from tests.fixtures.waiting import readable, ready
from tests.proxy.pg.harness import (
    BOB_PASSWORD,
    DIRECT_DSN,
    PgHarness,
    backend_messages,
    scram_reply,
    tls_login_start,
)

DENY_TRUNCATE = {
    "name": "no-truncate",
    "sql": ["truncate"],
    "action": "deny",
    "message": "truncate needs a change request",
}


@pytest.fixture
async def table() -> AsyncIterator[str]:
    """A fresh table of this test in the `test` database, dropped afterwards."""
    name = f"hoop_like_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"create table {name} (id int)")
    yield name
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {name}")


async def _count(table: str) -> int:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        cur = await conn.execute(f"select count(*) from {table}")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


# -- 1. a refusal inside a transaction block fails it, on both sides -------------------------


async def test_a_refusal_in_a_transaction_fails_it_extended_protocol(
    pg: PgHarness, table: str
) -> None:
    """psycopg (extended protocol): after the refusal the transaction is INERROR, the next
    statement gets 25P02, and COMMIT rolls the insert back."""
    pg.rules = [DENY_TRUNCATE]
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn()) as conn:
        await conn.execute(f"insert into {table} values (1)")
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute(f"truncate {table}")
        assert conn.info.transaction_status is TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            await conn.execute(f"insert into {table} values (2)")
        cur = conn.cursor()
        await cur.execute("commit")
        assert cur.statusmessage == "ROLLBACK"
    assert await _count(table) == 0


async def test_a_refusal_in_a_transaction_fails_it_simple_protocol(
    pg: PgHarness, table: str
) -> None:
    """asyncpg's execute() without arguments (simple protocol): the same."""
    pg.rules = [DENY_TRUNCATE]
    await pg.start()
    conn = await pg.asyncpg()
    try:
        await conn.execute(f"begin; insert into {table} values (1)")
        with pytest.raises(Exception) as caught:
            await conn.execute(f"truncate {table}")
        assert getattr(caught.value, "sqlstate", "") == "42501"
        with pytest.raises(Exception) as caught:
            await conn.execute("select 1")
        assert getattr(caught.value, "sqlstate", "") == "25P02"
        assert await conn.execute("commit") == "ROLLBACK"
    finally:
        await conn.close()
    assert await _count(table) == 0


async def test_psql_script_with_a_refusal_and_a_typo_commits_nothing(
    pg: PgHarness, table: str
) -> None:
    """psql: a refused statement and a typo each fail the transaction they are in."""
    pg.rules = [DENY_TRUNCATE]
    await pg.start()
    script = (
        f"begin;\ninsert into {table} values (1);\ntruncate {table};\n"
        f"insert into {table} values (2);\ncommit;\n"
        f"begin;\ninsert into {table} values (3);\nselec 1;\ncommit;\n"
    ).encode()
    done = await pg.run("psql", "-X", "-v", "ON_ERROR_STOP=0", "-f", "-", stdin=script)
    assert done.out.count("ROLLBACK") == 2, done.out + done.err
    assert "current transaction is aborted" in done.err
    assert await _count(table) == 0


async def test_a_refused_first_message_of_a_batch_still_fails_the_transaction(
    pg: PgHarness, table: str
) -> None:
    """A refused Parse with nothing of its batch forwarded yet: the server is made to fail
    the open transaction all the same."""
    pg.rules = [DENY_TRUNCATE]
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("begin")
        await conn.execute(f"insert into {table} values (1)")
        assert conn.info.transaction_status is TransactionStatus.INTRANS
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute(f"truncate {table}", prepare=True)
        assert conn.info.transaction_status is TransactionStatus.INERROR
        cur = await conn.execute("commit")
        assert cur.statusmessage == "ROLLBACK"
    assert await _count(table) == 0


async def test_a_refusal_outside_a_transaction_leaves_the_session_idle(pg: PgHarness) -> None:
    pg.rules = [DENY_TRUNCATE]
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute("truncate nothing_here")
        assert conn.info.transaction_status is TransactionStatus.IDLE
        cur = await conn.execute("select 1")
        assert await cur.fetchone() == (1,)


# -- 2. client encodings ----------------------------------------------------------------------


async def test_latin9_queries_errors_and_columns_are_read_in_latin9(pg: PgHarness) -> None:
    pg.rules = [DENY_TRUNCATE]
    await pg.start()
    dsn = pg.dsn(client_encoding="LATIN9")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert conn.info.encoding == "iso8859-15"
        cur = await conn.execute("select '€ café' as \"prix €\"")
        assert await cur.fetchone() == ("€ café",)
        assert cur.description is not None and cur.description[0].name == "prix €"
        # The server's error, in LATIN9, reaches the client and the session goes on.
        with pytest.raises(errors.UndefinedTable) as caught:
            await conn.execute('select * from "tablé_€"')
        assert "tablé_€" in str(caught.value)
        # Judged in LATIN9: the rule still applies, the session still works.
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute('truncate "tablé_€"')
        cur = await conn.execute("select %s::text", ["ñ€"])
        assert await cur.fetchone() == ("ñ€",)


async def test_switching_to_latin1_and_win1252_mid_session(pg: PgHarness) -> None:
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("set client_encoding to 'LATIN1'")
        cur = await conn.execute("select 'señor'")
        assert await cur.fetchone() == ("señor",)
        await conn.execute("set client_encoding to 'WIN1252'")
        cur = await conn.execute("select '€'")
        assert await cur.fetchone() == ("€",)


async def test_psql_in_latin1(pg: PgHarness) -> None:
    await pg.start()
    env = pg.env()
    env["PGCLIENTENCODING"] = "LATIN1"
    done = await pg.run(
        "psql", "-X", "-At", "-f", "-", env=env, stdin="select 'é';\n".encode("latin-1")
    )
    assert done.status == 0, done.err
    assert done.stdout.strip() == "é".encode("latin-1")


@pytest.mark.parametrize("encoding", ["SJIS", "BIG5", "GBK", "GB18030", "UHC"])
async def test_encodings_with_ascii_trailing_bytes_are_refused(
    pg: PgHarness, encoding: str
) -> None:
    await pg.start()
    with pytest.raises(psycopg.OperationalError) as caught:
        await psycopg.AsyncConnection.connect(pg.dsn(client_encoding=encoding))
    assert f"client_encoding {encoding} is not allowed" in str(caught.value)


async def test_encodings_the_gateway_cannot_read_are_refused(pg: PgHarness) -> None:
    await pg.start()
    with pytest.raises(psycopg.OperationalError) as caught:
        await psycopg.AsyncConnection.connect(pg.dsn(client_encoding="EUC_TW"))
    assert "cannot read SQL in it" in str(caught.value)
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.FeatureNotSupported):
            await conn.execute("set client_encoding to 'MULE_INTERNAL'")
        cur = await conn.execute("show client_encoding")
        assert await cur.fetchone() == ("UTF8",)


# -- 3. backend identity ----------------------------------------------------------------------


async def test_the_client_knows_its_backend_and_cancel_still_works(pg: PgHarness) -> None:
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        cur = await conn.execute("select pg_backend_pid()")
        assert await cur.fetchone() == (conn.info.backend_pid,)
        received = []
        conn.add_notify_handler(received.append)
        await conn.execute("listen hoop_pid")
        await conn.execute("notify hoop_pid, 'x'")
        await conn.execute("select 1")
        assert [note.pid for note in received] == [conn.info.backend_pid]
        task = asyncio.ensure_future(conn.execute("select pg_sleep(20)"))
        await asyncio.sleep(0.3)
        await conn.cancel_safe()
        with pytest.raises(errors.QueryCanceled):
            await asyncio.wait_for(task, 10)


# -- 4. a server-side disconnect --------------------------------------------------------------


async def test_pg_terminate_backend_reaches_the_client_as_admin_shutdown(pg: PgHarness) -> None:
    await pg.start()
    conn = await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True)
    try:
        async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as admin:
            cur = await admin.execute("select pg_terminate_backend(%s)", [conn.info.backend_pid])
            assert await cur.fetchone() == (True,)
        await asyncio.sleep(0.3)
        with pytest.raises(errors.AdminShutdown) as caught:
            await conn.execute("select 1")
        assert "terminating connection due to administrator command" in str(caught.value)
        assert conn.closed
    finally:
        await conn.close()


async def test_pg_terminate_backend_through_asyncpg(pg: PgHarness) -> None:
    await pg.start()
    conn = await pg.asyncpg()
    pid = await conn.fetchval("select pg_backend_pid()")
    assert conn.get_server_pid() == pid
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as admin:
        await admin.execute("select pg_terminate_backend(%s)", [pid])
    await asyncio.sleep(0.3)
    assert conn.is_closed()
    await conn.close()


# -- 6. typos with a permissive policy --------------------------------------------------------


async def test_a_typo_with_no_rules_is_a_syntax_error(pg: PgHarness) -> None:
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.SyntaxError) as caught:
            await conn.execute("meh")
        assert 'syntax error at or near "meh"' in str(caught.value)
        cur = await conn.execute("select 1")
        assert await cur.fetchone() == (1,)
    done = await pg.psql("-c", "selec 1")
    assert 'syntax error at or near "selec"' in done.err
    assert "needs review" not in done.err


async def test_a_rule_naming_unparsable_still_decides(pg: PgHarness) -> None:
    pg.rules = [{"name": "no-unparsable", "sql": ["unparsable"], "action": "deny"}]
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute("meh")


async def test_a_strict_policy_still_holds_unparsable_text(pg: PgHarness) -> None:
    pg.extra_toml = '[policy]\ndefault = "deny"\nunparsable = "deny"\n'
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute("meh")


# -- 7. plain connections ---------------------------------------------------------------------


async def test_the_plain_refusal_names_its_setting(pg: PgHarness) -> None:
    pg.postgres = {}
    await pg.start()
    with pytest.raises(psycopg.OperationalError) as caught:
        await psycopg.AsyncConnection.connect(pg.dsn(user="bob"))
    assert "[postgres] allow_plain = true" in str(caught.value)
    done = await pg.psql("-c", "select 1", user="bob")
    assert "allow_plain" in done.err


# -- 8. connection set-up ---------------------------------------------------------------------

CAROL_PASSWORD = "carol-pw"


def _carol(log_n: int) -> str:
    from proxy.auth import hash_password

    return (
        '[[users]]\nname = "carol"\n'
        f'password_hash = "{hash_password(CAROL_PASSWORD, log_n=log_n)}"\ngroups = ["dev"]\n'
    )


def _carol_dsn(pg: PgHarness) -> str:
    where = f"host=127.0.0.1 port={pg.port} dbname=test sslmode=require"
    return f"{where} user=carol password={CAROL_PASSWORD}"


async def _connect_ms(dsn: str) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    conn = await psycopg.AsyncConnection.connect(dsn)
    await conn.close()
    return (loop.time() - started) * 1000


async def test_a_reconnect_does_not_pay_the_password_hash_again(pg: PgHarness) -> None:
    """A password inside TLS against a costly scrypt hash: the first login pays it, the
    logins after it within `login_cache` seconds do not."""
    pg.extra_toml = _carol(15)
    await pg.start()
    first = await _connect_ms(_carol_dsn(pg))
    again = sorted([await _connect_ms(_carol_dsn(pg)) for _ in range(5)])
    assert again[2] < first / 2, (first, again)


async def test_the_login_cache_never_lets_a_wrong_password_in(pg: PgHarness) -> None:
    pg.extra_toml = _carol(4)
    await pg.start()
    await _connect_ms(_carol_dsn(pg))  # the right password, now remembered
    for wrong in ("carol-pw ", "Carol-pw", "carol-p", "x"):
        with pytest.raises(psycopg.OperationalError) as caught:
            await psycopg.AsyncConnection.connect(_carol_dsn(pg), password=wrong)
        assert "password authentication failed" in str(caught.value)
    with pytest.raises(psycopg.OperationalError):  # another user, the same password
        await psycopg.AsyncConnection.connect(_carol_dsn(pg).replace("user=carol", "user=alice"))


async def test_the_login_cache_can_be_turned_off(pg: PgHarness) -> None:
    pg.extra_toml = _carol(15)
    pg.postgres = {"allow_plain": True, "login_cache": 0}
    await pg.start()
    first = await _connect_ms(_carol_dsn(pg))
    again = sorted([await _connect_ms(_carol_dsn(pg)) for _ in range(3)])
    assert again[1] > first / 3, (first, again)


# -- 5. large statements under load -----------------------------------------------------------

BIG_QUERY = b"/* %s */ select 'x' as f from pg_sleep(0.01); select 1 as foo;" % (b"x" * 1_000_000)


def _nonblocking_send_query(dsn: str, rounds: int) -> None:
    """psycopg's own test_send_query: a 1 MB simple query sent by a nonblocking libpq, which
    reads while its sends wait."""
    for _ in range(rounds):
        with psycopg.connect(dsn) as conn:
            pgconn = conn.pgconn
            pgconn.nonblocking = 1
            pgconn.send_query(BIG_QUERY)
            while pgconn.flush():
                can_read, can_write = ready(pgconn.socket, 30)
                assert can_read or can_write, "the gateway stopped reading the client"
                if can_read and not can_write:
                    pgconn.consume_input()
            statuses = []
            while True:
                pgconn.consume_input()
                if pgconn.is_busy():
                    assert readable(pgconn.socket, 30), "no answer from the gateway"
                    continue
                result = pgconn.get_result()
                if result is None:
                    break
                statuses.append(result.status)
            assert statuses == [pq.ExecStatus.TUPLES_OK] * 2


def _big_binds_and_copies(dsn: str, rounds: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create temp table rows_in (a text)")
        for _ in range(rounds):
            cur = conn.execute("select length(%s)", ["y" * 1_000_000])
            assert cur.fetchone() == (1_000_000,)
            with conn.cursor().copy("copy rows_in from stdin") as copy:
                for _ in range(10):
                    copy.write_row(["z" * 100_000])
            total = 0
            with conn.cursor().copy("copy rows_in to stdout") as copy:
                for chunk in copy:
                    total += len(chunk)
            assert total >= 1_000_000


@pytest.mark.parametrize("sslmode", ["disable", "require"])
async def test_large_statements_copy_rows_and_binds_under_load(pg: PgHarness, sslmode: str) -> None:
    await pg.start()
    dsn = pg.dsn(sslmode=sslmode)
    jobs = [asyncio.to_thread(_nonblocking_send_query, dsn, 3) for _ in range(3)]
    jobs += [asyncio.to_thread(_big_binds_and_copies, dsn, 3) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*jobs), 120)


# -- 2b. a client_encoding change in flight ---------------------------------------------------

DENY_CAFE = {"name": "no-cafe", "tables": ["café"], "action": "deny", "message": "no café"}


@pytest.fixture
async def cafe() -> AsyncIterator[None]:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute('create table if not exists "café" (id int)')
    yield
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute('drop table if exists "café"')


async def test_a_statement_pipelined_behind_an_encoding_change_is_read_in_the_new_one(
    pg: PgHarness, cafe: None
) -> None:
    """A LATIN1 session pipelines `SET client_encoding UTF8` and then the UTF-8 bytes of
    "café" (which LATIN1 reads as "cafÃ©"): the server reads the second statement in UTF8,
    so the gateway must too, and the rule on café applies."""
    pg.rules = [DENY_CAFE]
    await pg.start()
    conn = await psycopg.AsyncConnection.connect(pg.dsn(client_encoding="LATIN1"), autocommit=True)
    try:
        with pytest.raises(errors.InsufficientPrivilege):
            async with conn.pipeline():
                await conn.execute("set client_encoding to 'UTF8'")
                await conn.execute('select count(*) from "cafÃ©"')  # sent as LATIN1 bytes
        # The refusal failed the batch, so its SET was rolled back, as PostgreSQL does.
        cur = await conn.execute("show client_encoding")
        assert await cur.fetchone() == ("LATIN1",)
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute('select count(*) from "café"')
    finally:
        await conn.close()


async def _raw_session(pg: PgHarness, encoding: str) -> tuple[asyncio.StreamReader, Any]:
    """A hand-made client (as an attacker would write one) logged in as bob with a
    cleartext password on a plain connection; returns once the session is ready."""
    from proxy.pg import wire

    reader, writer = await asyncio.open_connection("127.0.0.1", pg.port)
    params = {"user": "bob", "database": "test", "client_encoding": encoding}
    writer.write(wire.StartupMessage(wire.PROTOCOL_3_0, params).encode())
    messages = wire.MessageReader()
    while True:
        frame = messages.next()
        if frame is None:
            data = await reader.read(65536)
            assert data, "the gateway closed the connection at login"
            messages.feed(data)
            continue
        message = wire.decode_backend(frame)
        if (
            isinstance(message, wire.Authentication)
            and message.code == wire.AuthCode.CLEARTEXT_PASSWORD
        ):
            writer.write(wire.PasswordMessage(BOB_PASSWORD.encode() + b"\x00").encode())
        elif isinstance(message, wire.ErrorResponse):
            raise AssertionError(message.message)
        elif isinstance(message, wire.ReadyForQuery):
            return reader, writer


async def _answers(reader: asyncio.StreamReader, ready: int) -> list[Any]:
    """Backend messages up to the `ready`-th ReadyForQuery."""
    from proxy.pg import wire

    messages, out = wire.MessageReader(), []
    while ready:
        frame = messages.next()
        if frame is None:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "the gateway closed the connection"
            messages.feed(data)
            continue
        out.append(wire.decode_backend(frame))
        ready -= isinstance(out[-1], wire.ReadyForQuery)
    return out


async def test_a_simple_query_pipelined_behind_an_encoding_change_waits_for_it(
    pg: PgHarness, cafe: None
) -> None:
    """Two simple Queries in one write: the second is read only once the server has
    answered the first, in the encoding the server then reads it in."""
    from proxy.pg import wire

    pg.rules = [DENY_CAFE]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    reader, writer = await _raw_session(pg, "LATIN1")
    try:
        writer.write(
            wire.Query("set client_encoding to 'UTF8'").encode()
            + wire.frame(wire.Frontend.QUERY, 'select count(*) from "café"'.encode() + b"\x00")
        )
        answers = await _answers(reader, 2)
        errors_seen = [m for m in answers if isinstance(m, wire.ErrorResponse)]
        assert [e.sqlstate for e in errors_seen] == ["42501"], answers
        assert not any(isinstance(m, wire.DataRow) for m in answers)
    finally:
        writer.close()


async def test_a_large_query_sent_right_after_a_tls_login_is_read(pg: PgHarness) -> None:
    """A client that sends a 1 MB query as soon as its SCRAM login is accepted, over TLS,
    while the gateway is still logging in to the target: the query piled up in the login
    stream, which paused the TCP transport under TLS, and nothing ever resumed it."""
    from proxy.pg import wire
    from proxy.pg.scram import ScramClient
    from tests.proxy.pg.harness import ALICE_PASSWORD

    await pg.start()
    reader, writer = await tls_login_start(pg)
    scram = ScramClient(ALICE_PASSWORD)
    query = wire.Query("/* " + "x" * 1_000_000 + " */ select 42").encode()
    results: list[Any] = []
    try:
        async for message in backend_messages(reader):
            writer.write(scram_reply(message, scram, after_final=query))
            if isinstance(message, wire.ErrorResponse):
                raise AssertionError(message.message)
            elif isinstance(message, wire.DataRow):
                results.append(message.values)
            elif isinstance(message, wire.CommandComplete):
                break
    finally:
        writer.close()
    assert results == [(b"42",)]


async def test_a_query_sent_with_the_password_is_not_lost(pg: PgHarness) -> None:
    """Bytes that came with the client's last login message were read into the login's
    buffer and dropped: the client waited for an answer forever."""
    from proxy.pg import wire

    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", pg.port)
    params = {"user": "bob", "database": "test"}
    writer.write(wire.StartupMessage(wire.PROTOCOL_3_0, params).encode())
    rows: list[Any] = []
    try:
        async for message in backend_messages(reader):
            if isinstance(message, wire.Authentication) and message.code == 3:
                password = wire.PasswordMessage(BOB_PASSWORD.encode() + b"\x00").encode()
                writer.write(password + wire.Query("select 7").encode())
            elif isinstance(message, wire.ErrorResponse):
                raise AssertionError(message.message)
            elif isinstance(message, wire.DataRow):
                rows.append(message.values)
            elif isinstance(message, wire.CommandComplete):
                break
    finally:
        writer.close()
    assert rows == [(b"7",)]


async def test_a_batch_after_a_computed_encoding_change_is_refused(
    pg: PgHarness, cafe: None
) -> None:
    """`set_config('client_encoding', $1, false)` in a pipeline: the gateway cannot tell the
    encoding the server reads the rest of the batch in, so the rest is refused."""
    pg.rules = [DENY_CAFE]
    await pg.start()
    conn = await psycopg.AsyncConnection.connect(pg.dsn(client_encoding="LATIN1"), autocommit=True)
    try:
        with pytest.raises(errors.FeatureNotSupported) as caught:
            async with conn.pipeline():
                await conn.execute("select set_config('client_encoding', %s, false)", ["UTF8"])
                await conn.execute('select count(*) from "cafÃ©"')
        assert "send it after a Sync" in str(caught.value)
        cur = await conn.execute("select set_config('client_encoding', %s, false)", ["UTF8"])
        assert await cur.fetchone() == ("UTF8",)
        with pytest.raises(errors.InsufficientPrivilege):
            await conn.execute('select count(*) from "café"')
    finally:
        await conn.close()


async def test_the_cancel_secret_the_client_holds_is_the_gateways_not_the_servers(
    pg: PgHarness,
) -> None:
    """The client's key cancels through the gateway; sent straight to the server it cancels
    nothing, since the server's own secret never left the gateway."""
    from proxy.pg import wire

    await pg.start()
    conn = await pg.asyncpg()
    try:
        pid, secret = conn._protocol.backend_pid, conn._protocol.backend_secret
        assert pid == await conn.fetchval("select pg_backend_pid()")
        raw_secret = (
            secret if isinstance(secret, bytes) else int(secret).to_bytes(4, "big", signed=True)
        )

        async def cancel_at(port: int) -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(wire.CancelRequest(pid, raw_secret).encode())
            await writer.drain()
            writer.close()

        sleeping = asyncio.ensure_future(conn.fetchval("select pg_sleep(1.5)"))
        await asyncio.sleep(0.3)
        await cancel_at(5432)  # straight to the server: a wrong secret there
        assert await asyncio.wait_for(sleeping, 10) is None  # it slept to the end
        sleeping = asyncio.ensure_future(conn.fetchval("select pg_sleep(20)"))
        await asyncio.sleep(0.3)
        await cancel_at(pg.port)
        with pytest.raises(Exception) as caught:
            await asyncio.wait_for(sleeping, 10)
        assert getattr(caught.value, "sqlstate", "") == "57014"
    finally:
        await conn.close()
