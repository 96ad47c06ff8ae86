"""A screen at a time reads only what happened up to it: `render_until` stops at the frame
holding the time and cuts it there, and gives exactly the screen `Player.seek` gives from
keyframes."""

from __future__ import annotations

import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from replay.asciicast import CastFile, read_cast, write_cast_recording
from replay.player import Player, render_until
from replay.sources import CastSource
from storage.reader import RecordingReader
from storage.schema import Event, EventType
from tests.storage.helpers import TimedEvent, make_header, write_recording

DATA = Path(__file__).parent / "data"
S = 1_000_000


class CountingReader:
    """A real recording reader that remembers which frames were read."""

    def __init__(self, reader: RecordingReader) -> None:
        self.reader = reader
        self.header = reader.header
        self.size = reader.size
        self.frame_first_us = reader.frame_first_us
        self.read: list[int] = []

    @property
    def frame_count(self) -> int:
        return self.reader.frame_count

    def read_frame(self, index: int) -> list[Event]:
        self.read.append(index)
        return self.reader.read_frame(index)


def burst_cast(lines: int) -> CastFile:
    """A prompt, a command typed, then `seq 1 lines` in 4 KiB chunks, then a prompt."""
    events: list[tuple[float, str, str]] = [(0.05, "o", "$ ")]
    events += [(0.3 + i * 0.07, "o", ch) for i, ch in enumerate("seq")]
    events.append((1.25, "o", "\r\n"))
    data = "".join(f"{n}\r\n" for n in range(1, lines + 1))
    chunks = [data[k : k + 4096] for k in range(0, len(data), 4096)]
    events += [(1.3 + i / len(chunks), "o", chunk) for i, chunk in enumerate(chunks)]
    events += [(2.4, "o", "$ "), (8.0, "o", "exit\r\n")]
    return CastFile({"version": 2, "width": 40, "height": 10}, events)


def test_a_screen_before_a_burst_reads_no_frame_of_it(tmp_path: Path) -> None:
    path = tmp_path / "burst.hrec"
    header = make_header(cols=40, rows=10)
    write_cast_recording(burst_cast(300_000), header, path, Ed25519PrivateKey.generate())
    with RecordingReader.open(path) as reader:
        assert reader.frame_count > 3
        counting = CountingReader(reader)
        terminal = render_until(counting, round(1.2 * S))
        assert terminal.text() == "$ seq"
        assert counting.read == [0]  # the frame holding 1.2 s, cut there; nothing later
        counting.read.clear()
        middle = reader.frame_first_us[2] + 1
        render_until(counting, middle)
        assert counting.read == [0, 1, 2]
        after = render_until(reader, round(7 * S)).text().splitlines()
        assert after[-2:] == ["300000", "$"]


def test_render_until_gives_the_screen_the_keyframes_give(tmp_path: Path) -> None:
    """At random times of real programs (vim, less, top...) and of a burst, cold and warm
    screens are the same, resizes included."""
    rng = random.Random(7)
    sources = [CastSource.open(path) for path in sorted(DATA.glob("*.cast"))]
    cast = burst_cast(20_000)
    sources.append(CastSource(cast, size=1, session_id="burst"))
    for source in sources:
        player = Player.open(source, every_bytes=4096)
        end = player.duration_us
        times = [0, end, end + 1, *(rng.randrange(0, end + 1) for _ in range(12))]
        times += [player.index.times[i] for i in rng.sample(range(player.event_count), 8)]
        for time_us in times:
            player.seek(time_us)
            cold = render_until(source, time_us)
            assert cold.state_key() == player.terminal.state_key(), (source.header, time_us)


def test_a_cast_opened_until_a_time_stops_parsing_there(tmp_path: Path) -> None:
    path = tmp_path / "cut.cast"
    path.write_text(
        '{"version": 2, "width": 20, "height": 4}\n'
        '[0.5, "o", "before\\r\\n"]\n[1.0, "o", "$ "]\n[1.0000004, "o", "x"]\n'
        '[2.0, "o", "after"]\n[oops\n'
    )
    source = CastSource.open(path, until_us=S)
    assert not source.complete
    assert render_until(source, S).text() == "before\n$ x"
    whole = read_cast(path, until_s=1.9)
    assert len(whole.events) == 3 and not whole.complete


def test_render_until_cuts_a_frame_at_the_time(tmp_path: Path) -> None:
    path = tmp_path / "one-frame.hrec"
    events: list[TimedEvent] = [
        (EventType.OUTPUT, 0, (0, b"one ")),
        (EventType.OUTPUT, 100, (0, b"two ")),
        (EventType.OUTPUT, 200, (0, b"three")),
    ]
    write_recording(path, events, Ed25519PrivateKey.generate(), frame_every=10)
    with RecordingReader.open(path) as reader:
        assert reader.frame_count == 1
        assert render_until(reader, 150).text() == "one two"
        assert render_until(reader, 99).text() == "one"


def test_a_masked_screen_stops_at_the_time_and_never_shows_half_a_secret(tmp_path: Path) -> None:
    """A card cut across two frames, 100 us apart, and a screen between them: the masks hold
    the first half back, so neither the cold nor the keyframe screen shows it, and the cold
    one reads no frame that starts after the time."""
    from replay.masking_view import MaskedSource
    from storage.masking import MaskPolicy

    policy = MaskPolicy.from_config(
        [{"name": "cards", "detector": "credit_card", "style": "last4"}], "rules.toml", b"k"
    )
    path = tmp_path / "card.hrec"
    events: list[TimedEvent] = [
        (EventType.OUTPUT, 1_000, (0, b"$ cat cards\r\n")),
        (EventType.OUTPUT, 10_000, (0, b"card 4111 1111 ")),
        (EventType.OUTPUT, 10_100, (0, b"1111 1111 on file\r\n")),
        (EventType.OUTPUT, 3 * S, (0, b"$ ")),
    ]
    write_recording(path, events, Ed25519PrivateKey.generate(), frame_every=2)
    with RecordingReader.open(path) as reader:
        assert list(reader.frame_first_us[:2]) == [1_000, 10_100]
        counting = CountingReader(reader)
        masked = MaskedSource(counting, policy.for_caller([]))
        cold = render_until(masked, 10_050)
        assert "4111" not in cold.text() and cold.text().startswith("$ cat cards\ncard")
        assert counting.read == [0]
        player = Player(masked, Player.open(MaskedSource(reader, policy.for_caller([]))).index)
        player.seek(10_050)
        assert player.terminal.state_key() == cold.state_key()
        done = render_until(masked, 4 * S).text()
        assert "4111" not in done and "1111 on file" in done
