"""The strict shell's line editor, sans-IO: keys in, events out. The line it accepts is the
one the gateway judges and runs, so it must be exactly what the keys make, and the screen must
show exactly that line, however the keys are split or edited."""

from __future__ import annotations

import pyte
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.line_editor import Accept, Echo, Eof, Event, Interrupt, LineEditor

PROMPT = "u@t:~$ "


def accepted(events: list[Event]) -> list[str]:
    return [event.line for event in events if isinstance(event, Accept)]


def run(keys: bytes, columns: int = 80) -> tuple[LineEditor, list[Event]]:
    editor = LineEditor(columns)
    events = editor.start(PROMPT)
    events += editor.feed(keys)
    return editor, events


def test_typed_text_and_enter_make_one_line() -> None:
    _, events = run(b"echo hi\r")
    assert accepted(events) == ["echo hi"]
    assert b"".join(e.data for e in events if isinstance(e, Echo)).endswith(b"echo hi\r\n")


def test_editing_keys() -> None:
    assert accepted(run(b"rm x-canar\x7fy\r")[1]) == ["rm x-canay"]
    assert accepted(run(b" /tmp/x\x01rm\r")[1]) == ["rm /tmp/x"]
    assert accepted(run(b"echo one two\x17three\r")[1]) == ["echo one three"]
    assert accepted(run(b"echo secret\x15ls\r")[1]) == ["ls"]
    assert accepted(run(b"abc\x1b[D\x1b[D\x0bX\r")[1]) == ["aX"]
    assert accepted(run(b"abc\x1b[H\x1b[3~\r")[1]) == ["bc"]
    assert accepted(run(b"abc\x02\x02\x04\x06Z\r")[1]) == ["acZ"]
    assert accepted(run("héllo wörld 日本\r".encode())[1]) == ["héllo wörld 日本"]


def test_history_recalls_and_a_recalled_line_can_be_edited() -> None:
    editor, events = run(b"echo one\recho two\r\x1b[A\x1b[A\x7fX\r\x1b[A\x1b[B\r")
    assert accepted(events) == ["echo one", "echo two", "echo onX", ""]
    assert editor.history == ["echo one", "echo two", "echo onX"]


def test_ctrl_c_drops_the_line_and_ctrl_d_ends_only_an_empty_one() -> None:
    _, events = run(b"rm -rf /\x03ls\r")
    assert accepted(events) == ["ls"]
    assert any(isinstance(e, Interrupt) for e in events)
    _, events = run(b"x\x04")
    assert not any(isinstance(e, Eof) for e in events)
    _, events = run(b"\x04")
    assert any(isinstance(e, Eof) for e in events)


def test_a_paste_accepts_each_of_its_lines_on_its_own() -> None:
    _, events = run(b"\x1b[200~echo a\r\necho\tb\x1b[Dc\x1b[201~\r")
    assert accepted(events) == ["echo a", "", "echo bc"]


def test_control_characters_and_unknown_escapes_are_never_inserted() -> None:
    _, events = run(b"ls\x00\x07\x1b[15~\x1b[1;5C\x1bOP\x1bx\t-l\r")
    assert accepted(events) == ["ls-l"]


# -- properties ---------------------------------------------------------------------------------

KEYS = {
    "left": b"\x1b[D",
    "right": b"\x1b[C",
    "home": b"\x01",
    "end": b"\x05",
    "backspace": b"\x7f",
    "delete": b"\x1b[3~",
    "kill-end": b"\x0b",
    "kill-start": b"\x15",
    "kill-word": b"\x17",
}
TEXT = st.text(alphabet=st.sampled_from("abc -/'\"é日$;|"), min_size=1, max_size=6)
ACTIONS = st.lists(st.one_of(TEXT, st.sampled_from(sorted(KEYS))), max_size=40)
# pyte draws a wide character that does not fit at a row's end in the last cell, where xterm
# (and the editor) wraps it first: the screen property uses narrow characters only.
NARROW = st.text(alphabet=st.sampled_from("abc -/'\"é$;|"), min_size=1, max_size=6)
NARROW_ACTIONS = st.lists(st.one_of(NARROW, st.sampled_from(sorted(KEYS))), max_size=40)


def model(actions: list[str]) -> str:
    """An independent model of the editing keys: a list and an index."""
    line: list[str] = []
    cursor = 0
    for action in actions:
        if action not in KEYS:
            line[cursor:cursor] = list(action)
            cursor += len(action)
        elif action == "left":
            cursor = max(cursor - 1, 0)
        elif action == "right":
            cursor = min(cursor + 1, len(line))
        elif action == "home":
            cursor = 0
        elif action == "end":
            cursor = len(line)
        elif action == "backspace" and cursor:
            del line[cursor - 1]
            cursor -= 1
        elif action == "delete" and cursor < len(line):
            del line[cursor]
        elif action == "kill-end":
            del line[cursor:]
        elif action == "kill-start":
            del line[:cursor]
            cursor = 0
        elif action == "kill-word":
            start = cursor
            while start and line[start - 1] == " ":
                start -= 1
            while start and line[start - 1] != " ":
                start -= 1
            del line[start:cursor]
            cursor = start
    return "".join(line)


def keys_of(actions: list[str]) -> bytes:
    return b"".join(KEYS[a] if a in KEYS else a.encode() for a in actions)


@settings(max_examples=300, deadline=None)
@given(ACTIONS, st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=20))
def test_the_accepted_line_is_exactly_what_the_keys_make_however_they_are_split(
    actions: list[str], cuts: list[int]
) -> None:
    keys = keys_of(actions) + b"\r"
    editor = LineEditor(80)
    editor.start(PROMPT)
    events: list[Event] = []
    at, index = 0, 0
    while at < len(keys):  # UTF-8 and escapes cut anywhere
        size = cuts[index % len(cuts)]
        events += editor.feed(keys[at : at + size])
        at, index = at + size, index + 1
    assert accepted(events) == [model(actions)]


class _Screen(pyte.Screen):  # type: ignore[misc]
    def set_title(self, param: str) -> None:
        pass


@settings(max_examples=200, deadline=None)
@given(NARROW_ACTIONS, st.integers(min_value=10, max_value=40))
def test_the_screen_shows_exactly_the_line_being_edited(actions: list[str], columns: int) -> None:
    """Drawn on a real terminal model of any width, wrapping included: the prompt and the line
    the editor holds, and the cursor where the editor says it is. What the caller reads is
    what will be judged."""
    screen = _Screen(columns, 12)
    stream = pyte.ByteStream(screen)
    editor = LineEditor(columns)
    for event in editor.start(PROMPT):
        assert isinstance(event, Echo)
        stream.feed(event.data)
    for action in actions:  # key by key: each redraw must leave the screen right
        for event in editor.feed(keys_of([action])):
            assert isinstance(event, Echo)
            stream.feed(event.data)
    shown = "".join(screen.buffer[row][col].data for row in range(12) for col in range(columns))
    wanted = PROMPT + editor.line
    assert shown[: len(wanted)] == wanted
    assert shown[len(wanted) :].strip() == ""
    cell = len(PROMPT) + editor.cursor
    assert (screen.cursor.y, screen.cursor.x) == divmod(cell, columns)
