"""Telling a person at the terminal that a hold arrived: the bell, and a desktop notification.

Terminals turn OSC 9 (`ESC ] 9 ; text BEL`) or OSC 777 (`ESC ] 777 ; notify ; title ; body BEL`)
into a desktop notification; terminals that know neither ignore them. The text is the held
command, which the requester chose: control characters are replaced so that it cannot end the
sequence early and write to the approver's terminal.
"""

from __future__ import annotations

MAX_TEXT = 200


def _plain(text: str) -> str:
    """Printable text only: no ESC, BEL or other control, and no `;` that would split fields."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).replace(";", ",")
    return cleaned[:MAX_TEXT]


def alert_sequence(kind: str, title: str, body: str) -> str:
    """What the workstation writes to its terminal for `kind` (see `hoop-tui tui --alert`)."""
    if kind == "off":
        return ""
    if kind == "bell":
        return "\a"
    if kind == "osc9":
        return f"\a\x1b]9;{_plain(title)}: {_plain(body)}\a"
    if kind == "osc777":
        return f"\a\x1b]777;notify;{_plain(title)};{_plain(body)}\a"
    raise ValueError(f"unknown alert kind {kind!r}")
