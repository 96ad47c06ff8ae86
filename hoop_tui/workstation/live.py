"""Live sessions: who is connected to what, since when, bytes moved; watch one rendered in real
time (read-only), or end it with a reason.

The screens ask through Messages (`LiveScreen.RefreshRequested`, `WatchRequested`,
`EndRequested`, `WatchScreen.Stopped`); the app, which holds the gateway connection, answers
them (hoop_tui/workstation/app.py)."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from hoop_tui.workstation.replay import TerminalView
from replay.terminal import Terminal

COLUMNS = ("SESSION", "USER", "TARGET", "CLIENT", "SINCE", "IN", "OUT")
REFRESH_S = 2.0


def _since(started: float | None) -> str:
    if started is None:
        return "-"
    seconds = int(time.time() - started)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class EndDialog(ModalScreen[str | None]):
    """Ask why a session is being ended; dismissed with the reason, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, session: dict[str, Any]) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(
                f"End {self.session['user']}'s session on {self.session['target']}?",
                id="dialog-title",
            )
            yield Input(placeholder="reason (required; the user sees it)", id="reason")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())
        else:
            self.notify("Ending a session needs a reason.", severity="error")


class WatchScreen(Screen[None]):
    """One live session's terminal, as its user sees it now: its screen when watching began
    (rendered by the gateway from the recording so far), then every byte of output after."""

    BINDINGS = [Binding("escape,q", "stop", "Stop watching")]

    class Stopped(Message):
        """The person stopped watching: unsubscribe, and close this screen."""

    def __init__(self, session: dict[str, Any], screen: list[str] | None = None) -> None:
        super().__init__()
        self.session = session
        lines = screen or []
        self.terminal = Terminal(max([120, *map(len, lines)]), max(40, len(lines)))
        if lines:  # text only: the colours of the screen so far are not sent
            self.terminal.feed(b"\x1b[H\x1b[2J" + "\r\n".join(lines).encode())

    def compose(self) -> ComposeResult:
        yield Static(
            f"watching {self.session['user']} -> {self.session['target']} (read-only)",
            id="replay-title",
        )
        yield TerminalView(self.terminal, id="terminal")
        yield Footer()

    def output(self, data: bytes) -> None:
        self.terminal.feed(data)
        self.query_one(TerminalView).show(self.terminal)

    def action_stop(self) -> None:
        self.post_message(self.Stopped())


class LiveScreen(Screen[None]):
    """Live sessions, refreshed every couple of seconds; w watches, e ends."""

    BINDINGS = [
        Binding("w", "watch", "Watch"),
        Binding("e", "end", "End session"),
    ]

    class RefreshRequested(Message):
        """The list is due: ask the gateway for it, then `show_sessions`."""

    class WatchRequested(Message):
        def __init__(self, session: dict[str, Any]) -> None:
            super().__init__()
            self.session = session

    class EndRequested(Message):
        def __init__(self, session_id: str, reason: str) -> None:
            super().__init__()
            self.session_id = session_id
            self.reason = reason

    def __init__(self, *, remote: bool = False) -> None:
        super().__init__()
        self.remote = remote  # the remote console: ending sessions is not offered
        self.sessions: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Live sessions", id="queue-title")
        table: DataTable[Any] = DataTable(id="live", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#live", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.set_interval(REFRESH_S, self.refresh_sessions)

    def on_screen_resume(self) -> None:
        self.refresh_sessions()

    def refresh_sessions(self) -> None:
        self.post_message(self.RefreshRequested())

    def show_sessions(self, sessions: list[dict[str, Any]]) -> None:
        table = self.query_one("#live", DataTable)
        selected = self.selected()
        self.sessions = {row["id"]: row for row in sessions}
        table.clear()
        for row in sessions:
            table.add_row(
                row["id"][:8],
                _who(row),
                row["target"],
                row["client"],
                _since(row["started_at"]),
                str(row["bytes_in"]),
                str(row["bytes_out"]),
                key=row["id"],
            )
        if selected is not None and selected["id"] in self.sessions:
            table.move_cursor(row=table.get_row_index(selected["id"]))

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#live", DataTable)
        if not self.sessions or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.sessions.get(str(key))

    def action_watch(self) -> None:
        session = self.selected()
        if session is None:
            self.notify("No live session to watch.")
            return
        self.post_message(self.WatchRequested(session))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # ending a session stays with the operators on the gateway host: not offered remotely
        return not (action == "end" and self.remote)

    def action_end(self) -> None:
        session = self.selected()
        if session is None:
            self.notify("No live session to end.")
            return

        def ended(reason: str | None) -> None:
            if reason:
                self.post_message(self.EndRequested(session["id"], reason))

        self.app.push_screen(EndDialog(session), ended)


def _who(row: dict[str, Any]) -> str:
    """The caller, and for an OIDC agent whose it is: `ci-bot (agent of alice)`."""
    if row.get("caller_kind") == "agent":
        return f"{row['user']} (agent of {row.get('owner', '?')})"
    return str(row["user"])
