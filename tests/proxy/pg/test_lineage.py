"""proxy/pg/lineage.py: which output columns of a statement carry a masked column's value."""

from __future__ import annotations

import pytest

from proxy.pg.lineage import OutputMasks, lineages, shape_key
from storage.masking import Masker, MaskPolicy


def _masker(**rule: object) -> Masker:
    entry = {"name": "pw", "column": "password", **rule}
    return MaskPolicy.from_config([entry], "gateway.toml").for_caller([], None)


def _flags(sql: str, columns: list[str], masker: Masker | None = None) -> list[bool]:
    (lineage,) = lineages(sql)
    masks = OutputMasks.build(lineage, masker or _masker())
    if masks is None:
        return [False] * len(columns)
    return [rule is not None for rule in masks.rules(columns)]


@pytest.mark.parametrize(
    "sql",
    [
        "select password as p, id from users",
        "select password || '', id from users",
        "select lower(password), id from users",
        "select (select password from users limit 1), id",
        "select coalesce(password, ''), id from users",
        "select row_to_json(t), id from users t",
        "select t::text, id from users t",
        "select to_jsonb(u), id from users u",
        "select u, id from users u",
        "select array_agg(t), 1 from users t",
        "select row_to_json(t.*), id from users t",
        "select pw || '!', id from (select password as pw, id from users) s",
        "with c(q) as (select password from users) select q, 1 from c",
        "select x, id from users, lateral (select password as x) l",
        "select a, id from users u(a)",
        "select o, 1 from unnest(array[(select password from users)]) o",
        "update users set name = 'x' returning password as p, id",
        "delete from users returning upper(password), id",
        "insert into users select * from users returning password || '', id",
        "prepare q as select password as p, id from users",
        "select name, id from users union all select password, id from users",
    ],
)
def test_renamed_or_wrapped_masked_columns_are_flagged(sql: str) -> None:
    assert _flags(sql, ["a", "id"]) == [True, False]


@pytest.mark.parametrize(
    "sql",
    [
        "select name, id from users",
        "select count(*), max(id) from users",
        "select upper(name), id from users where password = 'x'",
        "select exists (select 1 from users where password = 'x'), id from users",
        "select * from users",
        "explain analyze select password from users",
    ],
)
def test_other_columns_are_not_flagged(sql: str) -> None:
    assert _flags(sql, ["a", "id"]) == [False, False]


def test_names_given_by_subqueries_are_followed_under_a_top_level_star() -> None:
    sql = "select * from (select id, password as pw from users) s"
    assert _flags(sql, ["id", "pw"]) == [False, True]


def test_positions_after_a_star_count_from_the_end() -> None:
    sql = "select id, *, password as p from users"
    assert _flags(sql, ["id", "x", "y", "p"]) == [False, False, False, True]


def test_a_star_in_a_later_union_branch_fails_closed() -> None:
    sql = "select id, name from a union all select * from users"
    assert _flags(sql, ["id", "name"]) == [True, True]


def test_tables_scoping_follows_qualified_columns_and_fails_closed_otherwise() -> None:
    scoped = _masker(tables=["users"])
    assert _flags("select u.password as p from users u", ["p"], scoped) == [True]
    assert _flags("select a.password as p from accounts a", ["p"], scoped) == [False]
    assert _flags("select password as p from accounts", ["p"], scoped) == [True]  # unknown
    assert _flags("select row_to_json(a) from accounts a", ["r"], scoped) == [False]
    assert _flags("select row_to_json(u) from users u", ["r"], scoped) == [True]


def test_no_column_rules_means_no_masks() -> None:
    detector = MaskPolicy.from_config(
        [{"name": "cards", "detector": "credit_card"}], "gateway.toml"
    ).for_caller([], None)
    (lineage,) = lineages("select password as p from users")
    assert OutputMasks.build(lineage, detector) is None


def test_lineage_is_parsed_once_per_text() -> None:
    sql = "select password as cached_p from users"
    assert lineages(sql) is lineages(sql)


def test_statements_differing_only_in_constants_share_a_shape_and_nothing_else_does():
    base = "select pw from (select password as pw, name as nm from users where id = 1) s"
    assert shape_key(base) == shape_key(base.replace("id = 1", "id = 42"))
    assert shape_key("select $$a$$, 'b', 1.5") == shape_key("select $$z$$, 'y', 2.5")
    for other in (
        base.replace("password as pw, name as nm", "password as nm, name as pw"),  # aliases
        base.replace("select pw", 'select "pw"'),  # quoting
        base.replace("id = 1", "id = id"),  # a column where a constant was
        base.replace("users", "admins"),  # another relation
    ):
        assert shape_key(other) != shape_key(base), other
    swapped = "select pw from (select password as nm, name as pw from users where id = 7) s"
    lineages(base)  # cached first: the look-alike with swapped aliases must not reuse it
    assert lineages(swapped) != lineages(base)
    assert shape_key("select 'unterminated") == "select 'unterminated"


@pytest.mark.parametrize(
    ("sql", "columns"),
    [
        ("select key, value from users u, jsonb_each_text(to_jsonb(u))", ["key", "value"]),
        ("select j.value from users u, jsonb_each_text(to_jsonb(u)) j", ["value"]),
        ("select * from users u, json_each_text(row_to_json(u))", ["id", "key", "value"]),
        ("select x from users u, unnest(array[u.password]) t(x)", ["x"]),
        (
            "select x from xmltable('/r' passing (select xmlelement(name r, password) "
            "from users) columns x text path '.') t",
            ["x"],
        ),
        ("select (jsonb_each_text(to_jsonb(u))).* from users u", ["key", "value"]),
        ("select histogram_bounds from pg_stats", ["histogram_bounds"]),
        ("select * from pg_catalog.pg_stats", ["attname", "most_common_vals"]),
        ("declare c cursor for select password as p from users", ["p"]),
    ],
)
def test_functions_statistics_and_expansions_mask_what_they_may_return(
    sql: str, columns: list[str]
) -> None:
    flags = _flags(sql, columns)
    assert flags[-1], flags
    if "pg_stats" in sql and "*" in sql:
        assert flags == [False, True]  # names are not values


def test_a_fetch_carries_its_cursor_name_and_a_function_fed_nothing_masks_nothing() -> None:
    (fetch,) = lineages("fetch 10 from c")
    masks = OutputMasks.build(fetch, _masker())
    assert masks is not None and masks.fetches == "c"
    assert _flags("select g, id from users, generate_series(1, 3) g", ["g", "id"]) == [
        False,
        False,
    ]
