"""Search across recordings from the workstation: `f` in the recordings browser asks for words
(the replay's own search dialog), lists the hits (session, moment, kind, context), and Enter
opens the replay at that moment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from proxy.holds.console import printable
from storage.catalogue import SessionRow
from storage.search import Hit

COLUMNS = ("SESSION", "AT", "WHO", "KIND", "CONTEXT")


class SearchResultsScreen(Screen[None]):
    """The hits of one search; Enter opens the session at the hit through `open_at` (the
    recordings browser's `open_session`), which this screen does not otherwise know."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(
        self,
        words: str,
        hits: list[Hit],
        rows: dict[str, SessionRow],
        open_at: Callable[[SessionRow, int], None],
    ) -> None:
        super().__init__()
        self.words = words
        self.hits = hits
        self.rows = rows
        self._open_at = open_at

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"{len(self.hits)} hit(s) for {self.words!r}"), id="search-title")
        table: DataTable[Any] = DataTable(id="hits", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#hits", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        for number, hit in enumerate(self.hits):
            row = self.rows[hit.session_id]
            cells = (
                hit.session_id[:8],
                f"+{hit.t_us / 1e6:.1f}s",
                f"{row.user}@{row.target}",
                hit.kind,
                printable(hit.context),
            )
            table.add_row(*(Text(cell) for cell in cells), key=str(number))
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        hit = self.hits[int(str(event.row_key.value))]
        self._open_at(self.rows[hit.session_id], hit.t_us)
