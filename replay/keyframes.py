"""The replay index of a recording: every event's time and type, the markers a reviewer jumps
between, and keyframes (full terminal snapshots) so that any point is one restore and a short
replay away.

It is built once by one pass that feeds the whole recording through the terminal
(`build_index`): when the workstation opens a recording, when `import-cast` has written one,
and when `hoop-tui screen` has to read the last frame anyway (a screen at an earlier time
without a cache reads only up to that time, `replay.player.render_until`). It is cached next
to nothing the gateway owns: a file under a cache
directory named by session id and recording size (a growing recording gets a new one), so the
`.hrec` file is never touched. The cache is a msgpack map of arrays and already compressed
keyframes, itself zstd-compressed; a cache written by another engine version, or unreadable,
is ignored and rebuilt.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zstandard

from replay.export import describe_event
from replay.sources import EventSource
from replay.terminal import SNAPSHOT_VERSION, Terminal
from storage.reader import RecordingReader
from storage.schema import Event, EventType

# Bump when the terminal's behaviour or the cache layout changes: old caches are rebuilt.
ENGINE_VERSION = 2
KEYFRAME_BYTES = 64 * 1024
KEYFRAME_US = 60 * 1_000_000
MARKER_TYPES = frozenset(
    {
        EventType.COMMAND,
        EventType.EXEC,
        EventType.HOLD_REQUESTED,
        EventType.HOLD_DECIDED,
        EventType.MASK,
        EventType.VERDICT,
        EventType.ANNOTATION,
    }
)
DEFAULT_SIZE = (80, 24)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Marker:
    """An event worth jumping to: `index` is its number in the recording."""

    index: int
    time_us: int
    type: EventType
    label: str


@dataclass(slots=True)
class Keyframe:
    """The terminal after the first `position` events (and `output_bytes` bytes of output).

    The snapshot and the screen's text are kept zstd-compressed: a full 120x40 snapshot with
    both buffers is tens of KB of msgpack but a few KB compressed, and a 1 GB recording has
    some 16,000 keyframes, all in memory while it is open."""

    position: int
    time_us: int
    output_bytes: int
    packed_state: bytes  # zstd of the msgpack of Terminal.snapshot()
    packed_text: bytes  # zstd of the screen's text, for search

    @property
    def text(self) -> str:
        return _decompress(self.packed_text).decode("utf-8")

    def terminal(self) -> Terminal:
        state = msgpack.unpackb(_decompress(self.packed_state), use_list=True)
        return Terminal.from_snapshot(state)


# zstd contexts are not thread-safe, and indexes are built and read in worker threads.
_zstd = threading.local()


def _compress(data: bytes) -> bytes:
    compressor = getattr(_zstd, "compressor", None)
    if compressor is None:
        compressor = _zstd.compressor = zstandard.ZstdCompressor(level=3)
    # Copied: python-zstandard hands back a bytes object sized for the worst case (about the
    # input's size), which would keep every keyframe at its uncompressed size in memory.
    return bytes(memoryview(compressor.compress(data)))


def _decompress(data: bytes) -> bytes:
    decompressor = getattr(_zstd, "decompressor", None)
    if decompressor is None:
        decompressor = _zstd.decompressor = zstandard.ZstdDecompressor()
    return decompressor.decompress(data)


@dataclass(slots=True)
class ReplayIndex:
    session_id: str
    source_size: int
    channel: int | None
    size: tuple[int, int]
    times: array[int] = field(default_factory=lambda: array("q"))
    types: array[int] = field(default_factory=lambda: array("B"))
    frame_starts: array[int] = field(default_factory=lambda: array("Q"))
    screen_events: array[int] = field(default_factory=lambda: array("Q"))
    markers: list[Marker] = field(default_factory=list)
    keyframes: list[Keyframe] = field(default_factory=list)
    output_bytes: int = 0

    @property
    def event_count(self) -> int:
        return len(self.times)

    @property
    def end_us(self) -> int:
        return self.times[-1] if self.times else 0


def is_screen_event(event: Event, channel: int | None) -> bool:
    return event.type in (EventType.OUTPUT, EventType.RESIZE) and event.get("channel") == channel


def apply_event(terminal: Terminal, event: Event) -> int:
    """Apply one screen event; returns the number of output bytes it fed."""
    if event.type is EventType.OUTPUT:
        data = event["data"]
        if isinstance(data, bytes):
            terminal.feed(data)
            return len(data)
        return 0
    cols, rows = event["cols"], event["rows"]
    if isinstance(cols, int) and isinstance(rows, int) and cols > 0 and rows > 0:
        terminal.resize(cols, rows)
    return 0


def initial_size(source: EventSource) -> tuple[int, int]:
    header = source.header
    if header.cols > 0 and header.rows > 0:
        return header.cols, header.rows
    return DEFAULT_SIZE


def make_keyframe(terminal: Terminal, position: int, time_us: int, output: int) -> Keyframe:
    state = msgpack.packb(terminal.snapshot(), use_bin_type=True)
    text = "\n".join(terminal.text_lines()).encode("utf-8")
    return Keyframe(position, time_us, output, _compress(state), _compress(text))


def build_index(
    source: EventSource,
    *,
    every_bytes: int = KEYFRAME_BYTES,
    every_us: int = KEYFRAME_US,
    progress: Progress | None = None,
) -> ReplayIndex:
    """One pass over the recording: the event table, markers and keyframes."""
    size = initial_size(source)
    index = ReplayIndex(source.header.session_id, source.size, None, size)
    terminal = Terminal(*size)
    index.keyframes.append(make_keyframe(terminal, 0, 0, 0))
    times, types, screen_events = index.times, index.types, index.screen_events
    channel: int | None = None
    since_bytes = 0
    last_kf_us = 0
    output = 0
    position = 0
    frames = source.frame_count
    for frame_number in range(frames):
        index.frame_starts.append(position)
        for event in source.read_frame(frame_number):
            times.append(event.time_us)
            types.append(int(event.type))
            kind = event.type
            if kind is EventType.OUTPUT or kind is EventType.RESIZE:
                if channel is None:
                    channel = event.get("channel")
                if event.get("channel") == channel:
                    screen_events.append(position)
                    fed = apply_event(terminal, event)
                    output += fed
                    since_bytes += fed
            elif kind in MARKER_TYPES:
                index.markers.append(Marker(position, event.time_us, kind, describe_event(event)))
            position += 1
            if since_bytes >= every_bytes or (
                since_bytes and event.time_us - last_kf_us >= every_us
            ):
                index.keyframes.append(make_keyframe(terminal, position, event.time_us, output))
                since_bytes = 0
                last_kf_us = event.time_us
        if progress is not None:
            progress(frame_number + 1, frames)
    index.channel = channel
    index.output_bytes = output
    return index


# -- the cache file ----------------------------------------------------------------------------


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hoop_tui" / "replay"


def cache_path(cache_dir: Path, session_id: str, size: int) -> Path:
    safe = "".join(ch for ch in session_id if ch.isalnum())[:64] or "session"
    return cache_dir / f"{safe}-{size}.kf"


def dump_index(index: ReplayIndex) -> bytes:
    body = {
        "engine": ENGINE_VERSION,
        "snapshot": SNAPSHOT_VERSION,
        "session_id": index.session_id,
        "source_size": index.source_size,
        "channel": index.channel,
        "size": list(index.size),
        "times": index.times.tobytes(),
        "types": index.types.tobytes(),
        "frame_starts": index.frame_starts.tobytes(),
        "screen_events": index.screen_events.tobytes(),
        "markers": [[m.index, m.time_us, int(m.type), m.label] for m in index.markers],
        "keyframes": [
            [k.position, k.time_us, k.output_bytes, k.packed_state, k.packed_text]
            for k in index.keyframes
        ],
        "output_bytes": index.output_bytes,
    }
    packed = msgpack.packb(body, use_bin_type=True)
    return zstandard.ZstdCompressor(level=3).compress(packed)


def load_index(raw: bytes, session_id: str, source_size: int) -> ReplayIndex | None:
    """The index in a cache file, or None when it is for another recording or engine."""
    try:
        packed = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 31)
        body: dict[str, Any] = msgpack.unpackb(packed, raw=False)
        if (
            body.get("engine") != ENGINE_VERSION
            or body.get("snapshot") != SNAPSHOT_VERSION
            or body.get("session_id") != session_id
            or body.get("source_size") != source_size
        ):
            return None
        index = ReplayIndex(session_id, source_size, body["channel"], tuple(body["size"]))
        for name, code in (
            ("times", "q"),
            ("types", "B"),
            ("frame_starts", "Q"),
            ("screen_events", "Q"),
        ):
            values = array(code)
            values.frombytes(body[name])
            setattr(index, name, values)
        index.markers = [Marker(i, t, EventType(k), label) for i, t, k, label in body["markers"]]
        index.keyframes = [Keyframe(*item) for item in body["keyframes"]]
        index.output_bytes = body["output_bytes"]
        return index
    except (zstandard.ZstdError, ValueError, KeyError, TypeError, msgpack.UnpackException):
        return None


def load_or_build(
    source: EventSource,
    cache_dir: Path | None,
    *,
    every_bytes: int = KEYFRAME_BYTES,
    every_us: int = KEYFRAME_US,
    progress: Progress | None = None,
) -> ReplayIndex:
    """The cached index when there is a valid one, else a new one (written to the cache when
    `cache_dir` is given; a cache that cannot be written is not an error)."""
    loaded = load_cached(source, cache_dir)
    if loaded is not None:
        return loaded
    index = build_index(source, every_bytes=every_bytes, every_us=every_us, progress=progress)
    if cache_dir is not None:
        save_index(index, cache_dir)
    return index


def cache_keyframes(path: Path, cache_dir: Path | None = None) -> ReplayIndex:
    """Index the recording at `path` into the cache (default: the user's), so its first
    replay is one restore away from any screen; `import-cast` calls it once it has written."""
    with RecordingReader.open(path) as reader:
        return load_or_build(reader, cache_dir or default_cache_dir())


def load_cached(source: EventSource, cache_dir: Path | None) -> ReplayIndex | None:
    """The cached index of `source`, or None when there is no valid one."""
    if cache_dir is None:
        return None
    session_id, size = source.header.session_id, source.size
    path = cache_path(cache_dir, session_id, size)
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return load_index(raw, session_id, size)


def save_index(index: ReplayIndex, cache_dir: Path) -> None:
    """Write `index` to the cache, atomically; a cache that cannot be written is not an error."""
    path = cache_path(cache_dir, index.session_id, index.source_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kf-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(dump_index(index))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
