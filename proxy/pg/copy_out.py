"""Masking the rows of `COPY ... TO STDOUT` (text and CSV formats). Pure: no I/O.

A CopyOutResponse names only the formats, never the columns. The gateway learns the column
names from the statement itself when it lists them (`COPY t (a, b) TO STDOUT`, which is what
pg_dump sends), and otherwise asks the upstream on the same connection just before the COPY
(`learn_columns_messages`): the catalogue for `COPY t`, a Describe of the query for
`COPY (query)`. Same connection, so the same search_path, temporary tables and privileges.
When the names cannot be learned, or their number differs from the CopyOutResponse's, the
session fails closed (docs/masking.md, "COPY").

`CopyRows` cuts the CopyData stream into rows (a row may arrive in pieces), parses each row's
fields as PostgreSQL writes them, masks them with a `ColumnPlan`, and writes the row back.
A field the plan leaves alone keeps its exact bytes, so a dump with nothing to mask is
byte-identical and a masked dump still restores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pglast import parser as pg_parser

from proxy.pg.classify import parse_tree
from proxy.pg.lineage import Lineage, lineage_of
from proxy.pg.wire import Bind, Describe, Execute, Parse, Sync
from storage.masking import ColumnPlan, MaskAct

TEXT, CSV, BINARY = "text", "csv", "binary"
_UTF8_NAMES = frozenset({"utf8", "utf-8", "unicode"})
CATALOGUE_COLUMNS = (
    "SELECT a.attname FROM pg_catalog.pg_attribute a"
    " WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0"
    " AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum"
)


@dataclass(frozen=True, slots=True)
class CopyOut:
    """A `COPY ... TO STDOUT` statement, as far as masking its rows needs."""

    relation: str | None  # the table as a regclass literal (`"public"."t"`), or None
    query: str | None  # the query of `COPY (query) TO STDOUT`
    columns: tuple[str, ...] | None  # the column list as written, if any
    format: str = TEXT
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    header: bool = False
    encoding: str | None = None
    # which columns each output column reads (the query's, or the table's `select *`)
    lineage: Lineage | None = field(default=None, compare=False)

    @property
    def utf8(self) -> bool:
        return self.encoding is None or self.encoding.lower() in _UTF8_NAMES


def parse_copy_out(sql: str) -> CopyOut | None:
    """The `COPY ... TO STDOUT` of a one-statement string, or None (anything else)."""
    try:
        tree = parse_tree(sql)
    except pg_parser.ParseError:
        return None
    statements = tree.get("stmts", [])
    if len(statements) != 1:
        return None
    return copy_out_of(sql.strip(), statements[0].get("stmt"))


def copy_out_of(text: str, stmt: Any) -> CopyOut | None:
    """The `COPY ... TO STDOUT` a statement's parse tree node is (`text`: the statement's own
    text), or None (anything else). Read from the tree the classifier parsed: no parser
    call of its own."""
    if not isinstance(stmt, dict) or "CopyStmt" not in stmt:
        return None
    fields: dict[str, Any] = stmt["CopyStmt"]
    if fields.get("is_from") or fields.get("is_program") or fields.get("filename") is not None:
        return None
    options = _copy_options(fields.get("options") or ())
    fmt = str(options.get("format", TEXT)).lower()
    csv = fmt == CSV
    quote = str(options.get("quote", '"'))
    header = options.get("header", False)
    relation = None
    query_lineage = None
    if isinstance(fields.get("relation"), dict):
        found = fields["relation"]
        parts = [p for p in (found.get("schemaname"), found.get("relname")) if p]
        relation = ".".join('"' + part.replace('"', '""') + '"' for part in parts)
        # `COPY t` writes what `select * from t` reads (`COPY pg_statistic`: sampled values)
        query_lineage = lineage_of({"SelectStmt": _select_all(found)})
    query = None
    if fields.get("query") is not None:
        query = _parenthesized(text)
        query_lineage = lineage_of(fields["query"])
    attlist = fields.get("attlist") or ()
    return CopyOut(
        relation=relation,
        query=query,
        columns=tuple(_sval(c) for c in attlist) if attlist else None,
        format=fmt,
        delimiter=str(options.get("delimiter", "," if csv else "\t")),
        null=str(options.get("null", "" if csv else "\\N")),
        quote=quote,
        escape=str(options.get("escape", quote)),
        header=header is True or str(header).lower() in ("true", "on", "1"),
        encoding=str(options["encoding"]) if "encoding" in options else None,
        lineage=query_lineage,
    )


def _copy_options(items: Any) -> dict[str, object]:
    options: dict[str, object] = {}
    for item in items:
        option = item.get("DefElem", {}) if isinstance(item, dict) else {}
        arg = option.get("arg")
        if arg is None:
            value: object = True
        elif "String" in arg:
            value = arg["String"].get("sval", "")
        elif "Boolean" in arg:
            value = bool(arg["Boolean"].get("boolval", False))
        elif "Integer" in arg:
            value = bool(arg["Integer"].get("ival", 0))
        else:
            value = arg  # FORCE_QUOTE lists and `*`: not needed to read the output
        options[str(option.get("defname", "")).lower()] = value
    return options


def _sval(node: Any) -> str:
    return str(node.get("String", {}).get("sval", "")) if isinstance(node, dict) else ""


def _select_all(relation: dict[str, Any]) -> dict[str, Any]:
    star: dict[str, Any] = {"ResTarget": {"val": {"ColumnRef": {"fields": [{"A_Star": {}}]}}}}
    return {"targetList": [star], "fromClause": [{"RangeVar": relation}]}


def _parenthesized(text: str) -> str | None:
    """The text of `COPY (query) ...`'s query, as the client wrote it, found with the
    scanner (a parenthesis inside a string or a comment is one token, never counted)."""
    try:
        tokens = pg_parser.scan(text)
    except pg_parser.ParseError:
        return None
    depth, opened = 0, -1
    for token in tokens[1:]:
        if token.name == "ASCII_40":
            if depth == 0:
                opened = token.end + 1
            depth += 1
        elif token.name == "ASCII_41":
            depth -= 1
            if depth == 0 and opened >= 0:
                return text[opened : token.start].strip()
    return None


def learn_columns_messages(spec: CopyOut) -> bytes:
    """Extended-protocol messages, ending with Sync, whose answer names the columns the COPY
    will write: the catalogue's columns of the table (a RowDescription then one DataRow per
    column), or the Describe of the query (its RowDescription). Neither runs the query, and
    the catalogue query never fails for a missing table (it finds no columns). They use the
    unnamed statement and portal, which the COPY's own Query message replaces anyway."""
    if spec.relation is not None:
        messages: list[Parse | Bind | Execute | Describe | Sync] = [
            Parse("", CATALOGUE_COLUMNS),
            Bind("", "", (), (spec.relation.encode(),)),
            Execute(""),
        ]
    else:
        messages = [Parse("", spec.query or ""), Describe("S", "")]
    messages.append(Sync())
    return b"".join(m.encode() for m in messages)


@dataclass(slots=True)
class CopyJob:
    """One COPY TO STDOUT on its way: the statement, and its column names once known."""

    spec: CopyOut
    columns: list[str] | None = None
    learned: list[str] = field(default_factory=list)  # catalogue rows as they arrive
    failed: bool = False


# -- rows -------------------------------------------------------------------------------------

_TEXT_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.S)
_TEXT_CHARS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_TEXT_OUT = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TEXT_OUT["\v"] = "\\v"


def _unescape_text(raw: str) -> str:
    def one(match: re.Match[str]) -> str:
        octal, hexa, char = match.groups()
        if octal is not None:
            return chr(int(octal, 8) & 0xFF)
        if hexa is not None:
            return chr(int(hexa, 16))
        return _TEXT_CHARS.get(char, char)

    return _TEXT_ESCAPE.sub(one, raw) if "\\" in raw else raw


@dataclass(slots=True)
class CopyRows:
    """Masks a COPY's CopyData stream row by row (see the module docstring)."""

    spec: CopyOut
    plan: ColumnPlan
    _buffer: bytes = b""
    _header_pending: bool = False

    def __post_init__(self) -> None:
        self._header_pending = self.spec.header

    def feed(self, data: bytes) -> list[bytes]:
        """The complete rows (each with its newline) that `data` finishes; the rest waits."""
        buffer = self._buffer + data
        rows: list[bytes] = []
        start = 0
        while True:
            end = self._row_end(buffer, start)
            if end < 0:
                break
            rows.append(buffer[start:end])
            start = end
        self._buffer = buffer[start:]
        return rows

    def finish(self) -> bytes:
        """What is left at CopyDone (PostgreSQL ends every row with a newline: normally
        nothing)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _row_end(self, buffer: bytes, start: int) -> int:
        if self.spec.format != CSV:
            found = buffer.find(b"\n", start)
            return -1 if found < 0 else found + 1
        quote, escape = self.spec.quote.encode(), self.spec.escape.encode()
        inside = False
        index, size = start, len(buffer)
        while index < size:
            char = buffer[index : index + 1]
            if inside:
                if escape != quote and char == escape:
                    index += 2
                    continue
                if char == quote:
                    inside = False  # a doubled quote closes and reopens: the same state
            elif char == quote:
                inside = True
            elif char == b"\n":
                return index + 1
            index += 1
        return -1

    def mask(self, row: bytes) -> tuple[bytes, list[str | None] | None, list[MaskAct]]:
        """One row masked: its bytes, its values (masked, for the record; None for a header
        row) and the masking acts."""
        if self._header_pending:
            self._header_pending = False
            return row, None, []
        text = row.decode("utf-8", "surrogateescape")
        body = text[:-1] if text.endswith("\n") else text
        end = text[len(body) :]
        if self.spec.format == CSV:
            if body.endswith("\r"):
                body, end = body[:-1], "\r" + end
            raws, values = self._csv_fields(body)
        else:
            raws = self._text_fields(body)
            values = [None if raw == self.spec.null else _unescape_text(raw) for raw in raws]
        masked, acts = self.plan.mask_row(values)
        if not acts:
            return row, values, []
        out: list[str] = []
        for raw, old, new in zip(raws, values, masked, strict=True):
            if new is None or new == old:
                out.append(raw)
            else:
                out.append(self._encode(str(new)))
        line = self.spec.delimiter.join(out) + end
        return line.encode("utf-8", "surrogateescape"), [_text(v) for v in masked], acts

    def _text_fields(self, body: str) -> list[str]:
        delimiter = self.spec.delimiter
        fields: list[str] = []
        start = index = 0
        size = len(body)
        while index < size:
            char = body[index]
            if char == "\\":
                index += 2
                continue
            if char == delimiter:
                fields.append(body[start:index])
                start = index + 1
            index += 1
        fields.append(body[start:])
        return fields

    def _csv_fields(self, body: str) -> tuple[list[str], list[str | None]]:
        spec = self.spec
        raws: list[str] = []
        values: list[str | None] = []
        index, size = 0, len(body)
        while True:
            start = index
            if index < size and body[index] == spec.quote:
                index += 1
                chars: list[str] = []
                while index < size:
                    char = body[index]
                    following = body[index + 1] if index + 1 < size else ""
                    if (
                        char == spec.escape
                        and following in (spec.quote, spec.escape)
                        and (spec.escape != spec.quote or following == spec.quote)
                    ):
                        chars.append(following)
                        index += 2
                        continue
                    if char == spec.quote:
                        index += 1
                        break
                    chars.append(char)
                    index += 1
                while index < size and body[index] != spec.delimiter:
                    chars.append(body[index])  # not written by PostgreSQL; kept anyway
                    index += 1
                values.append("".join(chars))
            else:
                while index < size and body[index] != spec.delimiter:
                    index += 1
                raw = body[start:index]
                values.append(None if raw == spec.null else raw)
            raws.append(body[start:index])
            if index >= size:
                return raws, values
            index += 1  # the delimiter

    def _encode(self, value: str) -> str:
        spec = self.spec
        if spec.format == CSV:
            if spec.escape != spec.quote:
                value = value.replace(spec.escape, spec.escape + spec.escape)
            return spec.quote + value.replace(spec.quote, spec.escape + spec.quote) + spec.quote
        out = "".join(_TEXT_OUT.get(char, char) for char in value)
        if spec.delimiter not in _TEXT_OUT:
            out = out.replace(spec.delimiter, "\\" + spec.delimiter)
        return out


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "surrogateescape")
