"""The terminal emulator replay draws with: pyte's screen model, our parser, and the fixes
real programs need.

Stock pyte (0.8.2) gets real sessions wrong in ways a reviewer would notice: it has no
alternate screen buffer (vim, less, htop and man leave their screens on top of the shell), it
raises on `CSI ? 4 m` (vim 9), it ignores the DEC line-drawing set in UTF-8 mode, it parses
colon-form SGR (`38:2::r:g:b`) as text, it drops everything after a zero-width character that is
not a combining mark (an emoji with VS16), it cannot say where a wide character that does not
fit goes, and its resize moves the content but not the cursor. `ReplayScreen` subclasses
`pyte.Screen` to fix these; `ReplayStream` subclasses `pyte.ByteStream` and replaces its
character-at-a-time parser with one regular expression that cuts decoded text into tokens (a
run of printable text, a CSI, an OSC, an escape, a control), which is several times faster.
The bulk of what programs print (printable ASCII, tab, CR, LF and SGR) comes as one "run"
token that `ReplayScreen.draw_run` draws without a method call per token: a burst that scrolls
a thousand lines moves the cursor first, re-keys the screen once and draws only the lines that
are still on screen at its end. It has exactly the effect of the token-by-token way, which
`tests/replay/test_fast_path.py` checks against it on Hypothesis streams.

Bytes stay bytes until here: `ReplayStream.feed` takes bytes and decodes UTF-8 incrementally,
so a character (or an escape sequence) split across two recorded events is drawn once.

`Terminal` bundles a screen and its stream, renders plain text, and takes and restores
snapshots: everything that decides what the next byte does (both buffers, cursor, saved cursors,
modes, margins, charsets, tab stops, size, a partial escape sequence and a partial UTF-8
character), as plain msgpack-able values.

Known limits, each checked against tmux 3.3a where it matters (tests/replay/data):
- no reflow: when the width changes, tmux re-wraps wrapped lines of the main screen; we cut
  or pad them (full-screen programs redraw after a resize, so their screens match);
- no scrollback: `CSI 3 J` is ignored, and only lines pushed out by a shrinking resize are kept
  (to bring them back when it grows again, as tmux does);
- cells keep pyte's attributes (16 colours by name, 256 and true colours as `rrggbb`, bold,
  italics, underline, strikethrough, reverse, blink); dim, hidden, overline, underline colour
  and underline style are parsed and dropped; erasing paints the cursor's attributes, as pyte
  does, where xterm would keep only the background;
- widths come from the `wcwidth` package; an emoji made wide by VS16 stays one cell;
- every 47/1047/1049 switch clears the alternate screen when entering it, as tmux does (xterm
  keeps it for 47);
- 8-bit C1 controls are ignored, and a control character inside a CSI drops the sequence
  (xterm executes the control and continues).
"""

from __future__ import annotations

import codecs
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyte
from pyte import modes as mo
from pyte.screens import Char, Cursor, Margins, StaticDefaultDict
from wcwidth import wcwidth

SNAPSHOT_VERSION = 1
MAX_PARAM = 65535
MAX_PENDING = 64 * 1024  # an unterminated OSC/DCS longer than this is dropped

Line = StaticDefaultDict[int, Char]
Buffer = defaultdict[int, Line]

# DEC special graphics (ESC ( 0): the characters 0x5f-0x7e become line-drawing glyphs.
DEC_GRAPHICS = {
    ord(ascii_char): glyph
    for ascii_char, glyph in zip(
        "_`abcdefghijklmnopqrstuvwxyz{|}~",
        "\u00a0◆▒␉␌␍␊°±␤␋┘┐┌└┼⎺⎻─⎼⎽├┤┴┬│≤≥π≠£·",
        strict=True,
    )
}
# Designators we understand; anything else (UK, user-defined sets) is treated as ASCII.
CHARSETS: dict[str, dict[int, str] | None] = {"B": None, "0": DEC_GRAPHICS, "A": None}

FG_CODES = {
    **{
        30 + i: name
        for i, name in enumerate(
            ("black", "red", "green", "brown", "blue", "magenta", "cyan", "white")
        )
    },
    39: "default",
    **{
        90 + i: "bright" + name
        for i, name in enumerate(
            ("black", "red", "green", "brown", "blue", "magenta", "cyan", "white")
        )
    },
}
BG_CODES = {code + 10: name for code, name in FG_CODES.items()}
FLAG_CODES = {
    1: ("bold", True),
    3: ("italics", True),
    4: ("underscore", True),
    5: ("blink", True),
    6: ("blink", True),
    7: ("reverse", True),
    9: ("strikethrough", True),
    21: ("underscore", True),
    22: ("bold", False),
    23: ("italics", False),
    24: ("underscore", False),
    25: ("blink", False),
    27: ("reverse", False),
    29: ("strikethrough", False),
}
PALETTE_256: list[str] = []
for _r, _g, _b in (
    (0x00, 0x00, 0x00),
    (0xCD, 0x00, 0x00),
    (0x00, 0xCD, 0x00),
    (0xCD, 0xCD, 0x00),
    (0x00, 0x00, 0xEE),
    (0xCD, 0x00, 0xCD),
    (0x00, 0xCD, 0xCD),
    (0xE5, 0xE5, 0xE5),
    (0x7F, 0x7F, 0x7F),
    (0xFF, 0x00, 0x00),
    (0x00, 0xFF, 0x00),
    (0xFF, 0xFF, 0x00),
    (0x5C, 0x5C, 0xFF),
    (0xFF, 0x00, 0xFF),
    (0x00, 0xFF, 0xFF),
    (0xFF, 0xFF, 0xFF),
):
    PALETTE_256.append(f"{_r:02x}{_g:02x}{_b:02x}")
_LEVELS = (0x00, 0x5F, 0x87, 0xAF, 0xD7, 0xFF)
PALETTE_256 += [
    f"{_LEVELS[i // 36]:02x}{_LEVELS[i // 6 % 6]:02x}{_LEVELS[i % 6]:02x}" for i in range(216)
]
PALETTE_256 += [f"{8 + 10 * i:02x}" * 3 for i in range(24)]

# Private modes handled here rather than by pyte.
ALT_SCREEN_MODES = (47, 1047, 1049)
SAVE_CURSOR_MODE = 1048
DECCOLM_MODE = 3

# One token per match: a run (printable ASCII, tab, CR, LF and SGR: the bulk of what programs
# print, drawn by `ReplayScreen.draw_run`), other printable text, CR LF, CSI, OSC, string
# controls we ignore, other escapes, single controls, and a lone ESC (malformed, or the start
# of a sequence cut short).
TOKEN = re.compile(
    r"(?P<run>(?>[\t\n\r -~]++|\x1b\[[0-9;:]*+m)++)"
    r"|(?P<text>[^\x00-\x1f\x7f-\x9f]+)"
    r"|(?P<crlf>\r\n)"
    r"|\x1b\[(?P<csi_p>[<=>?]?)(?P<csi_a>[0-9:;]*)(?P<csi_i>[ -/]*)(?P<csi_f>[@-~])"
    r"|\x1b\](?P<osc>[^\x07\x1b\x9c]*)(?:\x07|\x1b\\|\x9c)"
    r"|(?P<string>\x1b[P^_X][^\x1b\x9c]*(?:\x1b\\|\x9c))"
    r"|\x1b(?P<esc_i>[ -/]*)(?P<esc_f>[0-OQ-WYZ\\`-~])"
    r"|(?P<ctl>[\x00-\x1a\x1c-\x1f\x7f-\x9f])"
    r"|(?P<esc>\x1b)"
)
# Inside a run: SGR parameters are the odd items of `RUN_SGR.split(run)`.
RUN_SGR = re.compile(r"\x1b\[([0-9;:]*)m")
# Inside a run, between SGRs: text, CR LF, or one control.
RUN_PIECE = re.compile(r"[ -~]+|\r\n|[\t\n\r]")
# A run taken the slow way: one screen method per token, as `TOKEN` would call them.
RUN_TOKEN = re.compile(r"(?P<t>[ -~]+)|\x1b\[(?P<sgr>[0-9;:]*)m|(?P<c>[\t\n\r])")
# A sequence that is not finished yet: kept for the next feed.
PARTIAL = re.compile(
    r"\x1b(?:\[[<=>?]?[0-9:;]*[ -/]*|\][^\x07\x1b\x9c]*\x1b?|[P^_X][^\x1b\x9c]*\x1b?|[ -/]*)\Z"
)


BLANK = Char(data=" ", fg="default", bg="default", reverse=False)
BLANK_REVERSED = BLANK._replace(reverse=True)


def char_width(char: str, _cache: dict[str, int] = {}) -> int:  # noqa: B006 - a memo
    width = _cache.get(char)
    if width is None:
        width = wcwidth(char)
        if len(_cache) < 65536:
            _cache[char] = width
    return width


class CellCache(dict[str, Char]):
    """Char objects for one set of attributes, made once per character: drawing a run of text
    is then a dict lookup per cell, done by C code."""

    __slots__ = ("rest",)

    def __init__(self, attrs: Char) -> None:
        super().__init__()
        self.rest: tuple[Any, ...] = tuple(attrs)[1:]

    def __missing__(self, data: str) -> Char:
        cell = Char._make((data, *self.rest))
        self[data] = cell
        return cell


@dataclass(slots=True)
class SavedCursor:
    """DECSC state: position, attributes, charsets, origin and wrap modes."""

    x: int
    y: int
    attrs: Char
    g0: str
    g1: str
    shift: int
    origin: bool
    wrap: bool


class ReplayScreen(pyte.Screen):
    """`pyte.Screen` plus an alternate screen buffer, DEC line drawing, colon-form SGR, wide
    characters that wrap like xterm's, zero-width characters, scrolling (SU/SD), REP, and a
    resize that keeps the cursor on its line."""

    def __init__(self, columns: int, lines: int) -> None:
        self._cell_caches: dict[Char, CellCache] = {}
        self._sgr_cache: dict[tuple[Char, str, bool], Char] = {}
        self.alternate = False
        self.inactive_buffer: Buffer = self._new_buffer()
        self.saved: SavedCursor | None = None
        self.saved_alt: SavedCursor | None = None
        self.g_codes = ["B", "B"]
        self.translate: dict[int, str] | None = None
        self.last_char = ""
        self.resize_history: list[Line] = []
        super().__init__(columns, lines)

    @property
    def default_char(self) -> Char:
        """pyte's blank cell (reversed in DECSCNM), made once rather than on every new line."""
        return BLANK_REVERSED if mo.DECSCNM in self.mode else BLANK

    def _new_buffer(self) -> Buffer:
        return defaultdict(lambda: StaticDefaultDict[int, Char](self.default_char))

    def cells(self, attrs: Char) -> CellCache:
        cache = self._cell_caches.get(attrs)
        if cache is None:
            if len(self._cell_caches) > 4096:
                self._cell_caches.clear()
            cache = self._cell_caches[attrs] = CellCache(attrs)
        return cache

    # -- state --------------------------------------------------------------------------------

    def reset(self) -> None:
        if getattr(self, "alternate", False):
            self.buffer, self.inactive_buffer = self.inactive_buffer, self.buffer
            self.alternate = False
        self.inactive_buffer = self._new_buffer()
        self.saved = None
        self.saved_alt = None
        self.g_codes = ["B", "B"]
        self.translate = None
        self.last_char = ""
        self.resize_history = []
        super().reset()

    def _update_translate(self) -> None:
        self.translate = CHARSETS.get(self.g_codes[self.charset])

    def define_charset(self, code: str, mode: str) -> None:
        slot = {"(": 0, ")": 1}.get(mode)
        if slot is None:
            return
        self.g_codes[slot] = code if code in CHARSETS else "B"
        self._update_translate()

    def shift_in(self) -> None:
        self.charset = 0
        self._update_translate()

    def shift_out(self) -> None:
        self.charset = 1
        self._update_translate()

    def save_cursor(self) -> None:
        self.saved = self._cursor_state()

    def restore_cursor(self) -> None:
        if self.saved is None:
            self.reset_mode(mo.DECOM)
            self.cursor.attrs = self.default_char
            self.g_codes = ["B", "B"]
            self.charset = 0
            self._update_translate()
            self.cursor_position()
        else:
            self._apply_cursor_state(self.saved)

    def _cursor_state(self) -> SavedCursor:
        cursor = self.cursor
        return SavedCursor(
            cursor.x,
            cursor.y,
            cursor.attrs,
            self.g_codes[0],
            self.g_codes[1],
            self.charset,
            mo.DECOM in self.mode,
            mo.DECAWM in self.mode,
        )

    def _apply_cursor_state(self, saved: SavedCursor) -> None:
        self.g_codes = [saved.g0, saved.g1]
        self.charset = saved.shift
        self._update_translate()
        for flag, mode in ((saved.origin, mo.DECOM), (saved.wrap, mo.DECAWM)):
            if flag:
                self.mode.add(mode)
            else:
                self.mode.discard(mode)
        self.cursor.x = min(saved.x, self.columns - 1)
        self.cursor.y = min(saved.y, self.lines - 1)
        self.cursor.attrs = saved.attrs

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if not kwargs.get("private"):
            super().set_mode(*modes)
            return
        rest = []
        for mode in modes:
            if mode in ALT_SCREEN_MODES:
                self.enter_alternate(save_cursor=mode == 1049)
            elif mode == SAVE_CURSOR_MODE:
                self.save_cursor()
            elif mode == DECCOLM_MODE:  # like tmux: clear and home, never resize
                self.erase_in_display(2)
                self.cursor_position()
            else:
                rest.append(mode)
        if rest:
            super().set_mode(*rest, private=True)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if not kwargs.get("private"):
            super().reset_mode(*modes)
            return
        rest = []
        for mode in modes:
            if mode in ALT_SCREEN_MODES:
                self.leave_alternate(restore_cursor=mode == 1049)
            elif mode == SAVE_CURSOR_MODE:
                self.restore_cursor()
            elif mode == DECCOLM_MODE:
                self.erase_in_display(2)
                self.cursor_position()
            else:
                rest.append(mode)
        if rest:
            super().reset_mode(*rest, private=True)

    def enter_alternate(self, *, save_cursor: bool) -> None:
        """Show the alternate buffer, cleared (as tmux and xterm's 1049 do)."""
        if save_cursor:
            self.saved_alt = self._cursor_state()
        if not self.alternate:
            self.buffer, self.inactive_buffer = self.inactive_buffer, self.buffer
            self.alternate = True
        self.buffer.clear()
        self.dirty.update(range(self.lines))

    def leave_alternate(self, *, restore_cursor: bool) -> None:
        if self.alternate:
            self.buffer, self.inactive_buffer = self.inactive_buffer, self.buffer
            self.inactive_buffer.clear()
            self.alternate = False
            self.dirty.update(range(self.lines))
        if restore_cursor and self.saved_alt is not None:
            self._apply_cursor_state(self.saved_alt)

    # -- drawing ------------------------------------------------------------------------------

    def draw(self, data: str) -> None:
        if self.translate is not None:
            data = data.translate(self.translate)
        if not data:
            return
        if data.isascii() and mo.IRM not in self.mode:
            self._draw_ascii(data)
        else:
            self._draw_any(data)
        self.last_char = data[-1]

    def _draw_ascii(self, data: str) -> None:
        cursor = self.cursor
        columns = self.columns
        cells = self.cells(cursor.attrs)
        pos = 0
        size = len(data)
        while pos < size:
            x = cursor.x
            if x >= columns:
                if mo.DECAWM not in self.mode:
                    line = self.buffer[cursor.y]
                    self._unsplit(line, columns - 1, columns)
                    line[columns - 1] = cells[data[-1]]
                    self.dirty.add(cursor.y)
                    return
                self.carriage_return()
                self.linefeed()
                x = 0
            take = min(columns - x, size - pos)
            line = self.buffer[cursor.y]
            if line:
                self._unsplit(line, x, x + take)
            line.update(
                zip(range(x, x + take), map(cells.__getitem__, data[pos : pos + take]), strict=True)
            )
            cursor.x = x + take
            pos += take
            self.dirty.add(cursor.y)

    def draw_run(self, run: str) -> None:
        """A run of printable ASCII, tab, CR, LF and SGR (a `TOKEN` "run"), with exactly the
        effect of calling `draw`, `tab`, `carriage_return`, `linefeed` and `sgr` token by token.

        In the common case (no scroll region, no charset translation, no insert mode, autowrap
        on) the cursor is moved first and the cells drawn after, so a burst that scrolls a
        thousand lines re-keys the screen once and never draws the lines it pushes out. Any
        other state takes the token-by-token way."""
        if run.isprintable():  # text alone (no control, no SGR): one draw, as before
            self.draw(run)
            return
        if "\n" not in run:  # no line feed: nothing to defer, a few calls do it
            self._draw_run_slowly(run)
            return
        margins = self.margins
        mode = self.mode
        lines = self.lines
        if (
            (margins is not None and (margins.top != 0 or margins.bottom != lines - 1))
            or self.translate is not None
            or mo.IRM in mode
            or mo.DECAWM not in mode
            or not 0 <= self.cursor.y < lines
        ):
            self._draw_run_slowly(run)
            return
        cursor = self.cursor
        columns = self.columns
        bottom = lines - 1
        newline_mode = mo.LNM in mode
        x, y = cursor.x, cursor.y
        scrolled = 0
        # (row counted from the top of the screen before the run, first column, text, cells)
        ops: list[tuple[int, int, str, CellCache]] = []
        append = ops.append
        cells = self.cells(cursor.attrs)
        last = ""
        stops: list[int] | None = None

        def feed(text: str) -> None:
            """Move the cursor over `text` (no SGR in it), noting what to draw where."""
            nonlocal x, y, scrolled, last, stops
            for match in RUN_PIECE.finditer(text):
                token = match.group()
                first = token[0]
                if first == "\r":
                    x = 0
                    if len(token) == 1:
                        continue
                    first = "\n"
                if first == "\n":  # LF: index, then CR in newline mode
                    if y == bottom:
                        scrolled += 1
                    elif y < bottom:
                        y += 1
                    if newline_mode:
                        x = 0
                elif first == "\t":
                    if stops is None:
                        stops = sorted(self.tabstops)
                    x = next((stop for stop in stops if x < stop), columns - 1)
                else:
                    size = len(token)
                    if x + size <= columns:
                        append((scrolled + y, x, token, cells))
                        x += size
                    else:
                        pos = 0
                        while pos < size:
                            if x >= columns:
                                x = 0
                                if y == bottom:
                                    scrolled += 1
                                elif y < bottom:
                                    y += 1
                            take = min(columns - x, size - pos)
                            append((scrolled + y, x, token[pos : pos + take], cells))
                            x += take
                            pos += take
                    last = token[-1]

        for number, part in enumerate(RUN_SGR.split(run)):
            if number & 1:
                self.sgr(part)
                cells = self.cells(cursor.attrs)
                continue
            if part.count("\n") <= lines + 1:
                if part:
                    feed(part)
                continue
            pieces = part.split("\n")
            middle = len(pieces) - 2
            if not self._rows_of_lines(pieces, part):
                feed(part)
                continue
            feed(pieces[0])
            # Lines between the first and last piece each end with CR, fit the width and
            # hold no tab: each LF moves down one row and draws at its column 0. Only the
            # last screenful can still be on screen at the end of the run.
            base = scrolled + y
            for number in range(middle - lines + 1, middle + 1):
                text = pieces[number][:-1]
                if text:
                    append((base + number, 0, text, cells))
            moved_to = min(bottom, y + middle)
            scrolled += middle - (moved_to - y)
            y = moved_to
            x = 0
            for number in range(middle, 0, -1):
                if len(pieces[number]) > 1:
                    last = pieces[number][-2]
                    break
            feed("\n" + pieces[-1])
        buffer = self.buffer
        dirty = self.dirty
        if scrolled:
            moved = [(row - scrolled, buffer.pop(row)) for row in range(lines) if row in buffer]
            buffer.update(item for item in moved if item[0] >= 0)
            dirty.update(range(lines))
        blank = self.default_char
        for row, start, text, row_cells in ops:
            row -= scrolled
            if row < 0:
                continue  # pushed out before the run ended: never drawn
            end = start + len(text)
            line = buffer.get(row)
            if line is None:
                line = buffer[row] = StaticDefaultDict[int, Char](blank)
            elif line:
                self._unsplit(line, start, end)
            line.update(zip(range(start, end), map(row_cells.__getitem__, text), strict=True))
            dirty.add(row)
        cursor.x, cursor.y = x, y
        if last:
            self.last_char = last

    def _rows_of_lines(self, pieces: list[str], part: str) -> bool:
        """Whether every LF of `part` (split into `pieces` at LF) follows a CR, no other CR
        and no tab lies between the first and the last LF, and no line between them is
        wider than the screen: then each of those lines is drawn on one row, at column 0."""
        if "\t" in part:
            return False
        breaks = len(pieces) - 1
        if part.count("\r\n") != breaks:
            return False
        stray = part.count("\r") - breaks
        if stray != pieces[0].count("\r") - 1 + pieces[-1].count("\r"):
            return False
        return max(map(len, pieces[1:-1])) <= self.columns + 1

    def _draw_run_slowly(self, run: str) -> None:
        """A run, token by token: the reference the fast way is checked against."""
        for match in RUN_TOKEN.finditer(run):
            kind = match.lastgroup
            if kind == "t":
                self.draw(match.group("t"))
            elif kind == "sgr":
                self.sgr(match.group("sgr"))
            else:
                control = match.group("c")
                if control == "\n":
                    self.linefeed()
                elif control == "\r":
                    self.carriage_return()
                else:
                    self.tab()

    def _unsplit(self, line: Line, start: int, end: int) -> None:
        """Cells [start, end) are about to be overwritten: blank the halves of wide characters
        they would cut in two."""
        cell = line.get(start)
        if cell is not None and cell.data == "" and start > 0:
            left = line.get(start - 1)
            if left is not None:
                line[start - 1] = left._replace(data=" ")
        cell = line.get(end)
        if cell is not None and cell.data == "":
            line[end] = cell._replace(data=" ")

    def _draw_any(self, data: str) -> None:
        cursor = self.cursor
        columns = self.columns
        cells = self.cells(cursor.attrs)
        insert = mo.IRM in self.mode
        for char in data:
            width = char_width(char)
            if width <= 0:
                if width == 0:
                    self._combine(char)
                continue
            if width > columns:
                continue  # a wide character on a one-column screen
            if cursor.x + width > columns:
                # like xterm and tmux: wrap first (the cell left at the end stays as it is)
                if mo.DECAWM in self.mode:
                    self.carriage_return()
                    self.linefeed()
                else:
                    cursor.x = columns - width
            if insert:
                self.insert_characters(width)
            line = self.buffer[cursor.y]
            x = cursor.x
            self._unsplit(line, x, x + width)
            line[x] = cells[char]
            if width == 2:
                line[x + 1] = cells[""]
            cursor.x = x + width
            self.dirty.add(cursor.y)

    def _combine(self, char: str) -> None:
        """A zero-width character joins the character before the cursor."""
        x, y = self.cursor.x - 1, self.cursor.y
        if x < 0:
            return
        line = self.buffer[y]
        cell = line.get(x)
        if cell is not None and cell.data == "" and x > 0:
            x -= 1
            cell = line.get(x)
        if cell is None:
            return
        line[x] = cell._replace(data=cell.data + char)
        self.dirty.add(y)

    def repeat_last(self, count: int | None = None) -> None:
        """REP: draw the last drawn character again `count` times."""
        if self.last_char:
            saved, self.translate = self.translate, None
            self.draw(self.last_char * min(count or 1, self.columns * self.lines))
            self.translate = saved

    # -- erasing and scrolling ----------------------------------------------------------------

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        """EL, painting the cells in one C call rather than one Python step per cell."""
        cursor = self.cursor
        columns = self.columns
        if how == 0:
            start, end = min(cursor.x, columns), columns
        elif how == 1:
            start, end = 0, min(cursor.x + 1, columns)
        elif how == 2:
            start, end = 0, columns
        else:
            return
        self.dirty.add(cursor.y)
        if start < end:
            line = self.buffer[cursor.y]
            self._unsplit(line, start, end)
            line.update(dict.fromkeys(range(start, end), cursor.attrs))

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if how == 3:  # the scrollback, which replay does not keep
            self.resize_history.clear()
            return
        if how == 2:
            self.resize_history.clear()
        super().erase_in_display(how)

    def index(self) -> None:
        """IND/LF: at the bottom margin the region scrolls up (lines re-keyed in one pass,
        only the region marked dirty); below the region the cursor moves down to the last
        line (pyte would move it up to the margin)."""
        margins = self.margins
        top, bottom = (0, self.lines - 1) if margins is None else margins
        cursor = self.cursor
        if cursor.y == bottom:
            buffer = self.buffer
            buffer.pop(top, None)
            moved = [(y - 1, buffer.pop(y)) for y in range(top + 1, bottom + 1) if y in buffer]
            buffer.update(moved)
            self.dirty.update(range(top, bottom + 1))
        elif cursor.y < self.lines - 1:
            cursor.y += 1

    def scroll_up(self, count: int | None = None) -> None:
        """SU: the lines of the scrolling region move up, blank lines appear at the bottom."""
        top, bottom = self.margins or Margins(0, self.lines - 1)
        count = min(count or 1, bottom - top + 1)
        buffer = self.buffer
        for y in range(top, bottom + 1):
            source = y + count
            if source <= bottom and source in buffer:
                buffer[y] = buffer.pop(source)
            else:
                buffer.pop(y, None)
        self.dirty.update(range(top, bottom + 1))

    def scroll_down(self, count: int | None = None) -> None:
        """SD: the lines of the scrolling region move down, blank lines appear at the top."""
        top, bottom = self.margins or Margins(0, self.lines - 1)
        count = min(count or 1, bottom - top + 1)
        buffer = self.buffer
        for y in range(bottom, top - 1, -1):
            source = y - count
            if source >= top and source in buffer:
                buffer[y] = buffer.pop(source)
            else:
                buffer.pop(y, None)
        self.dirty.update(range(top, bottom + 1))

    def back_tab(self, count: int | None = None) -> None:
        for _ in range(count or 1):
            stops = [stop for stop in self.tabstops if stop < self.cursor.x]
            self.cursor.x = max(stops) if stops else 0

    def forward_tab(self, count: int | None = None) -> None:
        for _ in range(count or 1):
            self.tab()

    def select_graphic_rendition(self, *attrs: int, **kwargs: Any) -> None:
        """SGR from integers (pyte's signature); a private SGR (`CSI ? 4 m`) is ignored."""
        if kwargs.get("private"):
            return
        self.sgr(";".join(str(attr) for attr in attrs))

    def sgr(self, args: str) -> None:
        """SGR from its parameter text, semicolon and colon forms alike. Programs repeat the
        same few changes, so results are memoised by (attributes before, parameters)."""
        key = (self.cursor.attrs, args, mo.DECSCNM in self.mode)
        found = self._sgr_cache.get(key)
        if found is None:
            found = self._sgr_apply(self.cursor.attrs, args)
            if len(self._sgr_cache) > 8192:
                self._sgr_cache.clear()
            self._sgr_cache[key] = found
        self.cursor.attrs = found

    def _sgr_apply(self, attrs: Char, args: str) -> Char:
        if not args or args == "0":
            return self.default_char
        replace: dict[str, Any] = {}
        fields = args.split(";")
        count = len(fields)
        index = 0
        while index < count:
            field = fields[index]
            index += 1
            if ":" in field:
                parts = field.split(":")
                code = _int(parts[0])
                if code in (38, 48, 58):
                    colour = _colour(parts[1:], colon=True)
                    if colour is not None and code != 58:
                        replace["fg" if code == 38 else "bg"] = colour
                elif code == 4:
                    replace["underscore"] = _int(parts[1]) != 0
                else:
                    self._sgr_code(code, replace)
                continue
            code = _int(field)
            if code in (38, 48, 58):
                kind = fields[index] if index < count else ""
                take = 2 if kind == "5" else 4 if kind == "2" else 1
                colour = _colour(fields[index : index + take], colon=False)
                index += take
                if colour is not None and code != 58:
                    replace["fg" if code == 38 else "bg"] = colour
            else:
                self._sgr_code(code, replace)
        return attrs._replace(**replace)

    def _sgr_code(self, code: int, replace: dict[str, Any]) -> None:
        if code == 0:
            replace.update(self.default_char._asdict())
            del replace["data"]
        elif code in FG_CODES:
            replace["fg"] = FG_CODES[code]
        elif code in BG_CODES:
            replace["bg"] = BG_CODES[code]
        elif code in FLAG_CODES:
            name, value = FLAG_CODES[code]
            replace[name] = value
        # Anything else (dim, hidden, overline, fonts...) is not kept in a cell.

    # -- size ---------------------------------------------------------------------------------

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Resize like tmux (without reflow): a shorter screen first loses the empty lines below
        the cursor, then lines at the top (kept, and brought back if it grows again); the
        cursor stays on its line."""
        lines = max(1, lines or self.lines)
        columns = max(1, columns or self.columns)
        if lines == self.lines and columns == self.columns:
            return
        old = self.lines
        cursor = self.cursor
        if lines < old:
            needed = old - lines
            below = min(needed, max(0, old - 1 - cursor.y))
            for y in range(old - below, old):
                self.buffer.pop(y, None)
                self.inactive_buffer.pop(y, None)
            needed -= below
            if needed:
                self._shift_up(needed)
                cursor.y -= needed
        elif lines > old and self.resize_history and not self.alternate:
            pulled = min(lines - old, len(self.resize_history))
            self._shift_down(pulled)
            cursor.y += pulled
        if columns < self.columns:
            for buffer in (self.buffer, self.inactive_buffer):
                for line in buffer.values():
                    for x in [x for x in line if x >= columns]:
                        del line[x]
        old_columns = self.columns
        self.lines, self.columns = lines, columns
        self.tabstops = {stop for stop in self.tabstops if stop < columns}
        self.tabstops.update(stop for stop in range(8, columns, 8) if stop >= old_columns)
        self.margins = None
        cursor.x = min(cursor.x, columns - 1)
        cursor.y = max(0, min(cursor.y, lines - 1))
        self.dirty.update(range(lines))

    def _shift_up(self, count: int) -> None:
        main = self.inactive_buffer if self.alternate else self.buffer
        for y in range(count):
            if y in main:
                self.resize_history.append(main[y])
            elif not self.alternate:
                self.resize_history.append(StaticDefaultDict[int, Char](self.default_char))
        del self.resize_history[:-1000]
        for buffer in (self.buffer, self.inactive_buffer):
            moved = {y - count: line for y, line in buffer.items() if y >= count}
            buffer.clear()
            buffer.update(moved)

    def _shift_down(self, count: int) -> None:
        moved = {y + count: line for y, line in self.buffer.items()}
        self.buffer.clear()
        self.buffer.update(moved)
        for y in range(count - 1, -1, -1):
            self.buffer[y] = self.resize_history.pop()

    # -- rendering ----------------------------------------------------------------------------

    def text_lines(self) -> list[str]:
        """The screen as plain text: one string per line, wide characters once, trailing
        blanks kept."""
        out = []
        columns = self.columns
        blank = " " * columns
        buffer = self.buffer
        for y in range(self.lines):
            line = buffer.get(y)
            if not line:
                out.append(blank)
                continue
            out.append("".join(line[x].data if x in line else " " for x in range(columns)))
        return out

    @property
    def display(self) -> list[str]:
        return self.text_lines()


def _int(text: str) -> int:
    try:
        return min(int(text), MAX_PARAM) if text else 0
    except ValueError:
        return 0


def _colour(parts: list[str], *, colon: bool) -> str | None:
    """The colour of an extended SGR colour (after 38/48/58): `5;n`, `2;r;g;b`, and the colon
    forms `5:n`, `2::r:g:b` and `2:r:g:b`."""
    if not parts:
        return None
    kind = parts[0]
    if kind == "5" and len(parts) >= 2:
        number = _int(parts[1])
        return PALETTE_256[number] if number < 256 else None
    if kind == "2":
        values = parts[1:]
        if colon and len(values) >= 4:
            values = values[1:4]  # a colour space id comes first
        if len(values) < 3:
            return None
        r, g, b = (min(_int(value), 255) for value in values[:3])
        return f"{r:02x}{g:02x}{b:02x}"
    return None


def _first(args: str) -> int:
    params = _params(args)
    return params[0] if params else 0


def _params(args: str) -> list[int]:
    if not args:
        return []
    out = []
    for part in args.split(";"):
        if ":" in part:
            part = part.partition(":")[0]
        out.append(_int(part))
    return out


class ReplayStream(pyte.ByteStream):
    """Bytes in, screen methods called. Replaces pyte's per-character parser by one regular
    expression over the decoded text; a sequence cut at the end of a feed waits for the next."""

    def __init__(self, screen: ReplayScreen) -> None:
        super().__init__(screen, strict=False)
        self.screen = screen
        self.pending = ""
        self.fast = True  # False: runs go token by token (the reference the tests compare to)
        self.csi_table: dict[str, Callable[..., None]] = {
            "@": screen.insert_characters,
            "A": screen.cursor_up,
            "B": screen.cursor_down,
            "C": screen.cursor_forward,
            "D": screen.cursor_back,
            "E": screen.cursor_down1,
            "F": screen.cursor_up1,
            "G": screen.cursor_to_column,
            "H": screen.cursor_position,
            "I": screen.forward_tab,
            "J": screen.erase_in_display,
            "K": screen.erase_in_line,
            "L": screen.insert_lines,
            "M": screen.delete_lines,
            "P": screen.delete_characters,
            "S": screen.scroll_up,
            "T": screen.scroll_down,
            "X": screen.erase_characters,
            "Z": screen.back_tab,
            "`": screen.cursor_to_column,
            "a": screen.cursor_forward,
            "b": screen.repeat_last,
            "d": screen.cursor_to_line,
            "e": screen.cursor_down,
            "f": screen.cursor_position,
            "g": screen.clear_tab_stop,
            "h": screen.set_mode,
            "l": screen.reset_mode,
            "r": screen.set_margins,
        }
        self.control_table: dict[str, Callable[[], None]] = {
            "\x08": screen.backspace,
            "\t": screen.tab,
            "\n": screen.linefeed,
            "\x0b": screen.linefeed,
            "\x0c": screen.linefeed,
            "\r": screen.carriage_return,
            "\x0e": screen.shift_out,
            "\x0f": screen.shift_in,
        }
        self.escape_table: dict[str, Callable[[], None]] = {
            "7": screen.save_cursor,
            "8": screen.restore_cursor,
            "D": screen.index,
            "E": self._next_line,
            "M": screen.reverse_index,
            "H": screen.set_tab_stop,
            "c": screen.reset,
        }

    def _next_line(self) -> None:
        self.screen.carriage_return()
        self.screen.index()

    def feed(self, data: bytes) -> None:  # type: ignore[override]
        self.feed_text(self.utf8_decoder.decode(data))

    def feed_text(self, text: str) -> None:
        if self.pending:
            text = self.pending + text
            self.pending = ""
        screen = self.screen
        draw = screen.draw
        controls = self.control_table
        draw_run = screen.draw_run if self.fast else screen._draw_run_slowly
        for match in TOKEN.finditer(text):
            kind = match.lastgroup
            if kind == "run":
                draw_run(match.group(kind))
            elif kind == "text":
                draw(match.group(kind))
            elif kind == "csi_f":
                self._csi(*match.group("csi_p", "csi_a", "csi_i", "csi_f"))
            elif kind == "crlf":
                screen.carriage_return()
                screen.linefeed()
            elif kind == "ctl":
                handler = controls.get(match.group(kind))
                if handler is not None:
                    handler()
            elif kind == "esc_f":
                self._escape(match.group("esc_i"), match.group("esc_f"))
            elif kind == "osc":
                self._osc(match.group(kind))
            elif kind == "esc":
                start = match.start()
                if len(text) - start <= MAX_PENDING and PARTIAL.match(text, start):
                    self.pending = text[start:]
                    return
            # "string" (DCS, APC, PM, SOS) is ignored

    def _csi(self, private: str, args: str, inter: str, final: str) -> None:
        screen = self.screen
        if inter:
            if inter == "!" and final == "p":  # DECSTR, soft reset
                screen.sgr("")
                screen.margins = None
                screen.mode.discard(mo.IRM)
                screen.mode.discard(mo.DECOM)
                screen.mode.add(mo.DECAWM)
                screen.cursor.hidden = False
            return
        if private:
            if private == "?":
                if final == "h":
                    screen.set_mode(*_params(args), private=True)
                elif final == "l":
                    screen.reset_mode(*_params(args), private=True)
                elif final == "J":
                    screen.erase_in_display(_first(args))
                elif final == "K":
                    screen.erase_in_line(_first(args))
            return  # `CSI ? 4 m`, `CSI > 4;2 m`, queries: nothing on screen
        if final == "m":
            screen.sgr(args)
            return
        handler = self.csi_table.get(final)
        if handler is not None:
            handler(*_params(args))

    def _escape(self, inter: str, final: str) -> None:
        if not inter:
            handler = self.escape_table.get(final)
            if handler is not None:
                handler()
        elif inter in "()":
            self.screen.define_charset(final, inter)
        elif inter == "#" and final == "8":
            self.screen.alignment_display()

    def _osc(self, body: str) -> None:
        code, _, param = body.partition(";")
        if code in ("0", "1"):
            self.screen.set_icon_name(param)
        if code in ("0", "2"):
            self.screen.set_title(param)


def _cell_key(cell: Char) -> tuple[Any, ...]:
    return tuple(cell)[1:]


class Terminal:
    """A screen and its stream: feed bytes, resize, read text, snapshot and restore."""

    def __init__(self, columns: int = 80, lines: int = 24) -> None:
        self.screen = ReplayScreen(max(1, columns), max(1, lines))
        self.stream = ReplayStream(self.screen)

    @property
    def columns(self) -> int:
        return int(self.screen.columns)

    @property
    def lines(self) -> int:
        return int(self.screen.lines)

    @property
    def cursor(self) -> Cursor:
        return self.screen.cursor

    def feed(self, data: bytes) -> None:
        self.stream.feed(data)

    def resize(self, columns: int, lines: int) -> None:
        self.screen.resize(lines=lines, columns=columns)

    def text_lines(self) -> list[str]:
        return self.screen.text_lines()

    def text(self) -> str:
        """The screen as text, trailing blanks and blank lines at the end dropped."""
        return "\n".join(line.rstrip() for line in self.text_lines()).rstrip("\n")

    def contains(self, needle: str) -> bool:
        return any(needle in line for line in self.text_lines())

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything that decides what the next byte does, as msgpack-able values."""
        screen = self.screen
        styles: dict[tuple[Any, ...], int] = {}

        def style(cell: Char) -> int:
            key = _cell_key(cell)
            found = styles.get(key)
            if found is None:
                found = styles[key] = len(styles)
            return found

        by_identity: dict[int, int] = {}

        def pack_buffer(buffer: dict[int, Line]) -> list[Any]:
            packed: list[Any] = []
            for y, line in buffer.items():
                if not line and line.default == screen.default_char:
                    continue
                cells: list[Any] = []
                append = cells.append
                for x, cell in line.items():
                    # cells drawn with the same attributes share objects: hash them once
                    found = by_identity.get(id(cell))
                    if found is None:
                        found = by_identity[id(cell)] = style(cell)
                    append(x)
                    append(cell.data)
                    append(found)
                packed.append((y, style(line.default), cells))
            return packed

        def pack_saved(saved: SavedCursor | None) -> list[Any] | None:
            if saved is None:
                return None
            return [
                saved.x,
                saved.y,
                style(saved.attrs),
                saved.g0,
                saved.g1,
                saved.shift,
                saved.origin,
                saved.wrap,
            ]

        decoder_buffer, decoder_flag = self.stream.utf8_decoder.getstate()
        cursor = screen.cursor
        state = {
            "v": SNAPSHOT_VERSION,
            "size": (screen.columns, screen.lines),
            "alternate": screen.alternate,
            "buffer": pack_buffer(screen.buffer),
            "inactive": pack_buffer(screen.inactive_buffer),
            "history": [
                (style(line.default), [v for x, c in line.items() for v in (x, c.data, style(c))])
                for line in screen.resize_history
            ],
            "cursor": (cursor.x, cursor.y, style(cursor.attrs), cursor.hidden),
            "saved": pack_saved(screen.saved),
            "saved_alt": pack_saved(screen.saved_alt),
            "mode": sorted(screen.mode),
            "margins": None if screen.margins is None else tuple(screen.margins),
            "charsets": (screen.g_codes[0], screen.g_codes[1], screen.charset),
            "tabstops": sorted(screen.tabstops),
            "title": (screen.title, screen.icon_name),
            "last_char": screen.last_char,
            "pending": self.stream.pending,
            "decoder": (bytes(decoder_buffer), decoder_flag),
        }
        state["styles"] = [list(key) for key in styles]
        return state

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> Terminal:
        if state.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown terminal snapshot version {state.get('v')!r}")
        columns, lines = state["size"]
        terminal = cls(columns, lines)
        terminal.restore(state)
        return terminal

    def restore(self, state: dict[str, Any]) -> None:
        """Put this terminal in the state `snapshot()` described."""
        screen = self.screen
        columns, lines = state["size"]
        screen.columns, screen.lines = columns, lines
        styles = [tuple(key) for key in state["styles"]]
        blanks = [Char(" ", *key) for key in styles]

        caches = [screen.cells(blank) for blank in blanks]

        def unpack_line(default: int, cells: list[Any]) -> Line:
            line = StaticDefaultDict[int, Char](blanks[default])
            for index in range(0, len(cells), 3):
                line[cells[index]] = caches[cells[index + 2]][cells[index + 1]]
            return line

        def unpack_buffer(packed: Iterable[Any]) -> Buffer:
            buffer = screen._new_buffer()
            for y, default, cells in packed:
                buffer[y] = unpack_line(default, cells)
            return buffer

        def unpack_saved(saved: list[Any] | None) -> SavedCursor | None:
            if saved is None:
                return None
            x, y, attrs, g0, g1, shift, origin, wrap = saved
            return SavedCursor(x, y, blanks[attrs], g0, g1, shift, origin, wrap)

        screen.alternate = state["alternate"]
        screen.buffer = unpack_buffer(state["buffer"])
        screen.inactive_buffer = unpack_buffer(state["inactive"])
        screen.resize_history = [unpack_line(d, cells) for d, cells in state["history"]]
        x, y, attrs, hidden = state["cursor"]
        screen.cursor = Cursor(x, y, blanks[attrs])
        screen.cursor.hidden = hidden
        screen.saved = unpack_saved(state["saved"])
        screen.saved_alt = unpack_saved(state["saved_alt"])
        screen.mode = set(state["mode"])
        margins = state["margins"]
        screen.margins = None if margins is None else Margins(*margins)
        g0, g1, shift = state["charsets"]
        screen.g_codes = [g0, g1]
        screen.charset = shift
        screen._update_translate()
        screen.tabstops = set(state["tabstops"])
        screen.title, screen.icon_name = state["title"]
        screen.last_char = state["last_char"]
        screen.dirty.update(range(lines))
        self.stream.pending = state["pending"]
        buffered, flag = state["decoder"]
        self.stream.utf8_decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.stream.utf8_decoder.setstate((bytes(buffered), flag))

    def state_key(self) -> Any:
        """A comparable value of the whole state (for tests: equal keys, equal terminals)."""
        state = self.snapshot()
        styles = state.pop("styles")

        def expand(packed: list[Any]) -> list[Any]:
            out = []
            for y, default, cells in sorted(packed, key=lambda item: item[0]):
                expanded = sorted(
                    (cells[i], cells[i + 1], tuple(styles[cells[i + 2]]))
                    for i in range(0, len(cells), 3)
                )
                out.append((y, tuple(styles[default]), expanded))
            return out

        state["buffer"] = expand(state["buffer"])
        state["inactive"] = expand(state["inactive"])
        state["history"] = [
            (
                tuple(styles[d]),
                [(c[i], c[i + 1], tuple(styles[c[i + 2]])) for i in range(0, len(c), 3)],
            )
            for d, c in state["history"]
        ]
        for key in ("saved", "saved_alt"):
            if state[key] is not None:
                state[key][2] = tuple(styles[state[key][2]])
        cursor = list(state["cursor"])
        cursor[2] = tuple(styles[cursor[2]])
        state["cursor"] = cursor
        return state
