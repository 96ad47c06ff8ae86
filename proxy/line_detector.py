"""The command line as the user sees it when they press Enter, read off the session's output.

Keystrokes are not replayed: readline editing, history recall, tab completion and
reverse-search all end up on the screen, so the gateway reads the line from a cheap emulation
of the rows the line occupies (what JumpServer and Warpgate do). Sans-IO: feed output bytes
and input bytes; input comes back as events that say what may be forwarded now and what must
wait for a verdict.

Cheap on purpose: when output holds a line feed and the user is not editing, only the text after
the last line feed is modelled, so bulk output costs one `rfind` per packet. The model keeps at
most `MAX_ROWS` rows, handles CR, LF, BS, TAB, autowrap at the terminal width, CSI K / J
(erase), A B C D G (cursor moves), @ P X (insert, delete, erase characters), H (taken as a
redraw from the top, as Ctrl-L does), ESC 7 / 8, and skips OSC, DCS and other strings. It
ignores colours and character sets. It does not handle scroll regions, insert mode (IRM), or
absolute cursor positions inside the line; a program using those gets lines marked uncertain
or, at worst, a line the policy reads differently and holds.

A full-screen program (alternate screen, `CSI ?1049h`, also 1047 and 47) switches modelling
off; the caller skips inspection there, since keys typed into vim or less are not commands. Only
an accepted line the gate vouched for may switch it (`line_finished(full_screen=True)`), once:
the alternate screen entered by anything else (`printf 'ESC[?1049h'`, a prompt, a program not
known to be full-screen) is modelled like the main screen and every Enter is still judged.

An Enter is only judged once the screen has caught up with the keys typed before it: the text
typed since the screen last went quiet must stand right before the cursor (one write may carry
a whole line and its Enter, and its echo may come in pieces). Keys readline treats as accepting
the line besides Enter (`ESC #`, `C-x C-e`, `C-x C-r`, `C-x e`) come back as an `Enter` whose
`key` names them, so nothing is accepted that was not judged.
"""

from __future__ import annotations

import codecs
import dataclasses
import enum
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_ROWS = 64
MAX_PASTE_BYTES = 1024 * 1024
BULK_OUTPUT_BYTES = 4096
MAX_SEQUENCE_CHARS = 256
QUIET_S = 0.03  # output quiet this long after keys: the shell has answered them
ANSWER_BURST_S = 0.1  # how long one answer to keys may keep arriving in pieces
ENTER_KEYS = frozenset({b"\r", b"\n", b"\x0f"})  # CR, Ctrl-J, Ctrl-O all accept a line
CANCEL_KEYS = frozenset({b"\x03"})  # Ctrl-C abandons the line: the next key starts a new one
PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
_ALT_SCREEN_MODES = frozenset({"1049", "1047", "47"})
_ALT_SCREEN_BYTES = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
_REVERSE_SEARCH = re.compile(r"^\((?:reverse|bck|fwd|i)-i-search\)`[^']*': ?(.*)$")
_PASSWORD_PROMPT = re.compile(r"(pass(word|phrase)|PIN|token|secret)[^:]*:\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class CommandLine:
    """What the user submitted, as the screen shows it.

    `certain` is False when the screen cannot be trusted for this line; `reason` says why.
    The caller then waits for output and asks `LineDetector.current_line()` again, or applies
    the unparsable default. `echoed` is False when keys were typed but nothing appeared (echo
    off: a password prompt or `stty -echo`); `password_prompt` says the row looks like one.
    """

    text: str
    prompt: str
    certain: bool = True
    reason: str = ""
    full_screen: bool = False
    echoed: bool = True
    password_prompt: bool = False
    key: str = ""  # the readline command a key other than Enter accepts the line with


@dataclass(frozen=True, slots=True)
class Forward:
    """Input bytes that may go to the target now."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Enter:
    """The user pressed Enter: hold `data` until a verdict, then forward or drop it, then
    feed `rest` (the input after the Enter) again. `paste` is the text of `rest` when it holds
    more lines (a paste without bracketed-paste markers), so the whole paste can be judged
    before any of it is forwarded; each line is still read off the screen in its turn."""

    line: CommandLine
    data: bytes
    rest: bytes = b""
    paste: str | None = None

    @property
    def key(self) -> str:
        """ "" for Enter; else the readline command of the key (see `ACCEPTING_KEYS`)."""
        return self.line.key


@dataclass(frozen=True, slots=True)
class Paste:
    """A bracketed paste: hold `data` until every line of `combined` (the current line with
    the paste put in at the cursor) is judged. The shell only inserts the text; it runs
    when the user presses Enter, which is judged again off the screen."""

    text: str
    combined: str
    data: bytes
    full_screen: bool = False


InputEvent = Forward | Enter | Paste

# Readline's default (emacs) bindings that accept, or may accept, the line without an Enter.
# `ESC #` (insert-comment) with a numeric argument uncomments the line and runs it; the others
# run text nobody can read off the screen: the file an editor saved, a re-read inputrc's
# bindings, a keyboard macro's keys.
ACCEPTING_KEYS = {
    b"\x1b#": "insert-comment",
    b"\x18\x05": "edit-and-execute-command",
    b"\x18\x12": "re-read-init-file",
    b"\x18e": "call-last-kbd-macro",
    b"\x18E": "call-last-kbd-macro",
}
OPAQUE_KEYS = frozenset({"edit-and-execute-command", "re-read-init-file", "call-last-kbd-macro"})
META_HASH = b"\xa3"  # `ESC #` as one 8-bit byte, where readline converts meta characters


# ---------------------------------------------------------------------------------------------
# The rows the current line occupies


@dataclass(slots=True)
class _Row:
    cells: list[str] = field(default_factory=list)
    wrapped: bool = False  # the row before this one continues here (autowrap, not a newline)

    def text(self) -> str:
        return "".join(self.cells).rstrip()


class _Rows:
    """A few terminal rows with a cursor: enough to hold a prompt and the line being edited."""

    def __init__(self, columns: int) -> None:
        self.columns = max(2, columns)
        self.rows: list[_Row] = [_Row()]
        self.row = 0
        self.col = 0
        self.wrap_pending = False
        self.saved = (0, 0)
        self.dropped = 0  # rows dropped off the top since the start, to keep indexes stable
        self.overflowed = 0  # rows dropped because the line grew past MAX_ROWS

    def reset(self, col: int = 0) -> None:
        self.dropped += len(self.rows)
        self.rows = [_Row()]
        self.row = 0
        self.col = min(col, self.columns - 1)
        self.wrap_pending = False

    def copy(self) -> _Rows:
        clone = _Rows(self.columns)
        clone.rows = [_Row(list(row.cells), row.wrapped) for row in self.rows]
        clone.row, clone.col, clone.wrap_pending = self.row, self.col, self.wrap_pending
        clone.saved, clone.dropped = self.saved, self.dropped
        clone.overflowed = self.overflowed
        return clone

    # -- printing
    def put(self, char: str) -> None:
        if unicodedata.combining(char) and self.col > 0:
            cells = self.rows[self.row].cells
            if len(cells) >= self.col:
                cells[self.col - 1] += char
            return
        width = 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if self.wrap_pending or self.col + width > self.columns:
            self._wrap()
        cells = self._cells_to(self.col + width)
        cells[self.col] = char
        if width == 2:
            cells[self.col + 1] = ""
        self.col += width
        if self.col >= self.columns:
            self.col = self.columns - 1
            self.wrap_pending = True

    def _wrap(self) -> None:
        self.wrap_pending = False
        self.col = 0
        self._down(wrapped=True)

    def _cells_to(self, end: int) -> list[str]:
        cells = self.rows[self.row].cells
        if len(cells) < end:
            cells.extend(" " * (end - len(cells)))
        return cells

    # -- controls
    def carriage_return(self) -> None:
        self.col = 0
        self.wrap_pending = False

    def line_feed(self) -> None:
        self.wrap_pending = False
        self._down(wrapped=False)

    def _down(self, *, wrapped: bool) -> None:
        self.row += 1
        if self.row == len(self.rows):
            self.rows.append(_Row(wrapped=wrapped))
        elif wrapped:
            self.rows[self.row].wrapped = True
        if len(self.rows) > MAX_ROWS:
            excess = len(self.rows) - MAX_ROWS
            del self.rows[:excess]
            self.row -= excess
            self.dropped += excess
            self.overflowed += excess

    def backspace(self) -> None:
        self.wrap_pending = False
        self.col = max(0, self.col - 1)

    def tab(self) -> None:
        self.col = min(self.columns - 1, (self.col // 8 + 1) * 8)

    def up(self, count: int) -> None:
        self.wrap_pending = False
        self.row = max(0, self.row - count)

    def down(self, count: int) -> None:
        self.wrap_pending = False
        for _ in range(min(count, MAX_ROWS)):
            self._down(wrapped=False)

    def forward(self, count: int) -> None:
        self.wrap_pending = False
        self.col = min(self.columns - 1, self.col + count)

    def back(self, count: int) -> None:
        self.wrap_pending = False
        self.col = max(0, self.col - count)

    def column(self, col: int) -> None:
        self.wrap_pending = False
        self.col = min(self.columns - 1, max(0, col))

    def erase_line(self, mode: int) -> None:
        cells = self.rows[self.row].cells
        if mode == 0:
            del cells[self.col :]
        elif mode == 1:
            self._cells_to(self.col + 1)[: self.col + 1] = " " * (self.col + 1)
        else:
            cells.clear()

    def erase_display(self, mode: int) -> None:
        if mode == 0:
            self.erase_line(0)
            del self.rows[self.row + 1 :]
        elif mode == 1:
            for row in self.rows[: self.row]:
                row.cells.clear()
            self.erase_line(1)
        else:
            for row in self.rows:
                row.cells.clear()

    def insert_blanks(self, count: int) -> None:
        cells = self._cells_to(self.col)
        cells[self.col : self.col] = " " * min(count, self.columns)
        del cells[self.columns :]

    def delete_chars(self, count: int) -> None:
        del self.rows[self.row].cells[self.col : self.col + count]

    def erase_chars(self, count: int) -> None:
        cells = self.rows[self.row].cells
        end = min(len(cells), self.col + count)
        cells[self.col : end] = " " * max(0, end - self.col)

    # -- reading
    def find_line(
        self, prompt_row: int, prompt_col: int, prompt: str, overflow_mark: int
    ) -> tuple[str, bool, str]:
        """The text of the line begun after `prompt` (drawn at absolute row `prompt_row`,
        column `prompt_col`, when `overflow_mark` rows had overflowed), whether it can be
        trusted, and why not. Looked for where the prompt was drawn; then past the rows kept;
        on a reverse-search row; after the prompt drawn again; else the cursor's logical line."""
        index = prompt_row - self.dropped
        if 0 <= index < len(self.rows) and "".join(self.rows[index].cells[:prompt_col]) == prompt:
            return self.text_from(index, prompt_col), True, ""
        if self.overflowed > overflow_mark and index < 0:
            return (
                self.text_from(0, 0),
                False,
                f"the line is longer than the {MAX_ROWS} rows the gateway reads",
            )
        current = self.rows[self.row].text()
        search = _REVERSE_SEARCH.match(current)
        if search:
            if current.count("':") > 1:  # the search text itself may hold the separator
                return (
                    search.group(1).rstrip(),
                    False,
                    "the reverse-search row can be read more than one way",
                )
            return search.group(1).rstrip(), True, ""
        drawn = prompt.rstrip()
        for candidate in range(len(self.rows)):
            row_text = "".join(self.rows[candidate].cells)
            if drawn and row_text.startswith(prompt):
                return self.text_from(candidate, len(prompt)), True, ""
        start = self.row
        while start > 0 and self.rows[start].wrapped:
            start -= 1
        return self.text_from(start, 0), False, "the prompt is no longer on the screen"

    def text_before_cursor(self, row: int, col: int) -> str:
        """The cells from (row, col) up to the cursor, wrapped rows joined as they are."""
        parts: list[str] = []
        for index in range(row, self.row + 1):
            cells = self.rows[index].cells
            if index > row and not self.rows[index].wrapped:
                parts.append("\n")
            start = col if index == row else 0
            end = self.columns if index < self.row else self.col + self.wrap_pending
            parts.append("".join(cells[start:end]).ljust(end - start))
        return "".join(parts)

    def text_from(self, row: int, col: int) -> str:
        """The logical line from (row, col) to the last non-empty row: wrapped rows joined
        as they are, rows after a newline joined with "\\n"."""
        last = max(self.row, row)
        while last > row and not self.rows[last].text():
            last -= 1
        parts: list[str] = []
        for index in range(row, last + 1):
            current = self.rows[index]
            cells = current.cells[col:] if index == row else current.cells
            if index > row:
                parts.append("" if current.wrapped else "\n")
            text = "".join(cells)
            parts.append(text.ljust(self.columns - (col if index == row else 0)))
        return "\n".join(part.rstrip() for part in "".join(parts).split("\n"))


# ---------------------------------------------------------------------------------------------
# The output parser: one handler per state


class _Out(enum.Enum):
    GROUND = "ground"
    ESCAPE = "escape"
    CSI = "csi"
    STRING = "string"  # OSC, DCS, SOS, PM, APC: skipped up to BEL or ESC \
    STRING_ESCAPE = "string-escape"


class _Phase(enum.Enum):
    """Where the user is: output arriving after an Enter, or editing a line at a prompt."""

    WAITING = "waiting"
    EDITING = "editing"


class _In(enum.Enum):
    GROUND = "ground"
    ESCAPE = "escape"
    CSI = "csi"
    SS3 = "ss3"
    PASTE = "paste"
    CTRL_X = "ctrl-x"


class _OutputParser:
    """The grammar of the target's output, applied to the rows: printable characters, the C0
    controls, ESC and CSI sequences, and the strings (OSC, DCS, ...) it skips. Of the private
    modes it follows the alternate screen (told to `on_alternate`) and bracketed paste."""

    def __init__(self, rows: _Rows, on_alternate: Callable[[bool], None]) -> None:
        self.rows = rows
        self.on_alternate = on_alternate
        self.bracketed_paste = False  # the application asked for it (?2004h)
        self._state = _Out.GROUND
        self._sequence = ""
        self._handlers = {
            _Out.GROUND: self._ground,
            _Out.ESCAPE: self._escape,
            _Out.CSI: self._csi_char,
            _Out.STRING: self._string,
            _Out.STRING_ESCAPE: self._string_escape,
        }

    def feed(self, text: str) -> None:
        for char in text:
            self._handlers[self._state](char)

    def reset(self) -> None:
        """Bulk output was skipped: whatever sequence was open is gone with it."""
        self._state = _Out.GROUND
        self._sequence = ""

    def _ground(self, char: str) -> None:
        if char == "\x1b":
            self._state = _Out.ESCAPE
            self._sequence = ""
        elif char >= " " and char != "\x7f":
            self.rows.put(char)
        elif char == "\r":
            self.rows.carriage_return()
        elif char in "\n\x0b\x0c":
            self.rows.line_feed()
        elif char == "\b":
            self.rows.backspace()
        elif char == "\t":
            self.rows.tab()

    def _escape(self, char: str) -> None:
        self._state = _Out.GROUND
        if char == "[":
            self._state = _Out.CSI
        elif char in "]PX^_":
            self._state = _Out.STRING
        elif char in " #%()*+-./":
            self._state = _Out.ESCAPE  # an intermediate byte: the next one ends it
        elif char == "7":
            self.rows.saved = (self.rows.row, self.rows.col)
        elif char == "8":
            row, col = self.rows.saved
            self.rows.row = min(row, len(self.rows.rows) - 1)
            self.rows.column(col)
        elif char == "M":
            self.rows.up(1)
        elif char in "DE":
            self.rows.line_feed()
            if char == "E":
                self.rows.carriage_return()
        elif char == "c":
            self.rows.reset()

    def _csi_char(self, char: str) -> None:
        if "\x40" <= char <= "\x7e":
            self._state = _Out.GROUND
            self._csi(self._sequence, char)
        elif char == "\x1b":
            self._state = _Out.ESCAPE
        elif len(self._sequence) < MAX_SEQUENCE_CHARS:
            self._sequence += char
        else:
            self._state = _Out.GROUND

    def _string(self, char: str) -> None:
        if char == "\x07":
            self._state = _Out.GROUND
        elif char == "\x1b":
            self._state = _Out.STRING_ESCAPE

    def _string_escape(self, char: str) -> None:
        self._state = _Out.GROUND if char == "\\" else _Out.STRING

    def _csi(self, parameters: str, final: str) -> None:
        if parameters.startswith("?"):
            if final in "hl":
                modes = parameters[1:].split(";")
                if _ALT_SCREEN_MODES.intersection(modes):
                    self.on_alternate(final == "h")
                if "2004" in modes:
                    self.bracketed_paste = final == "h"
            return
        if not re.fullmatch(r"[0-9;]*", parameters):
            return
        numbers = [int(part) if part else 0 for part in parameters.split(";")]
        first = numbers[0] if numbers else 0
        count = max(1, first)
        rows = self.rows
        handlers = {
            "K": lambda: rows.erase_line(first),
            "J": lambda: rows.erase_display(first),
            "A": lambda: rows.up(count),
            "B": lambda: rows.down(count),
            "C": lambda: rows.forward(count),
            "D": lambda: rows.back(count),
            "G": lambda: rows.column(count - 1),
            "@": lambda: rows.insert_blanks(count),
            "P": lambda: rows.delete_chars(count),
            "X": lambda: rows.erase_chars(count),
            "H": lambda: rows.reset(max(1, numbers[1] if len(numbers) > 1 else 1) - 1),
            "f": lambda: rows.reset(max(1, numbers[1] if len(numbers) > 1 else 1) - 1),
        }
        handler = handlers.get(final)
        if handler is not None:
            handler()


class LineDetector:
    """Feed it the session's output and the user's input; it says where each line starts and
    what the user submits. One per shell channel."""

    def __init__(self, columns: int = 80) -> None:
        self._rows = _Rows(columns)
        self._unsolicited = False  # output arrived mid-line that no key asked for
        self._answer_until: float | None = None  # end of the burst answering the last keys
        self._redraw_expected = False  # after a resize the shell redraws the line by itself
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._output = _OutputParser(self._rows, self._alternate_screen)
        self.full_screen = False
        self._alternate = False  # the target's output switched to the alternate screen
        self._full_screen_allowed = False  # the accepted line may switch judging off there
        self._shell_prompt: str | None = None  # the prompt of the line that was allowed it
        self._phase = _Phase.WAITING
        self._prompt_row = 0  # absolute index (rows dropped + index)
        self._prompt_col = 0
        self._prompt = ""
        self._typed = False  # printable keys since the prompt
        self._echo_seen = False  # the line after the prompt was non-empty at some point
        self._keys_since_output = 0  # keys the terminal may not have shown yet
        self._last_output: float | None = None
        self._run = ""  # printable text typed since the last control key or quiet screen
        self._run_start: int | None = None  # the cursor's offset in the line when it began
        self._run_time: float | None = None  # when the last key arrived
        self._line_keys: str | None = ""  # every key since the prompt, while all were plain text
        self._keys = _KeyParser(self)
        self._overflow_mark = 0  # rows overflowed before the current line began
        self._recall_expected = False  # C-o: the shell puts the next history line on the prompt
        self._prompt_unknown = False  # that line came, but the prompt before it did not match

    # -- configuration
    def resize(self, columns: int) -> None:
        """The terminal's width changed: rows already drawn keep their cells, and the shell
        may redraw the line without a key being pressed."""
        self._rows.columns = max(2, columns)
        self._redraw_expected = True

    @property
    def bracketed_paste(self) -> bool:
        """The application asked for bracketed paste (`CSI ?2004h`)."""
        return self._output.bracketed_paste

    # -- output
    def feed_output(self, data: bytes, now: float | None = None) -> None:
        """Bytes the target sent to the user's terminal.

        Pass `now` (any monotonic clock, in seconds) to catch output that nobody's keys asked
        for arriving while a line is typed: a background program could draw a harmless line
        over the one the shell holds. Output is an answer when keys were sent since the last
        output, or within `ANSWER_BURST_S` after such an answer (a redraw in several packets);
        anything else makes the line uncertain."""
        if not data:
            return
        if now is not None:
            self._note_output_time(now)
            self._last_output = now
        self._keys_since_output = 0
        newline = data.rfind(b"\n")
        if newline >= 0 and (self._phase is _Phase.WAITING or len(data) > BULK_OUTPUT_BYTES):
            self._skip_to(data, newline)
            data = data[newline + 1 :]
        self._output.feed(self._decoder.decode(data))
        if (
            self._phase is _Phase.EDITING
            and not self._echo_seen
            and not self.full_screen
            and self._line_text()
        ):
            self._echo_seen = True

    def _note_output_time(self, now: float) -> None:
        if self._keys_since_output or self._redraw_expected:
            self._answer_until = now + ANSWER_BURST_S
            self._redraw_expected = False
        elif (
            self._phase is _Phase.EDITING
            and not self.full_screen
            and (self._answer_until is None or now > self._answer_until)
        ):
            self._unsolicited = True

    def _skip_to(self, data: bytes, newline: int) -> None:
        """Bulk output: only what follows the last line feed can be on the current row.
        Switches of the alternate screen in the skipped part still count."""
        for toggle in _ALT_SCREEN_BYTES.findall(data, 0, newline):
            self._alternate_screen(toggle == b"h")
        self._decoder.reset()
        self._output.reset()
        self._rows.reset()

    def _alternate_screen(self, on: bool) -> None:
        """The alternate screen switches judging off only for a line the gate let start a
        full-screen program, and only until it leaves the alternate screen."""
        self._alternate = on
        if not on:
            self._full_screen_allowed = False
        self.full_screen = on and self._full_screen_allowed

    # -- input
    def feed_input(self, data: bytes, now: float | None = None) -> list[InputEvent]:
        """Bytes the user typed, parsed up to the first Enter, as events in order: `Forward`
        (send now), `Paste` (a whole bracketed paste: hold it, and every event after it, until
        it is judged) and at most one `Enter`, last.

        Bytes after an Enter are not looked at: they come back in `Enter.rest`. While the
        Enter is held, `current_line()` may be read again as output arrives (with
        `settled=True` once the output went quiet); once the Enter was forwarded or dropped,
        call `line_finished()`, then feed `rest`.

        Pass `now` (the clock `feed_output` gets) so that keys typed once the screen went
        quiet start a new run of text whose echo can be checked exactly.
        """
        events: list[InputEvent] = []
        pending = bytearray()
        quiet = self._screen_quiet(now) if now is not None else not self._keys_since_output
        if quiet:  # without a clock, an answer to every key counts as quiet
            self._run, self._run_start = "", self._cursor_offset()
        if now is not None:
            self._run_time = now
        for index in range(len(data)):
            byte = data[index : index + 1]
            outcome = self._keys.key(byte)
            if outcome is _KeyOutcome.FORWARD:
                pending += self._keys.take_held() + byte
            elif outcome is _KeyOutcome.KEEP:
                continue
            elif outcome is _KeyOutcome.PREFIX:
                pending += self._keys.prefix
                self._keys.prefix = b""
            elif outcome is _KeyOutcome.PASTE_DONE:
                if pending:
                    events.append(Forward(bytes(pending)))
                    pending.clear()
                events.append(self._finish_paste())
            elif outcome is _KeyOutcome.ENTER:
                key, self._keys.accepting = self._keys.accepting, ""
                held = self._keys.take_held()
                if not key:
                    pending += held
                if pending:
                    events.append(Forward(bytes(pending)))
                rest = data[index + 1 :]
                line = self.current_line()
                if key:
                    line = dataclasses.replace(line, key=key)
                accept = (held + byte) if key else byte
                events.append(Enter(line, accept, rest, _paste_text(rest)))
                return events
        if self.full_screen and self._keys.held:
            pending += self._keys.take_held()
        if pending:
            events.append(Forward(bytes(pending)))
        return events

    def _finish_paste(self) -> Paste:
        data = self._keys.take_paste()
        body = data[len(PASTE_START) :]
        body = body.removesuffix(PASTE_END)
        text = _paste_text(body) or ""
        combined = self._combined(text)
        self._note_key(b"\x1b")
        return Paste(text, combined, data, self.full_screen)

    def _note_key(self, byte: bytes) -> None:
        if self._phase is _Phase.WAITING:
            self._start_editing()
            self._run, self._run_start = "", self._cursor_offset()
        self._typed = True
        self._keys_since_output += 1
        if byte >= b" " and byte != b"\x7f":
            self._run += byte.decode("latin-1")
            if self._line_keys is not None:
                self._line_keys += byte.decode("latin-1")
        else:  # an editing key: its echo cannot be predicted, only the text typed after it
            self._run, self._run_start = "", None
            self._line_keys = None

    def _screen_quiet(self, now: float) -> bool:
        """The shell has answered every key sent so far and the output has gone quiet."""
        if self._keys_since_output:
            return False
        last = max(self._last_output or 0.0, self._run_time or 0.0)
        return self._last_output is None or now - last >= QUIET_S

    def _cursor_offset(self) -> int | None:
        """Cells from the start of the line (after the prompt) to the cursor, if on screen."""
        rows = self._rows
        index = self._prompt_row - rows.dropped
        if self._phase is not _Phase.EDITING or not 0 <= index <= rows.row:
            return None
        return len(rows.text_before_cursor(index, self._prompt_col))

    @property
    def exact(self) -> bool:
        """Whether the keys of this line since the screen was last quiet were plain text, so
        `current_line` checks their echo exactly; else the caller should also wait for the
        output to go quiet before it trusts the screen."""
        return self._run_start is not None

    def _echo_caught_up(self) -> bool:
        """The text typed since the screen was last quiet stands right before the cursor
        (where it began, if that is known): the screen shows every key sent."""
        if not self._run:
            return True
        try:
            run = self._run.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            return False
        rows = self._rows
        index = self._prompt_row - rows.dropped
        if not 0 <= index <= rows.row:
            return False
        before = rows.text_before_cursor(index, self._prompt_col)
        if not before.endswith(run):
            return False
        if self._run_start is None:
            return True
        width = sum(
            0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
            for c in run
        )
        return len(before) == self._run_start + width

    def _start_editing(self) -> None:
        """The first key after an Enter: the row up to the cursor is the prompt."""
        rows = self._rows
        self._phase = _Phase.EDITING
        if self.full_screen and self._shell_prompt == "".join(
            rows.rows[rows.row].cells[: rows.col]
        ):
            # The shell's prompt is back with the cursor after it, although the program never
            # left the alternate screen (it was killed, or a pager left it on): judge again.
            self.full_screen = False
        if not self.full_screen:
            self._full_screen_allowed = False  # the line that was allowed it has ended
        cells = rows.rows[rows.row].cells
        column, self._line_keys, self._prompt_unknown = rows.col, "", False
        if self._recall_expected:
            # operate-and-get-next: the line after the cursor's prompt is a recalled line the
            # shell drew, not part of the prompt. Only the last prompt can tell where it starts.
            self._recall_expected, self._line_keys = False, None
            if self._prompt_col <= rows.col and "".join(cells[: self._prompt_col]) == self._prompt:
                column = self._prompt_col
            else:
                self._prompt_unknown = True
        self._prompt_row = rows.dropped + rows.row
        self._prompt_col = column
        self._prompt = "".join(cells[:column])
        self._typed = False
        self._echo_seen = False
        self._unsolicited = False
        self._overflow_mark = rows.overflowed

    def line_finished(self, *, full_screen: bool = False) -> None:
        """Call once the held Enter was forwarded or the line dropped: output from here on is
        the command's (or a fresh prompt), and the next key starts a new line. `full_screen`
        says the gate forwarded a line that starts a known full-screen program: only then
        does the alternate screen switch judging off."""
        self._after_enter()
        if full_screen and not self.full_screen:
            self._shell_prompt = self._prompt
        self._full_screen_allowed = full_screen or self.full_screen
        self._run, self._run_start = "", None

    def line_cleared(self) -> None:
        """The gate emptied the line (a refused key that accepts it): the line goes on at
        the same prompt, and the next Enter waits for the shell's answer to the clearing."""
        self._keys_since_output += 1
        self._run, self._run_start = "", None
        self._line_keys = ""

    def _after_enter(self) -> None:
        self._phase = _Phase.WAITING
        self._keys_since_output = 0

    # -- reading the line
    def current_line(self, *, settled: bool = False) -> CommandLine:
        """The line as it stands now, prompt removed. While an Enter is held it may be read
        again as output arrives; `settled=True` says the caller waited and the output went
        quiet, so keys that still show nothing were not echoed (a password, `stty -echo`)."""
        if self.full_screen:
            return CommandLine("", "", False, "a full-screen program is active", True)
        if self._phase is _Phase.WAITING:
            self._start_editing()
        text, certain, reason = self._located_text()
        password = bool(_PASSWORD_PROMPT.search(self._prompt))
        echoed = True
        if (
            self._typed
            and not self._echo_seen
            and not text
            and (settled or not self._keys_since_output)
        ):
            echoed = False
            certain, reason = False, "keys were typed but the terminal showed nothing (echo off)"
        elif self._keys_since_output and not settled:
            certain, reason = False, "keys were sent that the terminal has not shown yet"
        elif self._keys_since_output and not self._run:
            certain, reason = False, "editing keys were sent that the terminal has not answered"
        elif self._unsolicited:
            certain, reason = (
                False,
                (
                    "output no key asked for arrived while the line was typed (a background "
                    "program?): the screen may not show what the shell holds"
                ),
            )
        elif not self._echo_caught_up():
            certain, reason = False, "the screen does not show every key typed before Enter"
        elif self._prompt_unknown:
            certain, reason = False, "a recalled line (C-o) follows a prompt that changed"
        elif not self._shows_line_keys(text):
            certain, reason = False, "the screen shows another line than the keys typed at it"
        return CommandLine(text, self._prompt, certain, reason, False, echoed, password)

    def _shows_line_keys(self, text: str) -> bool:
        """While every key since the prompt was plain text, the shell holds exactly those
        keys: a line drawn over them (a background job's output arriving just after an
        echo) must not be judged in their place."""
        if self._line_keys is None:
            return True
        try:
            typed = self._line_keys.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            return False
        return text.rstrip() == typed.rstrip()

    def _line_text(self) -> str:
        return self._located_text()[0]

    def _located_text(self) -> tuple[str, bool, str]:
        return self._rows.find_line(
            self._prompt_row, self._prompt_col, self._prompt, self._overflow_mark
        )

    def _combined(self, pasted: str) -> str:
        """The current line with `pasted` put in at the cursor."""
        text, _, _ = self._located_text()
        rows = self._rows
        index = self._prompt_row - rows.dropped
        if self._phase is _Phase.EDITING and 0 <= index <= rows.row:
            cut = (rows.row - index) * rows.columns + rows.col - self._prompt_col
            if cut >= 0:
                before = text[:cut].ljust(cut)
                return before + pasted + text[cut:]
        return text + pasted


class _KeyParser:
    """The grammar of the user's keys: ESC, CSI and SS3 sequences, a bracketed paste (kept
    whole), the C-x prefix, and the keys besides Enter that accept a line. What a key means
    for the line being edited goes to `line`, the detector it belongs to."""

    def __init__(self, line: LineDetector) -> None:
        self.line = line
        self.state = _In.GROUND
        self.held = bytearray()  # an escape sequence that may still become a paste start
        self.paste = bytearray()
        self.accepting = ""  # set by a handler when the key accepts the line
        self.prefix = b""  # bytes a handler releases while it keeps the current one
        self._handlers = {
            _In.GROUND: self._ground,
            _In.ESCAPE: self._escape,
            _In.CSI: self._csi,
            _In.SS3: self._ss3,
            _In.PASTE: self._paste,
            _In.CTRL_X: self._ctrl_x,
        }

    def key(self, byte: bytes) -> _KeyOutcome:
        return self._handlers[self.state](byte)

    def take_paste(self) -> bytes:
        data, self.paste = bytes(self.paste), bytearray()
        return data

    def take_held(self) -> bytes:
        held, self.held = bytes(self.held), bytearray()
        return held

    def _ground(self, byte: bytes) -> _KeyOutcome:
        if byte == b"\x1b":
            self.state = _In.ESCAPE
            self.held = bytearray(byte) if not self.line.full_screen else bytearray()
            return _KeyOutcome.KEEP if not self.line.full_screen else _KeyOutcome.FORWARD
        if self.line.full_screen:
            if byte in ENTER_KEYS:
                return _KeyOutcome.ENTER
            self.line._note_key(byte)
            return _KeyOutcome.FORWARD
        if byte in ENTER_KEYS:
            self.line._recall_expected = self.line._recall_expected or byte == b"\x0f"
            return _KeyOutcome.ENTER
        if byte == b"\x18":  # C-x: a prefix; what follows may accept the line
            self.state = _In.CTRL_X
            self.held = bytearray(byte)
            return _KeyOutcome.KEEP
        if byte == META_HASH:
            self.line._note_key(b"\x1b")
            self.held = bytearray()
            self.accepting = ACCEPTING_KEYS[b"\x1b#"]
            return _KeyOutcome.ENTER
        if byte in CANCEL_KEYS:
            self.line._after_enter()
            return _KeyOutcome.FORWARD
        self.line._note_key(byte)
        return _KeyOutcome.FORWARD

    def _ctrl_x(self, byte: bytes) -> _KeyOutcome:
        self.state = _In.GROUND
        self.line._note_key(b"\x18")
        key = ACCEPTING_KEYS.get(bytes(self.held) + byte)
        if key is not None:
            self.accepting = key
            return _KeyOutcome.ENTER
        if byte == b"\x1b":  # C-x ESC: forward the prefix, read the escape on its own
            self.state = _In.ESCAPE
            forward = self.take_held()
            self.held = bytearray(byte)
            self.prefix = forward
            return _KeyOutcome.PREFIX
        return _KeyOutcome.FORWARD

    def _escape(self, byte: bytes) -> _KeyOutcome:
        self.state = {b"[": _In.CSI, b"O": _In.SS3}.get(byte, _In.GROUND)
        self.line._note_key(b"\x1b")
        if byte == b"#" and not self.line.full_screen:
            self.accepting = ACCEPTING_KEYS[b"\x1b#"]
            return _KeyOutcome.ENTER
        return self._hold_if_paste_start(byte)

    def _csi(self, byte: bytes) -> _KeyOutcome:
        if 0x40 <= byte[0] <= 0x7E:
            self.state = _In.GROUND
            if bytes(self.held) + byte == PASTE_START:
                self.held = bytearray()
                self.state = _In.PASTE
                self.paste = bytearray(PASTE_START)
                return _KeyOutcome.KEEP
        return self._hold_if_paste_start(byte)

    def _ss3(self, byte: bytes) -> _KeyOutcome:
        self.state = _In.GROUND
        return _KeyOutcome.FORWARD

    def _paste(self, byte: bytes) -> _KeyOutcome:
        self.paste += byte
        if self.paste.endswith(PASTE_END) or len(self.paste) > MAX_PASTE_BYTES:
            self.state = _In.GROUND
            return _KeyOutcome.PASTE_DONE
        return _KeyOutcome.KEEP

    def _hold_if_paste_start(self, byte: bytes) -> _KeyOutcome:
        """Keep an escape sequence back only while it may still become a paste start."""
        if self.held and PASTE_START.startswith(bytes(self.held) + byte):
            self.held += byte
            return _KeyOutcome.KEEP
        return _KeyOutcome.FORWARD


class _KeyOutcome(enum.Enum):
    FORWARD = "forward"
    KEEP = "keep"  # held back for now (part of a possible paste start, or of a paste)
    ENTER = "enter"
    PASTE_DONE = "paste-done"
    PREFIX = "prefix"  # forward `_prefix` now, keep the current byte held


def _paste_text(data: bytes) -> str | None:
    """Text of input that holds a line end followed by more: several lines sent at once."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    return text if text.strip("\n") else None
