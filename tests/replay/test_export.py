"""The readable transcript (`export --format text`, `t` in the workstation): what a person
reads, without terminal noise (issue 17, item 8)."""

from __future__ import annotations

import io
import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.export import export_text, strip_terminal_controls
from storage.reader import RecordingReader
from storage.schema import EventType
from tests.storage.helpers import write_recording

HELD = "\x1b7  [hoop] held as h-1a2b3c by rule restarts: waiting ({}; Ctrl-C withdraws)\x1b8"


def transcript(tmp_path, events) -> str:
    path = tmp_path / "r.hrec"
    write_recording(path, events, Ed25519PrivateKey.generate())
    out = io.StringIO()
    with RecordingReader.open(path) as reader:
        export_text(reader, out)
    return out.getvalue()


def test_a_ticking_hold_status_is_one_line_and_cursor_saves_leave_no_digits(tmp_path):
    events = [
        (EventType.OUTPUT, 1_000, (0, b"$ systemctl restart nginx\r\n")),
        *[
            (EventType.OUTPUT, 1_000_000 * second, (0, HELD.format(f"0:{second:02d}").encode()))
            for second in range(1, 8)
        ],
        (EventType.OUTPUT, 9_000_000, (0, b"\x1b7 [hoop] h-1a2b3c approved by bob\x1b8\r\n$ ")),
    ]
    text = transcript(tmp_path, events)
    assert text.count("[hoop] held as h-1a2b3c") == 1
    assert "(0:01; Ctrl-C withdraws)" in text
    assert "[hoop] h-1a2b3c approved by bob" in text
    assert "\x1b" not in text
    assert "7  [hoop]" not in text and "withdraws)8" not in text  # ESC 7 / ESC 8 left no digit


def test_a_verdict_without_a_rule_says_the_default_decided(tmp_path):
    events = [
        (EventType.COMMAND, 1_000, (0, "shell", "ls")),
        (EventType.VERDICT, 1_100, (0, "allow", "", "")),
        (EventType.COMMAND, 2_000, (0, "shell", "rm -rf /")),
        (EventType.VERDICT, 2_100, (0, "deny", "no-rm", "not here")),
    ]
    text = transcript(tmp_path, events)
    assert "verdict allow by default (no rule)" in text
    assert "verdict allow by rule \n" not in text and "by rule  " not in text
    assert "verdict deny by rule no-rm: not here" in text


def test_an_overlay_cannot_hide_changing_output_from_the_transcript(tmp_path):
    """A caller who draws its output as in-place redraws whose digits change (exfiltrated
    numbers, say) still has every one of them in the transcript: only a clock may tick."""
    events = [
        (EventType.OUTPUT, 1_000 * n, (0, f"\x1b7 row {n}: 9{n}41 7{n}22\x1b8".encode()))
        for n in range(1, 6)
    ]
    text = transcript(tmp_path, events)
    for n in range(1, 6):
        assert f"row {n}: 9{n}41 7{n}22" in text


# The pattern as it was, stripping one control character per match: the reference.
ONE_BY_ONE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[()*+\-./][ -~]"
    r"|\x1b[0-~]"
    r"|[\x00-\x08\x0b-\x1f\x7f]"
)


@settings(max_examples=400)
@given(st.text(alphabet="\x1b[]()\\;?0137mBa \x00\x01\x07\x0b\x1a\x1c\x1f\x7f\r\n\t", max_size=40))
def test_controls_stripped_in_runs_leave_what_one_at_a_time_leaves(text: str) -> None:
    """Runs of control characters go in one match (a recording of NULs indexes 80x faster),
    and nothing else changes: an escape sequence after a run is still recognised whole."""
    assert strip_terminal_controls(text) == ONE_BY_ONE.sub("", text.replace("\r\n", "\n"))
