"""A hostile client against the PostgreSQL gateway's issue-19 behaviour: walks around the
client_encoding tracking that a transaction's end makes possible. Hand-made wire messages
through the real gateway to the machine's PostgreSQL, as an attacker would send them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.proxy.pg.harness import DIRECT_DSN, PgHarness
from tests.proxy.pg.test_like_postgres import DENY_CAFE, _answers, _raw_session, cafe, table
from tests.proxy.pg.test_scram import Cluster
from tests.proxy.pg.test_upstream_tls import _target, tls_cluster

__all__ = ["cafe", "table", "tls_cluster"]  # fixtures, used by name

CAFE_UTF8 = 'select count(*) from "café"'.encode() + b"\x00"


async def _plain_session(pg: PgHarness) -> tuple[Any, Any]:
    pg.rules = [DENY_CAFE]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    return await _raw_session(pg, "UTF8")


async def _until_closed(reader: asyncio.StreamReader) -> list[Any]:
    """Every backend message until the gateway closes the connection."""
    from proxy.pg import wire

    messages, out = wire.MessageReader(), []
    while data := await asyncio.wait_for(reader.read(65536), 10):
        messages.feed(data)
        out.extend(wire.decode_backend(frame) for frame in messages)
    return out


def _refused_and_nothing_ran(answers: list[Any]) -> None:
    from proxy.pg import wire

    states = [m.sqlstate for m in answers if isinstance(m, wire.ErrorResponse)]
    assert states and set(states) <= {"42501", "0A000", "25P02"}, answers
    assert wire.DataRow((b"0",)) not in answers, answers  # the count of "café" never came


@pytest.mark.parametrize(
    ("opening", "closing"),
    [
        ("begin; set client_encoding to 'LATIN1'", "rollback"),
        ("begin; set local client_encoding to 'LATIN1'", "commit"),
        ("begin; savepoint s; set client_encoding to 'LATIN1'", "rollback to savepoint s"),
        ("begin; set client_encoding to 'LATIN1'; select 1/0", "abort"),
    ],
)
async def test_a_query_pipelined_behind_a_transaction_end_that_reverts_the_encoding(
    pg: PgHarness, cafe: None, opening: str, closing: str
) -> None:
    """The session switches to LATIN1 inside a transaction; the transaction's end switches
    the server back to UTF8, so the UTF-8 bytes of "café" pipelined right behind it are
    read as café by the server: the gateway must read them so too (LATIN1 reads "cafÃ©")."""
    from proxy.pg import wire

    reader, writer = await _plain_session(pg)
    try:
        writer.write(wire.Query(opening).encode())
        await _answers(reader, 1)
        writer.write(wire.Query(closing).encode() + wire.frame(wire.Frontend.QUERY, CAFE_UTF8))
        _refused_and_nothing_ran(await _answers(reader, 2))
    finally:
        writer.close()


async def test_an_extended_batch_behind_a_rollback_that_reverts_the_encoding(
    pg: PgHarness, cafe: None
) -> None:
    """The same in one extended batch: ROLLBACK runs at its Execute, and the server reads
    the Parse after it in UTF8 before any Sync."""
    from proxy.pg import wire

    reader, writer = await _plain_session(pg)
    try:
        writer.write(wire.Query("begin; set client_encoding to 'LATIN1'").encode())
        await _answers(reader, 1)
        batch = (
            wire.Parse("", "rollback", ()).encode()
            + wire.Bind("", "", (), (), ()).encode()
            + wire.Execute("", 0).encode()
            + wire.frame(wire.Frontend.PARSE, b"\x00" + CAFE_UTF8 + b"\x00\x00")
            + wire.Bind("", "", (), (), ()).encode()
            + wire.Execute("", 0).encode()
            + wire.frame(wire.Frontend.SYNC)
        )
        writer.write(batch)
        _refused_and_nothing_ran(await _answers(reader, 1))
    finally:
        writer.close()


# -- the server's cancel secret crosses the network only as the target's sslmode says ---------

CANCEL_REQUEST_CODE = (80877102).to_bytes(4, "big")


async def test_a_cancel_toward_a_tls_target_is_sent_inside_tls(
    pg: PgHarness, tls_cluster: tuple[Cluster, Path]
) -> None:
    """The gateway's login to a `sslmode = require` target is encrypted; its CancelRequest,
    which carries the server's own PID and secret, must be too. A recorder between the
    gateway and the server sees every byte the gateway sends: no cleartext CancelRequest,
    and the client's cancel still cancels."""
    cluster, _ = tls_cluster
    seen = bytearray()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", cluster.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if log:
                        seen.extend(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    recorder = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = recorder.sockets[0].getsockname()[1]
    pg.targets = [_target("tls", port, sslmode="require")]
    await pg.start()
    try:
        conn = await psycopg.AsyncConnection.connect(pg.dsn("tls"), autocommit=True)
        try:
            sleeping = asyncio.ensure_future(conn.execute("select pg_sleep(20)"))
            await asyncio.sleep(0.5)
            await conn.cancel_safe()
            with pytest.raises(errors.QueryCanceled):
                await asyncio.wait_for(sleeping, 10)
        finally:
            await conn.close()
        assert CANCEL_REQUEST_CODE not in seen
    finally:
        recorder.close()


# -- a client cannot fill the gateway's memory while it waits for an encoding change ---------


async def test_the_gateway_stops_reading_a_client_that_pipelines_behind_an_encoding_change(
    pg: PgHarness,
) -> None:
    """Behind `SET client_encoding` the gateway waits for the server's answer before it reads
    further messages; a client that keeps writing meanwhile (here 40 MB behind a statement
    that takes 4 s) is read up to the same bound as behind a held statement, then no more
    (its own send buffer fills), and every statement still runs in order afterwards."""
    from proxy.pg import wire

    reader, writer = await _plain_session(pg)
    try:
        big = wire.Query("select 1 -- " + "x" * (1 << 20)).encode()
        writer.write(wire.Query("set client_encoding to 'UTF8'; select pg_sleep(4)").encode())
        for _ in range(40):
            writer.write(big)
        await asyncio.sleep(2.5)
        unread = writer.transport.get_write_buffer_size()
        assert unread > 8 * (1 << 20), f"the gateway read all but {unread} bytes"
        answers = await asyncio.wait_for(_answers(reader, 41), 60)
        rows = [m for m in answers if isinstance(m, wire.DataRow)]
        assert len(rows) == 41  # pg_sleep's row, then forty times 1
    finally:
        writer.close()


# -- a change the gateway cannot see (a function) and non-ASCII text pipelined behind it ------


@pytest.fixture
async def switch_to_utf8(cafe: None) -> AsyncIterator[str]:
    """A function that sets client_encoding to UTF8 where the gateway cannot see it."""
    name = f"hoop_switch_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(
            f"create function {name}() returns text language plpgsql as $$ begin "
            "return set_config('client' || '_encoding', 'UTF' || '8', false); end $$"
        )
    yield name
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop function if exists {name}()")


async def test_non_ascii_text_pipelined_behind_a_function_waits_for_its_answer(
    pg: PgHarness, switch_to_utf8: str
) -> None:
    """A LATIN1 session calls a function that switches it to UTF8, and pipelines the UTF-8
    bytes of "café" behind it: the server reads them as café. Text that reads differently
    in different encodings (non-ASCII) waits until the answers due before it have come,
    with the ParameterStatus that says which encoding the server reads it in."""
    from proxy.pg import wire

    pg.rules = [DENY_CAFE]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    reader, writer = await _raw_session(pg, "LATIN1")
    try:
        writer.write(
            wire.Query(f"select {switch_to_utf8}()").encode()
            + wire.frame(wire.Frontend.QUERY, CAFE_UTF8)
        )
        answers = await _answers(reader, 2)
        first = next(i for i, m in enumerate(answers) if isinstance(m, wire.ReadyForQuery))
        assert wire.DataRow((b"UTF8",)) in answers[:first]
        _refused_and_nothing_ran(answers[first + 1 :])
    finally:
        writer.close()


# -- an encoding change in an extended batch whose value the gateway cannot read -------------


@pytest.mark.parametrize(
    "change",
    [
        "reset client_encoding",
        "set client_encoding to default",
        "set names default",
        "reset all",
        "update pg_settings set setting = 'UTF8' where name = U&'client\\005fencoding'",
        "select U&\"set\\005fconfig\"(x, 'UTF8', false) from (values ('client_encoding')) v(x)",
    ],
)
async def test_the_rest_of_a_batch_behind_a_change_to_an_unnamed_encoding_is_refused(
    pg: PgHarness, cafe: None, change: str
) -> None:
    """A UTF8 session switched to LATIN1 sends, in one extended batch, a statement that sets
    client_encoding back without naming a value the gateway reads (RESET, DEFAULT, an UPDATE
    of pg_settings, set_config with a computed name), then the UTF-8 bytes of "café": the
    server reads them in UTF8 at once, so the gateway cannot read them in LATIN1."""
    from proxy.pg import wire

    reader, writer = await _plain_session(pg)
    try:
        writer.write(wire.Query("set client_encoding to 'LATIN1'").encode())
        await _answers(reader, 1)
        batch = (
            wire.Parse("", change, ()).encode()
            + wire.Bind("", "", (), (), ()).encode()
            + wire.Execute("", 0).encode()
            + wire.frame(wire.Frontend.PARSE, b"\x00" + CAFE_UTF8 + b"\x00\x00")
            + wire.Bind("", "", (), (), ()).encode()
            + wire.Execute("", 0).encode()
            + wire.frame(wire.Frontend.SYNC)
        )
        writer.write(batch)
        _refused_and_nothing_ran(await _answers(reader, 1))
    finally:
        writer.close()


# -- standard_conforming_strings switched off where the gateway cannot see it ------------------

# With standard_conforming_strings on (the gateway's reading) `'\'` is a whole string and
# the second string holds the subquery; with it off (the server's), `\'` is a quote inside
# the first string, and the subquery is code: it reads the denied table and says so on a
# channel. All ASCII, so it reads alike in every client encoding.
HIDDEN_READ = (
    "select '\\' as x, ' as y, "
    "(select pg_notify($$hoop_hidden$$, count(*)::text) from {table}) as z --'"
)


async def test_a_backslash_pipelined_behind_an_unseen_settings_change_waits_for_its_answer(
    pg: PgHarness, table: str
) -> None:
    """A DO block turns standard_conforming_strings off through dynamic SQL, and a query that
    reads differently with it off is pipelined behind it: it must not reach the server
    before the gateway has seen the server's ParameterStatus (which ends the session, as
    documented). A direct listener hears whether the server ran the hidden subquery."""
    from proxy.pg import wire

    listener = await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True)
    await listener.execute("listen hoop_hidden")
    pg.rules = [{"name": "no-table", "tables": [table], "action": "deny"}]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    reader, writer = await _raw_session(pg, "UTF8")
    try:
        writer.write(
            wire.Query(
                "do $$ begin execute 'set standard' || '_conforming_strings = off'; end $$"
            ).encode()
            + wire.Query(HIDDEN_READ.format(table=table)).encode()
        )
        answers = await _until_closed(reader)
        assert any(
            isinstance(m, wire.ErrorResponse) and "standard_conforming_strings" in m.message
            for m in answers
        ), answers
        await asyncio.sleep(1)
        await listener.execute("select 1")
        heard = [n async for n in _pending_notifies(listener)]
        assert heard == [], "the server ran what the gateway read as a string"
    finally:
        writer.close()
        await listener.close()


async def _pending_notifies(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[str]:
    gen = conn.notifies(timeout=0.5)
    async for notify in gen:
        yield notify.payload


async def test_a_do_block_in_an_extended_batch_ends_what_the_gateway_reads_of_it(
    pg: PgHarness, table: str
) -> None:
    """The same inside one extended batch, where nothing can be waited for: a DO block (code
    any role may run) may switch any setting unseen, so the rest of its batch is refused
    (and the failed batch sets the setting back)."""
    from proxy.pg import wire

    listener = await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True)
    await listener.execute("listen hoop_hidden")
    pg.rules = [{"name": "no-table", "tables": [table], "action": "deny"}]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    reader, writer = await _raw_session(pg, "UTF8")
    try:
        switch = "do $$ begin execute 'set standard' || '_conforming_strings = off'; end $$"
        writer.write(
            wire.Parse("", switch, ()).encode()
            + wire.Bind("", "", (), (), ()).encode()
            + wire.Execute("", 0).encode()
            + wire.Parse("", HIDDEN_READ.format(table=table), ()).encode()
            + wire.Bind("", "", (), (), ()).encode()
            + wire.Execute("", 0).encode()
            + wire.frame(wire.Frontend.SYNC)
        )
        answers = await _answers(reader, 1)
        assert [m.sqlstate for m in answers if isinstance(m, wire.ErrorResponse)] == ["0A000"]
        await asyncio.sleep(1)
        await listener.execute("select 1")
        heard = [n async for n in _pending_notifies(listener)]
        assert heard == [], "the server ran what the gateway read as a string"
    finally:
        writer.close()
        await listener.close()
