"""One `StatementAnalysis` per SQL text: what the gateway reads from it (classes and tables,
the lineage of its output columns, the COPY TO STDOUT it is), all from ONE parse by pglast.

The classifier parses a text it has not seen (its caches answer look-alikes without parsing);
the lineage and COPY readers take that same parse tree. When a cache answered the classes and
the lineage or the COPY is needed, the text is parsed then, once, for both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pglast import parser as pg_parser

from proxy.pg import classify as sqlclass
from proxy.pg.copy_out import CopyOut, copy_out_of
from proxy.pg.lineage import Lineage, lineages


@dataclass(slots=True)
class StatementAnalysis:
    """A text's classes (`found`), and, read from the same parse when first asked for, the
    lineage of each statement and the COPY TO STDOUT spec of each statement."""

    text: str
    found: sqlclass.Classified
    _tree: sqlclass.Tree | None = field(default=None, repr=False)
    _parsed: bool = False
    _lineages: tuple[Lineage, ...] | None = None
    _copies: tuple[CopyOut | None, ...] | None = None

    def lineages(self) -> tuple[Lineage, ...]:
        """Per statement, which columns each output column reads (see lineage.py)."""
        if self._lineages is None:
            self._lineages = lineages(self.text, self._need_tree())
        return self._lineages

    def lineage(self, index: int) -> Lineage | None:
        found = self.lineages()
        return found[index] if index < len(found) else None

    def copies(self) -> tuple[CopyOut | None, ...]:
        """Per statement, the COPY TO STDOUT it is, or None."""
        if self._copies is None:
            if sqlclass.COPY_OUT not in self.found.classes:
                self._copies = tuple(None for _ in self.found.statements)
            else:
                raws = self._need_tree().get("stmts", [])
                self._copies = tuple(
                    copy_out_of(statement.text, raw.get("stmt"))
                    for statement, raw in zip(self.found.statements, raws, strict=False)
                )
        return self._copies

    def copy(self, index: int = 0) -> CopyOut | None:
        found = self.copies()
        return found[index] if index < len(found) else None

    def _need_tree(self) -> dict[str, Any]:
        """The parse tree: the classifier's, or parsed now (once)."""
        if self._tree is None and not self._parsed:
            self._parsed = True
            try:
                self._tree = sqlclass.parse_tree(self.text)
            except pg_parser.ParseError:
                self._tree = {}
        return self._tree or {}


class Analyzer:
    """Texts -> StatementAnalysis, with the classifier's caches. A plain classify function
    (no parse tree to share) works too: the tree is then parsed when first needed."""

    def __init__(self, classify: Callable[[str], sqlclass.Classified]) -> None:
        self.classify = classify
        self._parsed = classify.parsed if isinstance(classify, sqlclass.Classifier) else None

    def __call__(self, sql: str) -> StatementAnalysis:
        if self._parsed is None:
            return StatementAnalysis(sql, self.classify(sql))
        found, tree = self._parsed(sql)
        return StatementAnalysis(sql, found, tree, tree is not None)
