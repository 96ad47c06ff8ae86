"""The approval queue: held commands arriving live, decided with a key and a reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from proxy.holds.console import printable
from storage.state import Hold, HoldStatus

# The time left comes first and the command last: a narrow terminal or a long command cuts the
# command (whole in the detail pane), never the columns an approver decides by.
COLUMNS = ("LEFT", "ID", "WHO", "WHERE", "VOTES", "AGE", "RULE", "COMMAND")
# Under this many seconds left a hold is marked as about to expire.
EXPIRING_S = 60
# A DataTable pads each cell by one on either side; its vertical scrollbar takes two.
CELL_PADDING = 2
SCROLLBAR_WIDTH = 2
MIN_COMMAND_WIDTH = 16
MIN_RULE_WIDTH = 8
# The requester's terminal beside a hold is asked for again every this many seconds.
SCREEN_REFRESH_TICKS = 2


def printable_lines(text: str) -> str:
    """Each line of `text` through `printable`, the line breaks kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def who(hold: Hold, caller: dict[str, Any] | None, client: bool = False) -> str:
    """The requester, and for an OIDC agent whose it is: `ci-bot (agent of alice)` (with its
    client id in the detail pane), as holds.list rows and pushed holds describe it."""
    if not caller or caller.get("caller_kind") != "agent":
        return hold.user
    owner = f"agent of {caller.get('owner') or '?'}"
    if client and caller.get("client_id"):
        owner += f", client {caller['client_id']}"
    return f"{hold.user} ({owner})"


def shorten(text: str, width: int) -> str:
    """`text` cut to `width` cells with an ellipsis, for a table cell."""
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def ending_notice(hold: Hold) -> str:
    """What an approver is told when a hold leaves the queue, whoever ended it."""
    status = hold.status
    if hold.decisions and status in (HoldStatus.APPROVED, HoldStatus.DENIED):
        last = hold.decisions[-1]
        why = f": {last.reason}" if last.reason else ""
        return f"{hold.id} {status} by {last.by}{why}"
    note = hold.note
    if status is HoldStatus.EXPIRED:
        return f"{hold.id} expired without a decision" + (f" ({note})" if note else "")
    if status is HoldStatus.WITHDRAWN:
        return f"{hold.id} withdrawn: {note or 'the requester gave up'}"
    return f"{hold.id} {status}" + (f": {note}" if note else "")


class DecisionDialog(ModalScreen[tuple[bool, str] | None]):
    """Approve or deny one hold, with a reason; dismissed with (approve, reason) or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, hold: Hold, approve: bool) -> None:
        super().__init__()
        self.hold = hold
        self.approve = approve

    def compose(self) -> ComposeResult:
        verb = "Approve" if self.approve else "Deny"
        with Vertical(id="dialog"):
            yield Label(f"{verb} {self.hold.id}?", id="dialog-title")
            yield Static(
                Text(
                    f"{self.hold.user}@{self.hold.target}: "
                    f"{printable(self.hold.command)}\nrule {self.hold.rule}"
                ),
                id="dialog-command",
            )
            placeholder = "reason (optional)" if self.approve else "reason (required)"
            yield Input(placeholder=placeholder, id="reason")
            with Horizontal(id="dialog-buttons"):
                yield Button(verb, variant="success" if self.approve else "error", id="confirm")
                yield Button("Cancel (Esc)", id="cancel")
            yield Label("Enter confirms, Esc cancels", id="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
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
    """Pending holds, newest last; `a` approves, `d` denies the highlighted one. The screen
    asks through Messages, answered by the app that holds the gateway connection."""

    BINDINGS = [
        Binding("a", "decide(True)", "Approve"),
        Binding("d", "decide(False)", "Deny"),
    ]

    class ScreenRequested(Message):
        """The requester's terminal beside `hold` is wanted: the app asks the gateway for it
        and hands it to `show_screen`."""

        def __init__(self, hold: Hold) -> None:
            super().__init__()
            self.hold = hold

    class Decided(Message):
        """The approver decided a hold, with a reason: the app sends it to the gateway."""

        def __init__(self, hold_id: str, approve: bool, reason: str) -> None:
            super().__init__()
            self.hold_id = hold_id
            self.approve = approve
            self.reason = reason

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.holds: dict[str, Hold] = {}
        self.callers: dict[str, dict[str, Any]] = {}  # hold id -> its `caller` (agent or person)
        self.clock = clock  # injected, so that a snapshot shows the same times every run
        self.person = ""  # who this workstation acts as, once the gateway said so
        self._ticks = 0
        self.welcome = ""  # `hoop-tui up`'s first words, while nothing is held

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
        if self.holds:  # pushed before the screen was shown
            self._fill(table)

    def _table(self) -> DataTable[Any] | None:
        """The table, or None before it is composed or once the app is closing: holds
        pushed then are kept (and shown if the screen comes), never a crash."""
        found = self.query("#holds").results(DataTable)
        return next(iter(found), None)

    def _fill(self, table: DataTable[Any]) -> None:
        table.clear()
        for hold in self.holds.values():
            table.add_row(*self._cells(hold), key=hold.id)
        self._show_detail()

    def replace_all(
        self, holds: list[Hold], callers: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.holds = {hold.id: hold for hold in holds if hold.pending}
        self.callers = {k: v for k, v in (callers or {}).items() if k in self.holds}
        table = self._table()
        if table is not None:
            self._fill(table)

    def hold_changed(self, hold: Hold, caller: dict[str, Any] | None = None) -> None:
        """A pushed event: add, update or drop one row."""
        known = hold.id in self.holds
        if hold.pending:
            self.holds[hold.id] = hold
            if caller:
                self.callers[hold.id] = caller
        else:
            self.holds.pop(hold.id, None)
            self.callers.pop(hold.id, None)
        table = self._table()
        if table is None:
            return
        if not hold.pending:
            if known:
                table.remove_row(hold.id)
        elif known:
            for column, value in zip(COLUMNS, self._cells(hold), strict=True):
                table.update_cell(hold.id, column, value)
        else:
            table.add_row(*self._cells(hold), key=hold.id)
        self._fit_commands()
        self._show_detail()

    def _fit_commands(self) -> None:
        """Re-cut every RULE and COMMAND cell to the room the other columns now leave."""
        if not self.holds or not self.is_mounted:
            return
        table = self.query_one("#holds", DataTable)
        widths = self._widths()
        for hold_id, hold in self.holds.items():
            cells = self._cells(hold, widths=widths)
            table.update_cell(hold_id, "RULE", cells[-2])
            table.update_cell(hold_id, "COMMAND", cells[-1])

    def _widths(self) -> tuple[int, int]:
        """(RULE, COMMAND) widths: every other column whole, then the command gets what is
        left, and the rule name gives way before the command goes under its minimum."""
        width = self.size.width or self.app.size.width
        now = self.clock()
        others = [len(name) for name in COLUMNS[:-1]]
        for hold in self.holds.values():
            cells = self._cells(hold, now, widths=(0, 0))[:-1]
            others = [max(w, len(str(cell))) for w, cell in zip(others, cells, strict=True)]
        *fixed, rule = others
        room = width - sum(fixed) - CELL_PADDING * len(COLUMNS) - SCROLLBAR_WIDTH
        if room - rule >= MIN_COMMAND_WIDTH:
            return rule, room - rule
        rule = max(MIN_RULE_WIDTH, room - MIN_COMMAND_WIDTH)
        return rule, max(MIN_COMMAND_WIDTH, room - rule)

    def _cells(
        self,
        hold: Hold,
        now: float | None = None,
        widths: tuple[int, int] | None = None,
    ) -> tuple[Any, ...]:
        """The row of a hold; `widths` (RULE, COMMAND) cut those two, (0, 0) leaves them whole."""
        now = self.clock() if now is None else now
        rule_width, command_width = self._widths() if widths is None else widths
        votes = len(hold.approved_by)
        left = hold.expires_at - now
        command = printable(hold.command)
        return (
            Text(_duration(left), style="bold red" if left < EXPIRING_S else ""),
            hold.id,
            who(hold, self.callers.get(hold.id)),
            hold.target,
            f"{votes}/{hold.approvals_needed}",
            _duration(now - hold.created_at),
            shorten(hold.rule, rule_width) if rule_width else hold.rule,
            Text(shorten(command, command_width) if command_width else command, style="bold"),
        )

    def _tick(self) -> None:
        table = self.query_one("#holds", DataTable)
        now = self.clock()
        self._ticks += 1
        hold = self.selected()
        if hold is not None and self._ticks % SCREEN_REFRESH_TICKS == 0:
            self.post_message(self.ScreenRequested(hold))
        for hold_id, hold in self.holds.items():
            cells = self._cells(hold, now, widths=(0, 0))
            table.update_cell(hold_id, "LEFT", cells[0])
            table.update_cell(hold_id, "AGE", cells[5])
        self._show_detail()

    def on_resize(self) -> None:
        self._fit_commands()

    def selected(self) -> Hold | None:
        table = self._table()
        if table is None or not self.holds or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.holds.get(str(key))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()
        hold = self.selected()
        if hold is not None:
            self.post_message(self.ScreenRequested(hold))

    def show_screen(self, hold_id: str, lines: list[str]) -> None:
        """The requester's terminal as it looks now, under the hold's details."""
        hold = self.selected()
        if hold is None or hold.id != hold_id:
            return
        while lines and not lines[-1]:
            lines = lines[:-1]
        shown = "\n".join(lines[-12:])
        as_of = time.strftime("%H:%M:%S", time.localtime(self.clock()))
        self.query_one("#hold-screen", Static).update(  # the requester's own output: text
            Text(f"{hold.user}'s terminal now ({as_of}):\n{printable_lines(shown)}")
            if shown
            else ""
        )

    def _show_detail(self) -> None:
        hold = self.selected()
        detail = self.query_one("#hold-detail", Static)
        if hold is None:
            detail.update("No held commands. New ones appear here as they arrive.")
            self.query_one("#hold-screen", Static).update(Text(self.welcome))  # no terminal
            return
        decided = ", ".join(
            f"{d.by} {'approved' if d.approve else 'denied'}" for d in hold.decisions
        )
        left = hold.expires_at - self.clock()
        expiry = time.strftime("%H:%M:%S", time.localtime(hold.expires_at))
        text = Text(  # the command is the requester's text: never markup, controls escaped
            f"{hold.id}: {who(hold, self.callers.get(hold.id), client=True)} on {hold.target} "
            f"(session {hold.session_id[:8]})\n"
            f"  {printable(hold.command)}\n"
            f"  held by rule {hold.rule}; approvers: {', '.join(hold.approvers)}"
            + (f"; so far: {decided}" if decided else "")
            + "\n"
        )
        expires = f"  expires at {expiry} (in {_duration(left)})"
        if left < EXPIRING_S:
            text.append(expires + ": about to expire, denied if nobody decides", "bold red")
        else:
            text.append(expires)
        detail.update(text)

    def action_decide(self, approve: bool) -> None:
        hold = self.selected()
        if hold is None:
            self.notify("Nothing to decide.")
            return
        if self.person and hold.user == self.person:  # said before a reason is typed
            self.notify(
                f"{hold.id} is your own command: another approver must decide it.",
                severity="error",
            )
            return

        def decided(answer: tuple[bool, str] | None) -> None:
            if answer is not None:
                self.post_message(self.Decided(hold.id, *answer))

        self.app.push_screen(DecisionDialog(hold, approve), decided)
