"""Tamper evidence: every flipped byte, every truncation and every spliced block is caught."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.encoder import RecordingEncoder
from storage.reader import RecordingReader
from storage.signing import key_id
from storage.verify import verify_recording
from tests.storage.helpers import SAMPLE_EVENTS, make_header, write_recording


@pytest.fixture(scope="module")
def recording(tmp_path_factory, signer):
    path = tmp_path_factory.mktemp("rec") / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    return path.read_bytes()


def test_an_intact_recording_verifies(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    report = verify_recording(path, signer.public_key())
    assert report.ok, report.summary()
    assert report.events == len(SAMPLE_EVENTS) + 1
    assert report.signed_until_us == SAMPLE_EVENTS[-1][1]
    assert "OK" in report.summary()


def test_every_flipped_byte_is_caught(tmp_path, signer, recording):
    path = tmp_path / "s.hrec"
    for position in range(len(recording)):
        damaged = bytearray(recording)
        damaged[position] ^= 0x01
        path.write_bytes(bytes(damaged))
        report = verify_recording(path, signer.public_key())
        assert not report.ok, f"flip at {position} not detected"
        assert report.bad_offset is not None and report.bad_offset <= position
        assert "FAILED at offset" in report.summary()


def test_every_truncation_is_caught_and_the_prefix_stays_readable(tmp_path, signer, recording):
    path = tmp_path / "s.hrec"
    full_events = None
    for length in range(len(recording) - 1, 7, -1):
        path.write_bytes(recording[:length])
        report = verify_recording(path, signer.public_key())
        assert not report.ok, f"truncation to {length} bytes not detected"
        assert report.last_good_us <= SAMPLE_EVENTS[-1][1]
        try:
            with RecordingReader.open(path) as reader:
                events = [(e.type, e.time_us) for e in reader.events()]
        except Exception as exc:  # only a damaged header may refuse to open
            assert type(exc).__name__ == "RecordingError"
            continue
        if full_events is None:
            path.write_bytes(recording)
            with RecordingReader.open(path) as reader:
                full_events = [(e.type, e.time_us) for e in reader.events()]
        assert events == full_events[: len(events)]


def test_a_frame_spliced_in_from_another_recording_is_caught(tmp_path, signer):
    first, second = tmp_path / "a.hrec", tmp_path / "b.hrec"
    write_recording(first, SAMPLE_EVENTS, signer, header=make_header("a" * 32))
    write_recording(second, SAMPLE_EVENTS, signer, header=make_header("b" * 32))
    with RecordingReader.open(first) as reader:
        start, end = reader.frame_offsets[1], reader.frame_offsets[2]
    with RecordingReader.open(second) as reader:
        other_start = reader.frame_offsets[1]
    a, b = first.read_bytes(), second.read_bytes()
    # Same events, same layout: only the chain tells the frames apart.
    spliced = a[:start] + b[other_start : other_start + (end - start)] + a[end:]
    assert spliced != a and len(spliced) == len(a)
    first.write_bytes(spliced)
    report = verify_recording(first, signer.public_key())
    assert not report.ok
    assert report.bad_offset == start
    assert "another recording" in report.problem


def test_the_wrong_key_is_named(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer)
    report = verify_recording(path, Ed25519PrivateKey.generate().public_key())
    assert not report.ok
    assert "not by the given key" in report.problem


def test_a_forged_signature_is_caught(tmp_path, signer):
    """A forger can rebuild a consistent chain and claim the gateway's key id, but cannot sign."""
    forger = Ed25519PrivateKey.generate()
    header = make_header()
    header.signing_key_id = key_id(signer.public_key())
    encoder = RecordingEncoder(header, forger)
    path = tmp_path / "forged.hrec"
    with path.open("wb") as out:
        out.write(encoder.start())
        for etype, time_us, values in SAMPLE_EVENTS:
            encoder.add(int(etype), time_us, values)
        out.write(encoder.finish(SAMPLE_EVENTS[-1][1], "client closed"))
    with RecordingReader.open(path) as reader:  # perfectly readable...
        assert reader.complete
    report = verify_recording(path, signer.public_key())  # ...but not the gateway's
    assert not report.ok
    assert report.problem == "checkpoint signature does not verify"
    assert report.signed_until_us is None


def test_a_crashed_recording_is_not_intact_but_says_what_is_signed(tmp_path, signer):
    path = tmp_path / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, signer, end_reason=None)
    report = verify_recording(path, signer.public_key())
    assert not report.ok
    assert "incomplete recording" in report.problem
    assert report.signed_until_us == SAMPLE_EVENTS[-1][1]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=400))
def test_random_garbage_never_passes_or_crashes(tmp_path, signer, data):
    path = tmp_path / "garbage.hrec"
    path.write_bytes(b"HOOPREC\x01" + data)
    report = verify_recording(path, signer.public_key())
    assert not report.ok
