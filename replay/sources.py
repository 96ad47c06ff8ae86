"""Where replay reads events from: an open recording, or an asciicast v2 file held in memory.

Both look the same to the player (`EventSource`): a header, a size, and frames of events read
by number. A `RecordingReader` is one already; `CastSource` cuts a parsed `.cast` file into
synthetic frames of timed events, so `hoop-tui screen` and `play` take asciinema recordings
without writing anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from replay.asciicast import CastFile, read_cast
from storage.objectstore import as_location, is_url
from storage.reader import RecordingReader
from storage.schema import Event, EventType, RecordingHeader

CAST_FRAME_EVENTS = 512


class EventSource(Protocol):
    """What the player needs from a recording."""

    header: RecordingHeader
    size: int

    @property
    def frame_count(self) -> int: ...

    def read_frame(self, index: int) -> list[Event]: ...


class CastSource:
    """An asciicast v2 recording as an `EventSource`: output, input, resizes and markers."""

    def __init__(self, cast: CastFile, *, size: int, session_id: str, name: str = "") -> None:
        header = cast.header
        self.header = RecordingHeader(
            session_id=session_id,
            user=str(header.get("user", "asciicast")),
            target=str(header.get("title") or name),
            protocol="asciicast",
            started_at_us=int(float(header.get("timestamp") or 0) * 1_000_000),
            cols=int(header["width"]),
            rows=int(header["height"]),
        )
        self.size = size
        events: list[Event] = []
        for time_s, code, data in cast.events:
            time_us = round(time_s * 1_000_000)
            if code == "o":
                events.append(Event(EventType.OUTPUT, time_us, {"channel": 0, "data": _b(data)}))
            elif code == "i":
                events.append(Event(EventType.INPUT, time_us, {"channel": 0, "data": _b(data)}))
            elif code == "r":
                cols, _, rows = data.partition("x")
                if cols.isdigit() and rows.isdigit():
                    fields: dict[str, object] = {"channel": 0, "cols": int(cols), "rows": int(rows)}
                    events.append(Event(EventType.RESIZE, time_us, fields))
            elif code == "m":
                fields = {"text": data, "by": "asciicast marker"}
                events.append(Event(EventType.ANNOTATION, time_us, fields))
        self._frames = [
            events[start : start + CAST_FRAME_EVENTS]
            for start in range(0, len(events), CAST_FRAME_EVENTS)
        ]
        self.end_us = events[-1].time_us if events else 0
        self.complete = cast.complete

    @classmethod
    def open(cls, path: Path, *, until_us: int | None = None, identify: bool = True) -> CastSource:
        """The cast at `path`; with `until_us`, only its events up to that time (parsing stops
        there), cut into the same frames as the whole file's, so a keyframe index of the whole
        file applies to them. Its session id is a digest of the file's bytes (read, not
        parsed), the key of its keyframe cache; without `identify` it is the size alone."""
        # a microsecond of slack, then exactly the events whose rounded time is not after it
        until_s = None if until_us is None else (until_us + 1) / 1_000_000
        cast = read_cast(path, until_s=until_s)
        if until_us is not None:
            kept = [e for e in cast.events if round(e[0] * 1_000_000) <= until_us]
            cast.complete = cast.complete and len(kept) == len(cast.events)
            cast.events = kept
        if identify:
            size, digest = content_id(path)
        else:
            size = path.stat().st_size
            digest = f"cast{size}"
        return cls(cast, size=size, session_id=digest, name=path.stem)

    @property
    def frame_count(self) -> int:
        return len(self._frames)

    def read_frame(self, index: int) -> list[Event]:
        return self._frames[index]

    def close(self) -> None:
        pass


def content_id(path: Path) -> tuple[int, str]:
    """The size and a digest of the file: a cast's identity for the keyframe cache."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def is_cast_file(path: Path) -> bool:
    """True when the file starts like an asciicast (JSON), not like a hoop_tui recording."""
    with path.open("rb") as handle:
        start = handle.read(64).lstrip()
    return start.startswith(b"{")


def open_source(
    path: Path, *, until_us: int | None = None, identify: bool = True
) -> RecordingReader | CastSource:
    """A recording or an asciicast file, detected by content. Raises RecordingError,
    CastError or OSError. `until_us` stops parsing a cast after that time (a recording is
    read frame by frame on demand anyway); `identify=False` spares hashing a cast that will
    not be looked up in a cache. An `s3://` location (even folded by Path into `s3:/`) is a
    recording in object storage, read with ranged GETs."""
    location = as_location(path)
    if is_url(location):
        return RecordingReader.open(location)
    if is_cast_file(path):
        return CastSource.open(path, until_us=until_us, identify=identify)
    return RecordingReader.open(path)
