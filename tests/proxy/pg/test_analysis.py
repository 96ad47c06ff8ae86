"""Each statement text is parsed by pglast once: the classes, the lineage of its output
columns and its COPY spec all come from that one parse (issue 14). Counted on the real
parser through the sans-IO session, with masking rules that need the lineage."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

import pglast
import pytest
from pglast import parser as pg_parser

from proxy.pg import copy_out, wire
from proxy.pg.session import PgSession
from storage.masking import MaskPolicy
from tests.proxy.pg.test_session import Recorder, make

TREES = ("parse_sql_json", "parse_sql")  # the calls that build a parse tree


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counted: Counter[str] = Counter()

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return real(*args, **kwargs)

        return call

    for name in (*TREES, "fingerprint"):
        monkeypatch.setattr(pg_parser, name, counting(name, getattr(pg_parser, name)))
    monkeypatch.setattr(pglast, "parse_sql", counting("parse_sql", pg_parser.parse_sql))
    if hasattr(copy_out, "parse_sql"):  # where an earlier version imported it by name
        monkeypatch.setattr(copy_out, "parse_sql", counting("parse_sql", copy_out.parse_sql))
    return counted


def masked() -> tuple[PgSession, Recorder]:
    session, recorder = make()
    rules = [{"name": "pw", "column": "password"}]
    session.masker = MaskPolicy.from_config(rules, "test.toml", b"k" * 32).for_caller([], "db")
    return session, recorder


def fresh() -> str:
    return f"t_{secrets.token_hex(6)}"  # a table no cache has seen


def trees(calls: Counter[str]) -> int:
    return sum(calls[name] for name in TREES)


def send_query(session: PgSession, sql: str) -> None:
    session.client_data(wire.Query(sql).encode())
    assert session.to_upstream, "the statement went upstream"
    session.to_upstream.clear()


def test_a_simple_query_is_parsed_once(calls: Counter[str]) -> None:
    session, _ = masked()
    sql = f"select password, id from {fresh()} where id = 1"
    send_query(session, sql)
    assert trees(calls) == 1 and calls["fingerprint"] <= 1
    calls.clear()
    send_query(session, sql)  # the same text again: no parse at all
    assert trees(calls) == 0 and calls["fingerprint"] == 0


def test_a_multi_statement_string_is_parsed_once(calls: Counter[str]) -> None:
    session, _ = masked()
    table = fresh()
    sql = (
        f"select 1 as one; prepare p_{table} as select password from {table}; "
        f"execute p_{table}; select password as pw from {table}"
    )
    send_query(session, sql)
    assert trees(calls) == 1 and calls["fingerprint"] <= 1


def test_a_copy_is_parsed_once(calls: Counter[str]) -> None:
    session, _ = masked()
    send_query(session, f"copy (select id, password from {fresh()}) to stdout")
    assert trees(calls) == 1 and calls["fingerprint"] <= 1
    calls.clear()
    send_query(session, f"copy {fresh()} (id, password) to stdout with (format csv)")
    assert trees(calls) == 1 and calls["fingerprint"] <= 1


def test_the_extended_protocol_parses_a_statement_once(calls: Counter[str]) -> None:
    session, _ = masked()
    sql = f"select password from {fresh()} where id = $1"
    messages = (
        wire.Parse("s1", sql),
        wire.Bind("", "s1", (), (b"1",)),
        wire.Describe("P", ""),
        wire.Execute(""),
        wire.Sync(),
    )
    session.client_data(b"".join(m.encode() for m in messages))
    assert session.to_upstream
    assert trees(calls) == 1 and calls["fingerprint"] <= 1
