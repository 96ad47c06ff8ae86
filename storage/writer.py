"""The recording writer: turns events into recording files on writer threads, so that packing,
compression, hashing and disk writes never run on the event loop that forwards traffic.

`record()` only timestamps the event and appends it to the recording's bounded queue. A small
pool of writer threads serves every recording of the process: a gateway with hundreds of
sessions wakes two threads, not hundreds, and their GIL hand-offs stay off the event loop's
latency. For each recording a frame is closed at least once a second, within 5 ms of a
security-relevant event, and whenever 512 KiB are pending; while events come the chain is
signed every 0.75 s (a crash loses at most about a second of proof). When the queue overflows
or the disk fails, the writer does not drop anything silently: it marks itself failed, tells
its owner through `on_failure`, and every later `record()` raises RecordingFailed, so the
owner can end the session (fail closed).

`on_segment(end, final)` tells a spool (storage/spool.py) that the file is final up to `end`:
after the header, after each signed checkpoint is on disk, and once the file is closed
(`final`; `end` is None when the recording failed and the file ends wherever it stopped). It
runs on the writer thread and must only queue work.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage.encoder import FRAME_TARGET_RAW, RecordingEncoder
from storage.encoder import SPLITTABLE as _BULK
from storage.private import FILE_MODE, private_dir
from storage.schema import EVENTS, SECURITY_CODES, EventType, RecordingHeader

# A little under the one second we promise, so scheduling delays stay inside the promise.
FRAME_INTERVAL_S = 0.75
# A security-relevant event is on disk within this: soon enough that a crash cannot hide it,
# late enough that a burst of SQL statements shares one frame instead of one each.
SECURITY_FLUSH_S = 0.005
# The chain is signed this often while events come (and the frame pending then is closed into
# it first), so a gateway killed with kill -9 leaves its recording signed up to at most about
# a second before the kill (checkpoint interval + IDLE_WAIT_S): issue 15's promise.
CHECKPOINT_INTERVAL_S = 0.75
# An idle writer thread looks at its queues this often: plain output never wakes it, so a busy
# gateway with hundreds of sessions is not woken thousands of times a second.
IDLE_WAIT_S = 0.2
DEFAULT_MAX_PENDING = 65536  # events waiting for the writer thread
DEFAULT_MAX_PENDING_BYTES = 256 * 1024 * 1024  # past this the recording fails (closed)
HIGH_WATER_BYTES = 16 * 1024 * 1024  # past this the owner should stop reading (congested)
LOW_WATER_BYTES = 4 * 1024 * 1024  # ...and may read again once the backlog is below this
SMALL_EVENT_BYTES = 256  # what a queued event without bulk data is counted as
WAKE_BACKLOG = 1024
# ...or this many bytes: bulk output (32 KiB events) would otherwise reach HIGH_WATER_BYTES
# before WAKE_BACKLOG events, and every transfer would stall on the recorder to let it start.
WAKE_BACKLOG_BYTES = FRAME_TARGET_RAW
# Events one recording may hand to the encoder before the thread turns to the next one, so a
# bulk transfer cannot delay another session's security frame by more than a slice.
SERVICE_SLICE_EVENTS = 512
# Compression releases the GIL, so two threads use both cores when several sessions are busy.
WRITER_THREADS = max(1, min(2, os.cpu_count() or 1))


class RecordingFailed(Exception):
    """The recording cannot be written any more; the session must not go on unrecorded."""


@dataclass(slots=True)
class RecordingSummary:
    """What a closed recording holds, for the session catalogue."""

    path: Path
    header: RecordingHeader
    size: int
    event_count: int
    end_us: int
    end_reason: str
    counts: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, path: Path, encoder: RecordingEncoder, reason: str) -> RecordingSummary:
        """The summary of a file `encoder` has finished."""
        totals = encoder.totals
        return cls(
            path=path,
            header=encoder.header,
            size=encoder.offset,
            event_count=totals.event_count,
            end_us=totals.last_us,
            end_reason=reason,
            counts=dict(totals.counts),
            verdicts=dict(totals.verdicts),
        )


_Item = tuple[int, int, tuple[Any, ...], int]  # code, time, fields, size for the backlog


class WriterThread:
    """One thread serving many recordings: it sleeps until a recording asks for it (a security
    event, a backlog, a close) or until the earliest frame deadline, then gives each recording
    with work a slice. The thread exits when it serves no recording and starts again on demand.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._writers: list[RecordingWriter] = []
        self._wake = threading.Event()
        # When the sleeping thread wakes by itself; 0.0 while it is awake (it may be past a
        # recording already, so anything queued now must set the event).
        self._sleeping_until = 0.0
        self._thread: threading.Thread | None = None

    def attach(self, writer: RecordingWriter) -> None:
        with self._lock:
            self._writers.append(writer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self.wake()

    def wake(self, within: float = 0.0) -> None:
        """Have the thread look at its recordings within `within` seconds. Waking a sleeping
        thread costs a context switch and a GIL hand-off, so when it will wake by itself soon
        enough (say, for another recording's security frame) it is left alone."""
        sleeping_until = self._sleeping_until
        if sleeping_until and sleeping_until <= time.monotonic() + within:
            return
        if not self._wake.is_set():  # cheaper than set() when the thread is already called
            self._wake.set()

    @property
    def load(self) -> int:
        return len(self._writers)

    def _run(self) -> None:
        while True:
            with self._lock:
                writers = list(self._writers)
                if not writers:
                    self._thread = None
                    return
            now = time.monotonic()
            next_wake = now + IDLE_WAIT_S
            finished: list[RecordingWriter] = []
            for writer in writers:
                deadline = writer._service(now)
                if deadline is None:
                    finished.append(writer)
                else:
                    next_wake = min(next_wake, deadline)
            if finished:
                with self._lock:
                    self._writers = [w for w in self._writers if w not in finished]
            timeout = next_wake - time.monotonic()
            if timeout > 0:
                self._sleeping_until = next_wake
                self._wake.wait(timeout)
                self._sleeping_until = 0.0
            self._wake.clear()


class _WriterPool:
    """The process's writer threads; a new recording goes to the least loaded one."""

    def __init__(self, size: int) -> None:
        self._threads = [WriterThread(f"recording-writer-{n}") for n in range(size)]
        self._turn = itertools.count()

    def pick(self) -> WriterThread:
        least = min(thread.load for thread in self._threads)
        candidates = [thread for thread in self._threads if thread.load == least]
        return candidates[next(self._turn) % len(candidates)]


_POOL = _WriterPool(WRITER_THREADS)


def _forget_threads_after_fork() -> None:
    # A forked child has none of its parent's threads: its recordings need threads of their own.
    global _POOL
    _POOL = _WriterPool(WRITER_THREADS)


os.register_at_fork(after_in_child=_forget_threads_after_fork)


class RecordingWriter:
    """Writes one session's recording, served by a shared writer thread. See the module
    docstring."""

    def __init__(
        self,
        path: Path,
        header: RecordingHeader,
        signer: Ed25519PrivateKey,
        *,
        on_failure: Callable[[BaseException], None] | None = None,
        on_closed: Callable[[RecordingSummary], None] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        clock_us: Callable[[], int] | None = None,
        fsync: bool = True,
        on_segment: Callable[[int | None, bool], None] | None = None,
    ) -> None:
        self.path = path
        self.header = header
        self._encoder = RecordingEncoder(header, signer)
        self._on_failure = on_failure
        self._on_closed = on_closed
        self._on_segment = on_segment
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        # Two counters, each written by one thread only, so their difference needs no lock.
        self._queued_bytes = 0
        self._written_bytes = 0
        self._drain_waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._fsync = fsync
        self._clock_us = clock_us or _monotonic_us
        self._t0_us = self._clock_us()
        self._queue: deque[_Item] = deque()
        self._closing: tuple[int, str] | None = None
        self._failure: BaseException | None = None
        self._summary: RecordingSummary | None = None
        self._done = threading.Event()
        # Only the writer thread reads or writes these two.
        self._frame_deadline: float | None = None
        self._last_checkpoint = time.monotonic()
        private_dir(path.parent)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:  # the header is written here, so the file is a valid recording from the start
            # held until the file is closed (or the process dies): the evidence `verify` asks
            # for before it calls a file without a trailer "still being written"
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._write(self._encoder.start())
        except OSError:
            os.close(self._fd)
            raise
        self._segment(self._encoder.offset, False)
        self._thread = _POOL.pick()
        self._thread.attach(self)

    # -- called by the owner (usually the event loop) -----------------------------------------

    @property
    def failed(self) -> BaseException | None:
        return self._failure

    @property
    def backlog_bytes(self) -> int:
        return self._queued_bytes - self._written_bytes

    @property
    def congested(self) -> bool:
        """True when the owner should stop reading its sources until `drained()`."""
        return self.backlog_bytes > HIGH_WATER_BYTES

    async def drained(self) -> None:
        """Wait until the backlog is small again (flow control for a fast source)."""
        if self.backlog_bytes <= LOW_WATER_BYTES or self._failure is not None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append((asyncio.get_running_loop(), future))
        self._thread.wake()
        await future

    def elapsed_us(self) -> int:
        return self._clock_us() - self._t0_us

    # What is written may differ from what was asked: the data path installs a filter that
    # masks secrets a caller typed (proxy/recording.py). It returns the events to write.
    filter: (
        Callable[[EventType, tuple[Any, ...]], list[tuple[EventType, tuple[Any, ...]]]] | None
    ) = None

    def record(self, etype: EventType, *values: Any) -> None:
        """Queue an event stamped now. Fields are positional, in the order of the event table."""
        now = self._clock_us() - self._t0_us
        if self.filter is None:
            self.record_at(now, etype, *values)
            return
        for kind, fields in self.filter(etype, values):
            self.record_at(now, kind, *fields)

    def record_at(self, time_us: int, etype: EventType, *values: Any) -> None:
        """Queue an event with an explicit time (microseconds since the session start)."""
        if self._failure is not None:
            raise RecordingFailed(f"recording {self.path.name} has failed: {self._failure}")
        if self._closing is not None:
            raise RecordingFailed(f"recording {self.path.name} is closed")
        if len(values) > len(EVENTS[etype].fields):
            raise TypeError(f"{etype.name} takes at most {len(EVENTS[etype].fields)} fields")
        queue = self._queue
        code = int(etype)
        size = len(values[1]) if code in _BULK and len(values) > 1 else SMALL_EVENT_BYTES
        backlog = self.backlog_bytes
        if len(queue) >= self._max_pending or backlog + size > self._max_pending_bytes:
            self._fail(RecordingFailed("recording queue is full: the recorder cannot keep up"))
            raise RecordingFailed(f"recording {self.path.name} has failed: {self._failure}")
        self._queued_bytes += size
        queue.append((code, time_us, values, size))
        if code in SECURITY_CODES:
            self._thread.wake(SECURITY_FLUSH_S)
        elif len(queue) >= WAKE_BACKLOG or backlog < WAKE_BACKLOG_BYTES <= backlog + size:
            # Once, as the backlog passes a frame's worth: the thread then drains the queue
            # before it sleeps again, so waking it for every later event only costs a lock.
            self._thread.wake()

    def close(self, reason: str) -> RecordingSummary:
        """Write the end of the session and wait for the file to be complete on disk.

        Blocks until the writer thread is done with it (call it through `asyncio.to_thread`
        from the event loop). Raises RecordingFailed when the recording could not be
        completed."""
        if self._closing is None:
            self._closing = (self._clock_us() - self._t0_us, reason)
        self._thread.wake()
        self._done.wait()
        if self._summary is None:
            raise RecordingFailed(f"recording {self.path.name} is incomplete: {self._failure}")
        return self._summary

    # -- on the writer thread ------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = exc
        self._thread.wake()
        if self._on_failure is not None:
            # The owner's callback must not stop the writer from reporting the failure.
            with contextlib.suppress(Exception):
                self._on_failure(exc)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _service(self, now: float) -> float | None:
        """Do this recording's due work. Returns when it next needs the thread, or None once
        the recording is finished (closed or failed) and the thread can forget it."""
        encoder = self._encoder
        try:
            if self._failure is None:
                if not self._drain(encoder):
                    return now  # a slice is done and more is queued: come back at once
                if encoder.pending_count == 0:
                    self._frame_deadline = None
                else:
                    if self._frame_deadline is None:
                        self._frame_deadline = now + FRAME_INTERVAL_S
                    if encoder.pending_security:
                        self._frame_deadline = min(self._frame_deadline, now + SECURITY_FLUSH_S)
                    if now >= self._frame_deadline:
                        self._write(encoder.flush_frame())
                        self._frame_deadline = None
                if now - self._last_checkpoint >= CHECKPOINT_INTERVAL_S and (
                    encoder.frames_since_checkpoint > 0 or encoder.pending_count > 0
                ):
                    if encoder.pending_count > 0:  # what came since the last frame is signed too
                        self._write(encoder.flush_frame())
                        self._frame_deadline = None
                    self._write(encoder.checkpoint())
                    if self._fsync:
                        os.fsync(self._fd)
                    self._last_checkpoint = now
                    self._segment(encoder.offset, False)
                if self._closing is None:
                    return self._frame_deadline or now + IDLE_WAIT_S
                self._finish(encoder, *self._closing)
        except Exception as exc:
            self._fail(exc)
        os.close(self._fd)
        self._segment(encoder.offset if self._summary is not None else None, True)
        self._release_drain_waiters()
        self._done.set()
        return None

    def _segment(self, end: int | None, final: bool) -> None:
        if self._on_segment is not None:
            with contextlib.suppress(Exception):  # the spool's trouble is not the recording's
                self._on_segment(end, final)

    def _drain(self, encoder: RecordingEncoder) -> bool:
        """Hand queued events to the encoder, at most one slice; True when the queue is empty."""
        queue = self._queue
        for _ in range(SERVICE_SLICE_EVENTS):
            if not queue:
                break
            code, time_us, values, size = queue.popleft()
            encoder.add(code, time_us, values)
            self._written_bytes += size
            if encoder.pending_bytes >= FRAME_TARGET_RAW:
                self._write(encoder.flush_frame())
            if self._drain_waiters and self.backlog_bytes <= LOW_WATER_BYTES:
                self._release_drain_waiters()
        if queue:
            return False
        self._release_drain_waiters()
        return True

    def _release_drain_waiters(self) -> None:
        waiters = self._drain_waiters
        while waiters:
            loop, future = waiters.popleft()
            loop.call_soon_threadsafe(_resolve, future)

    def _finish(self, encoder: RecordingEncoder, end_us: int, reason: str) -> None:
        self._write(encoder.finish(max(end_us, encoder.totals.last_us), reason))
        if self._fsync:
            os.fsync(self._fd)
        self._summary = RecordingSummary.of(self.path, encoder, reason)
        if self._on_closed is not None:
            self._on_closed(self._summary)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000
