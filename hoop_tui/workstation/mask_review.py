"""The masking review of one session: counts per rule, then every masking act (when, which
rule, where, how long, its stable token). Enter on an act closes the review and returns it, so
the screen that opened it can show that point of the replay."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from replay.mask_review import MaskEntry, MaskReview
from storage.reader import format_time

RULE_COLUMNS = ("RULE", "RECORDED", "TODAY'S RULES")
ENTRY_COLUMNS = ("AT", "RULE", "WHERE", "LENGTH", "TOKEN", "FOUND BY")


class MaskReviewScreen(Screen[MaskEntry | None]):
    """What was masked in a session; dismissed with the chosen act, or None."""

    BINDINGS = [
        Binding("escape,q", "dismiss(None)", "Back"),
        Binding("home", "cursor(0)", "First", show=False, priority=True),
        Binding("end", "cursor(-1)", "Last", show=False, priority=True),
    ]

    def __init__(self, title: str, review: MaskReview, masks_label: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.review = review
        self.masks_label = masks_label

    def compose(self) -> ComposeResult:
        yield Static(f"Masks: {self.title_text}", id="replay-title")
        rules: DataTable[Any] = DataTable(id="mask-rules", show_cursor=False)
        yield rules
        entries: DataTable[Any] = DataTable(id="mask-entries", cursor_type="row")
        yield entries
        yield Static("", id="replay-status")
        yield Footer()

    def on_mount(self) -> None:
        rules = self.query_one("#mask-rules", DataTable)
        rules.add_columns(*RULE_COLUMNS)
        for count in self.review.counts():
            rules.add_row(count.rule, str(count.recorded), str(count.today))
        entries = self.query_one("#mask-entries", DataTable)
        entries.add_columns(*ENTRY_COLUMNS)
        for number, entry in enumerate(self.review.entries):
            entries.add_row(
                format_time(entry.time_us),
                entry.rule,
                entry.where,
                str(entry.length),
                entry.token,
                Text("today's rules", style="yellow") if entry.today else "recording",
                key=str(number),
            )
        entries.focus()
        total = len(self.review.entries)
        if total:
            rule_count = len(self.review.counts())
            status = (
                f"{total} masked value{'s' if total != 1 else ''} by {rule_count} "
                f"rule{'s' if rule_count != 1 else ''}   enter: show it in the replay"
            )
        else:
            status = "Nothing was masked in this session."
        if self.masks_label:
            status += f"   masks: {self.masks_label} applied"
        self.query_one("#replay-status", Static).update(status)

    def action_cursor(self, row: int) -> None:
        table = self.query_one("#mask-entries", DataTable)
        if table.row_count:
            table.move_cursor(row=row % table.row_count)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "mask-entries":
            self.dismiss(self.review.entries[int(str(event.row_key.value))])
