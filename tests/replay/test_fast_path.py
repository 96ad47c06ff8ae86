"""The terminal's fast path for runs of text, CR, LF, tab and SGR against the token-by-token way
it replaces: Hypothesis streams of text, controls and escape sequences, cut anywhere, must leave
both terminals in exactly the same state (cells, attributes, cursor, modes, last character,
dirty lines)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replay.terminal import Terminal

LINE_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=14)
CONTROLS = st.sampled_from([b"\r", b"\n", b"\r\n", b"\t", b"\t\t", b"\x08"])
SGR = st.sampled_from(
    [b"\x1b[31m", b"\x1b[1;4;38;5;100m", b"\x1b[38:2::9:8:7m", b"\x1b[m", b"\x1b[0m", b"\x1b[7m"]
)
MODES = st.sampled_from(
    [
        b"\x1b[?5h",  # reverse video: SGR results depend on it
        b"\x1b[?5l",
        b"\x1b[2;5r",  # a scroll region: the fast path steps aside
        b"\x1b[1;6r",  # the whole screen set as a region: still the default one
        b"\x1b[r",
        b"\x1b[?7l",  # no autowrap
        b"\x1b[?7h",
        b"\x1b[4h",  # insert mode
        b"\x1b[4l",
        b"\x1b[20h",  # newline mode: LF also returns the carriage
        b"\x1b[20l",
        b"\x1b(0",
        b"\x1b(B",
        b"\x0e",
        b"\x0f",
    ]
)
OTHERS = st.sampled_from(
    [
        "中文".encode(),
        "😀".encode(),
        "e\u0301".encode(),
        "é".encode(),
        b"\xe4\xb8",  # half a character
        b"\x1b[?4m",
        b"\x1b[",
        b"\x1b",
        b"\x1b[3;7H",
        b"\x1b[6;1H",
        b"\x1b[H",
        b"\x1b[2J",
        b"\x1b[K",
        b"\x1b[2@",
        b"\x1b[S",
        b"\x1b[3g",
        b"\x1bH",
        b"\x1bM",
        b"\x1bD",
        b"\x1b[5b",
        b"\x1b[?1049h",
        b"\x1b[?1049l",
        b"\x1b7",
        b"\x1b8",
        # wide characters on every row, cursor home: a burst then draws over their halves
        b"\x1b[H" + "\u4e2d\u6587a\u4e2d\u6587\u4e2d\r\n".encode() * 7 + b"\x1b[H",
    ]
)
PIECES = st.one_of(
    LINE_TEXT.map(lambda text: text.encode() + b"\r\n"),  # the burst case
    LINE_TEXT.map(str.encode),
    CONTROLS,
    SGR,
    MODES,
    OTHERS,
)
BURST = st.integers(0, 30).map(lambda n: b"".join(b"%d\r\n" % i for i in range(n)))
STREAM = st.lists(st.one_of(PIECES, BURST), max_size=50).map(b"".join)


def both(columns: int, lines: int) -> tuple[Terminal, Terminal]:
    fast, slow = Terminal(columns, lines), Terminal(columns, lines)
    slow.stream.fast = False
    return fast, slow


def state(terminal: Terminal) -> tuple[Any, ...]:
    screen = terminal.screen
    return (
        terminal.state_key(),
        terminal.text_lines(),
        sorted(screen.dirty),
        screen.cursor.attrs,
        screen.last_char,
    )


def feed_cut(terminal: Terminal, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in sorted(cuts):
        terminal.feed(data[start:cut])
        start = cut
    terminal.feed(data[start:])


@settings(max_examples=1000, deadline=None)
@given(
    STREAM,
    st.integers(1, 14),
    st.integers(1, 7),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_fast_path_leaves_the_same_state_as_token_by_token(
    data: bytes, columns: int, lines: int, cuts: list[int]
) -> None:
    fast, slow = both(columns, lines)
    cuts = [cut for cut in cuts if cut <= len(data)]
    feed_cut(fast, data, cuts)
    feed_cut(slow, data, cuts)
    assert state(fast) == state(slow)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(STREAM, st.tuples(st.integers(1, 14), st.integers(1, 7))), max_size=8),
)
def test_fast_path_matches_across_resizes(items: list[bytes | tuple[int, int]]) -> None:
    """A resize changes the width, the tab stops and the margins the next run sees."""
    fast, slow = both(10, 5)
    for item in items:
        for terminal in (fast, slow):
            if isinstance(item, tuple):
                terminal.resize(*item)
            else:
                terminal.feed(item)
    assert state(fast) == state(slow)


@settings(max_examples=300, deadline=None)
@given(STREAM, STREAM, st.integers(1, 10), st.integers(1, 5))
def test_fast_path_matches_after_a_prefix_and_a_cleared_dirty_set(
    before: bytes, after: bytes, columns: int, lines: int
) -> None:
    """What a run marks dirty is what the slow way marks (search reads only dirty lines)."""
    fast, slow = both(columns, lines)
    for terminal in (fast, slow):
        terminal.feed(before)
        terminal.screen.dirty.clear()
        terminal.feed(after)
    assert state(fast) == state(slow)


def test_a_long_burst_keeps_only_the_last_screen_and_the_cursor() -> None:
    fast, slow = both(20, 5)
    data = b"$ seq\r\n" + b"".join(b"%d\r\n" % i for i in range(1, 5001)) + b"$ "
    fast.feed(data)
    slow.feed(data)
    assert fast.text().splitlines() == ["4997", "4998", "4999", "5000", "$"]
    assert state(fast) == state(slow)


def test_a_burst_over_wide_characters_blanks_their_halves_like_the_slow_way() -> None:
    fast, slow = both(6, 7)
    data = "中文中\r\n".encode() * 7 + b"\x1b[H" + b"a\r\nbcd\r\n" * 4 + b"x\r\ny"
    fast.feed(data)
    slow.feed(data)
    assert state(fast) == state(slow)
    # rows drawn over a wide character keep no half of it
    assert fast.text_lines()[:3] == ["bcd 中", "a 文中", "bcd 中"]


def test_a_burst_of_wrapping_lines_with_colours_and_tabs() -> None:
    fast, slow = both(10, 4)
    lines = [b"\x1b[3%dm%s\x1b[0m\tx\r\n" % (i % 8, b"w" * (i % 23)) for i in range(200)]
    data = b"".join(lines)
    for cut in (1, 7, 64, 1000):
        fast, slow = both(10, 4)
        for start in range(0, len(data), cut):
            fast.feed(data[start : start + cut])
            slow.feed(data[start : start + cut])
        assert state(fast) == state(slow)


MODE_LIST = [
    b"",
    b"\x1b[?5h",
    b"\x1b[2;5r",
    b"\x1b[1;6r",
    b"\x1b[?7l",
    b"\x1b[4h",
    b"\x1b[20h",
    b"\x1b(0",
    b"\x0e",
    b"\x1b[7m",
]
RUN_LIST = [
    b"ab\ncd",
    b"ab\rcd",
    b"abcdefgh\tx\ty",
    b"abcdefghijklmnop\r\nq",
    b"\x1b[31mab\x1b[0m\n\tc\r\n",
    b"".join(b"line %d\r\n" % i for i in range(12)) + b"end",
    b"".join(b"\x1b[3%dmw%d\x1b[0m\r\n" % (i % 8, i) for i in range(12)),
]


def test_every_mode_with_every_kind_of_run() -> None:
    """Each state the fast path must honour or step aside for, with each shape of run, at
    the top and at the bottom of the screen."""
    for mode in MODE_LIST:
        for run in RUN_LIST:
            for start in (b"\x1b[H", b"\x1b[6;3H"):
                for columns in (9, 16):
                    fast, slow = both(columns, 6)
                    for terminal in (fast, slow):
                        terminal.feed("中文中文中文中文\r\n".encode() * 6 + start + mode + run)
                    assert state(fast) == state(slow), (mode, run, start, columns)
