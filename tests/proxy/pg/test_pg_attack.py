"""A hostile client against the PostgreSQL gateway's issue-19 behaviour: walks around the
client_encoding tracking that a transaction's end makes possible. Hand-made wire messages
through the real gateway to the machine's PostgreSQL, as an attacker would send them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.proxy.pg.harness import PgHarness
from tests.proxy.pg.test_like_postgres import DENY_CAFE, _answers, _raw_session, cafe

__all__ = ["cafe"]  # the fixture, used by name

CAFE_UTF8 = 'select count(*) from "café"'.encode() + b"\x00"


async def _plain_session(pg: PgHarness) -> tuple[Any, Any]:
    pg.rules = [DENY_CAFE]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    return await _raw_session(pg, "UTF8")


def _refused_and_nothing_ran(answers: list[Any]) -> None:
    from proxy.pg import wire

    states = [m.sqlstate for m in answers if isinstance(m, wire.ErrorResponse)]
    assert states and set(states) <= {"42501", "0A000", "25P02"}, answers
    assert not any(isinstance(m, wire.DataRow) for m in answers), answers


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
