"""The recording writer: a thread that turns events into a recording file, so that packing,
compression, hashing and disk writes never run on the event loop that forwards traffic.

`record()` only timestamps the event and appends it to a bounded queue. The thread closes a
frame at least once a second, within 5 ms of a security-relevant event, and whenever 512 KiB
are pending; it signs the chain at most every five seconds. When the queue overflows or the
disk fails, the writer does not drop anything silently: it marks itself failed, tells its owner
through `on_failure`, and every later `record()` raises RecordingFailed, so the owner can end
the session (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from storage.schema import EVENTS, SECURITY_CODES, EventType, RecordingHeader

# A little under the one second we promise, so scheduling delays stay inside the promise.
FRAME_INTERVAL_S = 0.75
# A security-relevant event is on disk within this: soon enough that a crash cannot hide it,
# late enough that a burst of SQL statements shares one frame instead of one each.
SECURITY_FLUSH_S = 0.005
CHECKPOINT_INTERVAL_S = 5.0
# An idle writer looks at its queue this often: plain output never wakes it, so a busy
# gateway with hundreds of sessions is not woken thousands of times a second.
IDLE_WAIT_S = 0.2
DEFAULT_MAX_PENDING = 65536  # events waiting for the writer thread
DEFAULT_MAX_PENDING_BYTES = 256 * 1024 * 1024  # past this the recording fails (closed)
HIGH_WATER_BYTES = 16 * 1024 * 1024  # past this the owner should stop reading (congested)
LOW_WATER_BYTES = 4 * 1024 * 1024  # ...and may read again once the backlog is below this
SMALL_EVENT_BYTES = 256  # what a queued event without bulk data is counted as
WAKE_BACKLOG = 1024


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


class RecordingWriter:
    """Writes one session's recording on its own thread. See the module docstring."""

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
    ) -> None:
        self.path = path
        self.header = header
        self._encoder = RecordingEncoder(header, signer)
        self._on_failure = on_failure
        self._on_closed = on_closed
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
        self._wake = threading.Event()
        self._closing: tuple[int, str] | None = None
        self._failure: BaseException | None = None
        self._summary: RecordingSummary | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:  # the header is written here, so the file is a valid recording from the start
            self._write(self._encoder.start())
        except OSError:
            os.close(self._fd)
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"recording-{header.session_id[:8]}", daemon=True
        )
        self._thread.start()

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
        self._wake.set()
        await future

    def elapsed_us(self) -> int:
        return self._clock_us() - self._t0_us

    def record(self, etype: EventType, *values: Any) -> None:
        """Queue an event stamped now. Fields are positional, in the order of the event table."""
        self.record_at(self._clock_us() - self._t0_us, etype, *values)

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
        if len(queue) >= self._max_pending or self.backlog_bytes + size > self._max_pending_bytes:
            self._fail(RecordingFailed("recording queue is full: the recorder cannot keep up"))
            raise RecordingFailed(f"recording {self.path.name} has failed: {self._failure}")
        self._queued_bytes += size
        queue.append((code, time_us, values, size))
        if code in SECURITY_CODES or len(queue) >= WAKE_BACKLOG:
            self._wake.set()

    def close(self, reason: str) -> RecordingSummary:
        """Write the end of the session and wait for the file to be complete on disk.

        Blocks until the writer thread is done (call it through `asyncio.to_thread` from the
        event loop). Raises RecordingFailed when the recording could not be completed."""
        if self._closing is None:
            self._closing = (self._clock_us() - self._t0_us, reason)
        self._wake.set()
        self._thread.join()
        if self._summary is None:
            raise RecordingFailed(f"recording {self.path.name} is incomplete: {self._failure}")
        return self._summary

    # -- the writer thread ---------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = exc
        self._wake.set()
        if self._on_failure is not None:
            # The owner's callback must not stop the writer from reporting the failure.
            with contextlib.suppress(Exception):
                self._on_failure(exc)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _run(self) -> None:
        encoder = self._encoder
        frame_deadline: float | None = None
        last_checkpoint = time.monotonic()
        try:
            while self._failure is None:
                if not self._queue:
                    if self._closing is not None:
                        break
                    timeout = IDLE_WAIT_S
                    if frame_deadline is not None:
                        timeout = min(timeout, max(0.0, frame_deadline - time.monotonic()))
                    self._wake.wait(timeout)
                    self._wake.clear()
                self._drain(encoder)
                now = time.monotonic()
                if encoder.pending_count == 0:
                    frame_deadline = None
                else:
                    if frame_deadline is None:
                        frame_deadline = now + FRAME_INTERVAL_S
                    if encoder.pending_security:
                        frame_deadline = min(frame_deadline, now + SECURITY_FLUSH_S)
                    if now >= frame_deadline:
                        self._write(encoder.flush_frame())
                        frame_deadline = None
                if (
                    now - last_checkpoint >= CHECKPOINT_INTERVAL_S
                    and encoder.frames_since_checkpoint > 0
                ):
                    self._write(encoder.checkpoint())
                    if self._fsync:
                        os.fsync(self._fd)
                    last_checkpoint = now
            if self._failure is None and self._closing is not None:
                self._finish(encoder, *self._closing)
        except Exception as exc:
            self._fail(exc)
        finally:
            os.close(self._fd)
            self._release_drain_waiters()

    def _drain(self, encoder: RecordingEncoder) -> None:
        queue = self._queue
        while queue:
            code, time_us, values, size = queue.popleft()
            encoder.add(code, time_us, values)
            self._written_bytes += size
            if encoder.pending_bytes >= FRAME_TARGET_RAW:
                self._write(encoder.flush_frame())
            if self._drain_waiters and self.backlog_bytes <= LOW_WATER_BYTES:
                self._release_drain_waiters()
        self._release_drain_waiters()

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
