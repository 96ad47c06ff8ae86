"""The writer threads: round trips, crash safety, timely frames, failing closed, and many
recordings sharing a few threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.reader import RecordingReader
from storage.schema import EVENTS, EventType
from storage.verify import verify_recording
from storage.writer import LOW_WATER_BYTES, WRITER_THREADS, RecordingFailed, RecordingWriter
from tests.storage.helpers import make_header

REPO = Path(__file__).resolve().parents[2]


def _writer(path: Path, signer, **kwargs) -> RecordingWriter:
    return RecordingWriter(path, make_header(), signer, fsync=False, **kwargs)


def test_events_round_trip_through_the_thread(tmp_path, signer):
    path = tmp_path / "s.hrec"
    writer = _writer(path, signer)
    payloads = [os.urandom(n) for n in (1, 100, 5000, 70000)]
    for data in payloads:
        writer.record(EventType.OUTPUT, 1, data)
    writer.record(EventType.EXEC, 2, b"uname -a")
    writer.record(EventType.VERDICT, 2, "deny", "no-uname", "not here")
    summary = writer.close("client closed")
    assert summary.event_count == 7
    assert summary.verdicts == {"deny": 1}
    assert summary.size == path.stat().st_size
    with RecordingReader.open(path) as reader:
        events = list(reader.events())
    assert [e["data"] for e in events[:4]] == payloads
    assert events[4]["command"] == b"uname -a"
    assert events[-1].type is EventType.SESSION_END and events[-1]["reason"] == "client closed"
    assert [e.time_us for e in events] == sorted(e.time_us for e in events)
    assert verify_recording(path, signer.public_key()).ok


def test_huge_output_is_split_not_refused(tmp_path, signer):
    path = tmp_path / "s.hrec"
    writer = _writer(path, signer)
    blob = os.urandom(3 * 1024 * 1024 + 17)
    writer.record(EventType.OUTPUT, 0, blob)
    writer.close("done")
    with RecordingReader.open(path) as reader:
        outputs = [e["data"] for e in reader.events() if e.type is EventType.OUTPUT]
    assert len(outputs) == 4
    assert b"".join(outputs) == blob


def test_a_security_event_reaches_the_disk_at_once(tmp_path, signer):
    path = tmp_path / "s.hrec"
    writer = _writer(path, signer)
    writer.record(EventType.COMMAND, 0, "shell", "rm -rf /tmp/x")
    deadline = time.monotonic() + 0.5
    seen = []
    while time.monotonic() < deadline and not seen:
        time.sleep(0.02)
        with RecordingReader.open(path) as reader:
            seen = [e for e in reader.events() if e.type is EventType.COMMAND]
    writer.close("done")
    assert seen and seen[0]["command"] == "rm -rf /tmp/x"


def test_plain_output_reaches_the_disk_within_a_second(tmp_path, signer):
    path = tmp_path / "s.hrec"
    writer = _writer(path, signer)
    started = time.monotonic()
    writer.record(EventType.OUTPUT, 0, b"hello")
    with RecordingReader.open(path) as reader:
        assert list(reader.events()) == []  # still in the open frame
    seen: list[bytes] = []
    while not seen and time.monotonic() - started < 3:
        time.sleep(0.05)
        with RecordingReader.open(path) as reader:
            seen = [e["data"] for e in reader.events()]
    waited = time.monotonic() - started
    writer.close("done")
    assert seen == [b"hello"]
    assert waited < 1.0 + 0.1, f"took {waited:.2f}s"


def test_bulk_output_is_written_as_it_comes_not_when_the_backlog_is_full(tmp_path, signer):
    """A frame's worth of output wakes the writer: a relay at full speed must not fill the
    backlog to its high-water mark (and pause the session) before the writer even starts.
    Without that wake the output waits for the thread's idle look (every 0.2 s), so only by
    chance would it be written within 25 ms three times out of five."""
    path = tmp_path / "s.hrec"
    writer = _writer(path, signer)
    chunk = b"x" * 32768
    waits = []
    for pause in (0.13, 0.27, 0.11, 0.23, 0.17):
        time.sleep(pause)
        for _ in range(20):  # 640 KiB, more than a frame
            writer.record(EventType.OUTPUT, 0, chunk)
        recorded_at = time.monotonic()
        while writer.backlog_bytes and time.monotonic() - recorded_at < 2:
            time.sleep(0.001)
        waits.append(time.monotonic() - recorded_at)
    writer.close("done")
    assert sum(wait < 0.025 for wait in waits) >= 3, [f"{w * 1000:.0f} ms" for w in waits]


def _writer_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("recording-writer-")}


def test_many_recordings_share_a_few_threads_and_each_gets_its_security_frame(tmp_path, signer):
    writers = [_writer(tmp_path / f"{n}.hrec", signer) for n in range(60)]
    assert 1 <= len(_writer_threads()) <= WRITER_THREADS
    for n, writer in enumerate(writers):
        writer.record(EventType.OUTPUT, 0, b"out %d" % n)
        writer.record(EventType.COMMAND, 0, "shell", f"cmd {n}")
    deadline = time.monotonic() + 2
    missing = set(range(60))
    while missing and time.monotonic() < deadline:
        time.sleep(0.02)
        for n in list(missing):
            with RecordingReader.open(tmp_path / f"{n}.hrec") as reader:
                if any(e.type is EventType.COMMAND for e in reader.events()):
                    missing.discard(n)
    summaries = [writer.close("done") for writer in writers]
    assert not missing, f"no security frame on disk within 2 s for {sorted(missing)[:5]}"
    assert all(summary.event_count == 3 for summary in summaries)
    for n in range(60):
        with RecordingReader.open(tmp_path / f"{n}.hrec") as reader:
            assert [e["data"] for e in reader.events() if e.type is EventType.OUTPUT] == [
                b"out %d" % n
            ]


@pytest.mark.programs
def test_writer_threads_go_away_when_no_recording_is_open(tmp_path):
    # In a child process: other tests' recordings in this one would keep threads alive.
    child = _run_child(
        """
        import sys, threading, time
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from storage.schema import EventType
        from storage.writer import RecordingWriter
        from tests.storage.helpers import make_header

        def writer_threads():
            return [t for t in threading.enumerate() if t.name.startswith("recording-writer-")]

        key = Ed25519PrivateKey.generate()
        writers = [
            RecordingWriter(Path(sys.argv[1]) / f"{n}.hrec", make_header(), key, fsync=False)
            for n in range(10)
        ]
        print(len(writer_threads()))
        for writer in writers:
            writer.record(EventType.OUTPUT, 0, b"x")
            writer.close("done")
        deadline = time.monotonic() + 2
        while writer_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        print(len(writer_threads()))
        """,
        str(tmp_path),
    )
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    during, after = (int(line) for line in out.split())
    assert 1 <= during <= WRITER_THREADS
    assert after == 0


def test_one_failing_recording_leaves_its_neighbours_alone(tmp_path, signer):
    failures: list[BaseException] = []
    healthy = [_writer(tmp_path / f"ok{n}.hrec", signer) for n in range(WRITER_THREADS * 2)]
    broken = _writer(tmp_path / "broken.hrec", signer, on_failure=failures.append)
    os.close(broken._fd)  # the disk goes away under this one recording only
    broken._fd = os.open(os.devnull, os.O_RDONLY)
    broken.record(EventType.COMMAND, 0, "shell", "ls")
    for writer in healthy:
        writer.record(EventType.COMMAND, 0, "shell", "ls")
    with pytest.raises(RecordingFailed, match="incomplete"):
        broken.close("done")
    assert failures and isinstance(failures[0], OSError)
    with pytest.raises(RecordingFailed):
        broken.record(EventType.OUTPUT, 0, b"more")
    for writer in healthy:
        assert writer.close("done").event_count == 2
        assert verify_recording(writer.path, signer.public_key()).ok


def test_a_full_queue_fails_closed_and_tells_the_owner(tmp_path, signer):
    failures: list[BaseException] = []
    writer = _writer(tmp_path / "s.hrec", signer, max_pending=1, on_failure=failures.append)
    with pytest.raises(RecordingFailed, match="queue is full"):
        for _ in range(1_000_000):
            writer.record(EventType.OUTPUT, 0, b"x" * 64)
    assert failures and "queue is full" in str(failures[0])
    with pytest.raises(RecordingFailed):
        writer.record(EventType.OUTPUT, 0, b"more")
    with pytest.raises(RecordingFailed, match="incomplete"):
        writer.close("done")


def test_record_after_close_is_refused(tmp_path, signer):
    writer = _writer(tmp_path / "s.hrec", signer)
    writer.close("done")
    with pytest.raises(RecordingFailed, match="closed"):
        writer.record(EventType.OUTPUT, 0, b"late")
    assert writer.close("again").end_reason == "done"


def test_too_many_fields_is_a_programming_error(tmp_path, signer):
    writer = _writer(tmp_path / "s.hrec", signer)
    with pytest.raises(TypeError, match="at most 2 fields"):
        writer.record(EventType.OUTPUT, 0, b"x", "extra")
    writer.close("done")


def _run_child(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.programs
def test_a_full_disk_fails_closed(tmp_path):
    """The writer process may only write 200 KB (RLIMIT_FSIZE): the write fails with EFBIG,
    the owner is told, and record() refuses from then on."""
    child = _run_child(
        """
        import os, resource, signal, sys, time
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from storage.schema import EventType
        from storage.writer import RecordingFailed, RecordingWriter
        from tests.storage.helpers import make_header
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        failures = []
        writer = RecordingWriter(Path(sys.argv[1]), make_header(), Ed25519PrivateKey.generate(),
                                 on_failure=failures.append, fsync=False)
        try:
            for i in range(200_000):
                writer.record(EventType.OUTPUT, 0, os.urandom(1000))
                if i % 100 == 0:
                    time.sleep(0.001)
            print("never failed")
        except RecordingFailed as exc:
            print("refused:", exc)
        print("told owner:", failures[0] if failures else None)
        """,
        str(tmp_path / "s.hrec"),
    )
    out, err = child.communicate(timeout=60)
    text = out.decode()
    assert "refused:" in text and "File too large" in text, (text, err.decode())
    assert "told owner: [Errno 27] File too large" in text


@pytest.mark.programs
def test_kill_9_loses_at_most_the_last_second(tmp_path):
    """A writer process killed with SIGKILL leaves a file readable up to about one second
    before the kill: every event stamped earlier than that is there."""
    path = tmp_path / "s.hrec"
    child = _run_child(
        """
        import sys, time
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from storage.schema import EventType
        from storage.writer import RecordingWriter
        from tests.storage.helpers import make_header
        writer = RecordingWriter(Path(sys.argv[1]), make_header(), Ed25519PrivateKey.generate(),
                                 fsync=False)
        print("ready", flush=True)
        while True:
            writer.record(EventType.OUTPUT, 0, b"%.6f\\n" % time.time())
            time.sleep(0.005)
        """,
        str(path),
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    time.sleep(3.2)
    killed_at = time.time()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    with RecordingReader.open(path) as reader:
        stamps = [float(e["data"]) for e in reader.events()]
        assert not reader.complete
    assert len(stamps) > 100
    assert stamps == sorted(stamps)
    assert killed_at - stamps[-1] < 1.0 + 0.25, f"lost {killed_at - stamps[-1]:.2f}s"


_field_values = {
    "channel": st.integers(0, 2**16),
    "data": st.binary(max_size=300),
    "command": st.one_of(st.text(max_size=40), st.binary(max_size=40)),
    "path": st.binary(max_size=40),
}


@st.composite
def _events(draw):
    etype = draw(st.sampled_from(list(EventType)))
    values = tuple(
        draw(_field_values.get(name, st.one_of(st.text(max_size=20), st.integers(-(2**40), 2**40))))
        for name in EVENTS[etype].fields
    )
    return etype, draw(st.integers(0, 10**7)), values


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(_events(), max_size=40))
def test_any_event_sequence_round_trips(tmp_path, signer, events):
    path = tmp_path / "prop.hrec"
    path.unlink(missing_ok=True)
    writer = _writer(path, signer)
    time_us = 0
    expected = []
    for etype, delta, values in events:
        time_us += delta
        writer.record_at(time_us, etype, *values)
        expected.append((etype, time_us, values))
    writer.close("end")
    with RecordingReader.open(path) as reader:
        got = [(e.type, e.time_us, tuple(e.fields.values())) for e in reader.events()]
    assert got[:-1] == expected
    assert got[-1][0] is EventType.SESSION_END
    assert verify_recording(path, signer.public_key()).ok


async def test_a_fast_source_is_told_to_wait_instead_of_failing(tmp_path, signer):
    """Flow control: past the high-water mark the writer says `congested`, and `drained()`
    returns once the backlog is small again; nothing is lost or failed."""
    writer = _writer(tmp_path / "s.hrec", signer)
    blob = os.urandom(1024 * 1024)
    for _ in range(40):
        writer.record(EventType.OUTPUT, 0, blob)
    assert writer.congested
    await writer.drained()
    assert writer.backlog_bytes <= LOW_WATER_BYTES
    summary = writer.close("done")
    assert summary.event_count == 41 and writer.failed is None


def test_the_byte_budget_is_a_hard_limit(tmp_path, signer):
    failures: list[BaseException] = []
    writer = _writer(
        tmp_path / "s.hrec", signer, max_pending_bytes=4 * 1024 * 1024, on_failure=failures.append
    )
    blob = os.urandom(1024 * 1024)
    with pytest.raises(RecordingFailed, match="cannot keep up"):
        for _ in range(100):
            writer.record(EventType.OUTPUT, 0, blob)
    assert failures
