"""Replay of a PostgreSQL session as a statement timeline: one row per statement (when, how
long, the verdict, rows, error) and, for the selected one, everything the recording knows
about it (full SQL, parameters, rule, hold and decision, error, masks, first rows)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from hoop_tui.workstation.mask_review import MaskReviewScreen
from hoop_tui.workstation.replay import SearchDialog
from replay.mask_review import MaskEntry, review_sql
from replay.sql_timeline import SqlStatement, SqlTimeline
from storage.reader import format_time

STATEMENT_COLUMNS = ("#", "AT", "TOOK", "VERDICT", "ROWS", "SQL", "ERROR")
ERROR_PREVIEW = 32
OTHER_COLUMNS_WIDTH = 90  # the other columns at their widest, padding and scrollbar
MIN_SQL_PREVIEW = 30
VERDICT_STYLES = {
    "allowed": "green",
    "denied": "bold red",
    "held": "bold yellow",
    "held→approved": "yellow",
}
KIND_NAMES = {"hold": "held statement", "deny": "denied statement", "error": "error"}


def format_duration(micros: int | None) -> str:
    if micros is None:
        return "-"
    if micros < 1000:
        return f"{micros} µs"
    if micros < 1_000_000:
        return f"{micros / 1000:.1f} ms"
    return f"{micros / 1_000_000:.2f} s"


def show_value(value: Any) -> str:
    """A parameter or result value as a reviewer reads it: NULL, text, or bytes in hex."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def verdict_text(statement: SqlStatement) -> Text:
    label = statement.verdict_label
    return Text(label, style=VERDICT_STYLES.get(label, "red" if statement.denied else ""))


def rows_text(statement: SqlStatement) -> str:
    if statement.skipped:
        return "not run"
    return "-" if statement.rows is None else str(statement.rows)


def describe(statement: SqlStatement, count: int) -> Text:
    """The detail pane's text for one statement."""
    out = Text()

    def field(label: str, value: str | Text, style: str = "") -> None:
        out.append(f"{label:<10}", style="bold")
        out.append(value if isinstance(value, Text) else Text(value, style=style))
        out.append("\n")

    took = format_duration(statement.elapsed_us)
    out.append(f"Statement {statement.index + 1} of {count}", style="bold")
    out.append(f", at {format_time(statement.time_us)}, took {took}\n\n")
    out.append(statement.sql.strip() + "\n\n")
    for number, value in enumerate(statement.params, start=1):
        field(f"${number}", show_value(value))
    field("Verdict", verdict_text(statement))
    if statement.rule:
        message = f": {statement.rule_message}" if statement.rule_message else ""
        field("Rule", statement.rule + message)
    if statement.hold_id:
        field("Hold", f"{statement.hold_id}, approvers: {', '.join(statement.approvers) or '-'}")
        if statement.decision:
            reason = f": {statement.decision_reason}" if statement.decision_reason else ""
            waited = format_duration(statement.held_us)
            field(
                "Decision",
                f"{statement.decision} by {statement.decided_by} after {waited}{reason}",
            )
        else:
            field("Decision", "none recorded (the session ended while it was held)")
    if statement.skipped:
        field("Result", "not run: an earlier statement of its query or batch failed")
    elif statement.rows is not None:
        field("Result", f"{statement.rows} row{'s' if statement.rows != 1 else ''}")
    if statement.error:
        field("Error", f"{statement.sqlstate} {statement.error}", style="red")
    for mask in statement.masks:
        where = {"statement": "SQL text", "error": "error or notice text"}.get(mask.place)
        if where is None:
            where = f"column {mask.column or '?'}" + (f", row {mask.row}" if mask.row else "")
        today = " (today's rules)" if mask.today else ""
        field("Masked", f"{mask.rule}: {where}, {mask.length} chars, {mask.token}{today}")
    if statement.sample:
        shown = len(statement.sample)
        out.append(f"\nFirst rows ({shown} of {statement.rows})", style="bold")
    return out


class SqlTimelineScreen(Screen[None]):
    """One PostgreSQL session, statement by statement."""

    BINDINGS = [
        Binding("n", "move(1)", "Next"),
        Binding("p", "move(-1)", "Prev"),
        Binding("h", "find('hold')", "Hold"),
        Binding("d", "find('deny')", "Deny"),
        Binding("e", "find('error')", "Error"),
        Binding("slash", "search", "Search"),
        Binding("M", "review_masks", "Masks"),
        Binding("home", "select(0)", "First", show=False, priority=True),
        Binding("end", "select(-1)", "Last", show=False, priority=True),
        Binding("escape", "back", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]

    def __init__(
        self,
        title: str,
        timeline: SqlTimeline,
        *,
        masks_label: str = "",
        selected: int = 0,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.timeline = timeline
        self.masks_label = masks_label
        self.initial = selected
        self.last_search = ""

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, id="replay-title")
        table: DataTable[Any] = DataTable(id="statements", cursor_type="row", zebra_stripes=True)
        yield table
        with VerticalScroll(id="statement-detail"):
            yield Static("", id="statement-text")
            rows: DataTable[Any] = DataTable(id="statement-rows", show_cursor=False)
            yield rows
        yield Static("", id="replay-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#statements", DataTable)
        for column in STATEMENT_COLUMNS:
            table.add_column(column, key=column)
        sql_width = max(MIN_SQL_PREVIEW, self.app.size.width - OTHER_COLUMNS_WIDTH)
        for statement in self.timeline.statements:
            error = f"{statement.sqlstate} {statement.error}" if statement.error else ""
            table.add_row(
                str(statement.index + 1),
                format_time(statement.time_us),
                format_duration(statement.elapsed_us),
                verdict_text(statement),
                rows_text(statement),
                one_line(statement.sql, sql_width),
                Text(one_line(error, ERROR_PREVIEW), style="red"),
                key=str(statement.index),
            )
        table.focus()
        if self.timeline.statements:
            self.select(min(self.initial, len(self.timeline) - 1))
        else:
            self.query_one("#statement-text", Static).update(
                "No SQL statements were recorded in this session."
            )
            self._show_status()

    # -- showing ------------------------------------------------------------------------------

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#statements", DataTable)

    @property
    def current(self) -> int:
        return self.table.cursor_row

    def select(self, index: int) -> None:
        """Put the cursor on statement `index` (its row) and show its details."""
        self.table.move_cursor(row=index)
        self._show(index)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "statements":
            self._show(event.cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "statements":
            self.query_one("#statement-detail", VerticalScroll).focus()

    def _show(self, index: int) -> None:
        if not 0 <= index < len(self.timeline):
            return
        statement = self.timeline.statements[index]
        self.query_one("#statement-text", Static).update(describe(statement, len(self.timeline)))
        rows = self.query_one("#statement-rows", DataTable)
        rows.clear(columns=True)
        rows.display = bool(statement.sample)
        if statement.sample:
            width = max(len(row) for row in statement.sample)
            names = statement.columns + [
                f"column {n}" for n in range(len(statement.columns) + 1, width + 1)
            ]
            rows.add_columns(*names[:width])
            for row in statement.sample:
                cells = [show_value(v) for v in row]
                rows.add_row(*(cells + [""] * (width - len(cells))))
        self.query_one("#statement-detail", VerticalScroll).scroll_home(animate=False)
        self._show_status()

    def _show_status(self) -> None:
        timeline = self.timeline
        count = len(timeline)
        at = f"statement {self.current + 1}/{count}" if count else "no statements"
        errors = timeline.count("error")
        parts = [
            at,
            f"{timeline.count('hold')} held",
            f"{timeline.count('deny')} denied",
            f"{errors} error{'s' if errors != 1 else ''}",
        ]
        if self.masks_label:
            parts.append(f"masks: {self.masks_label} applied")
        self.query_one("#replay-status", Static).update("   ".join(parts))

    # -- keys ---------------------------------------------------------------------------------

    def action_move(self, step: int) -> None:
        target = self.current + step
        if not 0 <= target < len(self.timeline):
            self.app.bell()
            return
        self.select(target)

    def action_select(self, index: int) -> None:
        if self.timeline.statements:
            self.select(index % len(self.timeline))

    def action_find(self, kind: str) -> None:
        found = self.timeline.find(self.current, kind)
        if found is None:
            self.notify(f"No {KIND_NAMES[kind]} after this one.")
            return
        self.select(found)

    def action_search(self) -> None:
        def found(text: str | None) -> None:
            if not text:
                return
            self.last_search = text
            index = self.timeline.search(text, self.current)
            if index is None:
                self.notify(f"No statement contains {text!r}.", severity="warning")
                return
            self.select(index)

        self.app.push_screen(SearchDialog("text to find in the SQL"), found)

    def action_back(self) -> None:
        if self.table.has_focus:
            self.app.pop_screen()
        else:
            self.table.focus()

    def action_review_masks(self) -> None:
        self.app.push_screen(
            MaskReviewScreen(self.title_text, review_sql(self.timeline), self.masks_label),
            self.show_mask,
        )

    def show_mask(self, entry: MaskEntry | None) -> None:
        if entry is not None and entry.statement is not None:
            self.select(entry.statement)
            self.table.focus()
