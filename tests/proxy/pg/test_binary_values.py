"""proxy/pg/binary_values.py: binary values read as the text PostgreSQL sends, checked against
the machine's PostgreSQL (its `*send` function gives the binary form, `::text` the text)."""

from __future__ import annotations

import contextlib
import struct

import psycopg
import pytest

from proxy.pg.binary_values import readable
from tests.proxy.pg.harness import DIRECT_DSN, pg_available

VALUES = [
    "4111111111111111::int8",
    "(-32768)::int2",
    "2147483647::int4",
    "'pg_class'::regclass::oid",
    "0::numeric",
    "(-12.50)::numeric",
    "0.0001::numeric",
    "10000::numeric",
    "1e20::numeric",
    "1e-30::numeric",
    "123456789012345678901234567890.000100::numeric",
    "'NaN'::numeric",
    "'-Infinity'::numeric",
    "array[1, null, 3]::int8[]",
    "array[array[1, 2], array[3, 4]]::int2[]",
    "array[4111111111111111.5]::numeric[]",
    "array['a', 'b c']::varchar[]",
    "'{}'::int4[]",
    "row(4111111111111111::int8, 'x'::text, null::int4)",
    "int8range(4111111111111111, 4111111111111112)",
    "numrange(1.5, null, '[]')",
    "'empty'::int4range",
    "row(1, 2)::hoop_h4_pair",
    "array[row(1, 2)::hoop_h4_pair]",
    "'blue'::hoop_h4_colour",
]


@pytest.mark.postgres
@pytest.mark.skipif(not pg_available(), reason="PostgreSQL is not running")
@pytest.mark.parametrize("value", VALUES)
def test_binary_values_read_as_postgresql_writes_them(value: str) -> None:
    with psycopg.connect(DIRECT_DSN) as conn:
        for sql in (
            "create type hoop_h4_pair as (a int8, b text)",
            "create type hoop_h4_colour as enum ('blue')",
        ):
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(sql)
                conn.commit()
            conn.rollback()
        oid, send = conn.execute(
            f"select t.oid, t.typsend::text from pg_type t where t.oid = pg_typeof({value})"
        ).fetchone()
        raw = conn.execute(f"select {send}({value})").fetchone()[0]
        text = conn.execute(f"select ({value})::text").fetchone()[0]
    if "varchar" in value:  # an element with a space is quoted in text; detectors need not
        assert readable(oid, bytes(raw)) == "{a,b c}"
    elif "hoop_h4_pair]" in value:
        assert readable(oid, bytes(raw)) == "{(1,2)}"  # quoted in text
    else:
        assert readable(oid, bytes(raw)) == text


def test_a_float_holding_a_whole_number_is_read_as_that_number() -> None:
    assert readable(701, struct.pack("!d", 4111111111111111.0)) == "4111111111111111"
    assert readable(701, struct.pack("!d", 1.5)) == "1.5"


def test_what_it_cannot_read_is_none() -> None:
    assert readable(1082, b"\x00\x00\x00\x01") is None  # date: no detector reads it
    assert readable(20, b"\x00\x01") is None  # a short int8 does not parse
    assert readable(1016, b"\x00\x00\x00\x09garbage") is None
