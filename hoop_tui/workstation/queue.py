"""The approval queue: held commands arriving live, decided with a key and a reason."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from proxy.console import printable

COLUMNS = ("ID", "WHO", "WHERE", "COMMAND", "RULE", "VOTES", "AGE", "LEFT")


def printable_lines(text: str) -> str:
    """Each line of `text` through `printable`, the line breaks kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class DecisionDialog(ModalScreen[tuple[bool, str] | None]):
    """Approve or deny one hold, with a reason; dismissed with (approve, reason) or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, hold: dict[str, Any], approve: bool) -> None:
        super().__init__()
        self.hold = hold
        self.approve = approve

    def compose(self) -> ComposeResult:
        verb = "Approve" if self.approve else "Deny"
        with Vertical(id="dialog"):
            yield Label(f"{verb} {self.hold['id']}?", id="dialog-title")
            yield Static(
                Text(
                    f"{self.hold['user']}@{self.hold['target']}: "
                    f"{printable(self.hold['command'])}\nrule {self.hold['rule']}"
                ),
                id="dialog-command",
            )
            placeholder = "reason (optional)" if self.approve else "reason (required)"
            yield Input(placeholder=placeholder, id="reason")
            yield Button(verb, variant="success" if self.approve else "error", id="confirm")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self._confirm()

    def _confirm(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not self.approve and not reason:
            self.notify("A denial needs a reason.", severity="error")
            return
        self.dismiss((self.approve, reason))

    def action_cancel(self) -> None:
        self.dismiss(None)


class QueueScreen(Screen[None]):
    """Pending holds, newest last; `a` approves, `d` denies the highlighted one."""

    BINDINGS = [
        Binding("a", "decide(True)", "Approve"),
        Binding("d", "decide(False)", "Deny"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.holds: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Held commands waiting for a decision", id="queue-title")
        table: DataTable[Any] = DataTable(id="holds", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="hold-detail")
        yield Static("", id="hold-screen")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#holds", DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.set_interval(1.0, self._tick)

    def replace_all(self, holds: list[dict[str, Any]]) -> None:
        self.holds = {hold["id"]: hold for hold in holds if hold["status"] == "pending"}
        table = self.query_one("#holds", DataTable)
        table.clear()
        for hold in self.holds.values():
            table.add_row(*self._cells(hold), key=hold["id"])
        self._show_detail()

    def hold_changed(self, hold: dict[str, Any]) -> None:
        """A pushed event: add, update or drop one row."""
        table = self.query_one("#holds", DataTable)
        if hold["status"] != "pending":
            if self.holds.pop(hold["id"], None) is not None:
                table.remove_row(hold["id"])
        elif hold["id"] in self.holds:
            self.holds[hold["id"]] = hold
            for column, value in zip(COLUMNS, self._cells(hold), strict=True):
                table.update_cell(hold["id"], column, value)
        else:
            self.holds[hold["id"]] = hold
            table.add_row(*self._cells(hold), key=hold["id"])
        self._show_detail()

    def _cells(self, hold: dict[str, Any]) -> tuple[Any, ...]:
        now = time.time()
        votes = len([d for d in hold["decisions"] if d["approve"]])
        left = hold["expires_at"] - now
        return (
            hold["id"],
            hold["user"],
            hold["target"],
            Text(printable(hold["command"]), style="bold"),
            hold["rule"],
            f"{votes}/{hold['approvals_needed']}",
            _duration(now - hold["created_at"]),
            Text(_duration(left), style="red" if left < 60 else ""),
        )

    def _tick(self) -> None:
        table = self.query_one("#holds", DataTable)
        for hold_id, hold in self.holds.items():
            cells = self._cells(hold)
            table.update_cell(hold_id, "AGE", cells[6])
            table.update_cell(hold_id, "LEFT", cells[7])

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#holds", DataTable)
        if not self.holds or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.holds.get(str(key))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()
        hold = self.selected()
        if hold is not None:
            self.app.load_hold_screen(hold)  # type: ignore[attr-defined]

    def show_screen(self, hold_id: str, lines: list[str]) -> None:
        """The requester's terminal as it looks now, under the hold's details."""
        hold = self.selected()
        if hold is None or hold["id"] != hold_id:
            return
        while lines and not lines[-1]:
            lines = lines[:-1]
        shown = "\n".join(lines[-12:])
        self.query_one("#hold-screen", Static).update(  # the requester's own output: text
            Text(f"{hold['user']}'s terminal now:\n{printable_lines(shown)}") if shown else ""
        )

    def _show_detail(self) -> None:
        hold = self.selected()
        detail = self.query_one("#hold-detail", Static)
        if hold is None:
            detail.update("No held commands. New ones appear here as they arrive.")
            self.query_one("#hold-screen", Static).update("")  # nobody's terminal to show
            return
        decided = ", ".join(
            f"{d['by']} {'approved' if d['approve'] else 'denied'}" for d in hold["decisions"]
        )
        detail.update(  # the command is the requester's text: never markup, controls escaped
            Text(
                f"{hold['id']}: {hold['user']} on {hold['target']} "
                f"(session {hold['session_id'][:8]})\n"
                f"  {printable(hold['command'])}\n"
                f"  held by rule {hold['rule']}; approvers: {', '.join(hold['approvers'])}"
                + (f"; so far: {decided}" if decided else "")
            )
        )

    def action_decide(self, approve: bool) -> None:
        hold = self.selected()
        if hold is None:
            self.notify("Nothing to decide.")
            return

        def decided(answer: tuple[bool, str] | None) -> None:
            if answer is not None:
                self.app.decide_hold(hold["id"], *answer)  # type: ignore[attr-defined]

        self.app.push_screen(DecisionDialog(hold, approve), decided)
