"""SQL statements -> statement classes, with the real PostgreSQL parser (pglast). Pure.

A class applies wherever its statement sits: a DELETE inside a CTE, an INSERT in the body of a
SQL function being created, an UPDATE inside a DO block's PL/pgSQL, the query of an
`EXPLAIN ANALYZE` or of a `PREPARE`. A string with several statements is classified statement
by statement (`Classified.statements`), so each can be judged on its own.

The class names are what `[[rules]] sql = [...]` lists; docs/sql-classes.md documents each.

`Classifier` keeps two caches: the exact text, and pglast's fingerprint (the statement with
its constants taken out), so `... WHERE aid = 1` and `... WHERE aid = 2` are parsed once. A
statement whose classes depend on a constant (a function body, a DO block, `set_config('role',
...)`) is never cached by fingerprint, only by its exact text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pglast import parser as pg_parser

from proxy.pg.builtin_functions import BUILTIN_OPERATORS, READ_BUILTINS

# -- the class names --------------------------------------------------------------------------
READ = "read"
WRITE = "write"
DELETE_WITHOUT_WHERE = "delete_without_where"
UPDATE_WITHOUT_WHERE = "update_without_where"
DDL = "ddl"
TRUNCATE = "truncate"
DCL = "dcl"
TRANSACTION = "transaction"
UTILITY = "utility"
FUNCTION = "function"
DO_BLOCK = "do_block"
COPY = "copy"
COPY_IN = "copy_in"
COPY_OUT = "copy_out"
COPY_PROGRAM = "copy_program"
COPY_FILE = "copy_file"
SET_ROLE = "set_role"
READ_WRITE = "read_write"
SERVER_FUNCTION = "server_function"
SERVER_FILE = "server_file"
DYNAMIC_SQL = "dynamic_sql"
STATISTICS = "statistics"
TABLE_REWRITE = "table_rewrite"
CALLS_CODE = "calls_code"
SIDE_EFFECT = "side_effect"
UNPARSABLE = "unparsable"

ALL_CLASSES = frozenset(
    {
        READ,
        WRITE,
        DELETE_WITHOUT_WHERE,
        UPDATE_WITHOUT_WHERE,
        DDL,
        TRUNCATE,
        DCL,
        TRANSACTION,
        UTILITY,
        FUNCTION,
        DO_BLOCK,
        COPY,
        COPY_IN,
        COPY_OUT,
        COPY_PROGRAM,
        COPY_FILE,
        SET_ROLE,
        READ_WRITE,
        SERVER_FUNCTION,
        SERVER_FILE,
        DYNAMIC_SQL,
        STATISTICS,
        TABLE_REWRITE,
        CALLS_CODE,
        SIDE_EFFECT,
        UNPARSABLE,
    }
)

# What a read-only target never lets through, whatever the rules say.
NOT_READ_ONLY = frozenset(
    {
        WRITE,
        DELETE_WITHOUT_WHERE,
        UPDATE_WITHOUT_WHERE,
        DDL,
        TRUNCATE,
        DCL,
        FUNCTION,
        DO_BLOCK,
        COPY_IN,
        COPY_PROGRAM,
        COPY_FILE,
        SET_ROLE,
        READ_WRITE,
        SERVER_FILE,
        DYNAMIC_SQL,
        TABLE_REWRITE,
    }
)

# Statement node types -> classes (nodes not named here: ddl if they look like DDL, else utility).
_NODE_CLASSES: dict[str, frozenset[str]] = {
    "SelectStmt": frozenset({READ}),
    "VariableShowStmt": frozenset({READ}),
    "InsertStmt": frozenset({WRITE}),
    "UpdateStmt": frozenset({WRITE}),
    "DeleteStmt": frozenset({WRITE}),
    "MergeStmt": frozenset({WRITE}),
    "TruncateStmt": frozenset({TRUNCATE, WRITE}),
    "TransactionStmt": frozenset({TRANSACTION}),
    "GrantStmt": frozenset({DCL}),
    "GrantRoleStmt": frozenset({DCL}),
    "CreateRoleStmt": frozenset({DCL}),
    "AlterRoleStmt": frozenset({DCL}),
    "AlterRoleSetStmt": frozenset({DCL}),
    "DropRoleStmt": frozenset({DCL}),
    "AlterDefaultPrivilegesStmt": frozenset({DCL}),
    "ReassignOwnedStmt": frozenset({DCL}),
    "DropOwnedStmt": frozenset({DCL}),
    "CreateUserMappingStmt": frozenset({DCL}),
    "AlterUserMappingStmt": frozenset({DCL}),
    "DropUserMappingStmt": frozenset({DCL}),
    "CreateFunctionStmt": frozenset({FUNCTION, DDL}),
    "AlterFunctionStmt": frozenset({FUNCTION, DDL}),
    "DoStmt": frozenset({DO_BLOCK}),
    "RefreshMatViewStmt": frozenset({DDL, WRITE}),
    "AlterSystemStmt": frozenset({DDL}),
    "IndexStmt": frozenset({DDL}),
    "ViewStmt": frozenset({DDL}),
    "RuleStmt": frozenset({DDL}),
    "CommentStmt": frozenset({DDL}),
    "RenameStmt": frozenset({DDL}),
    "SecLabelStmt": frozenset({DDL}),
    "CompositeTypeStmt": frozenset({DDL}),
    "ImportForeignSchemaStmt": frozenset({DDL}),
    "LoadStmt": frozenset({SERVER_FILE, UTILITY}),  # loads a shared library from the server
    "ClusterStmt": frozenset({TABLE_REWRITE, UTILITY}),
    "ReindexStmt": frozenset({TABLE_REWRITE, UTILITY}),
}
_DDL_PREFIXES = ("Create", "Alter", "Drop", "Define")

# Functions that act on the server rather than on data.
_SERVER_FUNCTIONS = frozenset(
    {
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "lo_import",
        "lo_export",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "pg_file_write",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_drop_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_create_physical_replication_slot",
    }
)
# Functions that read, list or write files of the database server (also `server_function`).
_FILE_FUNCTIONS = frozenset(
    {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_ls_replslotdir",
        "pg_ls_logicalsnapdir",
        "pg_ls_logicalmapdir",
        "pg_current_logfile",
        "lo_import",
        "lo_export",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_logdir_ls",
        "pg_show_all_file_settings",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
    }
)
# Built-in functions that change something though called in a SELECT: a sequence, a large
# object, a notification, the WAL, statistics, a lock other sessions wait on (`side_effect`).
_SIDE_EFFECT_FUNCTIONS = frozenset(
    {
        "nextval",
        "setval",
        "lo_create",
        "lo_creat",
        "lo_from_bytea",
        "lo_put",
        "lowrite",
        "lo_unlink",
        "lo_truncate",
        "lo_truncate64",
        "pg_notify",
        "pg_logical_emit_message",
        "pg_stat_reset",
        "pg_stat_reset_shared",
        "pg_stat_reset_slru",
        "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters",
        "pg_stat_reset_replication_slot",
        "pg_stat_reset_subscription_stats",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
    }
)
# Views that read the server's configuration files.
_FILE_RELATIONS = frozenset({"pg_file_settings", "pg_hba_file_rules", "pg_ident_file_mappings"})
# Functions that run SQL given to them as text, and which argument holds it (by the number
# of arguments; None: the SQL cannot be told apart, see `_Walker.sql_text`).
_SQL_TEXT_FUNCTIONS: dict[str, dict[int, int | None]] = {
    "query_to_xml": {4: 0},
    "query_to_xmlschema": {4: 0},
    "query_to_xml_and_xmlschema": {4: 0},
    "ts_stat": {1: 0, 2: 0},
    "ts_rewrite": {2: 1},
    "dblink": {1: 0, 2: None, 3: 1},
    "dblink_exec": {1: 0, 2: None, 3: 1},
    "dblink_send_query": {2: 1},
    "dblink_open": {2: 1, 3: None, 4: 2},
}
# Functions that keep a value (argument at this 0-based position) where a later statement
# reads it back: a setting, a large object, a sequence, the WAL (see Statement.stores).
_STORING_FUNCTIONS = {
    "set_config": 1,
    "lo_from_bytea": 1,
    "lo_put": 2,
    "lowrite": 1,
    "setval": 1,
    "pg_logical_emit_message": 2,
}
# Functions that read a whole table, schema or database named by their first argument.
_TABLE_TEXT_FUNCTIONS = frozenset(
    {"table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema"}
)
_WHOLE_READ_FUNCTIONS = frozenset(
    {
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
    }
)
# Functions reading rows the parse tree does not show: SQL or a table given as text, a cursor.
_HIDDEN_READS = frozenset(
    {*_SQL_TEXT_FUNCTIONS, *_TABLE_TEXT_FUNCTIONS, *_WHOLE_READ_FUNCTIONS}
    | {"cursor_to_xml", "dblink_fetch", "dblink_get_result"}
)
# Catalogues holding sample values of every analyzed column (most common values, histograms;
# pg_statistic_ext holds only definitions, which pg_dump reads).
_STATISTICS_RELATIONS = frozenset(
    {
        "pg_stats",
        "pg_statistic",
        "pg_stats_ext",
        "pg_stats_ext_exprs",
        "pg_statistic_ext_data",
    }
)
_STATISTICS_FUNCTIONS = frozenset({"pg_mcv_list_items"})
_RELATION_OBJECTS = frozenset(
    {
        "OBJECT_TABLE",
        "OBJECT_VIEW",
        "OBJECT_MATVIEW",
        "OBJECT_SEQUENCE",
        "OBJECT_INDEX",
        "OBJECT_FOREIGN_TABLE",
    }
)
_TARGET_KEYS = ("relation", "rel")  # DML and DDL targets; `rel` of CREATE TABLE AS / INTO
_ROLE_SETTINGS = frozenset({"role", "session_authorization"})
CLIENT_ENCODING = "client_encoding"
# Off, the server reads a backslash in a plain '...' string as an escape; the gateway's parser
# never does, so the two would split and read statements differently.
STANDARD_CONFORMING_STRINGS = "standard_conforming_strings"
_READ_ONLY_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only"})
_FALSE_WORDS = frozenset({"off", "false", "no", "0", "f", "n", "of"})


@dataclass(frozen=True, slots=True)
class Named:
    """What a statement does with the session's SQL prepared statements. Their names live in
    the session (`PREPARE p`, then `EXECUTE p` runs whatever p is there), so a statement
    with one is judged with the session's state and never shared by fingerprint (which
    ignores these names)."""

    executes: frozenset[str] = frozenset()  # EXECUTE p, anywhere (EXPLAIN ANALYZE, CTAS)
    prepares: str | None = None  # PREPARE p AS <body>
    body: Statement | None = None  # the body's own classes and tables
    deallocates: str | None = None  # DEALLOCATE p
    deallocates_all: bool = False  # DEALLOCATE ALL, DISCARD ALL
    closes_portals: bool = False  # DISCARD ALL


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a string: its text, its classes and the relations it names
    (`schema.table` or `table` as written; CTE names included), for rules on tables.
    `encodings` are the values it sets `client_encoding` to, anywhere in it (`SET`,
    `SET NAMES`, `set_config('client_encoding', ...)`, a function's `SET` clause); None
    where the value is only known when it runs. `conforming` are the values it sets
    `standard_conforming_strings` to, the same way. `stores`: it keeps a value computed when
    it runs (not a constant or a parameter) where a later statement can read it back past
    the column masks of this one: `set_config` (`current_setting`, `SHOW`), a large object
    (`lo_from_bytea`, `lo_put`, `lowrite`), a sequence (`setval`), the WAL."""

    text: str
    classes: frozenset[str]
    tables: frozenset[str] = frozenset()
    named: Named | None = None
    encodings: tuple[str | None, ...] = ()
    conforming: tuple[str | None, ...] = ()
    stores: bool = False


@dataclass(frozen=True, slots=True)
class Classified:
    """A whole string: its statements in order, or the parser's complaint."""

    statements: tuple[Statement, ...]
    error: str | None = None
    # Strings with equal keys get the same classes, tables and verdict; None: judge afresh.
    key: Hashable | None = None

    @property
    def classes(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for statement in self.statements:
            out |= statement.classes
        return out


Tree = dict[str, Any]  # pglast's JSON parse tree of a string ({"stmts": [...]})


def parse_tree(sql: str) -> Tree:
    """The parse tree of a string, by the one parser call everything the gateway reads from
    a statement is taken from (classes here, lineage, COPY). Raises pg_parser.ParseError."""
    tree: Tree = json.loads(pg_parser.parse_sql_json(sql))
    return tree


def classify(sql: str, sql_functions: Mapping[str, int] | None = None) -> Classified:
    """Parse and classify, without caches. `sql_functions`: the operator's own functions that
    run SQL given as text, by name, with the (0-based) argument holding it."""
    return classify_parsed(sql, sql_functions)[0]


def classify_parsed(
    sql: str, sql_functions: Mapping[str, int] | None = None
) -> tuple[Classified, Tree | None, bool]:
    """`classify`, with the parse tree (None when the parser rejected the text) and whether
    the classes may be shared by every text with the same fingerprint (`_Walker.cacheable`)."""
    try:
        tree = parse_tree(sql)
    except pg_parser.ParseError as exc:
        error = str(exc.args[0])
        return Classified((Statement(sql, frozenset({UNPARSABLE})),), error=error), None, False
    encoded = sql.encode("utf-8")
    statements = []
    cacheable = True
    for raw in tree.get("stmts", []):
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0)
        chunk = encoded[start : start + length] if length else encoded[start:]
        text = chunk.decode("utf-8", errors="replace").strip()
        found = _Walker(sql_functions).run(raw.get("stmt"))
        cacheable = cacheable and found.cacheable
        statements.append(
            Statement(
                text,
                frozenset(found.classes),
                frozenset(found.tables),
                found.named_for(text),
                tuple(found.encodings),
                tuple(found.conforming),
                found.stores,
            )
        )
    return Classified(tuple(statements)), tree, cacheable


_CONSTANT_TOKENS = frozenset({"ICONST", "FCONST", "SCONST", "BCONST", "XCONST", "USCONST"})
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})


# PostgreSQL takes every non-ASCII character for a letter of a name: in `x€1` the 1 is part of
# the name, not a number (Python's `\w` would not say so of `€`).
_NAME_CHAR = "A-Za-z0-9_$\u0080-\U0010ffff"
_NUMBER = rf"(?<![{_NAME_CHAR}])(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?![{_NAME_CHAR}])"
_QUOTED_NAME = r'"(?:[^"]|"")*"'
_NUMBERS = re.compile(_NUMBER)
_QUOTED_NAMES = re.compile(_QUOTED_NAME)
# A quoted name (kept as it is), a string or a number: matched left to right, so a quote or
# a digit inside one of the others is never read on its own.
_LITERALS = re.compile(rf"({_QUOTED_NAME})|'(?:[^']|'')*'|{_NUMBER}")
_INT4_MAX = str(2**31 - 1)
_NOT_READ = ("$", "\\", "\x00", "--", "/*")  # dollar quotes and parameters, escapes, comments


def _number_token(match: re.Match[str]) -> str:
    """An integer and another number each get their own placeholder: the grammar takes an
    integer in places where it refuses `1.5`. PostgreSQL's scanner reads digits past the
    32-bit range as a numeric, not an integer, so those are `N` too."""
    text = match.group(0)
    if not text.isdigit():
        return "\x00N"
    digits = text.lstrip("0")  # `00000000001` is an integer; no int() of a 5,000-digit run
    fits = len(digits) < len(_INT4_MAX) or (len(digits) == len(_INT4_MAX) and digits <= _INT4_MAX)
    return "\x00I" if fits else "\x00N"


def _literal_token(match: re.Match[str]) -> str:
    """A quoted name as it is, a string or a number as its placeholder."""
    name = match.group(1)
    if name is not None:
        return name
    return "\x00S" if match.group(0)[0] == "'" else _number_token(match)


def literal_shape(sql: str) -> str | None:
    """A plain one-statement text with its string and number literals left out, read with a
    regular expression: `WHERE aid = 1` and `WHERE aid = 2` share it. Names keep every
    character, and no call into the parser is needed, which releases the GIL (to whichever
    thread is waiting for it) on every call. Texts of one shape differ only in literals; the
    classifier relies on that only where those are constants (`_literals_are_constants`).
    None for texts it does not try to read: several statements, comments, dollar quotes,
    parameters, backslashes, unclosed quotes."""
    if any(part in sql for part in _NOT_READ):
        return None
    if "'" in sql or '"' in sql:
        shape = _LITERALS.sub(_literal_token, sql)
        bare = _QUOTED_NAMES.sub("", shape)
        if "'" in bare or '"' in bare:
            return None
    else:
        shape = bare = _NUMBERS.sub(_number_token, sql)
    if ";" in bare.rstrip().removesuffix(";"):
        return None
    return shape.rstrip()


def _literals_are_constants(sql: str) -> bool:
    """Whether the literals the literal shape leaves out are exactly PostgreSQL's constant
    tokens (its scanner agrees where each begins and ends), and each is a constant of the
    parse tree (an A_Const, whose value the fingerprint leaves out) and not, say, the value of
    an option: `explain (analyze 0)` and `explain (analyze 1)` share a literal shape, not a
    fingerprint nor a class. Asked once per new shape."""
    literals = [m for m in _LITERALS.finditer(sql) if m.group(1) is None]
    try:
        scanned = {
            (token.start, token.end)
            for token in pg_parser.scan(sql)
            if token.name in _CONSTANT_TOKENS
        }
        tree = json.loads(pg_parser.parse_sql_json(sql))
    except pg_parser.ParseError:
        return False
    if scanned != {(m.start(), m.end() - 1) for m in literals}:
        return False  # `1.x` is the constant `1.` to PostgreSQL, `B'01'` one token, ...
    constants: set[int] = set()  # byte offsets, where PostgreSQL puts a constant's location
    nodes: list[Any] = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            if "A_Const" in node:
                constants.add(node["A_Const"].get("location", -1))
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    for match in literals:
        start = len(sql[: match.start()].encode("utf-8"))
        # `-5` is one constant located at its sign
        if start not in constants and not (
            sql[match.start() - 1 : match.start()] == "-" and start - 1 in constants
        ):
            return False
    return True


def token_shape(sql: str) -> tuple[str, ...] | None:
    """The text's tokens as written, with each constant's value (and every comment) left out;
    None when the scanner rejects it. Names keep every character, where the fingerprint
    leaves out a DML table's schema and the digits of a table's name (`x` and `x11` share
    one)."""
    try:
        tokens = pg_parser.scan(sql)
    except pg_parser.ParseError:
        return None
    return tuple(
        token.name if token.name in _CONSTANT_TOKENS else sql[token.start : token.end + 1]
        for token in tokens
        if token.name not in _COMMENT_TOKENS
    )


class Classifier:
    """`classify` with caches, each bounded (LRU): by exact text, by literal shape (plain
    statements, no parser call) and by fingerprint together with the token shape."""

    def __init__(
        self,
        max_entries: int = 4096,
        max_text: int = 16384,
        sql_functions: Mapping[str, int] | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_text = max_text
        self.sql_functions = dict(sql_functions or {})
        self._by_text: OrderedDict[str, Classified] = OrderedDict()
        # A look-alike gets the whole Statement (classes, tables, and what it stores or
        # sets), only its text its own: a field left out would be lost for every look-alike.
        self._by_shape: OrderedDict[str, tuple[Statement, Hashable]] = OrderedDict()
        self._by_print: OrderedDict[Hashable, tuple[Statement, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __call__(self, sql: str) -> Classified:
        return self.classify(sql)

    def classify(self, sql: str) -> Classified:
        return self.parsed(sql)[0]

    def parsed(self, sql: str) -> tuple[Classified, Tree | None]:
        """The classes of a string, and its parse tree when this call had to parse it (None
        when a cache answered, or the parser rejected the text)."""
        found = self._by_text.get(sql)
        if found is not None:
            self._by_text.move_to_end(sql)
            self.hits += 1
            return found, None
        shape = literal_shape(sql) if len(sql) <= self.max_text else None
        if shape is not None:
            known = self._by_shape.get(shape)
            if known is not None:
                self._by_shape.move_to_end(shape)
                self.hits += 1
                only, key = known
                return Classified((dataclasses.replace(only, text=sql.strip()),), key=key), None
        result, tree = self._classify(sql)
        if len(sql) <= self.max_text:
            self._by_text[sql] = result
            if len(self._by_text) > self.max_entries:
                self._by_text.popitem(last=False)
        if (
            shape is not None
            and result.key is not None
            and len(result.statements) == 1
            and _literals_are_constants(sql)
        ):
            # A key means the verdict does not depend on constants (see _classify), and
            # every text of this shape differs from this one only in constants.
            self._by_shape[shape] = (result.statements[0], result.key)
            if len(self._by_shape) > self.max_entries:
                self._by_shape.popitem(last=False)
        return result, tree

    def _classify(self, sql: str) -> tuple[Classified, Tree | None]:
        try:
            printed = pg_parser.fingerprint(sql)
        except pg_parser.ParseError:
            self.misses += 1
            return classify_parsed(sql, self.sql_functions)[:2]
        tokens = token_shape(sql)
        if tokens is None:
            self.misses += 1
            return classify_parsed(sql, self.sql_functions)[:2]
        # The fingerprint keeps what constants stand for (an option's value), the tokens keep
        # every name; texts equal in both differ only in constants.
        key = (printed, tokens)
        known = self._by_print.get(key)
        if known is not None:
            self._by_print.move_to_end(key)
            self.hits += 1
            shared = _shared(sql, known, key)
            if shared is not None:
                return shared, None
        self.misses += 1
        result, tree, cacheable = classify_parsed(sql, self.sql_functions)
        if result.error is not None or not cacheable:
            # No key either: the session's verdict cache is keyed by it, and a look-alike
            # (`do $$ ... $$` with another body) must not get this verdict.
            return result, tree
        self._by_print[key] = result.statements
        if len(self._by_print) > self.max_entries:
            self._by_print.popitem(last=False)
        return Classified(result.statements, result.error, key), tree


def _shared(sql: str, shapes: tuple[Statement, ...], key: Hashable) -> Classified | None:
    """A look-alike's statements for this text, statement by statement: all it was found
    to be (classes, tables, `stores`), with this text's own statement texts."""
    if len(shapes) == 1:
        return Classified((dataclasses.replace(shapes[0], text=sql.strip()),), key=key)
    texts = split(sql)
    if len(texts) != len(shapes):
        return None
    statements = tuple(
        dataclasses.replace(shape, text=t) for t, shape in zip(texts, shapes, strict=True)
    )
    return Classified(statements, key=key)


def split(sql: str) -> list[str]:
    """The statements of a string, as texts."""
    try:
        return [text.strip() for text in pg_parser.split(sql)]
    except pg_parser.ParseError:
        return [sql]


# ---------------------------------------------------------------------------------------------
# Walking the parse tree (pglast's JSON: {"NodeType": {fields}} objects, lists, scalars)


@dataclass(slots=True)
class _Found:
    classes: set[str]
    cacheable: bool = True
    tables: set[str] = field(default_factory=set)
    encodings: list[str | None] = field(default_factory=list)  # see Statement.encodings
    conforming: list[str | None] = field(default_factory=list)  # see Statement.conforming
    stores: bool = False  # see Statement.stores
    executes: set[str] = field(default_factory=set)
    prepares: tuple[str, _Found] | None = None
    deallocates: str | None = None
    deallocates_all: bool = False
    closes_portals: bool = False

    def named_for(self, text: str) -> Named | None:
        if not (self.executes or self.prepares or self.deallocates or self.deallocates_all):
            return None
        body = None
        if self.prepares is not None:
            inner = self.prepares[1]
            body = Statement(
                text, frozenset(inner.classes), frozenset(inner.tables), inner.named_for(text)
            )
        return Named(
            frozenset(self.executes),
            self.prepares[0] if self.prepares else None,
            body,
            self.deallocates,
            self.deallocates_all,
            self.closes_portals,
        )


class _CodeAndSettings:
    """The handlers for code a statement runs (functions, procedures, DO blocks, SQL given
    as text) and the settings it changes (client_encoding, standard_conforming_strings):
    one half of `_Walker`, which brings the tree walk and what it found."""

    found: _Found
    settings_name: str | None
    sql_functions: Mapping[str, int]

    def walk(self, node: Any) -> None:
        raise NotImplementedError

    def range_var(self, fields: dict[str, Any]) -> bool:
        raise NotImplementedError

    def variable_set(self, fields: dict[str, Any]) -> bool:
        name = str(fields.get("name") or "").lower()
        kind = fields.get("kind")
        if name == CLIENT_ENCODING:
            self.client_encoding(fields)
        elif name == STANDARD_CONFORMING_STRINGS:
            self.conforming_strings(fields)
        if name in _ROLE_SETTINGS:
            self.found.classes.add(SET_ROLE)
        elif name in _READ_ONLY_SETTINGS:
            self.found.cacheable = False  # `= on` and `= off` share a fingerprint
            if kind != "VAR_SET_VALUE" or not _true_value(fields.get("args")):
                self.found.classes.add(READ_WRITE)
        elif kind == "VAR_RESET_ALL":
            self.found.classes.add(SET_ROLE)  # RESET ALL resets the role too
        self.found.classes.add(UTILITY)
        self.walk(fields.get("args"))
        return True

    def client_encoding(self, fields: dict[str, Any]) -> None:
        """A `SET client_encoding` (or `SET NAMES`), also as a function's SET clause."""
        self.found.cacheable = False  # the value matters, and fingerprints drop it
        if fields.get("kind") == "VAR_SET_VALUE":
            args = fields.get("args") or []
            self.found.encodings.append(_const_string(args[0]) if len(args) == 1 else None)
        # DEFAULT, RESET and FROM CURRENT return to the session's own value

    def conforming_strings(self, fields: dict[str, Any]) -> None:
        """A `SET standard_conforming_strings`, also as a function's SET clause."""
        self.found.cacheable = False
        if fields.get("kind") == "VAR_SET_VALUE":
            args = fields.get("args") or []
            self.found.conforming.append(_setting_text(args[0]) if len(args) == 1 else None)
        # DEFAULT and RESET return to the value the session logged in with, which was on

    def def_elem(self, fields: dict[str, Any]) -> bool:
        name = fields.get("defname")
        if name in _READ_ONLY_SETTINGS:
            self.found.cacheable = False  # READ ONLY and READ WRITE share a fingerprint
            if not _true_value(fields.get("arg")):
                self.found.classes.add(READ_WRITE)
        return False

    def func_call(self, fields: dict[str, Any]) -> bool:
        names = [_string(part) for part in fields.get("funcname") or []]
        name = (names[-1] if names else "").lower()
        self.found.classes |= _code_classes(names)
        if name in _SERVER_FUNCTIONS:
            self.found.classes.add(SERVER_FUNCTION)
        if name in _FILE_FUNCTIONS:
            self.found.classes |= {SERVER_FILE, SERVER_FUNCTION}
        if name in _STATISTICS_FUNCTIONS:
            self.found.classes.add(STATISTICS)
        if name in _SQL_TEXT_FUNCTIONS or name in self.sql_functions:
            self.sql_text(name, fields.get("args") or [])
        elif name in _TABLE_TEXT_FUNCTIONS:
            self.found.cacheable = False  # the table is a constant
            args = fields.get("args") or []
            table = _const_string(_uncast(args[0])) if args else None
            parts = _regclass_parts(table) if table is not None else None
            if parts is None:
                self.found.classes.add(DYNAMIC_SQL)  # computed, an OID, or not a name
            else:
                # as PostgreSQL reads the regclass text: `"secrets"`, ` Secrets ` are secrets
                schema = parts[-2] if len(parts) > 1 else None
                self.range_var({"relname": parts[-1], "schemaname": schema})
        elif name in _WHOLE_READ_FUNCTIONS:
            self.found.classes.add(DYNAMIC_SQL)  # reads every table of a schema or database
        at = _STORING_FUNCTIONS.get(name)
        args = fields.get("args") or []
        if at is not None and at < len(args) and not _client_value(args[at]):
            self.found.stores = True  # `set_config('x.y', password, false)`: a copy
        if name == "set_config":
            self.found.cacheable = False
            args = fields.get("args") or []
            setting = _const_string(args[0]) if args else None
            if setting is None and args and _column_name(args[0]) == "name":
                setting = self.settings_name
            setting = setting.lower() if setting is not None else None
            if setting is None or setting in _ROLE_SETTINGS:
                self.found.classes.add(SET_ROLE)
            if setting is None or setting in _READ_ONLY_SETTINGS:
                self.found.classes.add(READ_WRITE)
            # A computed name (pg_dump: `set_config(name, ...) FROM pg_settings WHERE ...`)
            # is left to the server's report of a changed client_encoding.
            if setting == CLIENT_ENCODING:
                self.found.encodings.append(_const_string(args[1]) if len(args) > 1 else None)
            elif setting == STANDARD_CONFORMING_STRINGS:
                self.found.conforming.append(_const_string(args[1]) if len(args) > 1 else None)
        return False

    def operator(self, fields: dict[str, Any]) -> bool:
        """An operator runs a function too: one that is not PostgreSQL's own (`a === b`,
        `OPERATOR(public.=)`) is `calls_code`. BETWEEN is written with its keyword."""
        if "BETWEEN" not in str(fields.get("kind") or ""):
            names = [_string(part) for part in fields.get("name") or []]
            qualified = [n.lower() for n in names[:-1]] not in ([], ["pg_catalog"])
            if not names or qualified or names[-1] not in BUILTIN_OPERATORS:
                self.found.classes.add(CALLS_CODE)
        return False

    def call(self, fields: dict[str, Any]) -> bool:
        """`CALL p(...)`: the call is held as fields, not as a FuncCall node, so it is judged
        here as one: a listed SQL-text procedure by its SQL, as in a SELECT. A procedure is
        code the gateway cannot read: `calls_code`, whatever it is called."""
        self.found.classes |= {UTILITY, CALLS_CODE}
        call = fields.get("funccall")
        if isinstance(call, dict):
            self.func_call(call)
        self.walk(fields)
        return True

    def sql_text(self, name: str, args: list[Any]) -> None:
        """A function that runs SQL given as text: judged by that SQL when it is a constant,
        `dynamic_sql` when it is not (or cannot be told apart from the other arguments)."""
        self.found.cacheable = False  # the SQL is a constant the fingerprint leaves out
        if name in self.sql_functions:
            at: int | None = self.sql_functions[name]
        else:
            at = _SQL_TEXT_FUNCTIONS[name].get(len(args), None)
        if name in ("dblink", "dblink_exec") and len(args) == 2:
            # (sql, fail_on_error) or (connection, sql): PostgreSQL takes a quoted second
            # argument for the text one
            if _is_bool(args[1]):
                at = 0
            elif _const_string(_uncast(args[1])) is not None:
                at = 1
        text = _const_string(_uncast(args[at])) if at is not None and at < len(args) else None
        if text is None:
            self.found.classes.add(DYNAMIC_SQL)
            return
        try:
            tree = json.loads(pg_parser.parse_sql_json(text))
        except pg_parser.ParseError:
            self.found.classes.add(UNPARSABLE)
            return
        for raw in tree.get("stmts", []):
            self.walk(raw.get("stmt"))

    def vacuum(self, fields: dict[str, Any]) -> bool:
        """VACUUM FULL rewrites each table under an exclusive lock, like CLUSTER."""
        self.found.classes.add(UTILITY)
        for option in fields.get("options") or []:
            if _def_name(option) == "full" and not _false_arg(option):
                self.found.classes.add(TABLE_REWRITE)
        return False

    def create_function(self, fields: dict[str, Any]) -> bool:
        self.found.classes |= {FUNCTION, DDL}
        self.found.cacheable = False
        language = "sql"
        body: str | None = None
        for option in fields.get("options") or []:
            name = _def_name(option)
            arg = option["DefElem"].get("arg")
            if name == "language":
                language = (_string(arg) or "sql").lower()
            elif name == "set" and isinstance(arg, dict):
                setting = arg.get("VariableSetStmt")
                if isinstance(setting, dict) and setting.get("name") == CLIENT_ENCODING:
                    self.client_encoding(setting)  # in force while the function runs
                elif isinstance(setting, dict) and setting.get("name") == (
                    STANDARD_CONFORMING_STRINGS
                ):
                    self.conforming_strings(setting)  # the body is parsed under it
            elif name == "as":
                items = arg.get("List", {}).get("items", []) if isinstance(arg, dict) else []
                if len(items) == 1:  # two items are a C function's file and symbol
                    body = _string(items[0])
        if body is not None:
            self._body(language, body)
        self.walk(fields.get("sql_body"))  # BEGIN ATOMIC ... END, already parsed
        return True

    def prepare(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(UTILITY)
        self.found.cacheable = False
        body = _Walker(self.sql_functions).run(fields.get("query"))
        self.found.prepares = (str(fields.get("name") or ""), body)
        self.found.stores = self.found.stores or body.stores
        self.found.executes |= body.executes
        return False  # the body's classes are the PREPARE's too

    def execute(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(UTILITY)
        self.found.cacheable = False
        self.found.executes.add(str(fields.get("name") or ""))
        return False

    def deallocate(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(UTILITY)
        self.found.cacheable = False
        if fields.get("isall") or not fields.get("name"):
            self.found.deallocates_all = True
        else:
            self.found.deallocates = str(fields["name"])
        return False

    def discard(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(UTILITY)
        self.found.cacheable = False
        if fields.get("target") == "DISCARD_ALL":
            self.found.deallocates_all = self.found.closes_portals = True
        return False

    def do_block(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(DO_BLOCK)
        self.found.cacheable = False
        language = "plpgsql"
        body = None
        for option in fields.get("args") or []:
            name = _def_name(option)
            arg = option["DefElem"].get("arg")
            if name == "language":
                language = (_string(arg) or language).lower()
            elif name == "as":
                body = _string(arg)
        if body is not None:
            self._body(language, body)
        return True

    def _body(self, language: str, body: str) -> None:
        """Classes of the statements inside a function body or DO block, where we can read
        them: SQL bodies fully, PL/pgSQL bodies statement by statement (best effort: dynamic
        SQL is only known when it runs)."""
        if language == "sql":
            try:
                tree = json.loads(pg_parser.parse_sql_json(body))
            except pg_parser.ParseError:
                return  # PostgreSQL will refuse the function; nothing runs
            for raw in tree.get("stmts", []):
                self.walk(raw.get("stmt"))
        elif language == "plpgsql":
            for query in _plpgsql_queries(body):
                try:
                    tree = json.loads(pg_parser.parse_sql_json(query))
                except pg_parser.ParseError:
                    continue
                for raw in tree.get("stmts", []):
                    self.walk(raw.get("stmt"))


class _Walker(_CodeAndSettings):
    """Collects the classes of every statement node in a tree, at any depth."""

    def __init__(self, sql_functions: Mapping[str, int] | None = None) -> None:
        self.found = _Found(set())
        self.depth = 0
        self.settings_name: str | None = None  # see `select`
        # every CTE seen so far, scope-blind (name -> query): a CTE over the target of a
        # DELETE or UPDATE holds the target's own values (see `_target_names`)
        self.ctes: dict[str, Any] = {}
        self.sql_functions = sql_functions or {}

    def run(self, node: Any) -> _Found:
        if node is None:
            return self.found
        self.walk(node)
        if not self.found.classes:
            self.found.classes.add(UTILITY)
        return self.found

    def walk(self, node: Any) -> None:
        self.depth += 1
        if self.depth > 500:  # pglast has its own limit; this keeps Python's stack safe
            self.found.classes.add(UNPARSABLE)
            self.depth -= 1
            return
        try:
            if isinstance(node, list):
                for item in node:
                    self.walk(item)
            elif isinstance(node, dict):
                for key, value in node.items():
                    if key[:1].isupper() and isinstance(value, dict):
                        self.visit(key, value)
                    elif isinstance(value, dict | list):
                        if key in _TARGET_KEYS and isinstance(value, dict) and "relname" in value:
                            self.range_var(value)  # a target table, written without a node
                        self.walk(value)
        finally:
            self.depth -= 1

    def visit(self, kind: str, fields: dict[str, Any]) -> None:
        with_clause = fields.get("withClause")
        if isinstance(with_clause, dict):
            for cte in with_clause.get("ctes") or []:
                body = cte.get("CommonTableExpr") if isinstance(cte, dict) else None
                if isinstance(body, dict):
                    self.ctes[str(body.get("ctename") or "").lower()] = body.get("ctequery")
        handler = _HANDLERS.get(kind)
        if handler is not None:
            if handler(self, fields):
                return  # the handler walked (or deliberately skipped) the children
        elif kind.endswith("Stmt"):
            if kind in _NODE_CLASSES:
                self.found.classes |= _NODE_CLASSES[kind]
            elif kind.startswith(_DDL_PREFIXES) or kind in ("CreateStmt", "CreateTableAsStmt"):
                self.found.classes.add(DDL)
            else:
                self.found.classes.add(UTILITY)
        self.walk(fields)

    # -- handlers: return True when they have walked the children themselves -----------------

    def select(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(READ)
        if fields.get("intoClause"):
            self.found.classes |= {DDL, WRITE}
        described = _described_tables(fields)
        if described is not None:
            self.found.cacheable = False  # the table is a constant
            self.found.tables |= described
        # pg_dump: `SELECT set_config(name, ...) FROM pg_settings WHERE name = '...'`: the
        # computed name can only be that constant (in this SELECT, not in one inside it).
        setting = _pg_settings_name(fields)
        if setting is None and self.settings_name is None:
            return False
        outer, self.settings_name = self.settings_name, setting
        try:
            self.walk(fields)
        finally:
            self.settings_name = outer
        return True

    def delete(self, fields: dict[str, Any]) -> bool:
        return self.write_where(fields, DELETE_WITHOUT_WHERE, fields.get("usingClause"))

    def update(self, fields: dict[str, Any]) -> bool:
        return self.write_where(fields, UPDATE_WITHOUT_WHERE, fields.get("fromClause"))

    def write_where(self, fields: dict[str, Any], without_where: str, others: Any) -> bool:
        """A DELETE or UPDATE: a write, and `without_where` unless its WHERE restricts the
        target's rows by their own values (`_restricts`)."""
        self.found.classes.add(WRITE)
        # Judged by the WHERE's shape, never by a constant's value: `1 = 1` and `1 = 2` share
        # a fingerprint and restrict no row by its own values alike.
        where = fields.get("whereClause")
        if not _restricts(where, _target_names(fields.get("relation"), others, self.ctes)):
            self.found.classes.add(without_where)
        return False

    def merge(self, fields: dict[str, Any]) -> bool:
        """MERGE deletes and updates the target rows its join matches: a `WHEN MATCHED THEN
        DELETE` (or `UPDATE`) is `delete_without_where` (or `update_without_where`) unless the
        join or the clause's own condition restricts the target's rows by their values."""
        self.found.classes.add(WRITE)
        source = fields.get("sourceRelation")
        names = _target_names(fields.get("relation"), [source] if source else [], self.ctes)
        joined = _restricts(fields.get("joinCondition"), names)
        for clause in fields.get("mergeWhenClauses") or []:
            when = clause.get("MergeWhenClause", {}) if isinstance(clause, dict) else {}
            command = when.get("commandType")
            if command not in ("CMD_DELETE", "CMD_UPDATE"):
                continue  # INSERT and DO NOTHING touch no existing row
            if joined and when.get("matchKind") == "MERGE_WHEN_MATCHED":
                continue  # NOT MATCHED BY SOURCE acts on the rows the join leaves out
            if _restricts(when.get("condition"), names):
                continue
            if command == "CMD_DELETE":
                self.found.classes.add(DELETE_WITHOUT_WHERE)
            elif command == "CMD_UPDATE":
                self.found.classes.add(UPDATE_WITHOUT_WHERE)
        return False

    def range_var(self, fields: dict[str, Any]) -> bool:
        name = str(fields.get("relname") or "")
        schema = fields.get("schemaname")
        if name.lower() in _STATISTICS_RELATIONS and str(schema or "pg_catalog") == "pg_catalog":
            self.found.classes.add(STATISTICS)
        if name.lower() in _FILE_RELATIONS and str(schema or "pg_catalog") == "pg_catalog":
            self.found.classes.add(SERVER_FILE)
        if schema or any(char.isdigit() for char in name):
            # The fingerprint leaves out the schema of a DML table (`public.t` and
            # `secret.t` share one) and the digits of a table's name (`pay_2023` and
            # `pay_2024`, as partitions are named), and rules on tables may name either.
            self.found.cacheable = False
        if name:
            self.found.tables.add(f"{schema}.{name}" if schema else name)
            if "." in name or "." in str(schema or ""):
                # `"scratch.x"` is a table, not `x` in schema scratch: its quoted spelling is
                # named too, so an allow rule for `scratch.*` does not cover it (an allow rule
                # needs every table), while a deny rule for `scratch.*` still does.
                quoted = f'"{name}"'
                self.found.tables.add(f'"{schema}".{quoted}' if schema else quoted)
        return False

    def drop(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(DDL)
        if fields.get("removeType") in _RELATION_OBJECTS:
            for item in fields.get("objects") or []:
                parts = item.get("List", {}).get("items", []) if isinstance(item, dict) else []
                name = ".".join(_string(part) for part in parts)
                if name:
                    self.found.tables.add(name)
        return False

    def insert(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(WRITE)
        source = fields.get("selectStmt")
        values = source.get("SelectStmt", {}) if isinstance(source, dict) else {}
        conflict = fields.get("onConflictClause") or {}
        if (
            conflict.get("action") == "ONCONFLICT_UPDATE"
            and source
            and not (
                values.get("valuesLists")
                or _restricts(
                    conflict.get("whereClause"),
                    _target_names(fields.get("relation"), [], self.ctes),
                )
            )
        ):
            # `INSERT ... SELECT ... ON CONFLICT DO UPDATE` updates every existing row its
            # query produces again, which may be all of them; VALUES updates at most its rows.
            self.found.classes.add(UPDATE_WITHOUT_WHERE)
        if values.get("valuesLists"):  # INSERT ... VALUES reads nothing by itself
            self.walk(values.get("valuesLists"))
            self.walk({k: v for k, v in fields.items() if k != "selectStmt"})
            return True
        return False

    def create_table_as(self, fields: dict[str, Any]) -> bool:
        self.found.classes |= {DDL, WRITE}
        return False

    def copy(self, fields: dict[str, Any]) -> bool:
        self.found.classes.add(COPY)
        if fields.get("is_from"):
            self.found.classes |= {COPY_IN, WRITE}
        else:
            self.found.classes |= {COPY_OUT, READ}
        if fields.get("is_program"):
            self.found.classes.add(COPY_PROGRAM)
        elif fields.get("filename"):
            self.found.classes.add(COPY_FILE)
        return False

    def explain(self, fields: dict[str, Any]) -> bool:
        options = fields.get("options") or []
        analyze = any(
            _def_name(option) == "analyze" and not _false_arg(option) for option in options
        )
        if analyze:
            self.walk(fields.get("query"))
        self.found.classes.add(READ)
        return True  # without ANALYZE the statement is only planned, never run


_HANDLERS = {
    "SelectStmt": _Walker.select,
    "DeleteStmt": _Walker.delete,
    "InsertStmt": _Walker.insert,
    "RangeVar": _Walker.range_var,
    "DropStmt": _Walker.drop,
    "UpdateStmt": _Walker.update,
    "MergeStmt": _Walker.merge,
    "VacuumStmt": _Walker.vacuum,
    "CreateTableAsStmt": _Walker.create_table_as,
    "CopyStmt": _Walker.copy,
    "ExplainStmt": _Walker.explain,
    "VariableSetStmt": _Walker.variable_set,
    "DefElem": _Walker.def_elem,
    "FuncCall": _Walker.func_call,
    "A_Expr": _Walker.operator,
    "CallStmt": _Walker.call,
    "CreateFunctionStmt": _Walker.create_function,
    "DoStmt": _Walker.do_block,
    "PrepareStmt": _Walker.prepare,
    "ExecuteStmt": _Walker.execute,
    "DeallocateStmt": _Walker.deallocate,
    "DiscardStmt": _Walker.discard,
}


def _code_classes(names: list[str]) -> frozenset[str]:
    """What calling a function of this (possibly qualified) name adds: `side_effect` for a
    built-in one that changes something, `calls_code` for any function not known to only
    read (one of the operator's, an extension's, a volatile built-in, a name in another
    schema or in quotes that changes its case); nothing for a built-in read or for the
    server functions, which have their own classes."""
    if not names or (len(names) > 1 and [n.lower() for n in names[:-1]] != ["pg_catalog"]):
        return frozenset({CALLS_CODE})
    name = names[-1]  # as the parser folded it: `"Lower"` is not lower
    if name in _SIDE_EFFECT_FUNCTIONS:
        return frozenset({SIDE_EFFECT})
    if name in READ_BUILTINS or name in _SERVER_FUNCTIONS or name in _FILE_FUNCTIONS:
        return frozenset()
    return frozenset({CALLS_CODE})


def _plpgsql_queries(body: str) -> Iterator[str]:
    """The SQL inside a PL/pgSQL body: whole statements as they are, expressions as SELECTs."""
    tag = "hoop"
    while f"${tag}$" in body:
        tag += "_"
    wrapper = f"CREATE FUNCTION hoop_probe() RETURNS void LANGUAGE plpgsql AS ${tag}${body}${tag}$"
    try:
        tree = json.loads(pg_parser.parse_plpgsql_json(wrapper))
    except (pg_parser.ParseError, ValueError):
        return
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            expr = node.get("PLpgSQL_expr")
            if isinstance(expr, dict) and isinstance(expr.get("query"), str):
                query = expr["query"]
                mode = expr.get("parseMode", 0)
                if mode == 0:
                    yield query
                elif mode == 3:  # assignment: `x := expr`
                    yield "SELECT " + query.partition(":=")[2]
                else:
                    yield "SELECT " + query
            stack.extend(v for v in node.values() if isinstance(v, dict | list))


def _target_names(
    relation: Any, others: Any, ctes: Mapping[str, Any] | None = None
) -> frozenset[str]:
    """The names a statement's columns are qualified with when they are the target's: its
    alias (or name), and those of the other relations of its FROM/USING that read the same
    table (a self-join, `using victim s`, or a subquery over it): their values are the
    target's own, so comparing with them restricts nothing. A CTE reading the table (`with w
    as (select id from victim) ... where id in (select id from w)`) is the table again."""
    if not isinstance(relation, dict):
        return frozenset()
    relname = str(relation.get("relname") or "").lower()
    copies = _copies(relname, ctes or {})
    alias = (relation.get("alias") or {}).get("aliasname")
    names = {str(alias).lower()} if alias else {relname}
    # a subquery reading the table (or a CTE over it) reads the target's values
    names |= {"\x00" + copy for copy in copies}
    if not others:
        names.add("")  # an unqualified name can only be the target's
    for item in others if isinstance(others, list) else []:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        ((kind, fields),) = item.items()
        other_alias = str((fields.get("alias") or {}).get("aliasname") or "").lower()
        if kind == "RangeVar":
            if str(fields.get("relname") or "").lower() in copies:
                names.add(other_alias or str(fields.get("relname") or "").lower())
        elif other_alias and (
            kind != "RangeSubselect" or any(_reads_relation(fields, copy) for copy in copies)
        ):
            names.add(other_alias)  # a function or a subquery over the target: its values
        elif kind == "JoinExpr":
            names |= _target_names(relation, [fields.get("larg"), fields.get("rarg")], ctes)
    return frozenset(names)


def _copies(relname: str, ctes: Mapping[str, Any]) -> set[str]:
    """The table's name and those of the CTEs that read it, directly or through another."""
    copies = {relname}
    grown = True
    while grown:
        grown = False
        for name, query in ctes.items():
            if name not in copies and any(_reads_relation(query, copy) for copy in copies):
                copies.add(name)
                grown = True
    return copies


def _reads_relation(node: Any, relname: str) -> bool:
    """Whether a table of this name is read anywhere inside a node; a call that reads SQL
    or a table given as text (`query_to_xml('select id from victim', ...)`) may read it."""
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if str(item.get("relname") or "").lower() == relname:
                return True
            call = item.get("FuncCall")
            parts = (call.get("funcname") or []) if isinstance(call, dict) else []
            if parts and _string(parts[-1]).lower() in _HIDDEN_READS:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _restricts(where: Any, target: frozenset[str], negated: bool = False) -> bool:
    """Whether a condition restricts the target's rows by their own values: a comparison
    of a target column with something that is not one (`id = 5`, `id in (...)`, `name like
    $1`, `t.id = s.id`), a NULL or boolean test of a target column, a bare boolean column,
    `WHERE CURRENT OF`, an EXISTS correlated with the target; any of an AND's terms, every
    branch of an OR. Everything else restricts nothing the gateway can tell (`where 't'`,
    `not false`, `id = id`, `1 in (1)`, `coalesce(true)`, a parameter `$1`, a function
    call): the statement counts as having no WHERE (fail closed). `negated`: under an odd
    number of NOTs, so `not (id is null)` is `id is not null`, and an AND is an OR."""
    if not isinstance(where, dict) or len(where) != 1:
        return False
    ((kind, fields),) = where.items()
    if kind == "BoolExpr":
        args = fields.get("args") or []
        if fields.get("boolop") == "NOT_EXPR":
            return len(args) == 1 and _restricts(args[0], target, not negated)
        if (fields.get("boolop") == "AND_EXPR") != negated:  # NOT (a OR b): NOT a AND NOT b
            return any(_restricts(arg, target, negated) for arg in args)
        return bool(args) and all(_restricts(arg, target, negated) for arg in args)
    if kind == "A_Expr":
        left, right = fields.get("lexpr"), fields.get("rexpr")
        if _reads_target(left, target) == _reads_target(right, target):
            return False
        if _hides_reads(where):  # `id = any(... query_to_xml('select id from victim') ...)`
            return False
        side, other = (left, right) if _reads_target(left, target) else (right, left)
        if (fields.get("kind") == "AEXPR_DISTINCT") != negated and not _is_value(other):
            # `id is distinct from null` is `id is not null`, true for every row of a key; so
            # is `... from $1` (or a column, a subquery) when it turns out NULL at run time
            return False
        return _either_way(side, target)
    if kind in ("NullTest", "BooleanTest"):
        # `id is not null` holds for every row of a key: only the tests that pick rows out
        test = str(fields.get("nulltesttype") or fields.get("booltesttype") or "")
        if test.startswith("IS_NOT_") == negated and _reads_target(fields.get("arg"), target):
            return kind == "NullTest" or _either_way(fields.get("arg"), target)
        return False
    if kind == "ColumnRef":
        return _reads_target(where, target)
    if kind == "TypeCast" and _uncast(where) is not where:
        return _restricts(_uncast(where), target, negated)
    if kind == "CurrentOfExpr":
        return True
    if kind == "SubLink":
        subselect = fields.get("subselect")
        if any(_reads_relation(subselect, name[1:]) for name in target if name[:1] == "\x00"):
            return False  # `id in (select id from victim)`: the target's own values
        if fields.get("subLinkType") in ("ANY_SUBLINK", "ALL_SUBLINK", "ROWCOMPARE_SUBLINK"):
            return _reads_target(fields.get("testexpr"), target)
        if fields.get("subLinkType") == "EXISTS_SUBLINK":
            return _reads_target(subselect, target, qualified_only=True)
    return False


_CONDITIONS = frozenset({"A_Expr", "BoolExpr", "NullTest", "BooleanTest", "SubLink"})


def _either_way(side: Any, target: frozenset[str]) -> bool:
    """Whether the side of a comparison (or boolean test) that reads the target restricts
    its rows: a plain value does; a condition or an expression over the target (`(id = id)
    = true`, `(id is null) is false`, `id - id = 0`) only when it restricts both as itself
    and negated, since the other side may be either truth value."""
    inner = _uncast(side)
    if not (isinstance(inner, dict) and len(inner) == 1 and next(iter(inner)) in _CONDITIONS):
        return True
    return _restricts(inner, target) and _restricts(inner, target, True)


def _is_value(node: Any) -> bool:
    """A constant other than `NULL`, under any casts: what cannot be NULL when it runs."""
    inner = _uncast(node)
    const = inner.get("A_Const") if isinstance(inner, dict) else None
    return isinstance(const, dict) and not const.get("isnull")


_REGCLASS_PART = re.compile(r'\s*(?:"((?:[^"]|"")+)"|([^\s."]+))\s*')


def _regclass_parts(text: str) -> list[str] | None:
    """The names in a regclass text, as PostgreSQL splits it (`public."Secrets"`: quoted
    parts as written, others in lower case, blanks around them dropped); None for an OID
    (`'16390'`, any table) or text that is not a name of one to three parts."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _REGCLASS_PART.match(text, pos)
        if match is None or match.end() == pos:
            return None
        quoted, plain = match.group(1), match.group(2)
        parts.append(quoted.replace('""', '"') if quoted is not None else plain.lower())
        pos = match.end()
        if pos == len(text):
            break
        if text[pos] != ".":
            return None
        pos += 1
    if len(parts) > 3 or (len(parts) == 1 and match.group(2) is not None and parts[0].isdigit()):
        return None
    return parts


def _hides_reads(node: Any) -> bool:
    """Whether a node calls a function that reads SQL or a table given as text, which may
    read the target (`_reads_relation` with a name no table has)."""
    return _reads_relation(node, "\x00")


def _reads_target(node: Any, target: frozenset[str], *, qualified_only: bool = False) -> bool:
    """Whether an expression reads a column of the target: one qualified by a target name,
    or one without a qualifier when the statement has no other relation ("" in `target`;
    with FROM or USING it may be theirs: `using pg_settings where name is not null`).
    Inside a subquery only a qualified name counts, since an unqualified one is its own; a
    subquery reading the target table reads its values (`id in (select id from victim)`)."""
    stack: list[tuple[Any, bool]] = [(node, qualified_only)]
    while stack:
        item, inner = stack.pop()
        if isinstance(item, list):
            stack.extend((value, inner) for value in item)
        elif isinstance(item, dict):
            if "ColumnRef" in item and isinstance(item["ColumnRef"], dict):
                parts = item["ColumnRef"].get("fields") or []
                if len(parts) == 1 and not inner and "" in target:
                    return True
                if len(parts) >= 2 and _string(parts[-2]).lower() in target:
                    return True
                continue
            if "\x00" + str(item.get("relname") or "").lower() in target:
                return True
            for key, value in item.items():
                if isinstance(value, dict | list):
                    stack.append((value, inner or key == "SelectStmt"))
    return False


def _client_value(node: Any) -> bool:
    """A constant or a Bind parameter (under casts): a value the client gave, not one the
    query computed from a table."""
    inner = _uncast(node)
    return isinstance(inner, dict) and ("A_Const" in inner or "ParamRef" in inner)


def _uncast(node: Any) -> Any:
    """`'text'::text` as `'text'`: the value under any number of casts."""
    while isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"].get("arg")
    return node


def _is_bool(node: Any) -> bool:
    return isinstance(node, dict) and "boolval" in (node.get("A_Const") or {})


def _column_name(node: Any) -> str | None:
    """The column an unqualified reference names, or None."""
    if isinstance(node, dict) and "ColumnRef" in node:
        parts = node["ColumnRef"].get("fields") or []
        if len(parts) == 1:
            return _string(parts[0]).lower()
    return None


def _described_tables(fields: dict[str, Any]) -> set[str] | None:
    """The tables a SELECT over a statistics catalogue names by constant in its WHERE (one
    of its AND terms): `tablename = 'secrets'` (and `schemaname = 's'`) of pg_stats and kin,
    `starelid = 'secrets'::regclass` of pg_statistic; None when it reads none of them."""
    names = set()
    for item in fields.get("fromClause") or []:
        var = item.get("RangeVar") if isinstance(item, dict) else None
        if isinstance(var, dict) and str(var.get("relname") or "") in _STATISTICS_RELATIONS:
            names.add(str(var.get("relname")))
    if not names:
        return None
    where = fields.get("whereClause")
    terms = [where]
    if isinstance(where, dict) and (where.get("BoolExpr") or {}).get("boolop") == "AND_EXPR":
        terms = where["BoolExpr"].get("args") or []
    pinned: dict[str, str] = {}
    for term in terms:
        expr = term.get("A_Expr") if isinstance(term, dict) else None
        if not isinstance(expr, dict) or expr.get("kind") != "AEXPR_OP":
            continue
        if [_string(part) for part in expr.get("name") or []] != ["="]:
            continue
        column = _column_name(expr.get("lexpr"))
        if column is None:  # `s.tablename`
            parts = (expr.get("lexpr") or {}).get("ColumnRef", {}).get("fields") or []
            column = _string(parts[-1]).lower() if parts else None
        value = _const_string(_uncast(expr.get("rexpr")))
        if column in ("tablename", "schemaname", "starelid") and value is not None:
            pinned[column] = value
    table = pinned.get("tablename") or pinned.get("starelid")
    if table is None:
        return set()
    schema = pinned.get("schemaname")
    return {f"{schema}.{table}" if schema else table}


def _pg_settings_name(fields: dict[str, Any]) -> str | None:
    """The setting a `SELECT ... FROM pg_settings WHERE name = 'x'` reads rows of: its only
    relation is pg_settings and its WHERE (or one of its AND terms) pins `name` to a
    constant, so `name` in its target list can only be that constant."""
    relations = fields.get("fromClause") or []
    if len(relations) != 1 or not isinstance(relations[0], dict):
        return None
    var = relations[0].get("RangeVar") or {}
    if str(var.get("relname") or "") != "pg_settings":
        return None
    if str(var.get("schemaname") or "pg_catalog") != "pg_catalog":
        return None
    where = fields.get("whereClause")
    terms = [where]
    if isinstance(where, dict) and (where.get("BoolExpr") or {}).get("boolop") == "AND_EXPR":
        terms = where["BoolExpr"].get("args") or []
    for term in terms:
        expr = term.get("A_Expr") if isinstance(term, dict) else None
        if not isinstance(expr, dict) or expr.get("kind") != "AEXPR_OP":
            continue
        if [_string(part) for part in expr.get("name") or []] != ["="]:
            continue
        value = _const_string(_uncast(expr.get("rexpr")))
        if _column_name(expr.get("lexpr")) == "name" and value is not None:
            return value
    return None


def _strip_location(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_location(v) for k, v in node.items() if k != "location"}
    if isinstance(node, list):
        return [_strip_location(v) for v in node]
    return node


def _def_name(option: Any) -> str:
    if isinstance(option, dict) and "DefElem" in option:
        return str(option["DefElem"].get("defname", ""))
    return ""


def _true_value(arg: Any) -> bool:
    """A setting's value that PostgreSQL surely reads as true (a list of one constant);
    what it may read as false (`fal`, `fa`, ...) or refuse is not."""
    if isinstance(arg, list):
        return len(arg) == 1 and _true_value(arg[0])
    return setting_is_true(_setting_text(arg))


def _false_arg(option: Any) -> bool:
    return _false_value(option["DefElem"].get("arg")) if _def_name(option) else False


def _false_value(arg: Any) -> bool:
    """A setting's value that means false/off (an A_Const, a String, a list of one)."""
    if isinstance(arg, list):
        return len(arg) == 1 and _false_value(arg[0])
    if not isinstance(arg, dict):
        return False
    if "A_Const" in arg:
        const = arg["A_Const"]
        if "ival" in const:
            return not bool(const["ival"].get("ival", 0))
        if "boolval" in const:
            return not bool(const["boolval"].get("boolval", False))
        if "sval" in const:
            return str(const["sval"].get("sval", "")).lower() in _FALSE_WORDS
        return False
    if "Integer" in arg:
        return not bool(arg["Integer"].get("ival", 0))
    if "String" in arg:
        return str(arg["String"].get("sval", "")).lower() in _FALSE_WORDS
    if "Boolean" in arg:
        return not bool(arg["Boolean"].get("boolval", False))
    return False


def _string(node: Any) -> str:
    if isinstance(node, dict) and "String" in node:
        return str(node["String"].get("sval", ""))
    return ""


def setting_is_true(value: str | None) -> bool:
    """Whether PostgreSQL reads a boolean setting's value as true (its `parse_bool`: `on`,
    `1`, and `true` and `yes` or any prefix of them, in any case). Anything else is false
    or an error to the server, and the gateway counts it as false."""
    word = (value or "").strip().lower()
    return word in ("on", "1") or (
        word != "" and ("true".startswith(word) or "yes".startswith(word))
    )


def _setting_text(arg: Any) -> str | None:
    """A SET value as the server receives it: a string, a number, or None (not a constant)."""
    if isinstance(arg, dict) and "A_Const" in arg:
        const = arg["A_Const"]
        for key in ("sval", "ival", "fval"):
            if isinstance(const.get(key), dict):
                return str(const[key].get(key, 0 if key == "ival" else ""))
        if isinstance(const.get("boolval"), dict):
            return "on" if const["boolval"].get("boolval") else "off"
    return None


def _const_string(node: Any) -> str | None:
    if isinstance(node, dict) and "A_Const" in node:
        sval = node["A_Const"].get("sval")
        if isinstance(sval, dict):
            return str(sval.get("sval", ""))
    return None
