"""The local spool in front of object storage: recordings are written here first, and a thread
of their own ships them to the store, so a slow or absent store never slows a session down.

A recording in the spool is `<session id>.hrec` (the file the writer appends to) and
`<session id>.json` (where it goes and how much of it the store already has). The writer tells
the spool, from its own thread, each time a part of the file is final: the header once written,
each signed checkpoint, and the close (`segment_ready`). The shipper thread then uploads the
bytes from what the store has to that point as one object (`seg-<offset>`), and after the
close a `manifest.json` with the segments, the size, the last chain value and the last
signature; then the spool's copy is deleted.

When the store fails, nothing is lost: the bytes stay in the spool, the shipper retries with a
growing pause (at most `MAX_BACKOFF_S`), and `status.json` says since when it fails and why,
for `hoop-tui status`. While more than `spool_limit` bytes wait, new sessions are refused
(`SpoolFull`): the gateway fails closed rather than filling its disk. A gateway killed mid-
session leaves its spool files behind; the next start (`recover`) uploads what the store does
not have yet, whole blocks and the half-written tail alike, and a manifest marked incomplete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.objectstore import (
    MANIFEST_VERSION,
    ObjectStore,
    StoreSettings,
    as_location,
    list_segments,
    manifest_key,
    segment_key,
    split_url,
    store_for,
)
from storage.private import FILE_MODE, private_dir
from storage.schema import (
    BLOCK_HEAD,
    CHAIN_SIZE,
    CHECKPOINT_HEAD,
    FOOTER,
    FOOTER_MAGIC,
    KIND_CHECKPOINT,
    KIND_FRAME,
    KIND_HEADER,
    KIND_TRAILER,
    MAX_BLOCK_BODY,
    PREAMBLE,
    SIGNATURE_SIZE,
)
from storage.writer import RecordingFailed

log = logging.getLogger("hoop.spool")

SUFFIX = ".hrec"
SIDECAR = ".json"
STATUS_NAME = "status.json"
SEGMENT_MAX = 32 * 1024 * 1024  # one PUT holds at most this much (after an outage, say)
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
IDLE_WAIT_S = 1.0
# A live recording's signed checkpoints go to the store at most this often: those written in
# between are shipped together, each object still ending at a signature. The writer signs
# often (a crash must lose little proof, and the spool keeps every byte); the store gets a
# handful of objects a minute per session, not one a second.
SEGMENT_INTERVAL_S = 5.0


class SpoolFull(RecordingFailed):
    """Too much waits in the spool for the store: new sessions are refused with this reason,
    which may be shown to the caller (it names no path and no secret)."""

    def __init__(self, public_reason: str, detail: str = "") -> None:
        super().__init__(public_reason + (f" ({detail})" if detail else ""))
        self.public_reason = public_reason


def format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"


@dataclass(slots=True)
class SpoolStatus:
    """What waits in a spool, for `hoop-tui status` (read from its files: no gateway needed)."""

    directory: Path
    url: str
    limit_bytes: int
    pending_bytes: int = 0
    recordings: int = 0
    failing_since: float | None = None
    last_error: str | None = None

    @property
    def over_limit(self) -> bool:
        return self.pending_bytes > self.limit_bytes

    def lines(self) -> list[str]:
        state = "ok"
        if self.failing_since is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.failing_since))
            state = f"FAILING since {since} UTC: {self.last_error}"
        lines = [
            f"recordings: {self.url}, store {state}",
            f"spool:      {self.directory}: {format_bytes(self.pending_bytes)} in "
            f"{self.recordings} recording(s) waiting, limit {format_bytes(self.limit_bytes)}",
        ]
        if self.over_limit:
            lines.append("            OVER THE LIMIT: new sessions are refused until it drains")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "url": self.url,
            "limit_bytes": self.limit_bytes,
            "pending_bytes": self.pending_bytes,
            "recordings": self.recordings,
            "failing_since": self.failing_since,
            "last_error": self.last_error,
            "over_limit": self.over_limit,
        }


def spool_status(settings: StoreSettings, data_dir: Path) -> SpoolStatus:
    directory = settings.spool_in(data_dir)
    status = SpoolStatus(directory, settings.url, settings.spool_limit)
    if not directory.is_dir():
        return status
    for path in directory.glob(f"*{SUFFIX}"):
        with contextlib.suppress(OSError):
            status.pending_bytes += max(0, path.stat().st_size - _uploaded(path))
            status.recordings += 1
    with contextlib.suppress(OSError, ValueError):
        health = json.loads((directory / STATUS_NAME).read_text())
        status.failing_since = health.get("failing_since")
        status.last_error = health.get("last_error")
    return status


def _uploaded(path: Path) -> int:
    try:
        sidecar = json.loads(path.with_suffix(SIDECAR).read_text())
        return int(sidecar.get("uploaded", 0))
    except (OSError, ValueError, AttributeError):
        return 0


@dataclass(slots=True)
class _Entry:
    session_id: str
    path: Path
    url: str
    uploaded: int = 0
    segments: list[list[int]] = field(default_factory=list)
    ready: int = 0  # bytes of the file that are final (a checkpoint was written after them)
    last_upload: float = 0.0  # time.monotonic() of the last segment shipped
    final: bool = False  # the writer is done: everything on disk is to go, then a manifest
    abandoned: bool = False  # left by an earlier run: ask the store what it already has
    how: str = "closed"

    @property
    def key(self) -> str:
        return split_url(self.url)[1]

    def save(self) -> None:
        """The sidecar: where this file goes and how much the store has."""
        data = {"url": self.url, "uploaded": self.uploaded, "segments": self.segments}
        sidecar = self.path.with_suffix(SIDECAR)
        temporary = sidecar.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(data))
        os.replace(temporary, sidecar)


class Spool:
    """One gateway's spool and the thread that ships it (see the module docstring)."""

    def __init__(self, settings: StoreSettings, data_dir: Path) -> None:
        self.settings = settings
        self.directory = private_dir(settings.spool_in(data_dir))
        self.store: ObjectStore = store_for(settings)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._hurry = 0  # drain() callers waiting: ship what is ready without the interval
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.shipped_bytes = 0
        self._write_status()

    # -- for the gateway ------------------------------------------------------------------------

    def check_room(self) -> None:
        """SpoolFull when more than the limit waits for the store: refuse the new session."""
        status = self.status()
        if status.over_limit:
            raise SpoolFull(
                "the gateway's recording spool holds "
                f"{format_bytes(status.pending_bytes)} not yet in object storage, more than "
                f"its limit of {format_bytes(status.limit_bytes)}; new sessions are refused "
                "until it drains",
                f"the store fails: {self.last_error}" if self.last_error else "",
            )

    def status(self) -> SpoolStatus:
        status = SpoolStatus(self.directory, self.settings.url, self.settings.spool_limit)
        for path in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(OSError):
                status.pending_bytes += max(0, path.stat().st_size - self._uploaded_of(path))
                status.recordings += 1
        status.failing_since = self.failing_since
        status.last_error = self.last_error
        return status

    def _uploaded_of(self, path: Path) -> int:
        with self._lock:
            entry = self._entries.get(path.stem)
            if entry is not None:
                return entry.uploaded
        return _uploaded(path)

    def begin(self, session_id: str, url: str) -> Path:
        """Register a new recording; the path its writer is to create in the spool."""
        path = self.directory / f"{session_id}{SUFFIX}"
        entry = _Entry(session_id, path, url)
        entry.save()
        with self._lock:
            self._entries[session_id] = entry
        self.start()
        return path

    def segment_ready(self, session_id: str, end: int | None, final: bool) -> None:
        """From the writer thread: the file is final up to `end` (None: whatever is on disk),
        and with `final` the writer is done. Never blocks on the store."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return
            if end is not None:
                entry.ready = max(entry.ready, end)
            if final:
                entry.final = True
                if end is None:
                    entry.how = "the recording failed"
            self._wake.notify()

    def local_copy(self, location: str) -> str:
        """The spool's copy of a recording when it still has one (a crash left it), else the
        location itself: the catalogue can be put right without waiting for the store."""
        text = as_location(location)
        session_id = text.rsplit("/", 1)[-1].removesuffix(SUFFIX)
        path = self.directory / f"{session_id}{SUFFIX}"
        return str(path) if path.exists() and len(session_id) == 32 else text

    def recover(self) -> list[str]:
        """Queue what an earlier run left in the spool (a crash: the writer never closed it):
        it is uploaded, with a manifest marked incomplete. Returns the session ids."""
        found = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            session_id = path.stem
            with self._lock:
                if session_id in self._entries:
                    continue
            try:
                sidecar = json.loads(path.with_suffix(SIDECAR).read_text())
                url = str(sidecar["url"])
            except (OSError, ValueError, KeyError, TypeError):
                log.error("spool file %s has no readable sidecar; left in place", path)
                continue
            entry = _Entry(session_id, path, url, final=True, abandoned=True)
            entry.how = "recovered after the gateway stopped unexpectedly"
            with self._lock:
                self._entries[session_id] = entry
            found.append(session_id)
        if found:
            self.start()
        return found

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, name="spool-shipper", daemon=True)
            self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait until everything queued is in the store; False when time ran out."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._hurry += 1
            try:
                while any(e.final or e.ready > e.uploaded for e in self._entries.values()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._wake.notify()
                    self._wake.wait(min(left, 0.1))
            finally:
                self._hurry -= 1
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Ship what can be shipped within `timeout`, then stop the thread (what is left stays
        in the spool for the next start)."""
        self.drain(timeout)
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    # -- the shipper thread ---------------------------------------------------------------------

    def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while True:
            with self._lock:
                if self._stopping:
                    self._thread = None
                    return
                now = time.monotonic()
                waiting = [e for e in self._entries.values() if e.final or e.ready > e.uploaded]
                due = [
                    e
                    for e in waiting
                    if e.final or self._hurry or now - e.last_upload >= SEGMENT_INTERVAL_S
                ]
                if not due:
                    soonest = min(
                        (e.last_upload + SEGMENT_INTERVAL_S - now for e in waiting),
                        default=IDLE_WAIT_S,
                    )
                    self._wake.wait(max(0.05, min(IDLE_WAIT_S, soonest)))
                    continue
            try:
                for entry in due:
                    self._ship(entry)
            except OSError as exc:
                self._failed(exc)
                with self._lock:
                    self._wake.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            except Exception as exc:  # a bug must not stop the shipping of everything else
                log.exception("spool: cannot ship: %s", exc)
                self._failed(exc)
                with self._lock:
                    self._wake.wait(MAX_BACKOFF_S)
                continue
            backoff = FIRST_BACKOFF_S
            self._healthy()
            with self._lock:
                self._wake.notify_all()  # drain() waiters

    def _ship(self, entry: _Entry) -> None:
        if entry.abandoned:
            # The store may have more than the sidecar says (a crash between a PUT and the
            # sidecar): take what is there, in order, from offset 0.
            held = list_segments(self.store, entry.key)
            entry.segments = [[s.start, s.size] for s in held]
            entry.uploaded = held[-1].start + held[-1].size if held else 0
            entry.abandoned = False
        with self._lock:
            final, ready = entry.final, entry.ready
        try:
            size = entry.path.stat().st_size
        except FileNotFoundError:  # never created (the writer failed to start), or removed
            log.error("spool: %s is gone; %s cannot be shipped", entry.path, entry.url)
            with self._lock:
                self._entries.pop(entry.session_id, None)
            with contextlib.suppress(FileNotFoundError):
                entry.path.with_suffix(SIDECAR).unlink()
            return
        target = size if final else min(ready, size)
        with entry.path.open("rb") as handle:
            while entry.uploaded < target:
                start = entry.uploaded
                end = min(target, start + SEGMENT_MAX)
                handle.seek(start)
                data = handle.read(end - start)
                if not data:
                    break
                self.store.put(segment_key(entry.key, start), data)
                entry.segments.append([start, len(data)])
                entry.uploaded = start + len(data)
                self.shipped_bytes += len(data)
                entry.last_upload = time.monotonic()
                entry.save()
        if final:
            self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        manifest = manifest_of(entry.session_id, entry.path, entry.segments, entry.how)
        self.store.put(manifest_key(entry.key), manifest)
        with self._lock:
            self._entries.pop(entry.session_id, None)
        for path in (entry.path, entry.path.with_suffix(SIDECAR)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        log.info("recording %s is in %s", entry.session_id, entry.url)

    def _failed(self, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        if self.failing_since is None:
            self.failing_since = time.time()
            log.error("object store unavailable, recordings stay in the spool: %s", message)
        self.last_error = message
        self._write_status()

    def _healthy(self) -> None:
        if self.failing_since is not None:
            log.warning("object store reachable again; the spool drains")
            self.failing_since = None
            self.last_error = None
            self._write_status()

    def _write_status(self) -> None:
        data = {
            "url": self.settings.url,
            "failing_since": self.failing_since,
            "last_error": self.last_error,
            "updated_at": time.time(),
        }
        with contextlib.suppress(OSError):
            path = self.directory / STATUS_NAME
            temporary = path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(data))
            os.replace(temporary, path)


def manifest_of(session_id: str, path: Path, segments: list[list[int]], how: str) -> bytes:
    """The manifest of a recording whose spool file is `path`, shipped as `segments`."""
    proof = last_proof(path)
    manifest = {
        "version": MANIFEST_VERSION,
        "session_id": session_id,
        "size": sum(size for _, size in segments),
        "segments": segments,
        "complete": proof.complete,
        "end": how if not proof.complete else "closed",
        "chain": proof.chain.hex(),
        "signature": proof.signature.hex() if proof.signature else None,
        "signed_to_offset": proof.signed_to,
        "readable_to_offset": proof.readable_to,
        "trailer_offset": proof.trailer_offset,
        "written_at": time.time(),
    }
    return json.dumps(manifest, indent=1).encode()


def push_file(settings: StoreSettings, path: Path, url: str, session_id: str) -> int:
    """Upload a finished local recording to `url` (segments of at most SEGMENT_MAX, then the
    manifest), continuing after what the store already has. Returns its size. OSError."""
    store = store_for(settings)
    _, key = split_url(url)
    held = list_segments(store, key)
    segments = [[s.start, s.size] for s in held]
    uploaded = held[-1].start + held[-1].size if held else 0
    with path.open("rb") as handle:
        while True:
            handle.seek(uploaded)
            data = handle.read(SEGMENT_MAX)
            if not data:
                break
            store.put(segment_key(key, uploaded), data)
            segments.append([uploaded, len(data)])
            uploaded += len(data)
    store.put(manifest_key(key), manifest_of(session_id, path, segments, "moved from local disk"))
    return uploaded


@dataclass(slots=True)
class Proof:
    """The end of what a spool file proves: the chain value of its last whole block, the last
    checkpoint's signature and where that checkpoint ends, and whether the file is complete."""

    chain: bytes = b""
    signature: bytes | None = None
    signed_to: int = 0
    readable_to: int = 0
    complete: bool = False
    trailer_offset: int | None = None


def last_proof(path: Path) -> Proof:
    """Walk a local recording's block heads (one small read each)."""
    proof = Proof()
    kinds = (KIND_HEADER, KIND_FRAME, KIND_CHECKPOINT, KIND_TRAILER)
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        fd = handle.fileno()
        if os.pread(fd, len(PREAMBLE), 0) != PREAMBLE:
            return proof
        offset = len(PREAMBLE)
        proof.readable_to = offset
        while offset + BLOCK_HEAD.size <= size:
            if size - offset == FOOTER.size:
                trailer_offset, magic = FOOTER.unpack(os.pread(fd, FOOTER.size, offset))
                proof.complete = magic == FOOTER_MAGIC
                if proof.complete:
                    proof.readable_to = size
                    proof.trailer_offset = trailer_offset
                break
            kind, length = BLOCK_HEAD.unpack(os.pread(fd, BLOCK_HEAD.size, offset))
            end = offset + BLOCK_HEAD.size + length + CHAIN_SIZE
            if kind not in kinds or length > MAX_BLOCK_BODY or end > size:
                break
            proof.chain = os.pread(fd, CHAIN_SIZE, end - CHAIN_SIZE)
            if kind == KIND_CHECKPOINT and length == CHECKPOINT_HEAD.size + SIGNATURE_SIZE:
                start = offset + BLOCK_HEAD.size + CHECKPOINT_HEAD.size
                proof.signature = os.pread(fd, SIGNATURE_SIZE, start)
                proof.signed_to = end
            offset = proof.readable_to = end
    return proof


_SPOOLS: dict[Path, Spool] = {}
_SPOOLS_LOCK = threading.Lock()


def shared_spool(settings: StoreSettings, data_dir: Path) -> Spool:
    """The process's one Spool for this spool directory (the SSH and PostgreSQL gateways and
    the runtime share it)."""
    directory = settings.spool_in(data_dir)
    with _SPOOLS_LOCK:
        spool = _SPOOLS.get(directory)
        if spool is None or spool.settings != settings:
            spool = _SPOOLS[directory] = Spool(settings, data_dir)
        return spool


def forget_spool(settings: StoreSettings, data_dir: Path) -> None:
    """Drop the process's Spool for this directory (after `stop()`, so a new start begins
    afresh, as a new process would)."""
    with _SPOOLS_LOCK:
        _SPOOLS.pop(settings.spool_in(data_dir), None)
