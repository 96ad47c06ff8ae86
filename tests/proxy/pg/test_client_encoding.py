"""The client encoding through the gateway: masking reads UTF-8, and the SQL parser must read
what the server reads. psql and psycopg against the machine's PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from proxy.pg.classify import classify
from proxy.pg.session import encoding_refusal
from tests.proxy.pg.harness import PgHarness

DIRECT = "host=127.0.0.1 port=5432 user=root dbname=test"
MASKS = '[[masks]]\nname = "passwords"\ncolumn = "password*"\n'
SECRET = "select 'hunter2' as password, 'café' as name"


@pytest.mark.parametrize(
    ("sql", "encodings"),
    [
        ("set client_encoding to 'LATIN1'", ("LATIN1",)),
        ("SET NAMES 'win1252'", ("win1252",)),
        ("set local client_encoding = sql_ascii", ("sql_ascii",)),
        ("reset client_encoding", ()),
        ("set names default", ()),
        ("select set_config('client_encoding', 'LATIN2', false)", ("LATIN2",)),
        ("select set_config('client_encoding', $1, false)", (None,)),
        # A computed name (pg_dump does this) is left to the server's report of a change.
        ("select set_config(name, 'x', false) from pg_settings where name = 'y'", ()),
        ("do $$ begin perform set_config('client_encoding', 'SJIS', false); end $$", ("SJIS",)),
        (
            "create function f() returns int language sql set client_encoding = 'GBK' as '1'",
            ("GBK",),
        ),
        ("select 1", ()),
    ],
)
def test_the_classifier_finds_what_sets_client_encoding(sql: str, encodings: tuple) -> None:
    (statement,) = classify(sql).statements
    assert statement.encodings == encodings


def test_which_encodings_are_refused() -> None:
    for utf8 in ("UTF8", "utf-8", "Unicode"):
        assert encoding_refusal(utf8, masking=True) is None
    assert encoding_refusal("LATIN1", masking=False) is None
    assert encoding_refusal("LATIN1", masking=True)[0] == "42501"  # type: ignore[index]
    assert encoding_refusal(None, masking=True)[0] == "42501"  # type: ignore[index]
    assert encoding_refusal(None, masking=False) is None
    for split in ("SJIS", "Shift_JIS_2004", "gbk", "BIG5", "win936", "UHC", "GB18030", "johab"):
        assert encoding_refusal(split, masking=False)[0] == "0A000"  # type: ignore[index]


async def test_masking_refuses_a_non_utf8_client_encoding_at_login(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await pg.start()
    env = pg.env()
    env["PGCLIENTENCODING"] = "LATIN1"
    refused = await pg.run("psql", "-X", "-c", "select 1", env=env)
    assert refused.status != 0
    assert "masking rules apply to this session" in refused.err
    assert "client_encoding LATIN1 is not allowed" in refused.err
    with pytest.raises(psycopg.OperationalError) as caught:
        await psycopg.AsyncConnection.connect(pg.dsn(client_encoding="WIN1252"))
    assert "client_encoding WIN1252 is not allowed" in str(caught.value)
    env["PGCLIENTENCODING"] = "UTF8"
    fine = await pg.run("psql", "-X", "-At", "-c", SECRET, env=env)
    assert fine.status == 0, fine.err
    assert fine.out.strip() == "********|café"


async def test_masking_refuses_set_client_encoding_and_set_names(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await pg.start()
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        for sql in (
            "set client_encoding to 'LATIN1'",
            "SET NAMES 'win1252'",
            "select set_config('client_encoding', 'LATIN2', false)",
            "select 1; set client_encoding = 'sql_ascii'",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
                await conn.execute(sql)
            assert "masks UTF8 text only" in str(caught.value), sql
        # A value the gateway cannot read before it runs (a parameter): refused too.
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            await conn.execute("select set_config('client_encoding', %s, false)", ["LATIN1"])
        assert "cannot tell which client_encoding" in str(caught.value)
        # UTF8 by another name, RESET and DEFAULT stay allowed; the session goes on, masked.
        await conn.execute("set client_encoding to 'utf-8'")
        await conn.execute("reset client_encoding")
        await conn.execute("set names default")
        cur = await conn.execute(SECRET)
        assert await cur.fetchone() == ("********", "café")
        cur = await conn.execute("show client_encoding")
        assert await cur.fetchone() == ("UTF8",)
    result = await pg.psql("-c", "set client_encoding to 'LATIN1'", "-c", SECRET)
    assert "masks UTF8 text only" in result.err
    assert "hunter2" not in result.out and "********" in result.out
    # psql's \encoding (libpq's PQsetClientEncoding sends the SET): refused, still UTF8.
    result = await pg.psql("-At", "-c", "\\encoding LATIN1", "-c", "show client_encoding")
    assert result.out.strip() == "UTF8", (result.out, result.err)
    assert "LATIN1: invalid encoding name" in result.err  # how psql words a failed SET


async def test_a_change_the_gateway_cannot_see_ends_the_session(pg: PgHarness) -> None:
    pg.extra_toml = MASKS
    await pg.start()
    conn = await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:  # FATAL
            await conn.execute(
                "do $$ begin execute 'set client_encoding to ' || quote_literal('LAT' || 'IN1');"
                " end $$"
            )
        assert "the server switched to it, so the session ends" in str(caught.value)
        assert conn.closed or conn.broken
    finally:
        await conn.close()


async def test_without_masking_other_encodings_pass_but_split_ascii_ones_never(
    pg: PgHarness,
) -> None:
    await pg.start()
    env = pg.env()
    env["PGCLIENTENCODING"] = "LATIN1"
    latin = await pg.run("psql", "-X", "-At", "-c", "show client_encoding", env=env)
    assert (latin.status, latin.out.strip()) == (0, "LATIN1"), latin.err
    env["PGCLIENTENCODING"] = "GBK"
    gbk = await pg.run("psql", "-X", "-c", "select 1", env=env)
    assert gbk.status != 0 and "client_encoding GBK is not allowed" in gbk.err
    async with await psycopg.AsyncConnection.connect(pg.dsn(), autocommit=True) as conn:
        # Under GBK, E'中\' ends the string for the server (the backslash is half of a
        # character) while the gateway reads an escaped quote: a statement it never saw.
        with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
            await conn.execute("set client_encoding to 'GBK'")
        assert "SQL parser could read other statements" in str(caught.value)
        cur = await conn.execute("show client_encoding")
        assert await cur.fetchone() == ("UTF8",)
        await conn.execute("set client_encoding to 'LATIN1'")  # ASCII-safe: allowed
        cur = await conn.execute("show client_encoding")
        assert await cur.fetchone() == ("LATIN1",)
