"""Statement classes, wherever the statement sits, and the fingerprint cache."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parser as pg_parser

from proxy.pg.classify import ALL_CLASSES, Classified, Classifier, classify, literal_shape

CASES = [
    ("select 1", {"read"}),
    ("values (1)", {"read"}),
    ("show search_path", {"read"}),
    ("insert into t values (1)", {"write"}),
    ("update t set a = 1 where id = 2", {"write"}),
    ("update t set a = 1", {"write", "update_without_where"}),
    ("update t set a = 1 where true", {"write", "update_without_where"}),
    ("delete from t where id = 1", {"write"}),
    ("delete from t", {"write", "delete_without_where"}),
    ("delete from t where 1 = 1", {"write", "delete_without_where"}),
    ("merge into t using s on t.id = s.id when matched then delete", {"write"}),
    (
        "with d as (delete from t returning *) select * from d",
        {"read", "write", "delete_without_where"},
    ),
    ("select * from (select 1) x where exists (select 1)", {"read"}),
    ("drop table t", {"ddl"}),
    ("create table t (a int)", {"ddl"}),
    ("alter table t add column b int", {"ddl"}),
    ("create index on t (a)", {"ddl"}),
    ("create table t2 as select * from t", {"ddl", "write", "read"}),
    ("select * into t3 from t", {"ddl", "write", "read"}),
    ("truncate t", {"truncate", "write"}),
    ("grant select on t to bob", {"dcl"}),
    ("revoke all on t from bob", {"dcl"}),
    ("create role eve login", {"dcl"}),
    ("alter role eve superuser", {"dcl"}),
    ("grant admin to eve", {"dcl"}),
    ("begin", {"transaction"}),
    ("commit", {"transaction"}),
    ("savepoint a", {"transaction"}),
    ("vacuum t", {"utility"}),
    ("listen ch", {"utility"}),
    ("set search_path = public", {"utility"}),
    ("do $$ begin perform 1; end $$", {"do_block", "read"}),
    ("do $$ begin delete from t; end $$", {"do_block", "write", "delete_without_where"}),
    ("copy t from stdin", {"copy", "copy_in", "write"}),
    ("copy t to stdout", {"copy", "copy_out", "read"}),
    (
        "copy (delete from t returning *) to stdout",
        {"copy", "copy_out", "read", "write", "delete_without_where"},
    ),
    ("copy t from program 'curl evil'", {"copy", "copy_in", "write", "copy_program"}),
    ("copy t to program 'gzip > /tmp/x'", {"copy", "copy_out", "read", "copy_program"}),
    ("copy t from '/etc/passwd'", {"copy", "copy_in", "write", "copy_file"}),
    ("set role admin", {"set_role", "utility"}),
    ("set local role admin", {"set_role", "utility"}),
    ("reset role", {"set_role", "utility"}),
    ("set session authorization postgres", {"set_role", "utility"}),
    ("select set_config('role', 'admin', false)", {"read", "set_role"}),
    ("set default_transaction_read_only = off", {"read_write", "utility"}),
    ("set transaction read write", {"read_write", "utility"}),
    ("begin read write", {"read_write", "transaction"}),
    ("begin read only", {"transaction"}),
    ("select pg_terminate_backend(42)", {"read", "server_function"}),
    # code the gateway cannot read, and built-ins that change something (issue 16)
    ("select my_func()", {"read", "calls_code"}),
    ("select * from my_func()", {"read", "calls_code"}),
    ("call proc()", {"utility", "calls_code"}),
    ("select public.lower('x')", {"read", "calls_code"}),
    ("select \"Lower\"('x')", {"read", "calls_code"}),
    ("select nextval('s')", {"read", "side_effect"}),
    ("select setval('s', 5)", {"read", "side_effect"}),
    ("select lo_from_bytea(0, 'x')", {"read", "side_effect"}),
    ("select lo_create(0)", {"read", "side_effect"}),
    ("select 1 === 2", {"read", "calls_code"}),  # an operator of the operator's own
    ("select 1 operator(public.+) 2", {"read", "calls_code"}),
    ("select a between 1 and 2, x not like 'a', j #>> '{a}', 1 = any(b) from t", {"read"}),
    (
        "select count(*), now(), lower(relname), coalesce(null, 1), '{}'::jsonb -> 'a', "
        "pg_catalog.pg_get_viewdef('v'::regclass), extract(year from now()), "
        "trim(' x '), random() from pg_class",
        {"read"},
    ),
    ("explain delete from t", {"read"}),
    ("explain analyze delete from t", {"read", "write", "delete_without_where"}),
    ("prepare p as delete from t", {"utility", "write", "delete_without_where"}),
    ("execute p(1)", {"utility"}),  # the session adds the classes of p's body
    ("deallocate p", {"utility"}),
    (
        "create rule r as on insert to t do instead delete from u",
        {"ddl", "write", "delete_without_where"},
    ),
    ("create rule r as on update to t do also notify ch", {"ddl", "utility"}),
    ("selec 1", {"unparsable"}),
    # issue 13: rows written without a WHERE that restricts them
    (
        "merge into t using t s on t.id = s.id when matched then delete",
        {"write", "delete_without_where"},
    ),
    (
        "merge into t using (values (1)) s(id) on t.id = s.id when matched then update set a = 1",
        {"write", "read"},
    ),
    (
        "insert into t select * from t on conflict (id) do update set a = 1",
        {"write", "read", "update_without_where"},
    ),
    ("insert into t values (1) on conflict (id) do update set a = 1", {"write"}),
    ("delete from t where 't'", {"write", "delete_without_where"}),
    ("delete from t where id = id", {"write", "delete_without_where"}),
    ("delete from t where $1", {"write", "delete_without_where"}),
    ("delete from t where id = $1", {"write"}),
    ("delete from t using u where name is not null", {"write", "delete_without_where"}),
    ("update t set a = u.a from u where t.id = u.id", {"write"}),
    ("delete from t where id is not null", {"write", "delete_without_where"}),
    ("delete from t where gone is null", {"write"}),
    ("delete from t where id in (select id from t)", {"write", "read", "delete_without_where"}),
    ("delete from t where id in (select tid from u)", {"write", "read"}),
    # issue 13: SQL as text, server files, rewrites, statistics
    (
        "select query_to_xml('delete from t', true, false, '')",
        {"read", "write", "delete_without_where"},
    ),
    ("select query_to_xml(q, true, false, '') from t", {"read", "dynamic_sql"}),
    ("select dblink_exec('dbname=x', 'drop table t')", {"read", "ddl", "server_function"}),
    ("load 'plpgsql'", {"server_file", "utility"}),
    ("select pg_ls_logdir()", {"read", "server_file", "server_function"}),
    ("vacuum full t", {"table_rewrite", "utility"}),
    ("select * from pg_stats", {"read", "statistics"}),
    ("select set_config(name, 'x', false) from pg_settings where name = 'work_mem'", {"read"}),
    (
        "select set_config(name, 'x', false) from pg_settings where name = 'role'",
        {"read", "set_role"},
    ),
]


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_classes(sql: str, expected: set[str]) -> None:
    result = classify(sql)
    assert result.classes == expected
    assert expected <= ALL_CLASSES


def test_function_bodies_are_judged() -> None:
    sql_body = "create function f() returns void language sql as $$ delete from t $$"
    assert {"function", "ddl", "write", "delete_without_where"} <= classify(sql_body).classes
    atomic = "create function f() returns int language sql begin atomic update t set a = 1; end"
    assert "update_without_where" in classify(atomic).classes
    plpgsql = (
        "create function f() returns void language plpgsql as $f$ "
        "begin if true then truncate t; end if; end $f$"
    )
    assert {"function", "truncate"} <= classify(plpgsql).classes
    assert (
        "delete_without_where"
        not in classify(
            "create function f() returns void language sql as $$ delete from t where id = 1 $$"
        ).classes
    )


def test_multiple_statements_are_judged_one_by_one() -> None:
    result = classify("select 1; drop table t; select 'a;b'")
    assert [s.classes for s in result.statements] == [{"read"}, {"ddl"}, {"read"}]
    assert [s.text for s in result.statements] == ["select 1", "drop table t", "select 'a;b'"]
    accented = classify("select 'é'; delete from t")
    assert accented.statements[1].text == "delete from t"


def test_unparsable_keeps_the_error() -> None:
    result = classify("delete frm t")
    assert result.classes == {"unparsable"}
    assert result.error and "syntax error" in result.error


def test_cache_by_fingerprint() -> None:
    classifier = Classifier()
    first = classifier("select abalance from pgbench_accounts where aid = 1")
    second = classifier("select abalance from pgbench_accounts where aid = 2")
    assert first.classes == second.classes == {"read"}
    assert first.key == second.key
    assert second.statements[0].text.endswith("aid = 2")
    assert classifier.hits == 1 and classifier.misses == 1
    classifier("select abalance from pgbench_accounts where aid = 1")
    assert classifier.hits == 2
    # Shapes whose class depends on a constant are never shared by fingerprint.
    assert classifier("select set_config('search_path', 'x', false)").classes == {"read"}
    assert "set_role" in classifier("select set_config('role', 'x', false)").classes
    body = "create function f() returns void language sql as $$ {} $$"
    assert "write" not in classifier(body.format("select 1")).classes
    assert "delete_without_where" in classifier(body.format("delete from t")).classes
    many = classifier("select 1; select 2")
    again = classifier("select 3; select 4")
    assert [s.text for s in again.statements] == ["select 3", "select 4"]
    assert len(many.statements) == 2


def test_writes_share_a_fingerprint_unless_their_where_is_made_of_constants() -> None:
    classifier = Classifier()
    classifier("update accounts set balance = balance + 5 where id = 1")
    again = classifier("update accounts set balance = balance + 7 where id = 2")
    assert (classifier.hits, classifier.misses) == (1, 1)  # pgbench's TPC-B writes hit
    assert again.classes == {"write"} and again.key is not None
    # A WHERE made of constants restricts no row by its own values, whatever they are:
    # `1 = 2` and `1 = 1` share a fingerprint and a class.
    assert classifier("delete from t where 1 = 2").classes == {"write", "delete_without_where"}
    assert classifier("delete from t where 1 = 1").classes == {"write", "delete_without_where"}
    assert "update_without_where" in classifier("update t set a = 1 where false").classes
    assert "update_without_where" in classifier("update t set a = 1 where true").classes
    assert classifier("delete from t where a = 1").classes == {"write"}


def test_tables_differing_in_digits_never_share_a_cached_classification() -> None:
    classifier = Classifier()
    assert classifier("select * from pay_2023 where a = 1").statements[0].tables == {"pay_2023"}
    assert classifier("select * from pay_2024 where a = 1").statements[0].tables == {"pay_2024"}
    assert classifier("delete from x11 where a = 1").statements[0].tables == {"x11"}
    assert classifier("delete from x22 where a = 2").statements[0].tables == {"x22"}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("select * from x where a = 1", "select * from x11 where a = 1"),
        ("select * from accounts where id = 1", "select * from secret.accounts where id = 2"),
        ("delete from pay_ where a = 1", "delete from pay_2024 where a = 1"),
        ("/* a */ select * from t where a = $1", "/* b */ select * from t11 where a = $1"),
        ("/* a */ select * from t where a = $1", "/* b */ select * from s.t where a = $1"),
    ],
)
def test_a_name_the_fingerprint_leaves_out_never_borrows_a_cached_one(
    first: str, second: str
) -> None:
    """pg_query's fingerprint leaves out a DML table's schema and the digits of a table's
    name: `x` and `x11` share one. What the first was classified as must not be lent to the
    second, whichever cache would serve it."""
    assert pg_parser.fingerprint(first) == pg_parser.fingerprint(second)
    classifier = Classifier()
    classifier(first)
    assert classifier(second).statements[0].tables == classify(second).statements[0].tables


def test_an_integer_past_32_bits_is_not_read_as_an_integer() -> None:
    """PostgreSQL's scanner reads 2147483648 as a numeric, which the grammar refuses where it
    wants an integer: such a text must not borrow the classes of one that parses."""
    classifier = Classifier()
    assert classifier("select timestamp(2) 'x'").classes == {"read"}
    assert classifier("select timestamp(2147483648) 'on'").classes == {"unparsable"}
    assert classifier("select " + "9" * 5000).classes == {"read"}  # no int() of 5,000 digits
    assert literal_shape("select 00000000001") == "select \x00I"


def test_cache_is_bounded() -> None:
    classifier = Classifier(max_entries=10)
    for index in range(50):
        classifier(f"select {index} from t{index}")
    assert len(classifier._by_text) <= 10 and len(classifier._by_print) <= 10


def test_every_class_is_documented() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "sql-classes.md").read_text()
    documented = set(re.findall(r"^### `([a-z_]+)`", doc, re.MULTILINE))
    assert documented == set(ALL_CLASSES)


def test_tables_named_by_a_statement() -> None:
    def tables(sql: str) -> set[str]:
        return set(classify(sql).statements[0].tables)

    assert tables("with d as (delete from public.t returning *) select * from d") == {
        "public.t",
        "d",
    }
    assert tables("insert into x select * from y") == {"x", "y"}
    assert tables("update s.z set a = 1") == {"s.z"}
    assert tables("truncate a, b") == {"a", "b"}
    assert tables("drop table s.q, r") == {"s.q", "r"}
    classifier = Classifier()
    classifier("select * from accounts where id = 1")
    assert classifier("select * from accounts where id = 2").statements[0].tables == {"accounts"}


def test_prepared_statement_names() -> None:
    prepare = classify("prepare p(int) as delete from t where id = $1").statements[0]
    assert prepare.named is not None and prepare.named.prepares == "p"
    assert prepare.named.body is not None and prepare.named.body.classes == {"write"}
    assert prepare.named.body.tables == {"t"}
    for sql in ("execute q(1)", "explain analyze execute q", "create table x as execute q"):
        named = classify(sql).statements[0].named
        assert named is not None and named.executes == {"q"}, sql
    assert classify("deallocate prepare q").statements[0].named.deallocates == "q"  # type: ignore[union-attr]
    for sql in ("deallocate all", "discard all"):
        named = classify(sql).statements[0].named
        assert named is not None and named.deallocates_all
    # The fingerprint ignores these names: such statements are never shared by it.
    classifier = Classifier()
    classifier("execute a(1)")
    assert classifier("execute b(2)").statements[0].named.executes == {"b"}  # type: ignore[union-attr]


def test_literal_shape_leaves_out_constants_and_only_constants() -> None:
    assert literal_shape("select * from t where id = 1") == literal_shape(
        "select * from t where id = 22"
    )
    assert literal_shape("select 'a''b', 1.5e3 from \"o'dd\"\"t\" where x = -.5;") == (
        'select \x00S, \x00N from "o\'dd""t" where x = -\x00N;'
    )
    assert literal_shape("select t1.x2 from t1") == "select t1.x2 from t1"  # names keep digits
    assert literal_shape("fetch 2 from c") != literal_shape("fetch 2.5 from c")  # an integer
    assert literal_shape("select 'a;b'") == "select \x00S"  # a `;` inside a string
    # PostgreSQL reads `x€1` as one name: its digits are not a number
    assert literal_shape("select * from x€1") != literal_shape("select * from x€2")
    for unread in (
        "select 1; select 2",
        "select $1",
        "select $$x$$",
        "select 'open",
        'select "open',
        "select 1 -- comment",
        "select /* c */ 1",
        "select E'\\n'",
    ):
        assert literal_shape(unread) is None, unread


# Statements whose classes depend on a constant's value, with a slot for it.
_TEMPLATES = (
    "select set_config({s}, 'x', false)",
    "delete from t where {n} = {n}",
    "update t set a = {n} where {s} = {s}",
    "set default_transaction_read_only = {s}",
    "set transaction_read_only = {n}",
    "select * from accounts where id = {n} and name = {s}",
    'select "o\'dd" from "we;ird" where x = {n}',
    "copy (select {n}) to program {s}",
    "set role {s}",
    "select pg_read_file({s})",
    "explain (analyze {n}) delete from t",  # an option's value: not a constant to pglast
    "explain (analyze {s}) update t set a = {n}",
    "copy t to stdout with (header {n})",
    "select * from t where a = -{n} and b = {s}",
    "begin transaction isolation level serializable, read {s}",
    "delete from t where {s}",
    "delete from t where not {s}::bool and a = {n}",
    "update t set a = {n} where {n} in ({n}) or a = {n}",
    "merge into t using (select {n} as id) s on t.id = s.id when matched then delete",
    "merge into t using t s on t.id = {n} when matched then update set a = {s}",
    "insert into t select {n}, {s} on conflict (id) do update set a = {s}",
    "insert into t values ({n}, {s}) on conflict (id) do update set a = {s}",
    "select set_config(name, {s}, false) from pg_settings where name = {s}",
    "select query_to_xml({s}, true, false, '')",
    "select dblink_exec('dbname=x', {s})",
    "select dblink({s}, {s})",
    "select table_to_xml({s}, true, false, '')",
    "vacuum (full {n}) t",
    "vacuum (full {s}) t",
    "select histogram_bounds from pg_stats where tablename = {s}",
    "select pg_ls_logdir(), {n}",
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(_TEMPLATES),
            st.sampled_from(
                [
                    "'role'",
                    "'on'",
                    "'off'",
                    "'x'",
                    "'search_path'",
                    "'1'",
                    "''",
                    "'t'",
                    "'drop table t'",
                    "'select 1'",
                    "'delete from t'",
                ]
            ),
            st.sampled_from(["0", "1", "2", "1.5", "1e3"]),
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=150, deadline=None)
def test_the_caches_never_change_a_classification(
    texts: list[tuple[str, str, str]],
) -> None:
    classifier = Classifier()
    for template, string, number in texts:
        sql = template.format(s=string, n=number)
        cached, fresh = classifier(sql), classify(sql)
        assert _found(cached) == _found(fresh), sql


_NAME_PIECES = ("x", "€", "é", "t", "1", "2", "_", '"a1"', "ф")
_VALUES = ("1", "22", "1.5", "'a'", "'1'", "x€1", "-3", "'it''s'")
_STATEMENTS = (
    "select * from {n1} where {n2} = {v}",
    "delete from {n1} where {v} = {v}",
    "update {n1} set {n2} = {v} where {n2} = {v}",
    "select set_config({v}, {v}, false) from {n1}",
    "insert into {n1} values ({v}, {v})",
    "select setval({v}, {n2}) from {n1} where {n2} = {v}",
    "select lo_from_bytea({v}, {n2}::bytea) from {n1}",
)
_names = st.lists(st.sampled_from(_NAME_PIECES), min_size=1, max_size=4).map("".join)


@given(
    st.sampled_from(_STATEMENTS),
    _names,
    _names,
    st.sampled_from(_VALUES),
    st.integers(0, 9),
)
@settings(max_examples=400, deadline=None)
def test_texts_that_differ_only_in_digits_are_classified_as_if_uncached(
    template: str, n1: str, n2: str, value: str, digit: int
) -> None:
    """The literal shape takes some digit runs for numbers: a text whose digits are changed
    must still get its own classes and tables, whatever was cached for the first one."""
    first = template.format(n1=n1, n2=n2, v=value)
    second = re.sub(r"[0-9]", str(digit), first)
    classifier = Classifier()
    classifier(first)
    cached, fresh = classifier(second), classify(second)
    assert _found(cached) == _found(fresh), (first, second)


def _found(found: Classified) -> list[tuple[object, ...]]:
    """Everything a statement was found to be but its text: a cache must keep it all
    (`stores` lost for a look-alike let a masked value be kept in a large object)."""
    return [
        (s.classes, s.tables, s.stores, s.encodings, s.conforming, s.named is None)
        for s in found.statements
    ]
