"""The recordings browser: the session catalogue with filters. Enter opens the replay: the
terminal for SSH and local sessions, the statement timeline for PostgreSQL ones; `t` the
transcript, `M` the masking review, `f` a search across recordings. With today's mask rules
(`CurrentMasks`) every view shows old recordings through them."""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, RichLog, Static

from hoop_tui.workstation.mask_review import MaskReviewScreen
from hoop_tui.workstation.replay import PlaybackScreen, SearchDialog
from hoop_tui.workstation.search import SearchResultsScreen
from hoop_tui.workstation.sql_timeline import SqlTimelineScreen
from replay.export import export_text
from replay.mask_review import MaskEntry, review_session
from replay.masking_view import CurrentMasks
from replay.player import Player
from replay.search import index_missing
from replay.sql_timeline import build_sql_timeline
from storage.catalogue import SessionQuery, SessionRow
from storage.reader import RecordingError, RecordingReader
from storage.search import SearchIndex
from storage.verify import recording_problem

TERMINAL_PROTOCOLS = frozenset({"ssh", "local", "asciicast"})
SQL_PROTOCOLS = frozenset({"postgres"})
COLUMNS = ("STARTED (UTC)", "USER", "TARGET", "PROTOCOL", "EVENTS", "DENY", "HOLD", "END")


def _started(row: SessionRow) -> str:
    return datetime.fromtimestamp(row.started_at_us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _title(row: SessionRow) -> str:
    return f"{row.user} -> {row.target}  {_started(row)}  ({row.protocol})"


class TranscriptScreen(Screen[None]):
    """A recording's readable transcript (commands, verdicts, holds, output)."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, row: SessionRow, masks: CurrentMasks | None = None) -> None:
        super().__init__()
        self.row = row
        self.masks = masks

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"{self.row.user} -> {self.row.target}  {_started(self.row)}", id="title")
        yield RichLog(id="transcript", wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one("#transcript", RichLog)
        out = io.StringIO()
        try:
            with RecordingReader.open(Path(self.row.path)) as reader:
                export_text(self.masks.view(reader) if self.masks else reader, out)
                problem = reader.describe_problem()
        except (OSError, RecordingError) as exc:
            log.write(f"cannot read {self.row.path}: {exc}")
            return
        log.write(out.getvalue())
        if problem:
            log.write(f"\n[warning] {problem}")


class RecordingsScreen(Screen[None]):
    """Every catalogued session, newest first; type in the filter to narrow it."""

    BINDINGS = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("r", "reload", "Reload"),
        Binding("t", "transcript", "Transcript"),
        Binding("M", "review_masks", "Masks"),
        Binding("f", "find", "Search all"),
    ]

    def __init__(self, data_dir: Path, masks: CurrentMasks | None = None) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.masks = masks if masks is not None and masks.active else None
        self.rows: dict[str, SessionRow] = {}
        # why a row's recording cannot be taken for it (missing, mismatch): shown, never hidden
        self.problems: dict[str, str | None] = {}
        self.catalogue: Any = None  # what the rows were read from (the fleet's, with [state])

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: user, target, protocol; deny, hold", id="filter")
        table: DataTable[Any] = DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#sessions", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.action_reload()
        table.focus()  # the keys act on sessions; `/` moves to the filter

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#sessions", DataTable).focus()

    def action_reload(self) -> None:
        from proxy.fleet.catalogue import FleetCatalogue, config_of, open_catalogue

        # with [state], the fleet's catalogue: every instance's sessions (their recordings in
        # the object store replay from here too)
        named = getattr(self.app, "config", None)
        config = config_of(self.data_dir, named if isinstance(named, Path) else None)
        catalogue = open_catalogue(self.data_dir, config)
        assert catalogue is not None
        self.catalogue = catalogue
        remote = isinstance(catalogue, FleetCatalogue) or (
            config is not None and config.recordings is not None
        )
        if remote:  # a database or an object store may be slow: never on the UI thread
            self._load_remote(catalogue)
        else:  # this data directory's files: fast, and the table is full at once
            self._loaded(*_rows_of(catalogue))

    @work(thread=True, exclusive=True, group="reload")
    def _load_remote(self, catalogue: Any) -> None:
        loaded = _rows_of(catalogue)
        self.app.call_from_thread(self._loaded, *loaded)

    def _loaded(
        self, rows: dict[str, SessionRow], problems: dict[str, str | None], warning: str | None
    ) -> None:
        self.rows, self.problems = rows, problems
        if warning:
            self.notify(f"{warning}; only this data directory's sessions are shown",
                        severity="warning")  # fmt: skip
        self._fill(self.query_one("#filter", Input).value)

    def _fill(self, text: str) -> None:
        table = self.query_one("#sessions", DataTable)
        table.clear()
        words = text.lower().split()
        for row in self.rows.values():
            if all(self._matches(row, word) for word in words):
                cells = (
                    _started(row),
                    row.user,
                    row.target,
                    row.protocol,
                    str(row.events),
                    str(row.denies),
                    str(row.holds),
                    self._end(row),
                )
                # Plain Text, never markup: an end reason carries words from the target or
                # the client ("[...]" would be read as styling, or fail to parse), and
                # parsing 16,000 cells as markup was a third of the start-up time.
                table.add_row(*(Text(cell) for cell in cells), key=row.id)

    def _end(self, row: SessionRow) -> str:
        problem = self.problems.get(row.id)
        end = row.end_reason or "live"
        return f"RECORDING {problem} | {end}" if problem else end

    @staticmethod
    def _matches(row: SessionRow, word: str) -> bool:
        if word == "deny":
            return row.denies > 0
        if word == "hold":
            return row.holds > 0
        return any(word in field.lower() for field in (row.user, row.target, row.protocol))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._fill(event.value)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def _selected(self) -> SessionRow | None:
        table = self.query_one("#sessions", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.rows.get(str(key))

    @property
    def masks_label(self) -> str:
        return self.masks.label if self.masks else ""

    def action_transcript(self) -> None:
        row = self._selected()
        if row is not None:
            self.app.push_screen(TranscriptScreen(row, self.masks))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        row = self.rows.get(str(event.row_key.value))
        if row is not None:
            self.open_session(row)

    def open_session(
        self, row: SessionRow, at: MaskEntry | None = None, at_us: int | None = None
    ) -> None:
        """The view that fits the session's protocol, showing `at` (a masked value) or the
        moment `at_us` (a search hit) when given."""
        problem = self.problems.get(row.id)
        if problem:
            self.notify(f"this row's recording: {problem}", severity="warning", timeout=10)
        if row.protocol in TERMINAL_PROTOCOLS:
            self.notify("Opening the replay (indexing a long recording takes a moment)...")
            self.open_replay(row, at.event_index if at else None, at_us)
        elif row.protocol in SQL_PROTOCOLS:
            self.open_sql_timeline(row, at.statement if at else None, at_us)
        else:
            self.app.push_screen(TranscriptScreen(row, self.masks))

    def _open_at(self, row: SessionRow, at_us: int) -> None:
        self.open_session(row, at_us=at_us)

    def _open(self, row: SessionRow) -> Any:
        """The recording as the views read it: through today's masks when there are any."""
        reader = RecordingReader.open(Path(row.path))
        return self.masks.view(reader) if self.masks else reader

    def _failed(self, what: str, exc: Exception) -> None:
        self.app.call_from_thread(self.notify, f"cannot {what}: {exc}", severity="error")

    @work(thread=True, exclusive=True, group="replay")
    def open_replay(
        self, row: SessionRow, event_index: int | None = None, at_us: int | None = None
    ) -> None:
        """Index (or load the cached index of) a recording off the UI thread."""
        try:
            player = Player.open(self._open(row))
        except (OSError, RecordingError) as exc:
            self._failed("replay", exc)
            return
        if event_index is not None:
            player.seek_event(event_index)
        elif at_us is not None:
            player.seek(at_us)
        screen = PlaybackScreen(Path(row.path), _title(row), player, masks_label=self.masks_label)
        self.app.call_from_thread(self.app.push_screen, screen)

    @work(thread=True, exclusive=True, group="replay")
    def open_sql_timeline(
        self, row: SessionRow, statement: int | None = None, at_us: int | None = None
    ) -> None:
        try:
            with RecordingReader.open(Path(row.path)) as reader:
                masker = self.masks.masker_for(reader.header) if self.masks else None
                timeline = build_sql_timeline(reader.events(), masker)
        except (OSError, RecordingError) as exc:
            self._failed("replay", exc)
            return
        if statement is None and at_us is not None:  # the last statement sent by then
            started = [i for i, s in enumerate(timeline.statements) if s.time_us <= at_us]
            statement = started[-1] if started else 0
        screen = SqlTimelineScreen(
            _title(row), timeline, masks_label=self.masks_label, selected=statement or 0
        )
        self.app.call_from_thread(self.app.push_screen, screen)

    def action_find(self) -> None:
        def search(words: str | None) -> None:
            if words:
                self.find(words)

        self.app.push_screen(SearchDialog("words to find in every recording"), search)

    @work(thread=True, exclusive=True, group="search")
    def find(self, words: str) -> None:
        """Index what closed unindexed, then search, off the UI thread."""
        try:
            # the fleet's catalogue indexes other instances' sessions too (read from the store)
            index_missing(self.data_dir, None, self.catalogue)
            hits = SearchIndex.in_data_dir(self.data_dir).search(words, sessions=self.rows)
        except (OSError, ValueError, sqlite3.Error) as exc:
            self._failed("search", exc)
            return
        if not hits:
            self.app.call_from_thread(self.notify, f"nothing matches {words!r}")
            return
        screen = SearchResultsScreen(words, hits, self.rows, self._open_at)
        self.app.call_from_thread(self.app.push_screen, screen)

    def action_review_masks(self) -> None:
        row = self._selected()
        if row is not None:
            self.load_mask_review(row)

    @work(thread=True, exclusive=True, group="replay")
    def load_mask_review(self, row: SessionRow) -> None:
        try:
            with RecordingReader.open(Path(row.path)) as reader:
                masker = self.masks.masker_for(reader.header) if self.masks else None
                review = review_session(reader.header, reader.events(), masker)
        except (OSError, RecordingError) as exc:
            self._failed("review the masks", exc)
            return

        def chosen(entry: MaskEntry | None) -> None:
            if entry is not None:
                self.open_session(row, entry)

        screen = MaskReviewScreen(_title(row), review, self.masks_label)
        self.app.call_from_thread(self.app.push_screen, screen, chosen)


def _rows_of(
    catalogue: Any,
) -> tuple[dict[str, SessionRow], dict[str, str | None], str | None]:
    """The catalogue's sessions, what is wrong with each one's recording (its header is read:
    over the network for the object store's), and why only local rows came, if so."""
    rows = {row.id: row for row in catalogue.find_sessions(SessionQuery(limit=5000))}
    problems = {row.id: recording_problem(row) for row in rows.values()}
    return rows, problems, getattr(catalogue, "problem", None)
