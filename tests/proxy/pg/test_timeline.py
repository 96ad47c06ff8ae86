"""The requester context beside a held statement (issue 14): the session's statement timeline
so far, read from its recording while the statement waits."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from proxy.holds.broker import Person
from proxy.pg.server import PgGateway
from proxy.pg.timeline import statement_timeline
from tests.proxy.pg.harness import REVIEW_WRITES, PgHarness

BOB = Person("bob", frozenset({"oncall"}))


async def _held(pg: PgHarness, timeout: float = 10.0) -> str:
    assert pg.service is not None
    for _ in range(int(timeout / 0.05)):
        pending = await pg.service.broker.pending_holds()
        if pending:
            return pending[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("no hold appeared")


async def test_an_approver_sees_the_statements_before_the_held_one(pg: PgHarness) -> None:
    pg.rules = [REVIEW_WRITES]
    await pg.start()
    assert isinstance(pg.gateway, PgGateway) and pg.service is not None
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        await conn.execute("create temp table hoop_timeline (a int)")
        await conn.execute("select 41 + 1 as before_the_hold")
        task = asyncio.ensure_future(conn.execute("insert into hoop_timeline values (7)"))
        hold_id = await _held(pg)
        try:
            (session,) = pg.gateway.sessions.live().values()  # listed with SSH's sessions
            assert session.protocol == "postgres" and session.recording is not None
            lines = await asyncio.to_thread(statement_timeline, session.recording.path)
        finally:
            await pg.service.decide_hold(hold_id, BOB, approve=False, reason="no")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await asyncio.wait_for(task, 10)
    text = "\n".join(lines)
    assert "select 41 + 1 as before_the_hold" in text and "-> 1 row(s)" in text
    held = [n for n, line in enumerate(lines) if "insert into hoop_timeline values (7)" in line]
    assert held and "verdict: review (rule review-writes)" in lines[held[-1] + 1]
    assert f"HELD for review (review-writes): {hold_id}" in lines[-1]
