"""COPY ... TO STDOUT rows, masked (pure parts): the statement's options, and rows in the
text and CSV formats cut anywhere across CopyData messages."""

from __future__ import annotations

import pytest

from proxy.pg.copy_out import CSV, CopyRows, learn_columns_messages, parse_copy_out
from storage.masking import MaskPolicy

RULES = [
    {"name": "passwords", "column": "password*"},
    {"name": "cards", "detector": "credit_card", "style": "last4"},
]
CARD = "4111 1111 1111 1111"


def rows_of(sql: str, columns: list[str]) -> CopyRows:
    spec = parse_copy_out(sql)
    assert spec is not None
    masker = MaskPolicy.from_config(RULES, "test.toml", b"k" * 32).for_caller([], "db")
    return CopyRows(spec, masker.plan(columns))


def run(rows: CopyRows, data: bytes, cut: int | None = None) -> bytes:
    pieces = [data] if cut is None else [data[:cut], data[cut:]]
    out = b""
    for piece in pieces:
        for row in rows.feed(piece):
            out += rows.mask(row)[0]
    return out + rows.finish()


def test_statement_options() -> None:
    spec = parse_copy_out('copy public."T" (a, "B") to stdout')
    assert spec is not None
    assert spec.relation == '"public"."T"' and spec.columns == ("a", "B")
    assert (spec.format, spec.delimiter, spec.null) == ("text", "\t", "\\N")
    spec = parse_copy_out("copy t to stdout with csv header delimiter ';' null 'NULL'")
    assert spec is not None and spec.format == CSV and spec.header
    assert (spec.delimiter, spec.null, spec.quote, spec.escape) == (";", "NULL", '"', '"')
    spec = parse_copy_out("copy (select a from t) to stdout (format binary)")
    # the query as the client wrote it; a parenthesis in a string is not the query's end
    assert spec is not None and spec.query == "select a from t" and spec.format == "binary"
    spec = parse_copy_out("copy (select ')' as a, (1) from t /* ) */) to stdout")
    assert spec is not None and spec.query == "select ')' as a, (1) from t /* ) */"
    spec = parse_copy_out("copy t to stdout (encoding 'latin1')")
    assert spec is not None and not spec.utf8
    for other in ("copy t from stdin", "copy t to '/tmp/x'", "select 1", "copy t to stdout; x"):
        assert parse_copy_out(other) is None
    assert learn_columns_messages(parse_copy_out("copy t to stdout")).startswith(b"P")  # type: ignore[arg-type]


TEXT_ROWS = (
    "1\thunter2\\tand\\\\more\tpaid with " + CARD + "\n2\t\\N\tnothing here\n3\tp\\nw\tcafé\n"
).encode()


def test_text_rows_are_masked_and_the_rest_kept_byte_for_byte() -> None:
    rows = rows_of("copy t (id, password, note) to stdout", ["id", "password", "note"])
    out = run(rows, TEXT_ROWS)
    assert (
        out
        == (
            "1\t********\tpaid with **** **** **** 1111\n2\t\\N\tnothing here\n3\t********\tcafé\n"
        ).encode()
    )
    for cut in range(len(TEXT_ROWS) + 1):
        rows = rows_of("copy t (id, password, note) to stdout", ["id", "password", "note"])
        assert run(rows, TEXT_ROWS, cut) == out


def test_text_rows_with_a_custom_delimiter_and_escaped_output() -> None:
    rows = rows_of("copy t (id, note) to stdout with delimiter '|'", ["id", "note"])
    data = ("x\\|y|card " + CARD + "\\ttab\n").encode()
    assert run(rows, data) == b"x\\|y|card **** **** **** 1111\\ttab\n"


CSV_ROWS = (
    "id,password,note\n"
    '1,"hunter,2","line one\nline two ' + CARD + '"\n'
    '2,,""\n'
    '3,"say ""hi""",plain\n'
).encode()


def test_csv_rows_with_header_quotes_and_newlines() -> None:
    sql = "copy t (id, password, note) to stdout with (format csv, header)"
    rows = rows_of(sql, ["id", "password", "note"])
    out = run(rows, CSV_ROWS)
    assert out == (
        b"id,password,note\n"
        b'1,"********","line one\nline two **** **** **** 1111"\n'
        b'2,,""\n'
        b'3,"********",plain\n'
    )
    for cut in range(len(CSV_ROWS) + 1):
        assert run(rows_of(sql, ["id", "password", "note"]), CSV_ROWS, cut) == out


def test_csv_with_its_own_escape() -> None:
    sql = "copy t (password, note) to stdout with (format csv, escape '\\')"
    rows = rows_of(sql, ["password", "note"])
    data = b'"a\\"b","x\\\\y ' + CARD.encode() + b'"\n'
    assert run(rows, data) == b'"********","x\\\\y **** **** **** 1111"\n'


@pytest.mark.parametrize("null", ["\\N", "NULL"])
def test_null_stays_null(null: str) -> None:
    rows = rows_of(f"copy t (password) to stdout with null '{null}'", ["password"])
    row = (null + "\n").encode()
    masked, values, acts = rows.mask(row)
    assert masked == row and values == [None] and acts == []
