"""Attack review of the PostgreSQL gateway after its cut into modules (analysis.py, spare
logins, GatewaySession): what is judged must be what runs, whatever the gateway's caches
answered for a look-alike text. Through the real gateway, psql and asyncpg, to the machine's
PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.proxy.pg.harness import DIRECT_DSN, PgHarness
from tests.proxy.pg.test_hostile_masking import MASKS

# No digit in the name: the classifier caches statements on such a table by their shape.
PEOPLE = "hoop_cut_people"
HASH = "hash-zebra-secret"
STORED = (
    "select m.oid from pg_largeobject_metadata m"
    " where position(convert_to('zebra', 'UTF8') in lo_get(m.oid)) > 0"
)


@pytest.fixture
async def people(pg: PgHarness) -> AsyncIterator[PgHarness]:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        await conn.execute(f"drop table if exists {PEOPLE}")
        await conn.execute(f"select lo_unlink(oid) from ({STORED}) s")  # an earlier run's
        await conn.execute(f"create table {PEOPLE} (id int, password_hash text)")
        await conn.execute(
            f"insert into {PEOPLE} select i, %s || i from generate_series(1, 5) i", (HASH,)
        )
    pg.extra_toml = MASKS
    await pg.start()
    yield pg


# A value computed from a masked column, kept in a large object or a sequence where a later
# statement reads it back past the masks, is refused (test_hostile_masking_echo). Each pair:
# the text the gateway refuses first, then a look-alike the classifier's caches answer
# (another constant, other spacing, a comment), which must be refused the same.
LOOK_ALIKES = [
    (
        f"select lo_from_bytea(0, password_hash::bytea) is null from {PEOPLE} where id = 1",
        f"select lo_from_bytea(0, password_hash::bytea) is null from {PEOPLE} where id = 2",
    ),
    (
        f"select lo_from_bytea(0, password_hash::bytea) is null from {PEOPLE} limit 1",
        f"select  lo_from_bytea(0, password_hash::bytea) is null from {PEOPLE} limit 1 -- again",
    ),
]


async def test_a_refused_store_is_refused_for_every_look_alike(people: PgHarness) -> None:
    for first, again in LOOK_ALIKES:
        for sql in (first, again):
            result = await people.psql("-At", "-c", sql)
            assert "42501" in result.err or "refused" in result.err, (sql, result.out, result.err)
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as conn:
        stored = await (await conn.execute(STORED)).fetchall()
    assert not stored, "a large object holds the masked value"


async def test_a_refused_store_is_refused_for_a_look_alike_over_asyncpg(people: PgHarness) -> None:
    conn = await people.asyncpg()
    try:
        await conn.execute("create temp sequence q minvalue 0")
        for sql in (
            f"select setval('q', ascii(substr(password_hash, 6, 1))) is null from {PEOPLE} limit 1",
            f"select setval('q', ascii(substr(password_hash, 6, 1))) is null from {PEOPLE} limit 2",
        ):
            with pytest.raises(Exception) as raised:
                await conn.fetch(sql)
            assert "refused" in str(raised.value), (sql, raised.value)
        assert await conn.fetchval("select last_value from q") == 0  # 122 would be "z"
    finally:
        await conn.close()


async def _backends(app: str) -> int:
    async with await psycopg.AsyncConnection.connect(DIRECT_DSN, autocommit=True) as admin:
        cur = await admin.execute(
            "select count(*) from pg_stat_activity where application_name = %s", [app]
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_a_client_refused_at_its_greeting_causes_no_spare_login(pg: PgHarness) -> None:
    """A client the gateway refuses after the target login (a client_encoding whose bytes it
    cannot read SQL in) is not admitted: no target login is made ahead for the next one."""
    app = "hoop-cut-refused"
    await pg.start()
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError) as refused:
            await psycopg.AsyncConnection.connect(
                pg.dsn(application_name=app, client_encoding="SJIS")
            )
        assert "SJIS" in str(refused.value) or "encoding" in str(refused.value), refused.value
    await asyncio.sleep(0.3)
    assert await _backends(app) == 0


async def _rows_of(reader: asyncio.StreamReader, ready: int) -> list[bytes | None]:
    from proxy.pg import wire
    from tests.proxy.pg.test_like_postgres import _answers

    answers = await _answers(reader, ready)
    errors = [a.message for a in answers if isinstance(a, wire.ErrorResponse)]
    assert not errors, errors
    return [v for a in answers if isinstance(a, wire.DataRow) for v in a.values]


async def test_a_portal_fetched_with_sql_keeps_its_masks(people: PgHarness) -> None:
    """A portal made by Bind is a cursor to SQL (`FETCH ALL FROM p`): what it returns is
    masked as its Execute would be, also where the masked column has another name."""
    from proxy.pg import wire
    from tests.proxy.pg.test_like_postgres import _raw_session

    people.postgres = {"allow_plain": True, "plain_passwords": True}
    await people.stop()
    await people.start()
    reader, writer = await _raw_session(people, "UTF8")
    try:
        for sql in (
            f"select password_hash as x from {PEOPLE} order by id",
            f"select (select password_hash) as y from {PEOPLE} order by id",
        ):
            writer.write(wire.Query("begin").encode())
            await _rows_of(reader, 1)
            messages = [
                wire.Parse("s", sql),
                wire.Bind("p", "s"),
                wire.Execute("p", 1),  # as its Execute is masked, the first row
                wire.Sync(),
                wire.Query("fetch all from p"),  # the rest, as SQL reads a cursor
            ]
            writer.write(b"".join(m.encode() for m in messages))
            values = await _rows_of(reader, 2)
            assert len(values) == 5, values
            assert not any(v and b"zebra" in v for v in values), (sql, values)
            writer.write(wire.Query("rollback; deallocate s").encode())
            await _rows_of(reader, 1)
    finally:
        writer.close()


async def test_an_approver_sees_every_text_a_prepared_name_may_run(pg: PgHarness) -> None:
    """Preparing a name again fails upstream, which keeps the first body: the hold of an
    Execute of that name shows the approver the body the server runs, not only the second
    text (a harmless `select 1` approved would run the first, a DELETE)."""
    from proxy.pg import wire
    from tests.proxy.pg.harness import REVIEW_WRITES
    from tests.proxy.pg.test_like_postgres import _answers, _raw_session

    pg.rules = [REVIEW_WRITES]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    assert pg.service is not None
    reader, writer = await _raw_session(pg, "UTF8")
    try:
        delete = "delete from hoop_cut_nothing where false"
        writer.write(
            b"".join(
                m.encode()
                for m in (
                    wire.Parse("s", delete),  # held at each Execute, prepared at once
                    wire.Sync(),
                    wire.Parse("s", "select 1"),  # fails upstream: s stays the DELETE
                    wire.Sync(),
                    wire.Bind("", "s"),
                    wire.Execute(""),
                    wire.Sync(),
                )
            )
        )
        answers = await _answers(reader, 2)
        assert any(isinstance(a, wire.ErrorResponse) for a in answers)  # "already exists"
        for _ in range(100):
            holds = await pg.service.pending_holds()
            if holds:
                break
            await asyncio.sleep(0.05)
        assert len(holds) == 1
        assert delete in holds[0].command, holds[0].command
    finally:
        writer.close()


async def test_an_approver_sees_the_body_an_sql_execute_runs(pg: PgHarness) -> None:
    """`EXECUTE s` of a statement prepared by a Parse (which held nothing: preparing runs
    nothing) is held with the body it runs, not only the words `execute s`."""
    from proxy.pg import wire
    from tests.proxy.pg.harness import REVIEW_WRITES
    from tests.proxy.pg.test_like_postgres import _answers, _raw_session

    pg.rules = [REVIEW_WRITES]
    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    assert pg.service is not None
    reader, writer = await _raw_session(pg, "UTF8")
    try:
        delete = "delete from hoop_cut_nothing where false"
        writer.write(wire.Parse("s", delete).encode() + wire.Sync().encode())
        await _answers(reader, 1)
        writer.write(wire.Query("execute s").encode())
        for _ in range(100):
            holds = await pg.service.pending_holds()
            if holds:
                break
            await asyncio.sleep(0.05)
        assert len(holds) == 1
        assert "execute s" in holds[0].command and delete in holds[0].command, holds[0].command
    finally:
        writer.close()


async def test_the_recording_holds_the_body_an_sql_execute_runs(pg: PgHarness) -> None:
    """A Parse is recorded at its Execute; an SQL `EXECUTE s` of it is recorded with the
    body it runs, or the recording would never say what ran."""
    from proxy.pg import wire
    from tests.proxy.pg.test_like_postgres import _answers, _raw_session

    pg.postgres = {"allow_plain": True, "plain_passwords": True}
    await pg.start()
    reader, writer = await _raw_session(pg, "UTF8")
    body = "select 40 + 2 as hoop_cut_answer"
    writer.write(wire.Parse("s", body).encode() + wire.Sync().encode())
    await _answers(reader, 1)
    writer.write(wire.Query("execute s").encode())
    await _answers(reader, 1)
    writer.write(wire.Terminate().encode())
    writer.close()
    await pg.wait_closed_recordings(1)
    statements = [
        e["statement"] for e in pg.events(pg.recordings()[0]) if e.type.name == "SQL_STATEMENT"
    ]
    assert any("execute s" in s and body in s for s in statements), statements
