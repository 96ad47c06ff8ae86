"""The line editor of a strict shell: the gateway, not the target, turns keys into a line.

Sans-IO: `LineEditor.feed(bytes)` returns events (`Echo` to show, `Accept` a finished line,
`Interrupt`, `Eof`); no sockets, no clock. Because the gateway owns the editor, the text it
judges is the text it sends: nothing on the target (readline bindings, an editor, a screen the
caller drew) can change a line between the verdict and the run.

Keys: printable text (UTF-8, split anywhere), Backspace, Delete, Left/Right, Home/End,
Ctrl-A/E/B/F/K/U/W/L, Up/Down (history), Ctrl-C (drop the line), Ctrl-D (end on an empty line,
else delete), Enter (CR or LF), bracketed paste (each pasted line is accepted on its own). Other
control keys and unknown escape sequences are ignored, never inserted.
"""

from __future__ import annotations

import codecs
import enum
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

HISTORY_LIMIT = 1000
PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"


@dataclass(frozen=True, slots=True)
class Echo:
    """Bytes for the caller's terminal (the prompt, echoed keys, redraws)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Accept:
    """A finished line: exactly the text to judge and, if allowed, to run."""

    line: str


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Ctrl-C at the prompt: the line was dropped."""


@dataclass(frozen=True, slots=True)
class Eof:
    """Ctrl-D on an empty line: the caller is done."""


Event = Echo | Accept | Interrupt | Eof


class _State(enum.Enum):
    TEXT = "text"
    ESCAPE = "escape"  # after ESC
    CSI = "csi"  # after ESC [
    SS3 = "ss3"  # after ESC O


def char_width(char: str) -> int:
    """Columns a character takes: 0 for combining marks, 2 for wide East Asian ones."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(char_width(char) for char in text)


class LineEditor:
    """One caller's line editor. `start(prompt)` shows a prompt; `feed(data)` edits."""

    def __init__(self, columns: int = 80, *, echo: bool = True) -> None:
        self.columns = max(columns, 1)
        self.echo = echo
        self.prompt = ""
        self.buffer: list[str] = []
        self.cursor = 0
        self.history: list[str] = []
        self._history_index = 0  # == len(history) while editing a new line
        self._draft: list[str] = []
        self._state = _State.TEXT
        self._csi = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pasting = False
        self._shown_cursor = 0  # the cursor's cell offset from the prompt's start, on screen
        self._drawn_end = 0  # the cell after the line as last drawn
        self._keys: dict[str, Callable[[], list[Event]]] = {
            "\x01": self._home,
            "\x02": self._left,
            "\x03": self._interrupt,
            "\x04": self._ctrl_d,
            "\x05": self._end,
            "\x06": self._right,
            "\x08": self._backspace,
            "\x0b": self._kill_to_end,
            "\x0c": self._clear_screen,
            "\x0d": self._accept,
            "\x0a": self._accept,
            "\x0e": self._history_next,
            "\x10": self._history_previous,
            "\x15": self._kill_to_start,
            "\x17": self._kill_word,
            "\x7f": self._backspace,
        }
        self._csi_keys: dict[str, Callable[[], list[Event]]] = {
            "A": self._history_previous,
            "B": self._history_next,
            "C": self._right,
            "D": self._left,
            "H": self._home,
            "F": self._end,
            "1~": self._home,
            "7~": self._home,
            "4~": self._end,
            "8~": self._end,
            "3~": self._delete,
        }

    @property
    def line(self) -> str:
        return "".join(self.buffer)

    # -- the caller's side ----------------------------------------------------------------------

    def start(self, prompt: str) -> list[Event]:
        """Show `prompt` and an empty line (after a command ended, or at the start)."""
        self.prompt = prompt
        self.buffer, self.cursor = [], 0
        self._history_index = len(self.history)
        self._shown_cursor = self._drawn_end = self._cell_after(prompt)
        return self._show(prompt.encode())

    def resize(self, columns: int) -> None:
        self.columns = max(columns, 1)

    def feed(self, data: bytes) -> list[Event]:
        """Keys from the caller; a multi-byte character or escape may be split anywhere."""
        events: list[Event] = []
        for char in self._decoder.decode(data):
            events.extend(self._char(char))
        return _merged(events)

    # -- decoding keys ----------------------------------------------------------------------

    def _char(self, char: str) -> list[Event]:
        if self._state is _State.ESCAPE:
            if char == "[":
                self._state, self._csi = _State.CSI, ""
            elif char == "O":
                self._state = _State.SS3
            else:
                self._state = _State.TEXT  # Alt-key and friends: ignored
            return []
        if self._state is _State.CSI:
            self._csi += char
            if "\x40" <= char <= "\x7e":  # the final byte
                self._state = _State.TEXT
                return self._csi_key(self._csi)
            if len(self._csi) > 32:  # not a key: drop it rather than grow
                self._state = _State.TEXT
            return []
        if self._state is _State.SS3:
            self._state = _State.TEXT
            return self._csi_key(char)
        if char == "\x1b":
            self._state = _State.ESCAPE
            return []
        if self._pasting:
            return self._paste_char(char)
        handler = self._keys.get(char)
        if handler is not None:
            return handler()
        if char == "\t" or ord(char) < 0x20 or 0x80 <= ord(char) < 0xA0:
            return []
        return self._insert(char)

    def _csi_key(self, sequence: str) -> list[Event]:
        if sequence == PASTE_START[2:]:
            self._pasting = True
            return []
        if sequence == PASTE_END[2:]:
            self._pasting = False
            return []
        if self._pasting:
            return []  # an escape inside a paste is not a key
        key = sequence.split(";")[0] + sequence[-1] if ";" in sequence else sequence
        handler = self._csi_keys.get(key) or self._csi_keys.get(sequence[-1:])
        if handler is None or (sequence[-1] != "~" and sequence[:-1].strip("0123456789;")):
            return []
        return handler()

    def _paste_char(self, char: str) -> list[Event]:
        """Pasted text is inserted as typed; a line end in it accepts the line so far, so
        every pasted line meets the gate on its own. A tab becomes a space."""
        if char in "\r\n":
            return self._accept()
        if char == "\t":
            return self._insert(" ")
        if ord(char) < 0x20 or char == "\x7f":
            return []
        return self._insert(char)

    # -- editing --------------------------------------------------------------------------------

    def _insert(self, char: str) -> list[Event]:
        at_end = self.cursor == len(self.buffer)
        self.buffer.insert(self.cursor, char)
        self.cursor += 1
        if at_end and char_width(char) == 1 and self._shown_cursor == self._drawn_end:
            # The common case, one key and one echo (in constant time, so a long paste is
            # linear); at the last column make the wrap real.
            self._shown_cursor += 1
            self._drawn_end += 1
            wrap = b"\r\n" if self._shown_cursor % self.columns == 0 else b""
            return self._show(char.encode() + wrap)
        return self._redraw()

    def _backspace(self) -> list[Event]:
        if self.cursor == 0:
            return []
        self.cursor -= 1
        del self.buffer[self.cursor]
        return self._redraw()

    def _delete(self) -> list[Event]:
        if self.cursor == len(self.buffer):
            return []
        del self.buffer[self.cursor]
        return self._redraw()

    def _ctrl_d(self) -> list[Event]:
        if not self.buffer:
            return [*self._show(b"\r\n"), Eof()]
        return self._delete()

    def _left(self) -> list[Event]:
        self.cursor = max(self.cursor - 1, 0)
        return self._redraw()

    def _right(self) -> list[Event]:
        self.cursor = min(self.cursor + 1, len(self.buffer))
        return self._redraw()

    def _home(self) -> list[Event]:
        self.cursor = 0
        return self._redraw()

    def _end(self) -> list[Event]:
        self.cursor = len(self.buffer)
        return self._redraw()

    def _kill_to_end(self) -> list[Event]:
        del self.buffer[self.cursor :]
        return self._redraw()

    def _kill_to_start(self) -> list[Event]:
        del self.buffer[: self.cursor]
        self.cursor = 0
        return self._redraw()

    def _kill_word(self) -> list[Event]:
        """Ctrl-W: back over spaces, then over the word before them."""
        start = self.cursor
        while start > 0 and self.buffer[start - 1] == " ":
            start -= 1
        while start > 0 and self.buffer[start - 1] != " ":
            start -= 1
        del self.buffer[start : self.cursor]
        self.cursor = start
        return self._redraw()

    def _history_previous(self) -> list[Event]:
        if self._history_index == 0:
            return []
        if self._history_index == len(self.history):
            self._draft = list(self.buffer)
        self._history_index -= 1
        self.buffer = list(self.history[self._history_index])
        self.cursor = len(self.buffer)
        return self._redraw()

    def _history_next(self) -> list[Event]:
        if self._history_index >= len(self.history):
            return []
        self._history_index += 1
        if self._history_index == len(self.history):
            self.buffer = list(self._draft)
        else:
            self.buffer = list(self.history[self._history_index])
        self.cursor = len(self.buffer)
        return self._redraw()

    def _interrupt(self) -> list[Event]:
        end = self._end_cell()
        out = b"" if self._shown_cursor == end else self._move_to(end)
        self.buffer, self.cursor = [], 0
        return [*self._show(out + b"^C\r\n"), Interrupt()]

    def _clear_screen(self) -> list[Event]:
        self._shown_cursor = 0
        return self._show(b"\x1b[H\x1b[2J") + self._redraw()

    def _accept(self) -> list[Event]:
        line = self.line
        out = self._end_of_line()
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY_LIMIT]
        self.buffer, self.cursor = [], 0
        self._history_index = len(self.history)
        return [*self._show(out), Accept(line)]

    # -- drawing ----------------------------------------------------------------------------

    def _end_cell(self) -> int:
        """The cell just after the line, counted from the prompt's first cell."""
        return self._cell_after(self.prompt + self.line)

    def _cell_after(self, text: str) -> int:
        """The cell after `text` drawn from the prompt's first cell: a wide character that
        does not fit at the end of a row starts the next one, as terminals draw it."""
        cell = 0
        for char in text:
            width = char_width(char)
            if width == 2 and cell % self.columns == self.columns - 1:
                cell += 1
            cell += width
        return cell

    def _show(self, data: bytes) -> list[Event]:
        return [Echo(data)] if self.echo and data else []

    def _end_of_line(self) -> bytes:
        """Put the terminal's cursor at the start of the row below the line."""
        end = self._end_cell()
        if self._shown_cursor == end and end % self.columns == 0 and end:
            return b""  # the line filled its last row: the cursor already waits below it
        out = b"" if self._shown_cursor == end else self._move_to(end)
        return out + b"\r\n"

    def _move_to(self, cell: int) -> bytes:
        here = self._shown_cursor
        out = b""
        up = here // self.columns - cell // self.columns
        if up > 0:
            out += f"\x1b[{up}A".encode()
        elif up < 0:
            out += f"\x1b[{-up}B".encode()
        out += b"\r"
        if cell % self.columns:
            out += f"\x1b[{cell % self.columns}C".encode()
        self._shown_cursor = cell
        return out

    def _redraw(self) -> list[Event]:
        """Draw prompt and line again from the prompt's first row, then place the cursor."""
        home = self._move_to(0)
        text = self.line
        end = self._end_cell()
        out = home + b"\x1b[J" + self.prompt.encode() + text.encode()
        if end and end % self.columns == 0:
            out += b"\r\n"  # the terminal waits at the last column: make the wrap real
        self._shown_cursor = self._drawn_end = end
        out += self._move_to(self._cell_after(self.prompt + "".join(self.buffer[: self.cursor])))
        return self._show(out)


def _merged(events: list[Event]) -> list[Event]:
    """Adjacent echoes joined, so one write of keys is one write to the caller."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, Echo) and merged and isinstance(merged[-1], Echo):
            merged[-1] = Echo(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged
