"""The line detector: the line the user sees at Enter, from the session's output."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.line_detector import (
    MAX_ROWS,
    CommandLine,
    Enter,
    Forward,
    InputEvent,
    LineDetector,
    Paste,
)
from proxy.policy import Caller, decide_command_line, parse_policy

PROMPT = b"alice@web1:~$ "
COLOURED_PROMPT = b"\x1b]0;alice@web1: ~\x07\x1b[01;32malice@web1\x1b[00m:\x1b[01;34m~\x1b[00m$ "


def typed(detector: LineDetector, keys: bytes, echo: bytes | None = None) -> list[InputEvent]:
    """Keys the user types, and the echo the shell sends back (the keys themselves unless
    told)."""
    events = detector.feed_input(keys)
    detector.feed_output(keys if echo is None else echo)
    return events


def enter(detector: LineDetector) -> CommandLine:
    (event,) = detector.feed_input(b"\r")
    assert isinstance(event, Enter)
    return event.line


def at_prompt(prompt: bytes = PROMPT, columns: int = 80) -> LineDetector:
    detector = LineDetector(columns)
    detector.feed_output(b"Welcome\r\nLast login: today\r\n" + prompt)
    return detector


def test_the_line_is_the_row_after_the_prompt() -> None:
    detector = at_prompt()
    typed(detector, b"ls -la")
    line = enter(detector)
    assert line == CommandLine("ls -la", "alice@web1:~$ ")


def test_titles_and_colours_in_the_prompt_are_not_text() -> None:
    detector = at_prompt(COLOURED_PROMPT)
    typed(detector, b"uptime")
    line = enter(detector)
    assert (line.prompt, line.text) == ("alice@web1:~$ ", "uptime")


def test_backspace_erase_and_cursor_moves() -> None:
    detector = at_prompt()
    typed(detector, b"rm -rf /tmpx")
    typed(detector, b"\x7f", echo=b"\x08\x1b[K")  # backspace over "x"
    typed(detector, b"\x1b[D" * 4, echo=b"\x08" * 4)  # to before "/tmp"
    typed(detector, b"X", echo=b"X/tmp\x08\x08\x08\x08")  # readline redraws the tail
    typed(detector, b"\x01", echo=b"\r" + PROMPT)  # Ctrl-A: back to the start
    assert enter(detector).text == "rm -rf X/tmp"


def test_insert_and_delete_character_sequences() -> None:
    detector = at_prompt()
    typed(detector, b"rm -f /")
    typed(detector, b"\x1b[D" * 3, echo=b"\x1b[3D")
    typed(detector, b"r", echo=b"\x1b[1@r")  # insert one blank, then write into it
    assert enter(detector).text == "rm -rf /"
    detector.line_finished()
    detector.feed_output(b"\r\n" + PROMPT)
    typed(detector, b"echo rm")
    typed(detector, b"\x01", echo=b"\r\x1b[14C")
    typed(detector, b"\x1b[3~" * 5, echo=b"\x1b[5P")  # delete "echo "
    assert enter(detector).text == "rm"


def test_a_wrapped_line_is_one_line() -> None:
    detector = at_prompt(columns=20)
    typed(detector, b"echo aaaaaaaaaaaa; rm -rf /")
    assert enter(detector).text == "echo aaaaaaaaaaaa; rm -rf /"


def test_a_space_at_the_wrap_boundary_is_kept() -> None:
    detector = at_prompt(columns=20)
    typed(detector, b"echo 1234567890 rm")  # the space after 1234567890 is at column 19
    assert enter(detector).text == "echo 1234567890 rm"


def test_reverse_search_shows_the_line_that_will_run() -> None:
    detector = at_prompt()
    typed(detector, b"\x12", echo=b"\r(reverse-i-search)`': ")
    typed(detector, b"rm", echo=b"\r(reverse-i-search)`rm': rm -rf /var/lib\x08" * 1)
    assert enter(detector).text == "rm -rf /var/lib"


def test_ctrl_l_redraws_and_the_prompt_is_found_again() -> None:
    detector = at_prompt()
    typed(detector, b"rm -rf /")
    typed(detector, b"\x0c", echo=b"\x1b[H\x1b[2J" + PROMPT + b"rm -rf /")
    line = enter(detector)
    assert (line.text, line.certain) == ("rm -rf /", True)


def test_a_lost_prompt_makes_the_line_uncertain() -> None:
    detector = at_prompt()
    typed(detector, b"ls")
    detector.feed_output(b"\x1b[H\x1b[2Jsomething else entirely")
    assert enter(detector).certain is False


def test_enter_before_the_echo_is_uncertain_until_output_arrives() -> None:
    detector = at_prompt()
    events = detector.feed_input(b"rm -rf /\r")
    forward, held = events
    assert forward == Forward(b"rm -rf /")
    assert isinstance(held, Enter) and not held.line.certain
    assert "not shown yet" in held.line.reason
    detector.feed_output(b"rm -rf /")
    again = detector.current_line()
    assert (again.text, again.certain) == ("rm -rf /", True)


def test_input_after_enter_comes_back_unread_with_the_paste_text() -> None:
    detector = at_prompt()
    typed(detector, b"ls")
    events = detector.feed_input(b"\rrm -rf /\rpwd")
    (held,) = events
    assert isinstance(held, Enter)
    assert held.rest == b"rm -rf /\rpwd"
    assert held.paste == "rm -rf /\npwd"


def test_after_the_line_the_next_prompt_is_found() -> None:
    detector = at_prompt()
    typed(detector, b"ls")
    enter(detector)
    detector.line_finished()
    detector.feed_output(b"\r\nfile1  file2\r\n" + b"bob@db1:/srv$ ")
    typed(detector, b"whoami")
    line = enter(detector)
    assert (line.prompt, line.text) == ("bob@db1:/srv$ ", "whoami")


def test_ctrl_c_abandons_the_line() -> None:
    detector = at_prompt()
    typed(detector, b"rm -rf /")
    typed(detector, b"\x03", echo=b"^C\r\n" + PROMPT)
    typed(detector, b"ls")
    assert enter(detector).text == "ls"


def test_output_no_key_asked_for_makes_the_line_uncertain() -> None:
    """A background job draws `ls` over the `rm -rf /` that bash holds."""
    detector = at_prompt()
    detector.feed_input(b"rm -rf /")
    detector.feed_output(b"rm -rf /", now=10.0)
    detector.feed_output(b"\r\x1b[K" + PROMPT + b"ls", now=12.0)
    line = enter(detector)
    assert line.text == "ls" and not line.certain
    assert "background" in line.reason


def test_an_answer_in_several_packets_is_still_an_answer() -> None:
    detector = at_prompt()
    detector.feed_input(b"\x1b[A")
    detector.feed_output(b"rm -rf", now=10.0)
    detector.feed_output(b" /var/lib", now=10.05)
    line = enter(detector)
    assert (line.text, line.certain) == ("rm -rf /var/lib", True)


def test_a_redraw_after_a_resize_is_expected() -> None:
    detector = at_prompt()
    typed(detector, b"ls")
    detector.resize(40)
    detector.feed_output(b"\r" + PROMPT + b"ls", now=20.0)
    assert enter(detector).certain


def test_echo_off_is_reported_once_output_settled() -> None:
    detector = at_prompt()
    typed(detector, b"rm -rf /", echo=b"")
    first = enter(detector)
    assert (first.echoed, first.certain) == (True, False)  # it may still be on its way
    settled = detector.current_line(settled=True)
    assert (settled.echoed, settled.certain, settled.password_prompt) == (False, False, False)


def test_a_password_prompt_is_not_inspected() -> None:
    detector = LineDetector()
    detector.feed_output(b"alice@web1:~$ sudo ls\r\n[sudo] password for alice: ")
    typed(detector, b"hunter2", echo=b"")
    enter(detector)
    line = detector.current_line(settled=True)
    assert line.password_prompt and not line.echoed
    policy = parse_policy({}, "g.toml")
    assert decide_command_line(policy, Caller("alice"), "web1", line) is None


def test_full_screen_programs_are_not_inspected() -> None:
    detector = at_prompt()
    typed(detector, b"vim x", echo=b"vim x")
    enter(detector)
    detector.line_finished(full_screen=True)  # the gate let a full-screen program start
    detector.feed_output(b"\r\n\x1b[?1049h\x1b[H\x1b[2J~\r\n~\r\n")
    assert detector.full_screen
    events = detector.feed_input(b":q!\r")
    assert events[0] == Forward(b":q!")
    assert isinstance(events[1], Enter) and events[1].line.full_screen
    policy = parse_policy({}, "g.toml")
    assert decide_command_line(policy, Caller("alice"), "web1", events[1].line) is None
    detector.line_finished()
    detector.feed_output(b"\x1b[?1049l\r\n" + PROMPT)
    assert not detector.full_screen
    typed(detector, b"ls")
    assert enter(detector).text == "ls"


def test_escape_is_forwarded_at_once_in_full_screen_programs() -> None:
    detector = at_prompt()
    detector.line_finished(full_screen=True)
    detector.feed_output(b"\x1b[?1049h")
    assert detector.feed_input(b"\x1b") == [Forward(b"\x1b")]


def test_an_alternate_screen_switch_inside_bulk_output_is_seen() -> None:
    detector = at_prompt()
    detector.line_finished(full_screen=True)
    detector.feed_output(b"line\r\n" * 100 + b"\x1b[?1049h\x1b[H" + b"x\r\n" * 10)
    assert detector.full_screen


def test_bracketed_paste_is_held_whole_and_combined_with_the_line() -> None:
    detector = at_prompt()
    typed(detector, b"echo ")
    events = detector.feed_input(b"\x1b[200~x; rm -rf /\nls\x1b[201~")
    (paste,) = events
    assert isinstance(paste, Paste)
    assert paste.text == "x; rm -rf /\nls"
    assert paste.combined == "echo x; rm -rf /\nls"
    assert paste.data == b"\x1b[200~x; rm -rf /\nls\x1b[201~"


def test_a_paste_start_split_across_packets_is_still_a_paste() -> None:
    detector = at_prompt()
    assert detector.feed_input(b"\x1b[20") == []
    assert detector.feed_input(b"0~ls\r") == []
    (paste,) = detector.feed_input(b"pwd\x1b[201~")
    assert isinstance(paste, Paste) and paste.text == "ls\npwd"


def test_other_escape_sequences_are_forwarded_whole() -> None:
    detector = at_prompt()
    assert detector.feed_input(b"\x1b[") == []
    assert detector.feed_input(b"A") == [Forward(b"\x1b[A")]
    assert detector.feed_input(b"\x1bOA") == [Forward(b"\x1bOA")]


def test_utf8_split_across_packets() -> None:
    detector = at_prompt()
    word = "café-日本".encode()
    detector.feed_input(word)
    for index in range(len(word)):
        detector.feed_output(word[index : index + 1])
    assert enter(detector).text == "café-日本"


def test_bulk_output_is_cheap_and_bounded() -> None:
    detector = LineDetector()
    chunk = b"".join(b"%06d some log output that scrolls by\r\n" % i for i in range(1000))
    started = time.perf_counter()
    for _ in range(100):  # about 4 MB
        detector.feed_output(chunk)
    elapsed = time.perf_counter() - started
    detector.feed_output(PROMPT)
    assert elapsed < 1.0
    typed(detector, b"ls")
    assert enter(detector) == CommandLine("ls", "alice@web1:~$ ")


def test_rows_are_bounded_while_editing() -> None:
    detector = at_prompt()
    typed(detector, b"x")
    detector.feed_output(b"\n" * 10 * MAX_ROWS)
    line = enter(detector)
    assert line.certain is False


# ----------------------------------------------------------------------------- cut anywhere

# What bash 5.2's readline really sent for: type "echo hello", two left arrows, "X", Ctrl-A,
# Ctrl-K, then recall "rm -rf /var/lib" from history (captured through a PTY).
CAPTURED = [
    (b"echo hello", b"echo hello"),
    (b"\x1b[D\x1b[D", b"\x08\x08"),
    (b"X", b"Xlo\x08\x08"),
    (b"\x01", b"\x08" * 9),
    (b"\x0b", b"\x1b[K"),
    (b"\x1b[A", b"rm -rf /var/lib"),
]


def _replay(cut: int) -> CommandLine:
    detector = LineDetector()
    detector.feed_output(b"\x1b[?2004h" + PROMPT[:cut])
    detector.feed_output(PROMPT[cut:])
    for keys, echo in CAPTURED:
        detector.feed_input(keys)
        position = min(cut, len(echo))
        detector.feed_output(echo[:position])
        detector.feed_output(echo[position:])
    return enter(detector)


@pytest.mark.parametrize("cut", range(16))
def test_a_captured_session_cut_at_every_position_reads_the_same(cut: int) -> None:
    assert _replay(cut) == CommandLine("rm -rf /var/lib", "alice@web1:~$ ")


_streams = st.lists(st.tuples(st.booleans(), st.binary(max_size=64)), max_size=40)


@settings(max_examples=500, deadline=None)
@given(_streams, st.integers(min_value=2, max_value=200))
def test_never_raises_on_arbitrary_streams(chunks: list[tuple[bool, bytes]], columns: int) -> None:
    detector = LineDetector(columns)
    for is_input, data in chunks:
        if is_input:
            for event in detector.feed_input(data):
                if isinstance(event, Enter):
                    detector.line_finished()
        else:
            detector.feed_output(data)
    assert isinstance(detector.current_line(), CommandLine)


_terminalish = st.lists(
    st.sampled_from(
        [
            b"\x1b[",
            b"\x1b]",
            b"\x07",
            b"\x1b\\",
            b"\r",
            b"\n",
            b"\x08",
            b"\x1b[K",
            b"\x1b[2J",
            b"\x1b[?1049h",
            b"\x1b[?1049l",
            b"\x1b[200~",
            b"\x1b[201~",
            b"\x1b[5@",
            b"\x1b[3P",
            b"\x1b[99C",
            b"\x1b[9A",
            b"\x1b[H",
            "日".encode(),
            b"\xe6",
            b"abc",
            b" ",
            b"\t",
            b"\x1b7",
            b"\x1b8",
            b"\x1bM",
            b";",
            b"1",
        ]
    ),
    max_size=80,
)


@settings(max_examples=500, deadline=None)
@given(_terminalish, _terminalish, st.integers(min_value=1, max_value=30))
def test_never_raises_on_terminal_like_streams(
    output: list[bytes], keys: list[bytes], columns: int
) -> None:
    detector = LineDetector(columns)
    for index in range(max(len(output), len(keys))):
        if index < len(output):
            detector.feed_output(output[index])
        if index < len(keys):
            for event in detector.feed_input(keys[index]):
                if isinstance(event, Enter):
                    detector.line_finished()
    line = detector.current_line()
    assert "\x1b" not in line.text
