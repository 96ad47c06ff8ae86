"""Replay in the workstation: the recorded terminal drawn cell by cell, a timeline of commands,
holds, decisions and masks, and the player's controls on single keys. `M` opens the session's
masking review; choosing an act there shows the screen where it was masked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.screen import ModalScreen, Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Input, Static

from hoop_tui.workstation.mask_review import MaskReviewScreen
from replay.asciicast import CastError
from replay.mask_review import MaskEntry, review_session
from replay.masking_view import MaskedSource
from replay.player import (
    COMMAND_EVENTS,
    DECISION_EVENTS,
    HOLD_EVENTS,
    MASK_EVENTS,
    SPEEDS,
    Playback,
    Player,
    SearchHit,
    source_events,
)
from replay.sources import open_source
from replay.terminal import Terminal
from storage.reader import RecordingError, format_time

FRAME_S = 1 / 30
HIGHLIGHT = Style(bgcolor="yellow", color="black")
# What the timeline's letters mean, shown under it.
LEGEND = "c command  x exec  v verdict  H hold  D decision  m mask"
MARKER_GLYPHS = {
    "command": "c",
    "exec": "x",
    "hold_requested": "H",
    "hold_decided": "D",
    "verdict": "v",
    "mask": "m",
}


def _colour(name: str) -> str | None:
    if name == "default":
        return None
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return f"#{name}"
    return name.replace("bright", "bright_") if name.startswith("bright") else name


class TerminalView(ScrollView):
    """Draws a replay Terminal with the Line API; only changed lines are redrawn."""

    DEFAULT_CSS = "TerminalView { background: black; }"
    can_focus = False  # the replay keys (home, end, arrows) belong to the screen

    def __init__(self, terminal: Terminal, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.terminal = terminal
        self._styles: dict[tuple[Any, ...], Style] = {}
        self.highlight = ""  # a search's text, marked wherever the screen shows it

    def mark(self, text: str) -> None:
        self.highlight = text
        self.refresh()

    def show(self, terminal: Terminal) -> None:
        """Show `terminal`; a new terminal object (a keyframe was restored) redraws all."""
        screen = terminal.screen
        size = Size(terminal.columns, terminal.lines)
        if terminal is not self.terminal or self.virtual_size != size:
            self.terminal = terminal
            self.virtual_size = size
            self.refresh()
        else:
            for y in screen.dirty:
                self.refresh(Region(0, y - int(self.scroll_offset.y), self.size.width, 1))
        screen.dirty.clear()
        self._follow_cursor(screen.cursor.y)

    def _follow_cursor(self, row: int) -> None:
        """With no scrollbars, a terminal taller than the view scrolls to keep the cursor's
        row in sight, as the recorded user saw it."""
        height = self.size.height
        top = int(self.scroll_offset.y)
        if height and not top <= row < top + height:
            self.scroll_to(y=max(0, row - height + 1), animate=False)

    def on_mount(self) -> None:
        self.virtual_size = Size(self.terminal.columns, self.terminal.lines)

    def _style(self, cell: Any) -> Style:
        key = (cell.fg, cell.bg, cell.bold, cell.italics, cell.underscore, cell.reverse)
        style = self._styles.get(key)
        if style is None:
            style = Style(
                color=_colour(cell.fg),
                bgcolor=_colour(cell.bg),
                bold=cell.bold,
                italic=cell.italics,
                underline=cell.underscore,
                reverse=cell.reverse,
            )
            self._styles[key] = style
        return style

    def render_line(self, y: int) -> Strip:
        row = y + int(self.scroll_offset.y)
        terminal = self.terminal
        if row >= terminal.lines:
            return Strip.blank(self.size.width)
        screen = terminal.screen
        line = screen.buffer[row]
        cursor = screen.cursor
        segments: list[Segment] = []
        columns = terminal.columns
        marked = self._marked_columns(line, columns)
        x = 0
        while x < columns:
            cell = line[x]
            text = cell.data or " "
            style = self._style(cell)
            if x in marked:
                style = style + HIGHLIGHT
            if row == cursor.y and x == cursor.x and not cursor.hidden:
                style = style + Style(reverse=not cell.reverse)
            segments.append(Segment(text, style))
            x += 2 if (x + 1 < columns and line[x + 1].data == "") else 1
        return Strip(segments).crop(
            int(self.scroll_offset.x), int(self.scroll_offset.x) + self.size.width
        )

    def _marked_columns(self, line: Any, columns: int) -> set[int]:
        """The columns of `line` inside an occurrence of the search's text."""
        if not self.highlight:
            return set()
        chars: list[str] = []
        places: list[int] = []
        for x in range(columns):
            data = line[x].data
            if data:  # the right half of a wide character holds ""
                chars.append(data)
                places.append(x)
        text = "".join(chars)
        marked: set[int] = set()
        start = text.find(self.highlight)
        while start >= 0:
            marked.update(places[start : start + len(self.highlight)])
            start = text.find(self.highlight, start + 1)
        return marked


class SearchDialog(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, placeholder: str = "text to find on screen") -> None:
        super().__init__()
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        yield Input(placeholder=self.placeholder, id="search")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value or None)


def _search(player: Player, text: str, start: int, direction: int) -> SearchHit | None:
    """The first hit at or after event `start` (direction 1), or the last one before it (-1):
    the player searches forward only, so a backward search walks the hits from the start."""
    if direction > 0:
        return player.search(text, max(0, start))
    last: SearchHit | None = None
    hit = player.search(text, 0)
    while hit is not None and hit.position < start:
        last = hit
        hit = player.search(text, hit.position + 1)
    return last


class PlaybackScreen(Screen[None]):
    """One recording, replayed."""

    BINDINGS = [
        Binding("space", "toggle_play", "Play/pause"),
        Binding("right", "step(1)", "Step"),
        Binding("left", "step(-1)", "Back"),
        Binding("full_stop", "jump(5)", "+5s"),
        Binding("comma", "jump(-5)", "-5s"),
        Binding("greater_than_sign", "jump(60)", "+1m", show=False),
        Binding("less_than_sign", "jump(-60)", "-1m", show=False),
        Binding("plus", "speed(1)", "Faster"),
        Binding("minus", "speed(-1)", "Slower"),
        Binding("n", "marker('command', 1)", "Next cmd"),
        Binding("p", "marker('command', -1)", "Prev cmd"),
        Binding("h", "marker('hold', 1)", "Next hold", show=False),
        Binding("d", "marker('decision', 1)", "Next decision", show=False),
        Binding("m", "marker('mask', 1)", "Next mask", show=False),
        Binding("home", "seek_start", "Start", show=False),
        Binding("end", "seek_end", "End", show=False),
        Binding("slash", "search", "Search"),
        Binding("right_square_bracket", "search_again(1)", "Next hit"),
        Binding("left_square_bracket", "search_again(-1)", "Prev hit"),
        Binding("z", "zoom", "Zoom"),
        Binding("M", "review_masks", "Masks"),
        Binding("escape,q", "app.pop_screen", "Back"),
    ]
    GROUPS = {
        "command": COMMAND_EVENTS,
        "hold": HOLD_EVENTS,
        "decision": DECISION_EVENTS,
        "mask": MASK_EVENTS,
    }

    def __init__(self, path: Path, title: str, player: Player, *, masks_label: str = "") -> None:
        super().__init__()
        self.path = path
        self.title_text = title
        self.player = player
        self.masks_label = masks_label  # today's rules the player's source applies, if any
        self.playback = Playback(player, idle_limit_s=2.0)
        self._timer: Any = None
        self.searched = ""  # the last search, for ] and [

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, id="replay-title")
        yield TerminalView(self.player.terminal, id="terminal")
        yield Static("", id="timeline")
        yield Static("", id="replay-status")
        yield Footer()

    def on_mount(self) -> None:
        self._timer = self.set_interval(FRAME_S, self._frame, pause=True)
        self._redraw()

    @property
    def view(self) -> TerminalView:
        return self.query_one("#terminal", TerminalView)

    def _redraw(self) -> None:
        player = self.player
        self.view.show(player.terminal)
        duration = max(1, player.duration_us)
        state = "paused" if self.playback.paused else "playing"
        masks = f"   masks: {self.masks_label} applied" if self.masks_label else ""
        status = (
            f"{format_time(player.time_us)} / {format_time(duration)}   event "
            f"{player.position}/{player.event_count}   {self.playback.speed:g}x   {state}{masks}"
        )
        if len(status) + len(LEGEND) + 4 <= self.size.width:
            status = f"{status}    {LEGEND}"
        self.query_one("#replay-status", Static).update(status)
        width = max(10, self.size.width - 2)
        cells = ["-"] * width
        for marker in player.markers:
            at = min(width - 1, marker.time_us * width // duration)
            cells[at] = MARKER_GLYPHS.get(marker.type.name.lower(), "*")
        here = min(width - 1, player.time_us * width // duration)
        line = Text("".join(cells))
        line.stylize("reverse", here, here + 1)
        self.query_one("#timeline", Static).update(line)

    def _frame(self) -> None:
        if not self.playback.tick(time.monotonic()):
            self._timer.pause()
        self._redraw()

    def _moved(self) -> None:
        self.playback.sync(time.monotonic())
        self._redraw()

    def action_toggle_play(self) -> None:
        self.playback.toggle(time.monotonic())
        if self.playback.paused:
            self._timer.pause()
        else:
            self._timer.resume()
        self._redraw()

    def action_step(self, direction: int) -> None:
        moved = self.player.step_forward() if direction > 0 else self.player.step_back()
        if not moved:
            self.app.bell()  # a Screen has no bell of its own
        self._moved()

    def action_jump(self, seconds: int) -> None:
        self.player.jump(seconds * 1_000_000)
        self._moved()

    def action_speed(self, direction: int) -> None:
        index = SPEEDS.index(min(SPEEDS, key=lambda s: abs(s - self.playback.speed)))
        index = max(0, min(len(SPEEDS) - 1, index + direction))
        self.playback.set_speed(SPEEDS[index], time.monotonic())
        self._redraw()

    def action_marker(self, group: str, direction: int) -> None:
        types = self.GROUPS[group]
        found = (
            self.player.next_marker(types) if direction > 0 else self.player.previous_marker(types)
        )
        if found is None:
            self.notify(f"No {'next' if direction > 0 else 'previous'} {group}.")
        else:
            self.notify(found.label, title=format_time(found.time_us))
        self._moved()

    def action_seek_start(self) -> None:
        self.player.seek(0)
        self._moved()

    def action_seek_end(self) -> None:
        self.player.seek(self.player.duration_us)
        self._moved()

    def action_search(self) -> None:
        def found(text: str | None) -> None:
            if text:
                self.searched = text
                self._find(text, 1, start=self.player.position)

        self.app.push_screen(SearchDialog(), found)

    def action_search_again(self, direction: int) -> None:
        if not self.searched:
            self.notify("Search first with /.")
            return
        self._find(self.searched, direction, start=self.player.position + direction)

    def _find(self, text: str, direction: int, *, start: int) -> None:
        """The next (1) or previous (-1) screen showing `text` from event `start`, wrapping
        around the recording's end, with the text marked on screen."""
        player = self.player
        hit = _search(player, text, start, direction)
        wrapped = False
        if hit is None:
            hit = _search(player, text, 0 if direction > 0 else player.event_count, direction)
            wrapped = hit is not None
        if hit is None:
            self.view.mark("")
            self.notify(f"{text!r} is not shown anywhere in this recording.", severity="warning")
            return
        player.seek_position(hit.position)
        self.view.mark(text)
        if wrapped:
            self.notify("Search wrapped around the recording.", title=format_time(hit.time_us))
        self._moved()

    def action_zoom(self) -> None:
        """Only the recorded terminal: a session as large as this window fits without
        scrolling. z again brings back the title, timeline, status and keys."""
        self.toggle_class("-zoomed")

    def action_review_masks(self) -> None:
        self.load_mask_review()

    @work(thread=True, exclusive=True, group="mask-review")
    def load_mask_review(self) -> None:
        """Read the whole recording off the UI thread, through a reader of its own."""
        source = self.player.source
        masker = source.masker if isinstance(source, MaskedSource) else None
        try:
            opened = open_source(self.path)
        except (OSError, RecordingError, CastError) as exc:
            self.app.call_from_thread(self.notify, f"cannot read: {exc}", severity="error")
            return
        try:
            review = review_session(opened.header, source_events(opened), masker)
        except RecordingError as exc:
            self.app.call_from_thread(self.notify, f"cannot read: {exc}", severity="error")
            return
        finally:
            opened.close()
        screen = MaskReviewScreen(self.title_text, review, self.masks_label)
        self.app.call_from_thread(self.app.push_screen, screen, self.show_mask)

    def show_mask(self, entry: MaskEntry | None) -> None:
        """Show the screen where `entry` was masked."""
        if entry is None or entry.event_index is None:
            return
        self.player.seek_event(entry.event_index)
        self._moved()
        self.notify(f"{entry.rule}: {entry.where}", title=format_time(entry.time_us))
