"""A PostgreSQL session as a timeline of statements, rebuilt from its `sql_*` events.

The gateway records a statement when it arrives (`sql_statement`), then what it decided
(`verdict`, `hold_requested`, `hold_decided`), then what the database answered (`sql_result` or
`sql_error`); `mask` events for result rows and error texts come just before the answer they
belong to. `build_sql_timeline` folds that stream back into one `SqlStatement` per statement,
so a reviewer reads "what ran, who let it, what came back" instead of an event log.

How events are matched to statements (the recording has no statement ids):
- a verdict (and the hold that follows it) belongs to every statement recorded since the
  previous verdict that has no answer yet: a simple Query of several statements is judged whole;
- answers come in the order statements were sent, so each result or error goes to the oldest
  statement still waiting for one;
- after an error the other statements still waiting were part of the same failed query or
  batch, and PostgreSQL skips them: they are marked `skipped`;
- the column of a recorded row mask is the event's `column`; recordings made before the event
  had that field get it read from the masked sample row (the cell showing the token or the `*`
  of a mask, in column order).

With a `Masker` (today's rules) every event is first seen through it, like the replay does, and
what today's rules find is added to the statements as masks with `today=True` (except a column
a recorded mask of the same rule already hid: masking `********` again says nothing new).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from replay.masking_view import EventMasker
from storage.masking import MaskAct, Masker
from storage.schema import Event, EventType

FIND_KINDS = ("hold", "deny", "error")


@dataclass(slots=True)
class StatementMask:
    """Something masked in a statement's text, result or error: by which rule and where,
    never what."""

    time_us: int
    rule: str
    place: str  # "result", "error" (or notice) or "statement" (the SQL text)
    row: int | None  # 1-based row of the result, for a recorded row mask
    column: str | None
    position: int
    length: int
    token: str
    today: bool = False  # found by today's rules on replay, not recorded by the gateway


@dataclass(slots=True)
class SqlStatement:
    """One statement as the gateway saw it, with its verdict, hold and answer."""

    index: int  # 0-based place in the timeline
    time_us: int
    sql: str
    params: list[Any] = field(default_factory=list)
    action: str = "allow"  # the verdict: allow, deny or review
    rule: str = ""  # the rule that gave the verdict ("" for the policy default)
    rule_message: str = ""
    hold_id: str = ""
    approvers: list[str] = field(default_factory=list)
    decision: str = ""  # approved, denied, expired, withdrawn; "" while undecided
    decided_by: str = ""
    decision_reason: str = ""
    decided_us: int | None = None
    columns: list[str] = field(default_factory=list)
    rows: int | None = None
    sample: list[list[Any]] = field(default_factory=list)
    duration_us: int | None = None  # as the gateway measured it, from sending to completion
    sqlstate: str = ""
    error: str = ""
    finished_us: int | None = None  # when the result or error was recorded
    skipped: bool = False  # not run: an earlier statement of its query or batch failed
    masks: list[StatementMask] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.action == "review"

    @property
    def denied(self) -> bool:
        """Refused by a rule, or held and not approved."""
        return self.action == "deny" or (self.held and self.decision not in ("", "approved"))

    @property
    def failed(self) -> bool:
        """The database (not the gateway's policy) answered with an error."""
        return bool(self.error) and not self.denied

    @property
    def verdict_label(self) -> str:
        if self.action == "deny":
            return "denied"
        if self.held:
            return f"held→{self.decision}" if self.decision else "held"
        return "allowed"

    @property
    def held_us(self) -> int | None:
        """How long the statement waited for its decision."""
        return None if self.decided_us is None else self.decided_us - self.time_us

    @property
    def elapsed_us(self) -> int | None:
        """The measured duration, else the time from arrival to the error."""
        if self.duration_us is not None:
            return self.duration_us
        if self.finished_us is not None:
            return self.finished_us - self.time_us
        return None

    def matches(self, kind: str) -> bool:
        """Is this statement a `hold`, a `deny` or an `error`?"""
        if kind == "hold":
            return self.held
        if kind == "deny":
            return self.denied
        if kind == "error":
            return self.failed
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(FIND_KINDS)}")


@dataclass(slots=True)
class SqlTimeline:
    statements: list[SqlStatement] = field(default_factory=list)
    end_us: int = 0

    def __len__(self) -> int:
        return len(self.statements)

    def find(self, start: int, kind: str, direction: int = 1) -> int | None:
        """The index of the next (`direction` 1) or previous (-1) statement of `kind` after
        `start`, without wrapping around."""
        index = start + direction
        while 0 <= index < len(self.statements):
            if self.statements[index].matches(kind):
                return index
            index += direction
        return None

    def search(self, text: str, start: int) -> int | None:
        """The index of the next statement after `start` whose SQL contains `text` (any
        case), wrapping around to the first; `start` itself is checked last."""
        needle = text.casefold()
        count = len(self.statements)
        if not needle or not count:
            return None
        for step in range(1, count + 1):
            index = (start + step) % count
            if needle in self.statements[index].sql.casefold():
                return index
        return None

    def count(self, kind: str) -> int:
        return sum(statement.matches(kind) for statement in self.statements)


def build_sql_timeline(events: Iterable[Event], masker: Masker | None = None) -> SqlTimeline:
    """The statements of a PostgreSQL session's events, in the order they arrived."""
    return _Builder(masker).run(events)


class _Builder:
    def __init__(self, masker: Masker | None) -> None:
        self.state = EventMasker(masker) if masker is not None else None
        self.timeline = SqlTimeline()
        self.unjudged: list[SqlStatement] = []  # recorded since the last verdict, no answer yet
        self.judged: list[SqlStatement] = []  # what the last verdict (and its hold) was about
        self.waiting: deque[SqlStatement] = deque()  # sent, waiting for a result or error
        self.masks: list[Event] = []  # recorded masks waiting for the answer they belong to
        self.today: list[tuple[Event, MaskAct]] = []

    def run(self, events: Iterable[Event]) -> SqlTimeline:
        for event in events:
            acts: list[MaskAct] = []
            if self.state is not None:
                event, acts = self.state.event(event)
            # an answer's masks belong to the statement it answers, taken off `waiting` below
            answered = self.waiting[0] if self.waiting else None
            self._event(event)
            if acts:
                self._today(event, acts, answered)
            self.timeline.end_us = event.time_us
        return self.timeline

    def _event(self, event: Event) -> None:
        match event.type:
            case EventType.SQL_STATEMENT:
                self._statement(event)
            case EventType.VERDICT:
                self.judged = self.unjudged or self.judged[-1:] or self.timeline.statements[-1:]
                self.unjudged = []
                for statement in self.judged:
                    statement.action = str(event.get("action") or "allow")
                    statement.rule = str(event.get("rule") or "")
                    statement.rule_message = str(event.get("message") or "")
            case EventType.HOLD_REQUESTED:
                for statement in self.judged:
                    statement.action = "review"
                    statement.hold_id = str(event.get("hold_id") or "")
                    statement.approvers = [str(a) for a in event.get("approvers") or []]
                    statement.rule = statement.rule or str(event.get("rule") or "")
            case EventType.HOLD_DECIDED:
                hold_id = str(event.get("hold_id") or "")
                for statement in self.judged:
                    if statement.hold_id == hold_id:
                        statement.decision = str(event.get("decision") or "")
                        statement.decided_by = str(event.get("by") or "")
                        statement.decision_reason = str(event.get("reason") or "")
                        statement.decided_us = event.time_us
            case EventType.SQL_RESULT:
                self._result(event)
            case EventType.SQL_ERROR:
                self._error(event)
            case EventType.MASK:
                self.masks.append(event)

    def _statement(self, event: Event) -> None:
        params = event.get("params")
        statement = SqlStatement(
            index=len(self.timeline.statements),
            time_us=event.time_us,
            sql=_text(event.get("statement")),
            params=list(params) if isinstance(params, list) else [],
        )
        self.timeline.statements.append(statement)
        self.unjudged.append(statement)
        self.waiting.append(statement)

    def _answered(self) -> SqlStatement | None:
        statement = self.waiting.popleft() if self.waiting else None
        if statement is not None and statement in self.unjudged:
            self.unjudged.remove(statement)  # it ran on the policy's default: no verdict comes
        return statement

    def _result(self, event: Event) -> None:
        statement = self._answered()
        masks, self.masks = self.masks, []
        if statement is None:
            return
        columns = event.get("columns")
        sample = event.get("sample")
        rows = event.get("rows")
        duration = event.get("duration_us")
        statement.columns = [str(c) for c in columns] if isinstance(columns, list) else []
        statement.sample = [r for r in sample if isinstance(r, list)] if sample else []
        statement.rows = rows if isinstance(rows, int) else None
        statement.duration_us = duration if isinstance(duration, int) else None
        statement.finished_us = event.time_us
        statement.masks += _row_masks(statement, masks)

    def _error(self, event: Event) -> None:
        statement = self._answered()
        masks, self.masks = self.masks, []
        if statement is None:
            return
        statement.sqlstate = str(event.get("sqlstate") or "")
        statement.error = _text(event.get("message"))
        statement.finished_us = event.time_us
        statement.masks += [_recorded(mask, "error", None, None) for mask in masks]
        for skipped in self.waiting:
            skipped.skipped = True
            if skipped in self.unjudged:
                self.unjudged.remove(skipped)
        self.waiting.clear()

    def _today(self, event: Event, acts: list[MaskAct], answered: SqlStatement | None) -> None:
        """Attach what today's rules found in `event` to its statement."""
        if event.type is EventType.SQL_STATEMENT:
            place, statement = "statement", self.timeline.statements[-1]
        elif event.type in (EventType.SQL_RESULT, EventType.SQL_ERROR) and answered is not None:
            place = "result" if event.type is EventType.SQL_RESULT else "error"
            statement = answered
        else:
            return
        recorded = {(m.rule, m.column) for m in statement.masks if m.place == "result"}
        for act in acts:
            if place == "result" and (act.rule, act.column) in recorded:
                continue  # the same rule masked this column when it was recorded
            statement.masks.append(
                StatementMask(
                    event.time_us,
                    act.rule,
                    place,
                    None,
                    act.column,
                    act.position,
                    act.length,
                    act.token,
                    today=True,
                )
            )


def _row_masks(statement: SqlStatement, masks: list[Event]) -> list[StatementMask]:
    """Recorded masks of result rows, with the column the event names, or for an older
    recording without it, the column read from the masked sample row."""
    out: list[StatementMask] = []
    by_row: dict[int, list[Event]] = {}
    for mask in masks:
        row = mask.get("position")
        if isinstance(row, int) and 1 <= row <= len(statement.sample):
            by_row.setdefault(row, []).append(mask)
        else:  # not a sampled row: a notice's text
            out.append(_recorded(mask, "error", None, None))
    for row, found in by_row.items():
        values = statement.sample[row - 1]
        masked = [
            index
            for index, value in enumerate(values)
            if isinstance(value, str) and ("**" in value or _has_token(value, found))
        ]
        next_cell = 0  # masks come in column order: each one is in this masked cell or later
        for mask in found:
            recorded = mask.get("column")
            if isinstance(recorded, str) and recorded:  # the gateway named it
                out.append(_recorded(mask, "result", row, recorded))
                continue
            token = str(mask.get("token") or "")
            cell: int | None = next(
                (i for i in masked if token and token in str(values[i])),
                masked[min(next_cell, len(masked) - 1)] if masked else None,
            )
            if cell is not None:
                next_cell = masked.index(cell) + 1
            column = (
                statement.columns[cell]
                if cell is not None and cell < len(statement.columns)
                else None
            )
            out.append(_recorded(mask, "result", row, column))
    return out


def _has_token(value: str, masks: list[Event]) -> bool:
    return any(m.get("token") and str(m.get("token")) in value for m in masks)


def _recorded(event: Event, place: str, row: int | None, column: str | None) -> StatementMask:
    position = event.get("position")
    length = event.get("length")
    return StatementMask(
        event.time_us,
        str(event.get("rule") or ""),
        place,
        row,
        column,
        position if isinstance(position, int) else 0,
        length if isinstance(length, int) else 0,
        str(event.get("token") or ""),
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
