"""Reading recordings back: events, seeking, index rebuild and the limits on bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from storage.reader import RecordingError, RecordingReader
from storage.schema import FOOTER, PREAMBLE, EventType, decode_event
from tests.storage.helpers import SAMPLE_EVENTS, make_header, write_recording


def _expected(events=SAMPLE_EVENTS):
    return [(etype, time_us, values) for etype, time_us, values in events]


def _read_all(reader: RecordingReader):
    return [(e.type, e.time_us, tuple(e.fields.values())) for e in reader.events()]


def test_events_come_back_with_their_times_and_bytes(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    with RecordingReader.open(path) as reader:
        assert reader.complete
        assert reader.header.user == "alice"
        assert reader.header.cols == 80
        events = _read_all(reader)
        assert reader.end_reason == "client closed"
    assert events[:-1] == _expected()
    assert events[-1][0] is EventType.SESSION_END
    assert isinstance(events[1][2][1], bytes)


def test_seek_starts_at_the_frame_holding_the_time(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer, frame_every=2)
    with RecordingReader.open(path) as reader:
        assert reader.frame_count >= 5
        after = [e.time_us for e in reader.events(start_us=1_500_000)]
        frame = reader.read_frame(reader.frame_index_at(1_600_000))
    assert after[0] == 1_500_000
    assert all(t >= 1_500_000 for t in after)
    assert any(e.time_us == 1_500_000 for e in frame)


def test_missing_trailer_index_is_rebuilt_identically(tmp_path, signer):
    complete = tmp_path / "complete.hrec"
    write_recording(complete, SAMPLE_EVENTS, signer, frame_every=2)
    with RecordingReader.open(complete) as reader:
        offsets = list(reader.frame_offsets)
        times = list(reader.frame_first_us)
    crashed = tmp_path / "crashed.hrec"
    write_recording(crashed, SAMPLE_EVENTS, signer, frame_every=2, end_reason=None)
    with RecordingReader.open(crashed) as reader:
        assert not reader.complete
        assert list(reader.frame_offsets)[: len(offsets) - 1] == offsets[:-1]
        assert list(reader.frame_first_us)[: len(times) - 1] == times[:-1]
        assert _read_all(reader) == _expected()


def test_truncated_file_reads_up_to_the_last_whole_frame(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer, frame_every=2)
    data = path.read_bytes()
    with RecordingReader.open(path) as reader:
        cut_at = reader.frame_offsets[3] + 20
    path.write_bytes(data[:cut_at])
    with RecordingReader.open(path) as reader:
        events = _read_all(reader)
        assert reader.readable_end == cut_at - 20
        assert "truncated" in reader.describe_problem()
        assert str(cut_at - 20) in reader.describe_problem()
    assert events == _expected()[:6]


def test_not_a_recording_is_named_as_such(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"hello world, not a recording at all")
    with pytest.raises(RecordingError, match="offset 0: not a hoop-tui recording"):
        RecordingReader.open(path)


def test_unknown_format_version_is_named(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    data = bytearray(path.read_bytes())
    data[len(PREAMBLE) - 1] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=r"unsupported format version 9.*reads version 1"):
        RecordingReader.open(path)


def test_a_4gb_length_claim_is_refused_without_allocating(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    data = bytearray(path.read_bytes())
    with RecordingReader.open(path) as reader:
        second_frame = reader.frame_offsets[1]
    struct.pack_into(">I", data, second_frame + 1, 0xFFFFFFFF)
    data = data[: -FOOTER.size]  # no footer: the reader must walk the blocks
    path.write_bytes(bytes(data))
    with RecordingReader.open(path) as reader:
        assert len(_read_all(reader)) == 3
        assert reader.problem_offset == second_frame
        assert "claims 4294967295 bytes" in reader.problem


def test_header_length_claim_is_refused(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, len(PREAMBLE) + 1, 0x40000000)
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=f"offset {len(PREAMBLE)}: block claims"):
        RecordingReader.open(path)


def test_empty_and_tiny_files(tmp_path):
    for content in (b"", b"HOOP", PREAMBLE, PREAMBLE + b"H\x00"):
        path = tmp_path / "tiny"
        path.write_bytes(content)
        with pytest.raises(RecordingError):
            RecordingReader.open(path)


def test_a_frame_damaged_inside_its_payload_stops_iteration_with_a_reason(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    data = bytearray(path.read_bytes())
    with RecordingReader.open(path) as reader:
        frame = reader.frame_offsets[1]
    data[frame + 5 + 40 + 8] ^= 0xFF  # inside the zstd payload
    path.write_bytes(bytes(data))
    with RecordingReader.open(path) as reader:
        events = _read_all(reader)
        assert reader.problem_offset == frame
    assert events == _expected()[:3]


def test_index_of_a_header_only_file(tmp_path: Path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, [], signer, header=make_header(), end_reason=None)
    with RecordingReader.open(path) as reader:
        assert reader.frame_count == 0
        assert _read_all(reader) == []
        assert not reader.complete


def test_mask_events_written_before_the_column_field_still_read(tmp_path, signer):
    # A gateway older than the `column` field wrote five fields; a new one writes six for a SQL
    # row mask and may leave the trailing nil off for a terminal one.
    path = tmp_path / "m.hrec"
    old = (0, "passwords", 1, 7, "tok_old")
    new = (0, "passwords", 2, 7, "tok_new", "password_hash")
    write_recording(path, [(EventType.MASK, 10, old), (EventType.MASK, 20, new)], signer)
    with RecordingReader.open(path) as reader:
        first, second = [e for e in reader.events() if e.type is EventType.MASK]
    assert first.fields == {
        "channel": 0,
        "rule": "passwords",
        "position": 1,
        "length": 7,
        "token": "tok_old",
        "column": None,
    }
    assert (second["column"], second["token"]) == ("password_hash", "tok_new")
    assert decode_event([int(EventType.MASK), 0, *old], 5).get("column") is None


def test_fields_from_a_newer_writer_are_left_out_not_refused():
    # A future gateway adds a trailing field to `exec`; today's reader keeps the ones it knows.
    event = decode_event([int(EventType.EXEC), 0, 3, b"uname -a", "a field from later"], 9)
    assert event.fields == {"channel": 3, "command": b"uname -a"}
    assert event.time_us == 9
