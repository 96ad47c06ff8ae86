"""Attack on commit 5472e09: the client is greeted while its session's recording still opens
(in a worker thread), and what it sends is read only once the recording is open. A gate
slows the real `GatewaySession._open_recording` down (nothing is mocked: the real recording
opens once the gate lets it); hand-made wire clients and the machine's PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from proxy.pg import wire
from proxy.session import GatewaySession, RecordingUnavailable
from storage.schema import EventType
from tests.proxy.pg.harness import (
    BOB_PASSWORD,
    DIRECT_DSN,
    PgHarness,
    backend_messages,
    scram_reply,
    tls_login_start,
)

TABLE = "hoop_attack_greeting"
APP = "hoop-attack-greeting"


class Gate:
    """Holds every recording's opening (on its worker thread) until `release()`."""

    def __init__(self, fail: bool = False) -> None:
        self.event = threading.Event()
        self.entered = threading.Event()
        self.fail = fail

    def release(self) -> None:
        self.event.set()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    held = Gate()
    original = GatewaySession._open_recording

    def slow(self: GatewaySession, header: Any) -> Any:
        held.entered.set()
        held.event.wait(60)
        if held.fail:
            raise RecordingUnavailable("the recordings' store did not answer")
        return original(self, header)

    monkeypatch.setattr(GatewaySession, "_open_recording", slow)
    try:
        yield held
    finally:
        held.release()  # never leave a worker thread parked behind the test


@pytest.fixture
async def table() -> Any:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as admin:
        await admin.execute(f"drop table if exists {TABLE}")
        await admin.execute(f"create table {TABLE} (n int)")
        yield admin
        await admin.execute(f"drop table if exists {TABLE}")


async def _count(admin: Any) -> int:
    cur = await admin.execute(f"select count(*) from {TABLE}")
    row = await cur.fetchone()
    return int(row[0])


async def _backends(admin: Any) -> int:
    cur = await admin.execute(
        "select count(*) from pg_stat_activity where application_name = %s", [APP]
    )
    row = await cur.fetchone()
    return int(row[0])


async def _greeted(
    pg: PgHarness, first: bytes = b""
) -> tuple[asyncio.StreamReader, Any, wire.BackendKeyData]:
    """bob, cleartext password on a plain connection; `first` goes in the same write as the
    password (a client that does not wait for ReadyForQuery). Returns once greeted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", pg.port)
    params = {"user": "bob", "database": "test", "application_name": APP}
    writer.write(wire.StartupMessage(wire.PROTOCOL_3_0, params).encode())
    key = None
    async for message in backend_messages(reader, 10):
        if isinstance(message, wire.Authentication):
            if message.code == wire.AuthCode.CLEARTEXT_PASSWORD:
                password = wire.PasswordMessage(BOB_PASSWORD.encode() + b"\x00").encode()
                writer.write(password + first)
        elif isinstance(message, wire.BackendKeyData):
            key = message
        elif isinstance(message, wire.ErrorResponse):
            raise AssertionError(message.message)
        elif isinstance(message, wire.ReadyForQuery):
            assert key is not None
            return reader, writer, key


async def _until_closed_or(reader: asyncio.StreamReader, timeout: float) -> list[Any]:
    messages, out = wire.MessageReader(), list[Any]()
    with contextlib.suppress(ConnectionError):
        while data := await asyncio.wait_for(reader.read(65536), timeout):
            messages.feed(data)
            out.extend(wire.decode_backend(frame) for frame in messages)
            if any(isinstance(m, wire.ReadyForQuery) for m in out):
                break
    return out


def _plain(pg: PgHarness, **extra: Any) -> None:
    pg.postgres = {"allow_plain": True, "plain_passwords": True, "spare_logins": 0, **extra}


def _statements(pg: PgHarness) -> list[str]:
    found = []
    for path in pg.recordings():
        found += [e["statement"] for e in pg.events(path) if e.type is EventType.SQL_STATEMENT]
    return found


async def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


# -- held ------------------------------------------------------------------------------------


async def test_a_query_sent_with_the_password_waits_for_the_recording_and_is_recorded(
    pg: PgHarness, gate: Gate, table: Any
) -> None:
    _plain(pg)
    await pg.start()
    insert = f"insert into {TABLE} values (1)"
    reader, writer, _ = await _greeted(pg, wire.Query(insert).encode())
    try:
        assert gate.entered.is_set() and not gate.event.is_set()  # greeted while it opens
        await asyncio.sleep(0.5)
        assert await _count(table) == 0  # nothing reached the target
        gate.release()
        answers = await _until_closed_or(reader, 10)
        assert any(isinstance(m, wire.CommandComplete) for m in answers), answers
        assert await _count(table) == 1
    finally:
        writer.close()
    await pg.wait_closed_recordings()
    assert insert in _statements(pg)


async def test_a_large_query_sent_with_the_password_while_the_recording_opens(
    pg: PgHarness, gate: Gate
) -> None:
    _plain(pg)
    await pg.start()
    query = wire.Query("/* " + "x" * 1_000_000 + " */ select 42").encode()
    reader, writer, _ = await _greeted(pg, query)
    try:
        await asyncio.sleep(0.5)
        gate.release()
        answers = await _until_closed_or(reader, 10)
        assert wire.DataRow((b"42",)) in answers, answers
    finally:
        writer.close()


async def test_a_recording_that_fails_after_the_greeting_runs_nothing_and_leaks_nothing(
    pg: PgHarness, gate: Gate, table: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _plain(pg)
    gate.fail = True
    await pg.start()
    caplog.set_level(logging.ERROR, logger="asyncio")
    insert = wire.Query(f"insert into {TABLE} values (1)").encode()
    reader, writer, _ = await _greeted(pg, insert)
    try:
        gate.release()
        answers = await _until_closed_or(reader, 10)
        states = [m.sqlstate for m in answers if isinstance(m, wire.ErrorResponse)]
        assert states == ["58030"], answers
    finally:
        writer.close()
    assert await _count(table) == 0
    assert await _wait(lambda: _nothing_left(pg, table), 5)
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_the_target_ending_the_backend_while_the_recording_opens(
    pg: PgHarness, gate: Gate, table: Any
) -> None:
    _plain(pg)
    await pg.start()
    reader, writer, key = await _greeted(pg)
    try:
        await table.execute("select pg_terminate_backend(%s)", [key.pid])
        await asyncio.sleep(0.3)
        gate.release()
        writer.write(wire.Query("select 1").encode())
        answers = await _until_closed_or(reader, 10)
        assert any(isinstance(m, wire.ErrorResponse) for m in answers), answers
        assert not any(isinstance(m, wire.DataRow) for m in answers), answers
    finally:
        writer.close()
    assert await _wait(lambda: _nothing_left(pg, table), 5)
    await pg.wait_closed_recordings()


async def test_a_client_that_leaves_while_the_recording_opens_ends_cleanly(
    pg: PgHarness, gate: Gate, table: Any
) -> None:
    _plain(pg)
    await pg.start()
    _, writer, _ = await _greeted(pg, wire.Query(f"insert into {TABLE} values (1)").encode())
    writer.close()
    await asyncio.sleep(0.3)
    gate.release()
    assert await _wait(lambda: _nothing_left(pg, table), 5)
    await pg.wait_closed_recordings()
    # As PostgreSQL itself would (the bytes came before the client's FIN), the Query it sent
    # before leaving runs once the recording is open; it must then be in the recording.
    if await _count(table):
        assert f"insert into {TABLE} values (1)" in _statements(pg)


async def test_a_large_query_right_after_a_tls_login_while_the_recording_opens(
    pg: PgHarness, gate: Gate
) -> None:
    from proxy.pg.scram import ScramClient
    from tests.proxy.pg.harness import ALICE_PASSWORD

    await pg.start()
    reader, writer = await tls_login_start(pg)
    scram = ScramClient(ALICE_PASSWORD)
    query = wire.Query("/* " + "x" * 1_000_000 + " */ select 42").encode()
    results, released = [], False
    try:
        async for message in backend_messages(reader):
            writer.write(scram_reply(message, scram, after_final=query))
            if isinstance(message, wire.ErrorResponse):
                raise AssertionError(message.message)
            elif isinstance(message, wire.ReadyForQuery) and not released:
                released = True
                await asyncio.sleep(0.5)  # the 1 MB piles up in the login stream meanwhile
                gate.release()
            elif isinstance(message, wire.DataRow):
                results.append(message.values)
            elif isinstance(message, wire.CommandComplete):
                break
    finally:
        writer.close()
    assert results == [(b"42",)]


async def test_pipelining_clients_while_the_recording_opens(
    pg: PgHarness, gate: Gate, table: Any
) -> None:
    await pg.start()
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, gate.release)
    async with await psycopg.AsyncConnection.connect(
        pg.dsn(application_name=APP), autocommit=True
    ) as conn:
        async with conn.pipeline():
            first = await conn.execute(f"insert into {TABLE} values (1)")
            second = await conn.execute(f"select count(*) from {TABLE}")
        assert first.rowcount == 1
        assert await second.fetchone() == (1,)
    gate.event.clear()
    loop.call_later(0.5, gate.release)
    client = await pg.asyncpg()
    try:
        assert await client.fetchval(f"select count(*) from {TABLE}") == 1
    finally:
        await client.close()
    await pg.wait_closed_recordings(2)
    statements = _statements(pg)
    assert f"insert into {TABLE} values (1)" in statements


async def _nothing_left(pg: PgHarness, admin: Any) -> bool:
    assert pg.gateway is not None
    return not pg.gateway.connections and await _backends(admin) == 0


# -- holes the attack found in 5472e09, closed since ---------------------------------------------


async def test_a_client_that_leaves_while_the_recording_stalls_leaves_no_target_backend(
    pg: PgHarness, gate: Gate, table: Any
) -> None:
    """Before 5472e09 the recording's opening was part of the login, bounded by
    login_timeout: a stalled recordings' store (disk, catalogue, object store) refused the
    client at that bound and closed the target login. With the wait moved to `Relay.run` it had
    no bound, and a client that gave up and left kept its target backend (and its connection)
    for as long as the store stalled; the wait is bounded by what is left of login_timeout."""
    _plain(pg, login_timeout=1)
    await pg.start()
    _, writer, _ = await _greeted(pg, wire.Query("select 1").encode())
    writer.close()  # the client gives up
    await asyncio.sleep(0.2)
    assert gate.entered.is_set() and not gate.event.is_set()
    # well past login_timeout, the recording still not open
    assert await _wait(lambda: _nothing_left(pg, table), 4), (
        "a target backend is held for a client that left, while the recording stalls"
    )


async def test_a_greeted_client_is_not_kept_waiting_past_the_login_timeout(
    pg: PgHarness, gate: Gate, table: Any
) -> None:
    """Same stall, the client stays: it is refused at login_timeout, as before 5472e09, not
    kept waiting for its first answer for as long as the recording's store stalls."""
    _plain(pg, login_timeout=1)
    await pg.start()
    reader, writer, _ = await _greeted(pg, wire.Query("select 1").encode())
    try:
        answers = await _until_closed_or(reader, 4)
    except TimeoutError:
        answers = None
    finally:
        writer.close()
    assert answers is not None, "no answer (nor refusal) 4 s after a 1 s login timeout"
    assert not any(isinstance(m, wire.DataRow) for m in answers), answers


async def test_a_cancel_sent_while_the_recording_opens_withdraws_the_queued_statement(
    pg: PgHarness, gate: Gate, table: Any
) -> None:
    """The greeting hands the client its cancel key before anything it sends is read. A
    statement it sent and then canceled (Ctrl-C while it "hangs") is still run once the
    recording opens: the CancelRequest went to the target's idle backend, where it does
    nothing. Now the gateway keeps that Ctrl-C and ends the connection (57014) instead of
    running what was sent, as the same Ctrl-C withdraws a held statement."""
    _plain(pg)
    await pg.start()
    insert = f"insert into {TABLE} values (1)"
    reader, writer, key = await _greeted(pg, wire.Query(insert).encode())
    try:
        await asyncio.sleep(0.3)
        _, cancel = await asyncio.open_connection("127.0.0.1", pg.port)
        cancel.write(wire.CancelRequest(key.pid, key.secret).encode())
        await cancel.drain()
        cancel.close()
        await asyncio.sleep(0.5)
        gate.release()
        answers = await _until_closed_or(reader, 10)
    finally:
        writer.close()
    assert await _count(table) == 0, f"the canceled statement ran: {answers}"
    refusals = [m for m in answers if isinstance(m, wire.ErrorResponse)]
    assert [m.sqlstate for m in refusals] == ["57014"], answers
    assert "nothing that was sent ran" in refusals[0].message
