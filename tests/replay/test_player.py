"""The player: seeking through keyframes equals replaying from the start, stepping, jumps,
markers, search, the keyframe cache, and playback by an injected clock."""

from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from replay import keyframes
from replay.asciicast import read_cast, write_cast_recording
from replay.keyframes import cache_path
from replay.player import (
    COMMAND_EVENTS,
    DECISION_EVENTS,
    HOLD_EVENTS,
    LONG_JUMP_US,
    MASK_EVENTS,
    SHORT_JUMP_US,
    Playback,
    Player,
    compressed_times,
    playback_schedule,
    source_events,
)
from replay.sources import CastSource, open_source
from replay.terminal import Terminal
from storage.reader import RecordingReader
from storage.schema import EventType
from tests.storage.helpers import TimedEvent, make_header, write_recording

DATA = Path(__file__).parent / "data"
S = 1_000_000
OUT = EventType.OUTPUT


def session_events() -> list[TimedEvent]:
    """A shell session: prompts, a listing that scrolls, a held command, a full-screen
    program, a resize, a secret masked, another channel's output, a long idle gap."""
    events: list[TimedEvent] = [
        (EventType.CHANNEL_OPEN, 0, (0, "session", "pty")),
        (OUT, 10_000, (0, b"$ ")),
        (EventType.INPUT, 900_000, (0, b"ls\r")),
        (EventType.COMMAND, 1_000_000, (0, "shell", "ls")),
        (EventType.VERDICT, 1_000_100, (0, "allow", "default", "")),
    ]
    time_us = 1_100_000
    for number in range(60):
        events.append((OUT, time_us, (0, f"file-{number:03d}.txt\r\n".encode())))
        time_us += 20_000
    events += [
        (OUT, time_us, (0, b"$ ")),
        (EventType.COMMAND, 3 * S, (0, "shell", "rm -rf /data")),
        (EventType.HOLD_REQUESTED, 3 * S + 1, ("h1", "rm -rf /data", "dangerous", ["bob"])),
        (EventType.HOLD_DECIDED, 5 * S, ("h1", "deny", "bob", "no")),
        (EventType.VERDICT, 5 * S + 1, (0, "deny", "dangerous", "held and denied")),
        (OUT, 5 * S + 2, (0, b"denied\r\n$ ")),
        (EventType.EXEC, 6 * S, (1, b"uptime")),
        (EventType.CHANNEL_OPEN, 6 * S, (1, "session", "exec")),
        (OUT, 6 * S + 10, (1, b"OTHER CHANNEL TEXT\r\n")),
        (OUT, 7 * S, (0, b"\x1b[?1049h\x1b[H\x1b[2J")),
        (OUT, 7 * S + 100, (0, b"\x1b[1;1H~ editor ~\x1b[3;1Hfirst line")),
        (EventType.RESIZE, 8 * S, (0, 100, 30)),
        (OUT, 8 * S + 10, (0, b"\x1b[H\x1b[2J\x1b[1;1H~ editor wide ~")),
        (OUT, 9 * S, (0, b"\x1b[5;1Hpass\x1b[31mw\x1b[0mord: hunter2")),
        (EventType.MASK, 9 * S + 1, (0, "secrets", 14, 7, "[MASKED]")),
        (OUT, 9 * S + 50, (0, b"\x1b[5;1H\x1b[K")),
        (OUT, 10 * S, (0, b"\x1b[?1049l")),
        (OUT, 70 * S, (0, b"after a long pause\r\n$ ")),
        (EventType.ANNOTATION, 71 * S, ("look here", "auditor")),
        (OUT, 72 * S, (0, b"\x1b[2J\x1b[Hfinal \xe4\xb8")),
        (OUT, 72 * S + 5, (0, b"\xad screen")),
    ]
    return events


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "session.hrec"
    write_recording(path, session_events(), Ed25519PrivateKey.generate(), frame_every=7)
    return path


@pytest.fixture
def player(recording: Path) -> Player:
    return Player.open(RecordingReader.open(recording), every_bytes=64)


def straight(recording: Path, time_us: int) -> Terminal:
    """The reference: a fresh terminal fed every channel-0 event up to `time_us`."""
    terminal = Terminal(80, 24)
    for event in RecordingReader.open(recording).events(end_us=time_us):
        if event.get("channel") != 0:
            continue
        if event.type is OUT:
            terminal.feed(event["data"])
        elif event.type is EventType.RESIZE:
            terminal.resize(event["cols"], event["rows"])
    return terminal


def test_keyframes_are_built_every_n_bytes(player: Player) -> None:
    assert len(player.index.keyframes) > 10
    assert player.index.channel == 0
    assert player.duration_us == 72 * S + 5


def test_seek_anywhere_in_any_order_equals_straight_replay(recording: Path, player: Player) -> None:
    times = sorted({t for _, t, _ in session_events()} | {0, 2 * S, 9 * S + 20, 80 * S})
    rng = random.Random(7)
    order = times * 2
    rng.shuffle(order)
    for time_us in order:
        player.seek(time_us)
        expected = straight(recording, time_us)
        assert player.terminal.state_key() == expected.state_key(), time_us


def test_screen_at_times(player: Player) -> None:
    assert player.screen_at(0)[0].rstrip() == ""
    assert "~ editor ~" in player.screen_at(7 * S + 500)[0]
    wide = player.screen_at(8 * S + 10)
    assert len(wide) == 30 and len(wide[0]) == 100
    assert "OTHER CHANNEL" not in "\n".join(player.screen_at(6 * S + 10))
    assert player.text().startswith("$ ls") or "file-" in player.text()
    assert player.screen_at(80 * S)[0].rstrip() == "final 中 screen"


def test_step_forward_and_back_visit_each_output(player: Player) -> None:
    seen = []
    while player.step_forward():
        seen.append(player.position)
    assert seen == [i + 1 for i in player.index.screen_events]
    assert not player.step_forward()
    back = []
    while player.step_back():
        back.append(player.position)
    assert back == [*reversed(seen[:-1]), 0]
    assert player.time_us == 0


def test_jumps_move_by_time_and_clamp(player: Player) -> None:
    player.seek(7 * S)
    player.jump(5 * S)
    assert player.time_us == 12 * S
    player.jump(-60 * S)
    assert player.time_us == 0
    player.jump(60 * S)
    player.jump(60 * S)
    assert player.time_us == player.duration_us


def test_marker_groups(player: Player) -> None:
    found = player.next_marker(DECISION_EVENTS)
    assert found is not None and found.type is EventType.VERDICT and found.time_us == 1_000_100
    found = player.next_marker(HOLD_EVENTS)
    assert found is not None and found.time_us == 3 * S + 1
    found = player.next_marker(COMMAND_EVENTS)
    assert found is not None and found.type is EventType.EXEC
    found = player.next_marker(MASK_EVENTS)
    assert found is not None and found.time_us == 9 * S + 1
    player.jump(LONG_JUMP_US)
    player.jump(-SHORT_JUMP_US)
    assert player.time_us == 9 * S + 1 + 55 * S


def test_markers_next_and_previous_by_type(player: Player) -> None:
    kinds = [m.type for m in player.markers]
    assert EventType.HOLD_REQUESTED in kinds and EventType.MASK in kinds
    found = player.next_marker([EventType.COMMAND])
    assert found is not None and found.label.endswith("ls")
    found = player.next_marker([EventType.COMMAND])
    assert found is not None and "rm -rf" in found.label
    assert player.time_us == 3 * S
    hold = player.next_marker([EventType.HOLD_DECIDED])
    assert hold is not None and hold.time_us == 5 * S
    assert player.next_marker([EventType.HOLD_DECIDED]) is None
    mask = player.next_marker([EventType.MASK])
    assert mask is not None and player.terminal.contains("hunter2")
    back = player.previous_marker([EventType.HOLD_REQUESTED])
    assert back is not None and back.time_us == 3 * S + 1
    anything = player.next_marker()
    assert anything is not None and anything.type is EventType.HOLD_DECIDED
    assert player.previous_marker() is not None


def test_search_finds_the_first_screen_showing_the_text(player: Player) -> None:
    hit = player.search("file-042.txt")
    assert hit is not None and hit.time_us == 1_100_000 + 42 * 20_000
    # drawn in pieces (a colour change inside) and erased 50 µs later
    hit = player.search("password: hunter2")
    assert hit is not None and hit.time_us == 9 * S
    player.seek_position(hit.position)
    assert player.terminal.contains("password: hunter2")
    # split across two events, in the middle of a character
    hit = player.search("final 中 screen")
    assert hit is not None and hit.time_us == 72 * S + 5
    assert player.search("never shown") is None
    assert player.search("OTHER CHANNEL") is None
    player.seek(3 * S)
    player.search("final")
    assert player.time_us == 3 * S  # search does not move the player


def test_search_from_a_position_finds_the_next_one(player: Player) -> None:
    first = player.search("$ ")
    assert first is not None
    later = player.search("after a long", start=first.position)
    assert later is not None and later.time_us == 70 * S


def test_keyframe_cache_is_reused_and_the_recording_untouched(
    recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = hashlib.sha256(recording.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    reader = RecordingReader.open(recording)
    first = Player.open(reader, cache_dir=cache, every_bytes=64)
    path = cache_path(cache, reader.header.session_id, reader.size)
    assert path.exists() and list(cache.iterdir()) == [path]

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(keyframes, "build_index", no_build)
    second = Player.open(RecordingReader.open(recording), cache_dir=cache)
    assert len(second.index.keyframes) == len(first.index.keyframes)
    assert second.screen_at(9 * S) == first.screen_at(9 * S)
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == before


def test_a_stale_or_damaged_cache_is_rebuilt(recording: Path, tmp_path: Path) -> None:
    reader = RecordingReader.open(recording)
    path = cache_path(tmp_path, reader.header.session_id, reader.size)
    path.write_bytes(b"garbage")
    player = Player.open(reader, cache_dir=tmp_path)
    assert player.index.event_count == len(session_events()) + 1  # + session_end
    assert (
        keyframes.load_index(path.read_bytes(), reader.header.session_id, reader.size + 1) is None
    )


# -- playback -------------------------------------------------------------------------------------


def test_compressed_times_cap_idle_gaps() -> None:
    assert compressed_times([0, 1 * S, 10 * S, 10 * S + 5], 2 * S) == [0, S, 3 * S, 3 * S + 5]
    assert compressed_times([5, 7], None) == [5, 7]


def test_playback_follows_the_injected_clock(player: Player) -> None:
    playback = Playback(player, speed=2.0, idle_limit_s=1.0)
    playback.play(100.0)
    assert playback.tick(100.0)
    assert player.position == 1  # only the channel-open at time 0
    playback.tick(100.0 + 0.5)  # 1 s of recording at 2x
    assert player.time_us <= 1 * S and player.position >= 2
    playback.pause(100.5)
    position = player.position
    playback.tick(500.0)
    assert player.position == position
    playback.play(600.0)
    playback.set_speed(16.0, 600.0)
    due = playback.next_due(600.0)
    assert due is not None and due >= 600.0
    for _ in range(1000):
        if not playback.tick(due := (playback.next_due(due) or due)):
            break
    assert player.position == player.event_count
    # the 60 s gap took one second of virtual time
    assert playback.virtual[-1] < 25 * S


def test_speed_is_clamped() -> None:
    from replay.player import clamp_speed

    assert (clamp_speed(0.01), clamp_speed(100), clamp_speed(3)) == (0.25, 16.0, 3)


def test_playback_schedule_speed_and_idle_limit(recording: Path) -> None:
    events = list(source_events(RecordingReader.open(recording)))
    schedule = list(playback_schedule(events, speed=2.0, idle_limit_s=2.0))
    assert all(b"OTHER CHANNEL" not in data for _, data in schedule)
    times = [t for t, _ in schedule]
    assert times == sorted(times)
    assert times[0] == pytest.approx(0.005)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 1.0 + 1e-9  # 2 s cap at 2x
    assert b"".join(data for _, data in schedule).endswith(b"\xad screen")


# -- asciicast sources ----------------------------------------------------------------------------


def test_a_cast_and_its_imported_recording_replay_the_same(tmp_path: Path) -> None:
    cast_path = DATA / "vim.cast"
    cast = read_cast(cast_path)
    signer = Ed25519PrivateKey.generate()
    header = make_header(cols=cast.header["width"], rows=cast.header["height"])
    out = tmp_path / "vim.hrec"
    write_cast_recording(cast, header, out, signer)
    from_cast = Player.open(CastSource.open(cast_path), every_bytes=512)
    from_file = open_source(out)
    assert isinstance(from_file, RecordingReader)
    from_recording = Player.open(from_file, cache_dir=tmp_path / "cache", every_bytes=512)
    for time_s in (0.03, 1.0, 2.0, 3.0, 10.0):
        assert from_cast.screen_at(round(time_s * S)) == from_recording.screen_at(round(time_s * S))
    assert isinstance(open_source(cast_path), CastSource)


def test_seek_event_shows_the_output_a_mask_event_is_about(tmp_path: Path) -> None:
    """A `mask` event is recorded just before the output it masked: seeking to it shows that
    output drawn."""
    events: list[TimedEvent] = [
        (EventType.OUTPUT, 10, (0, b"$ cat notes\r\n")),
        (EventType.MASK, 20, (0, "passwords", 9, 7, "tok_aaaaaaaaaaaa")),
        (EventType.OUTPUT, 30, (0, b"password=******* end\r\n")),
        (EventType.OUTPUT, 40, (0, b"$ ")),
    ]
    path = tmp_path / "masked.hrec"
    write_recording(path, events, Ed25519PrivateKey.generate())
    with RecordingReader.open(path) as reader:
        player = Player.open(reader)
        player.seek_event(1)
        assert player.position == 3
        assert [line.rstrip() for line in player.lines()[:3]] == [
            "$ cat notes",
            "password=******* end",
            "",
        ]
        player.seek_event(0)  # an output event itself
        assert player.position == 1
        player.seek_event(4)  # session_end: nothing drawn after it
        assert player.position == player.event_count
