"""The text of a SQL statement is masked before it is recorded (issue 12, class 13): a card
number or an e-mail address written into a statement through real psql and psycopg is not in
the recording's `sql_statement` events, nor in any other event."""

from __future__ import annotations

import psycopg

from storage.schema import EventType
from tests.proxy.pg.harness import PgHarness

CARD = "4111 1111 1111 1111"
MAIL = "alice.smith@example.com"
MASKS = """
[[masks]]
name = "cards"
detector = "credit_card"

[[masks]]
name = "mail"
detector = "email"
"""


def everything(events) -> str:
    return "\n".join(repr(value) for event in events for value in event.fields.values())


async def test_secrets_written_into_statements_are_masked_in_the_recording(pg: PgHarness):
    pg.extra_toml = MASKS
    await pg.start()
    result = await pg.psql("-c", f"select length('{CARD}') as n, length('{MAIL}') as m")
    assert result.status == 0, result.err
    assert "19" in result.out
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("select length(%s)", (CARD,))  # a parameter, too
    await pg.wait_closed_recordings(2)
    statements = []
    for path in pg.recordings():
        events = pg.events(path)
        assert CARD not in everything(events) and MAIL not in everything(events)
        statements += [e for e in events if e.type is EventType.SQL_STATEMENT]
    assert any("length(" in str(e["statement"]) for e in statements)
