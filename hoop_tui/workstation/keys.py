"""The `?` panel: the keys of the screen in front and of the workstation, in our own words.

Textual's help panel lists its generic widget keys and does not close with `?` or Esc; an
approver woken at 3 am needs the handful of keys that act here, and a way out.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

# Keys the workstation offers everywhere, with what they do in this mode.
GLOBAL_KEYS = (
    ("1", "the queue of held commands"),
    ("2", "recordings: browse, search, replay"),
    ("3", "live sessions: list, watch"),
    ("?", "this panel (? or Esc closes it)"),
    ("q", "quit"),
)
UNAVAILABLE = {
    "remote": {"2": "not in the remote console"},
    "offline": {"1": "needs a gateway (not offline)", "3": "needs a gateway (not offline)"},
}


def screen_keys(screen: Screen[Any]) -> list[tuple[str, str]]:
    """The screen's own bindings that are shown to people, as (key, description)."""
    found: list[tuple[str, str]] = []
    bindings: list[BindingType] = list(getattr(type(screen), "BINDINGS", []))
    for binding in bindings:
        if isinstance(binding, Binding) and binding.description and binding.show:
            key = binding.key_display or binding.key.replace("question_mark", "?")
            found.append((key, binding.description))
    return found


class KeysScreen(ModalScreen[None]):
    """The keys that act on `under` and everywhere; dismissed by `?`, Esc or q."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close"),
        Binding("q", "close", "Close"),
    ]

    def __init__(self, under: Screen[Any], *, remote: bool = False, offline: bool = False) -> None:
        super().__init__()
        self.under = under
        self.mode = "remote" if remote else "offline" if offline else ""

    def compose(self) -> ComposeResult:
        unavailable = UNAVAILABLE.get(self.mode, {})
        rows: list[tuple[str, str, str]] = []  # (key, what it does, style)
        own = screen_keys(self.under)
        if own:
            rows.append(("", "On this screen", "underline"))
            rows.extend((key, description, "") for key, description in own)
            rows.append(("", "", ""))
        rows.append(("", "Everywhere", "underline"))
        for key, description in GLOBAL_KEYS:
            if key in unavailable:
                rows.append((key, unavailable[key], "dim"))
            else:
                rows.append((key, description, ""))
        width = max(len(key) for key, _, _ in rows) + 2
        text = Text()
        for key, description, style in rows:
            text.append(key.ljust(width), style="bold " + style if key else style)
            text.append(description + "\n", style=style)
        with Vertical(id="keys"):
            yield Label("Keys", id="keys-title")
            yield Static(text, id="keys-list")
            yield Label("? or Esc closes this panel", id="keys-hint")

    def action_close(self) -> None:
        self.dismiss()
