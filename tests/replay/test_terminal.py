"""The replay terminal: golden screens of real programs compared with tmux, each pyte gap fixed,
bytes cut anywhere, and snapshots that restore exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.player import Player
from replay.sources import CastSource
from replay.terminal import DEC_GRAPHICS, PALETTE_256, Terminal

DATA = Path(__file__).parent / "data"
# tmux keeps DEC line-drawing cells as the ASCII letter plus a charset flag, and
# `capture-pane -p` prints the letter; we store the glyph.
GLYPH_TO_ACS = str.maketrans(
    {glyph: chr(code) for code, glyph in DEC_GRAPHICS.items() if code != 0x5F}
)


def golden_cases() -> list[Any]:
    cases = []
    for expected in sorted(DATA.glob("*.expected.json")):
        name = expected.name.split(".")[0]
        for number, checkpoint in enumerate(json.loads(expected.read_text(encoding="utf-8"))):
            cases.append(pytest.param(name, checkpoint, id=f"{name}-{number}"))
    return cases


@pytest.fixture(scope="module")
def players() -> dict[str, Player]:
    return {}


@pytest.mark.parametrize(("name", "checkpoint"), golden_cases())
def test_screen_matches_tmux(players: dict[str, Player], name: str, checkpoint: Any) -> None:
    if name not in players:
        players[name] = Player.open(CastSource.open(DATA / f"{name}.cast"), every_bytes=2048)
    player = players[name]
    player.seek(round(checkpoint["at"] * 1_000_000))
    terminal = player.terminal
    lines = [line.translate(GLYPH_TO_ACS).rstrip() for line in terminal.text_lines()]
    assert lines == checkpoint["lines"]
    assert [terminal.columns, terminal.lines] == checkpoint["size"]
    assert [terminal.cursor.x, terminal.cursor.y] == checkpoint["cursor"]
    assert terminal.screen.alternate == checkpoint["alternate"]
    assert styled_cells(terminal) == styled_cells(reference_terminal(checkpoint))


STYLE_FIELDS = ("fg", "bg", "bold", "italics", "underscore", "reverse")


def reference_terminal(checkpoint: Any) -> Terminal:
    """tmux's screen with its attributes, rebuilt from `capture-pane -p -e` (SGR sequences
    only, and line drawing as SO/SI with G1 set to DEC graphics)."""
    columns, lines = checkpoint["size"]
    reference = Terminal(columns, lines)
    reference.feed(b"\x1b)0" + "\r\n".join(checkpoint["styled"]).encode())
    return reference


def styled_cells(terminal: Terminal) -> dict[tuple[int, int], tuple[Any, ...]]:
    """Every visible character with its colours and flags, by position."""
    out = {}
    for y, line in terminal.screen.buffer.items():
        if y >= terminal.lines:
            continue
        for x, char in line.items():
            if x < terminal.columns and char.data not in (" ", ""):
                out[(x, y)] = (char.data, *(getattr(char, name) for name in STYLE_FIELDS))
    return out


def test_golden_data_is_small_and_covers_the_programs() -> None:
    total = sum(path.stat().st_size for path in DATA.iterdir() if path.is_file())
    assert total < 1024 * 1024
    names = {path.name.split(".")[0] for path in DATA.glob("*.cast")}
    assert {"vim", "less", "top", "ls_color", "utf8", "resize"} <= names
    assert '"r"' in (DATA / "resize.cast").read_text()


def screen(*chunks: bytes, columns: int = 20, lines: int = 5) -> Terminal:
    terminal = Terminal(columns, lines)
    for chunk in chunks:
        terminal.feed(chunk)
    return terminal


def cell(terminal: Terminal, x: int, y: int) -> Any:
    return terminal.screen.buffer[y][x]


# -- alternate screen -----------------------------------------------------------------------------


def test_1049_switches_to_a_clean_buffer_and_back_with_the_cursor() -> None:
    terminal = screen(b"shell prompt $ ls\r\nfile", b"\x1b[?1049h")
    assert terminal.screen.alternate
    assert terminal.text() == ""
    terminal.feed(b"\x1b[H\x1b[2Jvim screen\x1b[5;5H~")
    assert terminal.text().startswith("vim screen")
    terminal.feed(b"\x1b[?1049l")
    assert not terminal.screen.alternate
    assert terminal.text() == "shell prompt $ ls\nfile"
    assert (terminal.cursor.x, terminal.cursor.y) == (4, 1)


@pytest.mark.parametrize("mode", [b"47", b"1047"])
def test_47_and_1047_switch_buffers_without_moving_the_cursor(mode: bytes) -> None:
    terminal = screen(b"main text", b"\x1b[?" + mode + b"h", b"\x1b[3;3Halt")
    assert terminal.text() == "\n\n  alt"
    terminal.feed(b"\x1b[?" + mode + b"l")
    assert terminal.text() == "main text"
    assert (terminal.cursor.x, terminal.cursor.y) == (5, 2)


def test_1048_saves_and_restores_the_cursor() -> None:
    terminal = screen(b"\x1b[2;3H\x1b[?1048h\x1b[5;9H\x1b[?1048l")
    assert (terminal.cursor.x, terminal.cursor.y) == (2, 1)


def test_decsc_is_one_slot_restored_any_number_of_times() -> None:
    terminal = screen(b"\x1b[2;3H\x1b7\x1b[5;5H\x1b8\x1b[4;4H\x1b8")
    assert (terminal.cursor.x, terminal.cursor.y) == (2, 1)


# -- what pyte crashes on or misparses ------------------------------------------------------------


def test_private_sgr_from_vim_is_ignored_safely() -> None:
    terminal = screen(b"\x1b[31m\x1b[?4ma\x1b[>4;2mb\x1b[>4mc")
    assert terminal.text() == "abc"
    assert {cell(terminal, x, 0).fg for x in range(3)} == {"red"}
    assert not cell(terminal, 0, 0).underscore


def test_dec_line_drawing_in_g0_and_through_shift_out() -> None:
    terminal = screen(b"\x1b(0lqqk\x1b(B q\r\n\x1b)0x\x0ex\x0fx")
    assert terminal.text_lines()[0].rstrip() == "┌──┐ q"
    assert terminal.text_lines()[1].rstrip() == "x│x"


@pytest.mark.parametrize(
    ("sgr", "fg", "bg"),
    [
        (b"38:2::255:100:0", "ff6400", "default"),
        (b"38:2:1:2:3", "010203", "default"),
        (b"38;2;10;20;30", "0a141e", "default"),
        (b"48:5:208", "default", "ff8700"),
        (b"48;5;16", "default", "000000"),
        (b"38;5;255;48;5;196", "eeeeee", "ff0000"),
        (b"58:2::1:2:3;31", "red", "default"),
        (b"58;5;3;42", "default", "green"),
        (b"95;105", "brightmagenta", "brightmagenta"),
    ],
)
def test_extended_colours_kept_in_cells(sgr: bytes, fg: str, bg: str) -> None:
    terminal = screen(b"\x1b[" + sgr + b"mX")
    assert (cell(terminal, 0, 0).fg, cell(terminal, 0, 0).bg) == (fg, bg)
    assert terminal.text() == "X"


def test_underline_styles_are_underline_on_and_off() -> None:
    terminal = screen(b"\x1b[4:3ma\x1b[4:0mb\x1b[21mc\x1b[24md")
    assert [cell(terminal, x, 0).underscore for x in range(4)] == [True, False, True, False]


def test_palette_is_xterms() -> None:
    assert (PALETTE_256[1], PALETTE_256[21], PALETTE_256[232], len(PALETTE_256)) == (
        "cd0000",
        "0000ff",
        "080808",
        256,
    )


# -- wide and combining characters ----------------------------------------------------------------


def test_wide_characters_take_two_cells() -> None:
    terminal = screen("中文😀x".encode())
    assert terminal.cursor.x == 7
    assert [cell(terminal, x, 0).data for x in range(7)] == ["中", "", "文", "", "😀", "", "x"]
    assert terminal.text() == "中文😀x"


def test_a_wide_character_that_does_not_fit_wraps() -> None:
    terminal = screen(b"a" * 19 + "中".encode(), columns=20)
    assert terminal.text_lines()[0] == "a" * 19 + " "
    assert terminal.text_lines()[1].rstrip() == "中"
    assert (terminal.cursor.x, terminal.cursor.y) == (2, 1)


def test_overwriting_half_a_wide_character_blanks_the_other_half() -> None:
    terminal = screen("中文".encode(), b"\x1b[1;2Hx")
    assert terminal.text_lines()[0].rstrip() == " x文"


def test_combining_marks_and_variation_selectors_join_the_previous_cell() -> None:
    terminal = screen("e\u0301 ❤\ufe0f ok 中\u0301z".encode())
    assert cell(terminal, 0, 0).data == "e\u0301"
    assert cell(terminal, 2, 0).data == "❤\ufe0f"
    assert terminal.text() == "e\u0301 ❤\ufe0f ok 中\u0301z"


# -- resize, scrolling, the rest ------------------------------------------------------------------


def test_resize_keeps_the_cursor_on_its_line() -> None:
    terminal = screen(b"1\r\n2\r\n3\r\n4\r\n5", lines=5)
    terminal.resize(20, 3)
    assert terminal.text() == "3\n4\n5"
    assert terminal.cursor.y == 2
    terminal.resize(20, 5)
    assert terminal.text() == "1\n2\n3\n4\n5"
    assert terminal.cursor.y == 4


def test_resize_drops_empty_lines_below_the_cursor_first() -> None:
    terminal = screen(b"top\r\nsecond", lines=5)
    terminal.resize(10, 2)
    assert terminal.text() == "top\nsecond"
    assert (terminal.columns, terminal.lines) == (10, 2)


def test_scroll_up_down_and_repeat() -> None:
    terminal = screen(b"a\r\nb\r\nc", b"\x1b[S", lines=3)
    assert terminal.text_lines()[:2] == ["b".ljust(20), "c".ljust(20)]
    terminal.feed(b"\x1b[2T")
    assert terminal.text().strip() == "b"
    terminal.feed(b"\x1b[H-\x1b[4b")
    assert terminal.text_lines()[0].startswith("-----")


def test_line_feeds_scroll_only_the_region() -> None:
    terminal = screen(b"top\x1b[2;4r\x1b[2;1Ha\r\nb\r\nc\r\nd\x1b[5;1Hbottom", lines=5)
    assert terminal.text() == "top\nb\nc\nd\nbottom"
    terminal.feed(b"\n\n")  # below the region: down to the last line, never up, no scroll
    assert (terminal.cursor.y, terminal.text()) == (4, "top\nb\nc\nd\nbottom")


def test_erase_scrollback_leaves_the_screen() -> None:
    assert screen(b"keep", b"\x1b[3J").text() == "keep"


def test_osc_title_and_ignored_strings() -> None:
    terminal = screen(b"\x1b]0;my title\x07a\x1bPzz\x1b\\b\x1b_apc\x1b\\c")
    assert terminal.screen.title == "my title"
    assert terminal.text() == "abc"


# -- bytes cut anywhere ---------------------------------------------------------------------------

SAMPLE = (
    "héllo 中文 😀\r\n".encode()
    + b"\x1b[1;38:2::1:2:3mcolour\x1b[0m \x1b]2;title\x07\x1b(0lqk\x1b(B\r\n"
    + b"\x1b[?1049h\x1b[2;2Halt\x1b[?1049l end"
)


@pytest.mark.parametrize("cut", range(len(SAMPLE) + 1))
def test_any_split_of_the_bytes_gives_the_same_screen(cut: int) -> None:
    whole = screen(SAMPLE, columns=30)
    split = screen(SAMPLE[:cut], SAMPLE[cut:], columns=30)
    assert split.state_key() == whole.state_key()


def test_every_byte_alone_gives_the_same_screen() -> None:
    whole = screen(SAMPLE, columns=30)
    split = screen(*(SAMPLE[i : i + 1] for i in range(len(SAMPLE))), columns=30)
    assert split.state_key() == whole.state_key()


# -- snapshots ------------------------------------------------------------------------------------

FRAGMENTS = [
    b"a",
    b"xyz ",
    "中".encode(),
    "😀".encode(),
    "é".encode(),
    b"\xcc\x81",
    b"\xe4",
    b"\xb8",
    b"\r",
    b"\n",
    b"\r\n",
    b"\t",
    b"\x08",
    b"\x0e",
    b"\x0f",
    b"\x1b",
    b"[",
    b"\x1b[",
    b"\x1b[?1049h",
    b"\x1b[?1049l",
    b"\x1b[?47h",
    b"\x1b[?47l",
    b"\x1b[?1048h",
    b"\x1b[?1048l",
    b"\x1b7",
    b"\x1b8",
    b"\x1b(0",
    b"\x1b(B",
    b"\x1b)0",
    b"\x1b[2J",
    b"\x1b[K",
    b"\x1b[H",
    b"\x1b[3;5H",
    b"\x1b[31m",
    b"\x1b[38:2::9:8:7m",
    b"\x1b[48;5;100m",
    b"\x1b[0m",
    b"\x1b[?4m",
    b"\x1b[2;4r",
    b"\x1b[r",
    b"\x1b[L",
    b"\x1b[M",
    b"\x1b[2@",
    b"\x1b[P",
    b"\x1b[S",
    b"\x1b[T",
    b"\x1b[4h",
    b"\x1b[4l",
    b"\x1b[?7l",
    b"\x1b[?7h",
    b"\x1b[?25l",
    b"\x1bM",
    b"\x1bD",
    b"\x1bE",
    b"\x1b]0;t",
    b"\x07",
    b"\x1b[3b",
    b"\x1b[?5h",
    b"\x1b[?5l",
    b"\x1b[?6h",
    b"\x1b[?6l",
    b"\x1bH",
    b"\x1b[3g",
    b"\x1b[Z",
    b"\x1bc",
]
RESIZE = st.tuples(st.integers(1, 30), st.integers(1, 12))
STREAM = st.lists(st.one_of(st.sampled_from(FRAGMENTS), RESIZE), max_size=60)


def run(terminal: Terminal, items: list[Any]) -> None:
    for item in items:
        if isinstance(item, tuple):
            terminal.resize(*item)
        else:
            terminal.feed(item)


@settings(max_examples=150, deadline=None)
@given(STREAM, st.data())
def test_a_restored_snapshot_continues_exactly(items: list[Any], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(items)))
    straight = Terminal(12, 6)
    run(straight, items)
    first = Terminal(12, 6)
    run(first, items[:cut])
    packed = msgpack.packb(first.snapshot(), use_bin_type=True)
    restored = Terminal.from_snapshot(msgpack.unpackb(packed))
    run(restored, items[cut:])
    assert restored.state_key() == straight.state_key()
    assert restored.text_lines() == straight.text_lines()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.data())
def test_random_bytes_never_crash_and_snapshots_hold(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(raw)))
    straight = screen(raw, columns=10, lines=4)
    first = screen(raw[:cut], columns=10, lines=4)
    restored = Terminal.from_snapshot(msgpack.unpackb(msgpack.packb(first.snapshot())))
    restored.feed(raw[cut:])
    assert restored.state_key() == straight.state_key()
