"""A session's prepared statements and portals, as the gateway follows them: what each name
runs (its verdict and classified body), so that an Execute, an SQL EXECUTE or a Bind is judged
by what it really runs. Parse and SQL PREPARE share one namespace upstream; redefining a name
fails upstream, which keeps the old one, so until it is closed a name is judged by both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.pg import classify as sqlclass
from proxy.pg.copy_out import CopyOut
from proxy.pg.judging import Decide
from proxy.pg.lineage import OutputMasks
from proxy.policy import Action, Basis, Verdict

ALLOWED = Verdict(Action.ALLOW, Basis.DEFAULT, "")
# Between the texts of a name prepared twice (see `merged`).
REDEFINED = "-- hoop: or, if the statement above was not prepared, this one:"


@dataclass(slots=True)
class Prepared:
    """A prepared statement of the session, by Parse or by SQL PREPARE (one namespace
    upstream): its verdict, and its classified body, which an SQL EXECUTE inherits."""

    sql: str
    verdict: Verdict
    columns: list[str] | None = None
    found: sqlclass.Classified | None = None
    copy: CopyOut | None = None  # a COPY TO STDOUT whose rows are masked
    outputs: OutputMasks | None = None  # see Result.outputs
    types: tuple[int, ...] | None = None


@dataclass(slots=True)
class Portal:
    statement: str
    bind: bytes  # the raw Bind body, decoded only when recorded
    columns: list[str] | None = None
    prepared: Prepared | None = None  # what it runs, fixed at Bind (None: not known here)
    types: tuple[int, ...] | None = None


class PreparedNames:
    """The session's prepared statements, portals and DECLAREd cursors."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.statements: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}
        self.cursors: dict[str, OutputMasks] = {}  # DECLAREd cursors' output masks

    def define(self, name: str, prepared: Prepared) -> None:
        """A prepared statement sent upstream. Redefining a named one fails upstream, which
        keeps the old one, so until it is closed it is judged by both."""
        previous = self.statements.get(name) if name else None
        self.statements[name] = merged(previous, prepared) if previous else prepared

    def bind(self, portal: str, statement: str, body: bytes) -> None:
        prepared = self.statements.get(statement)
        bound = Portal(statement, body, prepared.columns if prepared else None, prepared)
        previous = self.portals.get(portal) if portal else None
        if previous is not None and previous.prepared is not None and prepared is not None:
            # Binding an existing named portal fails upstream, which keeps the old one: judge
            # by both until the portal is closed.
            bound.prepared = merged(previous.prepared, prepared)
        self.portals[portal] = bound
        outputs = bound.prepared.outputs if bound.prepared is not None else None
        if portal and outputs is not None:
            # A named portal is a cursor to SQL too (`FETCH ALL FROM p`): it returns what
            # the portal's Execute would, masked the same.
            known = self.cursors.get(portal)
            self.cursors[portal] = outputs.merged(known) if known else outputs

    def closing(self, kind: str, name: str) -> Callable[[], None]:
        """What a Close of a statement ("S") or portal ("P") forgets once it succeeded."""
        table: dict[str, Any] = self.statements if kind == "S" else self.portals
        return forget(table, name)

    def decide_named(self, found: sqlclass.Classified) -> Verdict:
        """The verdict of a string that uses SQL prepared statements. An EXECUTE carries the
        classes and tables of the body prepared under its name (a PREPARE earlier in the same
        string counts); a name the gateway never saw prepared is refused. Decided without the
        classifier's key: these names are not in the fingerprint."""
        overlay: dict[str, Prepared | None] = {}
        statements = []
        for statement in found.statements:
            named = statement.named
            if named is None:
                statements.append(statement)
                continue
            classes, tables = set(statement.classes), set(statement.tables)
            for name in sorted(named.executes):
                body = overlay[name] if name in overlay else self.statements.get(name)
                if body is None or body.found is None:
                    return unknown(
                        f'prepared statement "{name}" is not known to the gateway, so it '
                        "cannot be judged",
                        statement.text,
                    )
                for inner in bodies(body.found, self.statements):
                    classes |= inner.classes
                    tables |= inner.tables
            if named.prepares is not None and named.body is not None:
                body_found = sqlclass.Classified((named.body,))
                overlay[named.prepares] = Prepared(statement.text, ALLOWED, found=body_found)
            if named.deallocates is not None:
                overlay[named.deallocates] = None
            statements.append(
                sqlclass.Statement(statement.text, frozenset(classes), frozenset(tables))
            )
        return self.decide(sqlclass.Classified(tuple(statements), found.error))

    def shown(self, found: sqlclass.Classified | None, sql: str) -> str:
        """What an approver reads for `sql`: the text, and the body each SQL EXECUTE in it
        runs (`execute s` alone says nothing of what s is; a Parse of it held nothing)."""
        lines, seen = [sql], set[str]()
        pending = [s for s in (found.statements if found else ()) if s.named]
        for statement in pending:  # a name prepared or dropped in this text: the text says
            named = statement.named
            if named is not None and named.prepares is not None:
                seen.add(named.prepares)
            if named is not None and named.deallocates is not None:
                seen.add(named.deallocates)
            if named is not None and named.deallocates_all:
                return sql
        while pending and len(seen) < 16:
            named = pending.pop(0).named
            for name in sorted(named.executes if named else ()):
                body = self.statements.get(name)
                if name in seen or body is None:
                    continue
                seen.add(name)
                lines.append(f"-- hoop: {name} is: {body.sql}")
                pending.extend(s for s in (body.found.statements if body.found else ()) if s.named)
        return "\n".join(lines)

    def named_effects(
        self, statement: sqlclass.Statement, outputs: OutputMasks | None
    ) -> Callable[[], None] | None:
        """Register an SQL PREPARE now (it may be executed before its answer comes back), with
        `outputs`, its body's output masks; what DEALLOCATE and DISCARD ALL forget, forget
        once they succeeded."""
        named = statement.named
        if named is None:
            return None
        if named.prepares is not None and named.body is not None:
            body = sqlclass.Classified((named.body,))
            self.define(
                named.prepares,
                Prepared(statement.text, self.decide(body), found=body, outputs=outputs),
            )
        if named.deallocates_all:
            return self._forget_all(named.closes_portals)
        if named.deallocates is not None:
            return forget(self.statements, named.deallocates)
        return None

    def _forget_all(self, portals_too: bool) -> Callable[[], None]:
        statements = dict(self.statements)
        portals = dict(self.portals) if portals_too else {}

        def forget_all() -> None:
            for key, value in statements.items():
                forget(self.statements, key, value)()
            for key, portal in portals.items():
                forget(self.portals, key, portal)()

        return forget_all

    def executed_outputs(self, statement: sqlclass.Statement) -> OutputMasks | None:
        """An SQL EXECUTE returns what the statement prepared under its name returns."""
        if statement.named is None or not statement.named.executes:
            return None
        outputs: OutputMasks | None = None
        for name in sorted(statement.named.executes):
            body = self.statements.get(name)
            if body is not None and body.outputs is not None:
                outputs = body.outputs.merged(outputs)
        return outputs

    def cursor_outputs(self, outputs: OutputMasks | None) -> OutputMasks | None:
        """A DECLAREd cursor keeps its query's output masks (once declared, a name stays
        masked: a later harmless DECLARE of it only masks more); a FETCH returns them."""
        if outputs is not None and outputs.declares is not None:
            known = self.cursors.get(outputs.declares)
            self.cursors[outputs.declares] = outputs.merged(known) if known else outputs
        if outputs is not None and outputs.fetches is not None:
            return self.cursors.get(outputs.fetches)
        return outputs


def unknown(why: str, statement: str | None = None) -> Verdict:
    return Verdict(Action.DENY, Basis.UNPARSABLE, why, None, statement)


def merged(old: Prepared, new: Prepared) -> Prepared:
    """One of two bodies, not knowing which: judged as the more severe, with both bodies'
    classes for an EXECUTE."""
    verdict = (
        new.verdict if new.verdict.action.severity >= old.verdict.action.severity else old.verdict
    )
    statements = (old.found.statements if old.found else ()) + (
        new.found.statements if new.found else ()
    )
    outputs = new.outputs.merged(old.outputs) if new.outputs is not None else old.outputs
    # What is recorded and what an approver reads: the server runs the first body (the
    # second Parse failed), or the second if the first never was prepared. Both, then.
    sql = new.sql if new.sql == old.sql else f"{old.sql}\n{REDEFINED}\n{new.sql}"
    return Prepared(sql, verdict, None, sqlclass.Classified(statements), outputs=outputs)


def bodies(
    found: sqlclass.Classified, statements: dict[str, Prepared], depth: int = 0
) -> list[sqlclass.Statement]:
    """The statements a prepared body runs, following an EXECUTE inside it (a Parse of
    `EXECUTE q`) a few levels deep; deeper than that counts as unparsable."""
    out = list(found.statements)
    for statement in found.statements:
        for name in statement.named.executes if statement.named else ():
            inner = statements.get(name)
            if depth >= 4:
                out.append(sqlclass.Statement(statement.text, frozenset({sqlclass.UNPARSABLE})))
            elif inner is not None and inner.found is not None:
                out.extend(bodies(inner.found, statements, depth + 1))
    return out


def forget(table: dict[str, Any], name: str, which: object = None) -> Callable[[], None]:
    """Forget `name` once its close succeeded, unless it was redefined meanwhile (then the
    newer definition stays)."""
    current = table.get(name) if which is None else which

    def forget_now() -> None:
        if current is not None and table.get(name) is current:
            del table[name]

    return forget_now
