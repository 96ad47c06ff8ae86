"""Today's rules over old recordings: the masked view the player renders, and the dry run."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.masking_view import MaskedSource, dry_run, mask_events
from replay.player import Player
from storage.masking import MaskPolicy
from storage.reader import RecordingReader
from storage.schema import EventType
from storage.signing import load_or_create_signing_key
from tests.storage.helpers import make_header, write_recording

SECRET = b"gateway-secret"
POLICY = MaskPolicy.from_config(
    [
        {"name": "cards", "detector": "credit_card", "style": "last4"},
        {"name": "assign", "detector": "password_assignment"},
        {"name": "passwords", "column": "password"},
        {"name": "auditors-see-mail", "detector": "email", "except_groups": ["auditors"]},
    ],
    "rules.toml",
    SECRET,
)
EVENTS = [
    (EventType.CHANNEL_OPEN, 0, (0, "session", "pty")),
    (EventType.OUTPUT, 1_000, (0, b"$ ")),
    (EventType.COMMAND, 2_000, (0, "shell", "mysql --password=hunter2")),
    # a card cut across two recorded events, 100 us apart
    (EventType.OUTPUT, 10_000, (0, b"card 4111 1111 ")),
    (EventType.OUTPUT, 10_100, (0, b"1111 1111 for bob@example.com\r\n")),
    (
        EventType.SQL_RESULT,
        20_000,
        (["id", "password", "note"], 2, [[1, "x", "4111111111111111"]], 5),
    ),
    (EventType.OUTPUT, 3_000_000, (0, b"done\r\n$ 5555 5555 5555 4444")),
    (EventType.EXIT_STATUS, 3_100_000, (0, 0)),
]


@pytest.fixture
def recording(tmp_path) -> Path:
    path = tmp_path / "s.hrec"
    key = load_or_create_signing_key(tmp_path / "data")
    write_recording(path, EVENTS, key, header=make_header("a" * 32), frame_every=2)
    return path


def test_the_player_renders_old_output_through_todays_rules(recording):
    with RecordingReader.open(recording) as reader:
        unmasked = Player.open(reader, cache_dir=None)
        unmasked.seek(10**9)
        assert "4111 1111 1111 1111" in unmasked.text()
        masked_source = MaskedSource(reader, POLICY.for_caller(["dev"], "web1"))
        player = Player.open(masked_source, cache_dir=None)
        player.seek(10**9)
        screen = player.text()
    assert "**** **** **** 1111 for ***************" in screen
    assert "**** **** **** 4444" in screen  # held at the end, released by the final flush
    assert "4111" not in screen and "bob@" not in screen
    assert masked_source.header.session_id.startswith("a" * 32 + "-masked-")


def test_groups_scope_the_view(recording):
    with RecordingReader.open(recording) as reader:
        player = Player.open(MaskedSource(reader, POLICY.for_caller(["auditors"])), cache_dir=None)
        player.seek(10**9)
        assert "bob@example.com" in player.text()


def test_frames_read_out_of_order_are_masked_the_same(recording):
    with RecordingReader.open(recording) as reader:
        masker = POLICY.for_caller(["dev"])
        straight = MaskedSource(reader, masker)
        in_order = [straight.read_frame(i) for i in range(straight.frame_count)]
        shuffled = MaskedSource(reader, masker)
        for index in reversed(range(shuffled.frame_count)):
            assert shuffled.read_frame(index) == in_order[index]


def test_commands_sql_samples_and_exports(recording):
    with RecordingReader.open(recording) as reader:
        events = list(mask_events(reader.events(), POLICY.for_caller(["dev"])))
    by_type = {e.type: e for e in events}
    assert by_type[EventType.COMMAND]["command"] == "mysql --password=*******"
    assert by_type[EventType.SQL_RESULT]["sample"] == [[1, "********", "************1111"]]
    output = b"".join(e["data"] for e in events if e.type is EventType.OUTPUT)
    assert output == (
        b"$ card **** **** **** 1111 for ***************\r\ndone\r\n$ **** **** **** 4444"
    )


def test_dry_run_counts_and_positions_without_values(recording, tmp_path):
    other = tmp_path / "t.hrec"
    key = load_or_create_signing_key(tmp_path / "data")
    write_recording(other, EVENTS[:5], key, header=make_header("b" * 32, target="db9"))
    with RecordingReader.open(recording) as one, RecordingReader.open(other) as two:
        report = dry_run(POLICY, [one, two], samples_per_rule=2)
    assert report.sessions == ["a" * 32, "b" * 32]
    assert report.counts == {"cards": 4, "assign": 2, "passwords": 1, "auditors-see-mail": 2}
    assert report.sessions_by_rule["cards"] == {"a" * 32, "b" * 32}
    cards = [s for s in report.samples if s.rule == "cards"]
    assert len(cards) == 2
    assert (cards[0].kind, cards[0].time_us, cards[0].position, cards[0].length) == (
        "output",
        10_100,  # the act belongs to the event that completed the card
        len("$ card "),
        19,
    )
    text = repr(report.to_json())
    assert "4111" not in text and "hunter2" not in text and "bob@" not in text
