"""Where the values of a statement's result come from, for column mask rules. Pure.

A `[[masks]] column = "password"` rule matches the result's column names, and a query can
rename or wrap a column (`select password as p`, `lower(password)`, `(select password ...)`,
`row_to_json(u)`). `lineage(sql)` reads, with pglast, which columns each output column of a
statement's top-level target list refers to anywhere inside its expression (`Source`), and
the names the statement's subqueries and CTEs give to their outputs (`derived`), so a rename
inside a subquery is followed too. `OutputMasks.build(lineage, masker)` then decides, for one
session's rules, which output positions and which output names carry a masked value.

It fails closed: a table the gateway cannot tell counts as matching a rule's `tables`, a
whole-row reference (`row_to_json(t)`, `t::text`, `t.*` inside an expression) masks its output
column when the relation could hold a masked column, a `*` in a later UNION branch masks
the positions it covers, a function in FROM fed a masked value (`jsonb_each_text(to_jsonb(c))`)
masks every column it may return (any unqualified name, its alias's, a top-level `*`), and
the value columns of the statistics catalogues (`pg_stats.histogram_bounds`) count as masked
columns of an unknown table. Lineage is parsed once per statement text (bounded LRU); the masks per
session (the rules differ per caller) are cached by the caller.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from pglast import parser as pg_parser

from proxy.pg.classify import (
    _SQL_TEXT_FUNCTIONS,
    _TABLE_TEXT_FUNCTIONS,
    _WHOLE_READ_FUNCTIONS,
    literal_shape,
    token_shape,
)
from storage.masking import Masker, MaskRule

MAX_ENTRIES = 4096
# Functions returning values of a query, table or cursor they are given as text or by name
# (`query_to_xml('select password ...')`, `table_to_xml('users', ...)`, `cursor_to_xml(c,
# ...)`, `ts_stat`'s words, `dblink`'s rows): what they return reads rows the lineage cannot
# see, so it counts as a whole row of an unknown table.
HIDDEN_READS = frozenset(
    {
        *_SQL_TEXT_FUNCTIONS,
        *_TABLE_TEXT_FUNCTIONS,
        *_WHOLE_READ_FUNCTIONS,
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "dblink_fetch",
        "dblink_get_result",
    }
)
MAX_TEXT = 16384
MAX_DEPTH = 400
UNKNOWN_NAME = "?column?"
# Catalogues of column statistics, and their columns that hold sampled values.
STATISTICS = frozenset(
    {
        "pg_stats",
        "pg_statistic",
        "pg_stats_ext",
        "pg_stats_ext_exprs",
        "pg_statistic_ext_data",
    }
)
STATISTICS_VALUES = (
    "most_common_vals",
    "most_common_elems",
    "histogram_bounds",
    "stavalues1",
    "stavalues2",
    "stavalues3",
    "stavalues4",
    "stavalues5",
    "stxdmcv",
    "stxdexpr",
)


@dataclass(frozen=True, slots=True)
class Source:
    """What one output expression reads: columns as (name, table or None when unknown), and
    whole rows of relations (table, None when unknown or derived)."""

    columns: frozenset[tuple[str, str | None]] = frozenset()
    rows: frozenset[str | None] = frozenset()

    def __or__(self, other: Source) -> Source:
        return Source(self.columns | other.columns, self.rows | other.rows)


EMPTY = Source()


@dataclass(frozen=True, slots=True)
class Branch:
    """One SELECT of the top level (several for UNION/INTERSECT/EXCEPT): the sources of the
    output positions before its first top-level `*` (`head`) and after it (`tail`, counted
    from the end); `star` is what the `*` may cover (None: no `*`)."""

    head: tuple[Source, ...]
    tail: tuple[Source, ...] = ()
    star: Source | None = None
    first: bool = True  # the branch whose `*` columns the RowDescription names


@dataclass(frozen=True, slots=True)
class Lineage:
    branches: tuple[Branch, ...] = ()
    derived: tuple[tuple[str, Source], ...] = ()  # subquery/CTE output name (lower) -> source
    declares: str | None = None  # DECLARE name CURSOR FOR <this query>
    fetches: str | None = None  # FETCH ... FROM name: returns what the cursor's query does


NO_LINEAGE = Lineage()


# -- parsing -------------------------------------------------------------------------------------

ShapeKey = tuple[str, ...] | str
_cache: OrderedDict[ShapeKey, tuple[Lineage, ...]] = OrderedDict()


def shape_key(sql: str) -> ShapeKey:
    """What lineage depends on: the statement's tokens, with each constant's value left out.
    A constant never names a column, a relation or an alias, so `... WHERE aid = 1` and
    `... WHERE aid = 2` share their lineage and are parsed once. Fingerprints cannot serve
    here: they drop aliases, and aliases decide which value an outer query reads. Text the
    scanner rejects is its own key. A plain statement's literal shape (`literal_shape`) is
    finer still and costs no call into the parser, which releases the GIL on every call."""
    shape = literal_shape(sql)
    if shape is not None:
        return ("\x00", shape)  # no scanned token holds a NUL: no scanned key looks like this
    tokens = token_shape(sql)
    return sql if tokens is None else tokens


def lineages(sql: str, tree: dict[str, Any] | None = None) -> tuple[Lineage, ...]:
    """The lineage of each statement of a string, in order (empty when it does not parse),
    cached by `shape_key`. `tree`: the string's parse tree when the caller has it already
    (`classify.parse_tree`), so that a statement is parsed once."""
    key = shape_key(sql)
    found = _cache.get(key)
    if found is not None:
        _cache.move_to_end(key)
        return found
    if tree is None:
        try:
            tree = json.loads(pg_parser.parse_sql_json(sql))
        except pg_parser.ParseError:
            tree = {}
    assert tree is not None
    found = tuple(lineage_of(raw.get("stmt")) for raw in tree.get("stmts", []))
    if len(sql) <= MAX_TEXT:
        _cache[key] = found
        if len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return found


def lineage_of(stmt: Any) -> Lineage:
    """The lineage of one statement's parse tree node (`{"SelectStmt": {...}}`)."""
    return _lineage(stmt)


def _lineage(stmt: Any) -> Lineage:
    if not isinstance(stmt, dict) or len(stmt) != 1:
        return NO_LINEAGE
    ((kind, fields),) = stmt.items()
    if kind == "PrepareStmt":
        return _lineage(fields.get("query"))  # what EXECUTE returns
    if kind == "DeclareCursorStmt":  # what FETCH returns
        query = _lineage(fields.get("query"))
        return Lineage(query.branches, query.derived, declares=str(fields.get("portalname")))
    if kind == "FetchStmt" and not fields.get("ismove"):
        return Lineage(fetches=str(fields.get("portalname")))
    reader = _RelationCollector()
    reader.collect(fields, 0)
    if kind == "SelectStmt":
        branches = reader.branches(fields)
    elif kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
        returning = fields.get("returningList") or (fields.get("returningClause") or {}).get(
            "exprs"
        )
        branches = [reader.target_branch(returning or [])] if returning else []
    else:
        return NO_LINEAGE
    return Lineage(tuple(branches), tuple(reader.derived))


@dataclass(slots=True)
class _RelationCollector:
    aliases: dict[str, set[str | None]] = field(default_factory=dict)
    ctes: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)  # aliases of set-returning functions
    derived: list[tuple[str, Source]] = field(default_factory=list)
    _pending: list[tuple[str, Any, list[str]]] = field(default_factory=list)

    # the relations of the statement, scope-blind (conservative: a name meaning two things
    # resolves to both)

    def collect(self, node: Any, depth: int) -> None:
        self._walk(node, depth)
        for kind, fields, colnames in self._pending:
            self._derive(kind, fields, colnames)

    def _walk(self, node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        if isinstance(node, list):
            for item in node:
                self._walk(item, depth + 1)
            return
        if not isinstance(node, dict):
            return
        if "CommonTableExpr" in node:
            cte = node["CommonTableExpr"]
            name = str(cte.get("ctename") or "").lower()
            self.ctes.add(name)
            self.aliases.setdefault(name, set()).add(None)
            self._pending.append(("query", cte.get("ctequery"), _names(cte.get("aliascolnames"))))
        elif "RangeSubselect" in node:
            sub = node["RangeSubselect"]
            alias = sub.get("alias") or {}
            if alias.get("aliasname"):
                self.aliases.setdefault(str(alias["aliasname"]).lower(), set()).add(None)
            self._pending.append(("query", sub.get("subquery"), _names(alias.get("colnames"))))
        elif "RangeFunction" in node or "RangeTableFunc" in node or "JsonTable" in node:
            # `unnest(a.attoptions) o`, `jsonb_each_text(to_jsonb(c))`, `xmltable(...)`: what
            # the function returns reads what its arguments read, under its alias, its column
            # aliases and any column name it may return (`*`: `key`, `value`, ...)
            ((kind, function),) = ((k, v) for k, v in node.items() if k[:1].isupper())
            alias = function.get("alias") or {}
            names: list[str] = ["*"]
            if alias.get("aliasname"):
                name = str(alias["aliasname"]).lower()
                self.functions.add(name)
                names += [name, *_names(alias.get("colnames"))]
            elif kind == "RangeFunction":  # `jsonb_each_text.value` names it by the function
                self.functions.update(_function_names(function.get("functions")))
            self._pending.append(("function", function, names))
        for key, value in node.items():
            if key in ("relation", "RangeVar") and isinstance(value, dict) and "relname" in value:
                self._range_var(value)
            if isinstance(value, dict | list):
                self._walk(value, depth + 1)

    def _range_var(self, var: dict[str, Any]) -> None:
        relname = str(var.get("relname") or "").lower()
        schema = str(var.get("schemaname") or "").lower()
        alias = var.get("alias") or {}
        name = str(alias.get("aliasname") or relname).lower()
        tables: set[str | None]
        if relname in STATISTICS and schema in ("", "pg_catalog"):
            # sample values of any table's columns: the table is unknown, and the columns
            # holding values carry whatever a rule masks in them
            tables = {None}
            for column in STATISTICS_VALUES:
                self._pending.append(("rename", frozenset(tables), [column]))
        elif not schema and relname in self.ctes:
            tables = {None}
        else:
            tables = {relname, f"{schema}.{relname}"} if schema else {relname}
        self.aliases.setdefault(name, set()).update(tables)
        for colname in _names(alias.get("colnames")):  # `users u(a, b)` renames columns
            self._pending.append(("rename", frozenset(tables), [colname]))

    def _derive(self, kind: str, node: Any, colnames: list[str]) -> None:
        if kind == "rename":
            self.derived.append((colnames[0], Source(rows=node)))
            return
        if kind == "function":
            source = self.source(node)
            self.derived.extend((name, source) for name in colnames)
            return
        outputs, star = self.outputs(node)
        if colnames:
            if star is not None:  # positions unknown: every alias may hold anything
                every = star
                for _, source in outputs:
                    every = every | source
                outputs = [(name, every) for name in colnames]
            else:
                outputs = [
                    (colnames[i] if i < len(colnames) else name, source)
                    for i, (name, source) in enumerate(outputs)
                ]
        self.derived.extend(outputs)

    def outputs(self, node: Any) -> tuple[list[tuple[str, Source]], Source | None]:
        """A subquery's (or CTE's) output names and sources, and what a `*` in it covers."""
        if not isinstance(node, dict) or len(node) != 1:
            return [], None
        ((kind, fields),) = node.items()
        if kind == "SelectStmt":
            return self._select_outputs(fields)
        returning = fields.get("returningList") or (fields.get("returningClause") or {}).get(
            "exprs"
        )
        if kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt") and returning:
            return self._target_outputs(returning)
        return [], None

    def _select_outputs(
        self, fields: dict[str, Any]
    ) -> tuple[list[tuple[str, Source]], Source | None]:
        if fields.get("op", "SETOP_NONE") != "SETOP_NONE":
            left, left_star = self._select_outputs(_select(fields.get("larg")))
            right, right_star = self._select_outputs(_select(fields.get("rarg")))
            if left_star is None and right_star is None and len(left) == len(right):
                return [
                    (name, source | other)
                    for (name, source), (_, other) in zip(left, right, strict=True)
                ], None
            every = (left_star or EMPTY) | (right_star or EMPTY)
            for _, source in left + right:
                every = every | source
            return [(name, every) for name, _ in left], (every if left_star else None)
        if fields.get("valuesLists"):
            rows = [_items(row) for row in fields["valuesLists"]]
            width = max(len(row) for row in rows)
            return [
                (
                    f"column{i + 1}",
                    _union(self.source(row[i]) for row in rows if i < len(row)),
                )
                for i in range(width)
            ], None
        return self._target_outputs(fields.get("targetList") or [])

    def _target_outputs(self, targets: list[Any]) -> tuple[list[tuple[str, Source]], Source | None]:
        outputs: list[tuple[str, Source]] = []
        star: Source | None = None
        for target in targets:
            res = target.get("ResTarget", {}) if isinstance(target, dict) else {}
            value = res.get("val")
            covered = self.star(value)
            if covered is not None:
                star = covered if star is None else star | covered
                continue
            name = str(res.get("name") or _figure_name(value)).lower()
            outputs.append((name, self.source(value)))
        return outputs, star

    # the top level

    def branches(self, fields: dict[str, Any], first: bool = True) -> list[Branch]:
        if fields.get("op", "SETOP_NONE") != "SETOP_NONE":
            return self.branches(_select(fields.get("larg")), first) + self.branches(
                _select(fields.get("rarg")), False
            )
        if fields.get("valuesLists"):
            outputs, _ = self._select_outputs(fields)
            return [Branch(tuple(source for _, source in outputs), first=first)]
        targets = fields.get("targetList") or []
        branch = self.target_branch(targets)
        # `(f(x)).*` expands to columns whose names the gateway does not know: its positions
        # are masked by what it reads, as a later branch's `*` is
        expanded = any(_expanded(target) for target in targets)
        return [Branch(branch.head, branch.tail, branch.star, first and not expanded)]

    def target_branch(self, targets: list[Any]) -> Branch:
        head: list[Source] = []
        tail: list[Source] = []
        star: Source | None = None
        stars = 0
        for target in targets:
            res = target.get("ResTarget", {}) if isinstance(target, dict) else {}
            value = res.get("val")
            covered = self.star(value)
            if covered is not None:
                stars += 1
                star = covered if star is None else star | covered
                if stars > 1:  # between two stars, positions are unknown
                    for source in tail:
                        star = star | source
                    tail = []
                continue
            (head if star is None else tail).append(self.source(value))
        return Branch(tuple(head), tuple(tail), star)

    def star(self, value: Any) -> Source | None:
        """A top-level `*`, `t.*` or `(expression).*` target: what it may cover; None for
        other targets."""
        if _expanded({"ResTarget": {"val": value}}):
            return self.source(value["A_Indirection"].get("arg"))
        if not (isinstance(value, dict) and "ColumnRef" in value):
            return None
        fields = value["ColumnRef"].get("fields") or []
        if not fields or not (isinstance(fields[-1], dict) and "A_Star" in fields[-1]):
            return None
        if len(fields) == 1:
            return Source(rows=frozenset(self._everything()))
        return Source(rows=frozenset(self.resolve(_sval(fields[-2]))))

    def _everything(self) -> set[str | None]:
        out: set[str | None] = {None} if not self.aliases else set()
        for tables in self.aliases.values():
            out |= tables
        return out

    def resolve(self, qualifier: str) -> set[str | None]:
        if qualifier.lower() in self.functions:
            return {None}
        return set(self.aliases.get(qualifier.lower(), {qualifier.lower() or None}))

    # expressions

    def source(self, node: Any, depth: int = 0) -> Source:
        """Every column and whole row an expression reads, anywhere inside it."""
        if depth > MAX_DEPTH:
            return Source(rows=frozenset({None}))  # too deep to read: fail closed
        if isinstance(node, list):
            return _union(self.source(item, depth + 1) for item in node)
        if not isinstance(node, dict):
            return EMPTY
        if "ColumnRef" in node:
            return self._column_ref(node["ColumnRef"].get("fields") or [])
        if "SubLink" in node:
            link = node["SubLink"]
            found = self.source(link.get("testexpr"), depth + 1)
            if link.get("subLinkType") != "EXISTS_SUBLINK":
                found = found | self._subselect(link.get("subselect"), depth + 1)
            return found
        if "SelectStmt" in node:
            return self._subselect(node, depth + 1)
        call = node.get("FuncCall")
        parts = (call.get("funcname") or []) if isinstance(call, dict) else []
        hidden = EMPTY
        if parts and _sval(parts[-1]).lower() in HIDDEN_READS:
            hidden = Source(rows=frozenset({None}))
        return hidden | _union(
            self.source(value, depth + 1)
            for value in node.values()
            if isinstance(value, dict | list)
        )

    def _subselect(self, node: Any, depth: int) -> Source:
        outputs, star = self.outputs(node)
        found = star or EMPTY
        for _, source in outputs:
            found = found | source
        return found

    def _column_ref(self, fields: list[Any]) -> Source:
        if not fields:
            return EMPTY
        if isinstance(fields[-1], dict) and "A_Star" in fields[-1]:
            if len(fields) == 1:
                return Source(rows=frozenset(self._everything()))
            return Source(rows=frozenset(self.resolve(_sval(fields[-2]))))
        name = _sval(fields[-1]).lower()
        if len(fields) == 1:
            # `u` alone may be the whole row of `users u`
            rows = self.aliases.get(name) if name not in self.functions else None
            columns = frozenset({(name, None)})
            return Source(columns, frozenset(rows) if rows else frozenset())
        tables = self.resolve(_sval(fields[-2]))
        return Source(frozenset((name, table) for table in tables))


def _expanded(target: Any) -> bool:
    """A target `(expression).*`."""
    res = target.get("ResTarget", {}) if isinstance(target, dict) else {}
    value = res.get("val")
    if not (isinstance(value, dict) and "A_Indirection" in value):
        return False
    parts = value["A_Indirection"].get("indirection") or []
    return bool(parts) and isinstance(parts[-1], dict) and "A_Star" in parts[-1]


def _function_names(functions: Any) -> set[str]:
    """The names of the functions of a `RangeFunction` (`ROWS FROM (f(), g())` has several)."""
    out: set[str] = set()
    for item in functions or []:
        for call in _items(item):
            if isinstance(call, dict) and "FuncCall" in call:
                parts = call["FuncCall"].get("funcname") or []
                if parts:
                    out.add(_sval(parts[-1]).lower())
    return out


def _select(node: Any) -> dict[str, Any]:
    if isinstance(node, dict) and "SelectStmt" in node:
        return dict(node["SelectStmt"])
    return node if isinstance(node, dict) else {}


def _items(row: Any) -> list[Any]:
    if isinstance(row, dict) and "List" in row:
        return list(row["List"].get("items") or [])
    return list(row) if isinstance(row, list) else []


def _sval(node: Any) -> str:
    if isinstance(node, dict) and "String" in node:
        return str(node["String"].get("sval", ""))
    return ""


def _names(items: Any) -> list[str]:
    return [_sval(item).lower() for item in items or []]


def _union(sources: Any) -> Source:
    out = EMPTY
    for source in sources:
        out = out | source
    return out


_FIXED_NAMES = {
    "CoalesceExpr": "coalesce",
    "CaseExpr": "case",
    "A_ArrayExpr": "array",
    "RowExpr": "row",
    "NullIfExpr": "nullif",
}


def _figure_name(node: Any) -> str:
    """The name PostgreSQL gives an output column without `AS` (its FigureColname), or
    `?column?`."""
    if not isinstance(node, dict) or len(node) != 1:
        return UNKNOWN_NAME
    ((kind, fields),) = node.items()
    if kind == "ColumnRef":
        parts = fields.get("fields") or []
        return _sval(parts[-1]) or UNKNOWN_NAME if parts else UNKNOWN_NAME
    if kind == "FuncCall":
        parts = fields.get("funcname") or []
        return _sval(parts[-1]) or UNKNOWN_NAME if parts else UNKNOWN_NAME
    if kind == "TypeCast":
        inner = _figure_name(fields.get("arg"))
        if inner != UNKNOWN_NAME:
            return inner
        names = (fields.get("typeName") or {}).get("names") or []
        return _sval(names[-1]) or UNKNOWN_NAME if names else UNKNOWN_NAME
    if kind == "A_Indirection":
        for item in reversed(fields.get("indirection") or []):
            if _sval(item):
                return _sval(item)
        return _figure_name(fields.get("arg"))
    if kind == "MinMaxExpr":
        return "greatest" if fields.get("op") == "IS_GREATEST" else "least"
    if kind == "SubLink":
        link = fields.get("subLinkType")
        if link == "EXISTS_SUBLINK":
            return "exists"
        if link == "ARRAY_SUBLINK":
            return "array"
        if link == "EXPR_SUBLINK":
            targets = _select(fields.get("subselect")).get("targetList") or []
            if targets:
                res = targets[0].get("ResTarget", {})
                return str(res.get("name") or _figure_name(res.get("val")))
        return UNKNOWN_NAME
    return _FIXED_NAMES.get(kind, UNKNOWN_NAME)


# -- one session's rules ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    head: tuple[MaskRule | None, ...]
    tail: tuple[MaskRule | None, ...]
    star: MaskRule | None
    has_star: bool
    first: bool


@dataclass(frozen=True, slots=True)
class OutputMasks:
    """Which output columns of one statement carry a masked value, for one masker."""

    branches: tuple[_Resolved, ...] = ()
    names: tuple[tuple[str, MaskRule], ...] = ()
    declares: str | None = None  # the cursor these are the outputs of (see `Lineage`)
    fetches: str | None = None  # the cursor whose outputs a FETCH returns (the session's)

    @classmethod
    def build(cls, lineage: Lineage, masker: Masker) -> OutputMasks | None:
        rules = [r for r in masker.rules if _whole_column(r)]
        if rules and lineage.fetches is not None:
            return cls(fetches=lineage.fetches)
        if not rules or not (lineage.branches or lineage.derived):
            return None
        names: dict[str, MaskRule] = {}
        changed = True
        while changed:  # a subquery's output may read another's: follow until stable
            changed = False
            for name, source in lineage.derived:
                if name not in names:
                    rule = _rule(source, rules, names)
                    if rule is not None:
                        names[name] = rule
                        changed = True
        branches = tuple(
            _Resolved(
                tuple(_rule(s, rules, names) for s in branch.head),
                tuple(_rule(s, rules, names) for s in branch.tail),
                _rule(branch.star, rules, names) if branch.star is not None else None,
                branch.star is not None,
                branch.first,
            )
            for branch in lineage.branches
        )
        found = cls(branches, tuple(names.items()), lineage.declares)
        return found if found.active else None

    @property
    def active(self) -> bool:
        return bool(self.names) or any(
            any(b.head) or any(b.tail) or (b.star is not None and not b.first)
            for b in self.branches
        )

    def merged(self, other: OutputMasks | None) -> OutputMasks:
        """Either of two statements (a redefined prepared statement): the union of both."""
        if other is None:
            return self
        return OutputMasks(self.branches + other.branches, self.names + other.names)

    def rules(self, columns: Sequence[str]) -> tuple[MaskRule | None, ...]:
        """The rule masking each output column (None: no lineage says so; the column's own
        name is still matched by the masker)."""
        count = len(columns)
        out: list[MaskRule | None] = [None] * count
        starred: set[int] = set()  # positions a `*` covers: their sources are only names
        for branch in self.branches:
            tail_from = count - len(branch.tail)
            for index in range(count):
                if branch.has_star and len(branch.head) <= index < tail_from:
                    starred.add(index)
                if out[index] is not None:
                    continue
                if index < len(branch.head):
                    out[index] = branch.head[index]
                elif branch.has_star and index >= tail_from and index - tail_from >= 0:
                    out[index] = branch.tail[index - tail_from]
                elif branch.has_star and not branch.first:
                    out[index] = branch.star  # a later branch's `*`: its names are not shown
        if self.names:
            named = dict(reversed(self.names))
            anything = named.get("*")  # a function fed a masked value may return any name
            for index, column in enumerate(columns):
                if out[index] is None:
                    out[index] = named.get(column.lower(), anything if index in starred else None)
        return tuple(out)


def _whole_column(rule: MaskRule) -> bool:
    return rule.column is not None and rule.detector is None and rule.pattern is None


def _rule(source: Source, rules: Sequence[MaskRule], names: dict[str, MaskRule]) -> MaskRule | None:
    """The first rule (config order) a source's columns or rows fall under."""
    for rule in rules:
        for column, table in source.columns:
            if rule.matches_column(column, table):
                return rule
        for table in source.rows:
            if not rule.tables or table is None:
                return rule
            if any(fnmatchcase(table, pattern.lower()) for pattern in rule.tables):
                return rule
    for column, _ in sorted(source.columns, key=lambda item: (item[0], item[1] or "")):
        if column in names:
            return names[column]
    if "*" in names and any(table is None for _, table in source.columns):
        return names["*"]  # may be any column of a function fed a masked value
    return None
