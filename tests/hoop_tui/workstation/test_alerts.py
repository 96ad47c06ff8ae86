"""The bell and desktop notification a new hold rings (hoop_tui/workstation/alerts.py)."""

from __future__ import annotations

import pytest

from hoop_tui.workstation.alerts import alert_sequence


def test_osc9_and_osc777_carry_the_hold_and_ring_the_bell():
    assert alert_sequence("osc9", "hoop: hold h-1", "alice@web1: reboot") == (
        "\a\x1b]9;hoop: hold h-1: alice@web1: reboot\a"
    )
    assert alert_sequence("osc777", "hoop: hold h-1", "alice@web1: reboot") == (
        "\a\x1b]777;notify;hoop: hold h-1;alice@web1: reboot\a"
    )
    assert alert_sequence("bell", "t", "b") == "\a"
    assert alert_sequence("off", "t", "b") == ""


@pytest.mark.parametrize("kind", ["osc9", "osc777"])
def test_a_hostile_command_cannot_end_the_sequence_or_add_fields(kind):
    """The command is the requester's text: a BEL or ESC in it must not close the OSC and
    write the rest (say, an OSC 52 clipboard write) to the approver's terminal."""
    body = "x\a\x1b]52;c;ZXZpbA==\a\x1b\\; rm -rf /"
    sequence = alert_sequence(kind, "hoop: hold h-1", body)
    inner = sequence[1:-1]  # the leading bell and the closing BEL
    assert "\a" not in inner and "\x1b" not in inner[1:]
    assert inner.count(";") == (1 if kind == "osc9" else 3)
