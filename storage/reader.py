"""Reading recordings back: header, events in order, seeking by time, and honest reporting of
where a damaged or truncated file stops being readable.

Opening is cheap: a complete file is opened from its footer and trailer index without reading
the frames; an incomplete one (the writer died) gets its index rebuilt by walking the block
heads. The bytes come from a `Blob` (storage/objectstore.py): a local file, or a recording in
object storage read with ranged GETs, so seeking in either reads the index and one frame.
Every length read from the file is checked against the limits of the format before any memory
is allocated for it.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zstandard

from storage.encoder import chain_next
from storage.objectstore import Blob, as_location, is_url, open_blob
from storage.schema import (
    BLOCK_HEAD,
    CHAIN_SIZE,
    FOOTER,
    FOOTER_MAGIC,
    FORMAT_VERSION,
    FRAME_HEAD,
    KIND_CHECKPOINT,
    KIND_FRAME,
    KIND_HEADER,
    KIND_TRAILER,
    MAGIC,
    MAX_BLOCK_BODY,
    MAX_FRAME_RAW,
    MAX_MAP_BODY,
    PREAMBLE,
    Event,
    RecordingHeader,
    decode_event,
)

KNOWN_KINDS = (KIND_HEADER, KIND_FRAME, KIND_CHECKPOINT, KIND_TRAILER)
BLOCK_OVERHEAD = BLOCK_HEAD.size + CHAIN_SIZE


class RecordingError(Exception):
    """A recording that cannot be read (at all, or past `offset`)."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(f"offset {offset}: {message}")
        self.offset = offset
        self.message = message


@dataclass(slots=True)
class BlockHead:
    offset: int
    kind: bytes
    length: int

    @property
    def end(self) -> int:
        return self.offset + BLOCK_OVERHEAD + self.length


@dataclass(slots=True)
class FrameInfo:
    seq: int
    base_us: int
    first_us: int
    last_us: int
    count: int
    raw_len: int


def read_block_head(blob: Blob, offset: int, size: int) -> BlockHead:
    """The kind and length of the block at `offset`, checked against the file and the format."""
    return parse_block_head(blob.read_at(offset, BLOCK_HEAD.size), offset, size)


def parse_block_head(raw: bytes, offset: int, size: int) -> BlockHead:
    """A block head from its first bytes (more may follow in `raw`; they are ignored)."""
    if len(raw) < BLOCK_HEAD.size:
        raise RecordingError(offset, "truncated block head")
    kind, length = BLOCK_HEAD.unpack_from(raw)
    if kind not in KNOWN_KINDS:
        raise RecordingError(offset, f"unknown block kind {kind!r}")
    if length > MAX_BLOCK_BODY:
        raise RecordingError(
            offset, f"block claims {length} bytes, more than the {MAX_BLOCK_BODY} allowed"
        )
    head = BlockHead(offset, kind, length)
    if head.end > size:
        raise RecordingError(
            offset,
            f"truncated block: it claims {length} bytes, "
            f"only {max(0, size - offset - BLOCK_OVERHEAD)} follow",
        )
    return head


def read_block(blob: Blob, head: BlockHead) -> tuple[bytes, bytes]:
    """The body and stored chain value of a block whose head was checked."""
    raw = blob.read_at(head.offset + BLOCK_HEAD.size, head.length + CHAIN_SIZE)
    body, chain = raw[: head.length], raw[head.length :]
    if len(body) != head.length or len(chain) != CHAIN_SIZE:
        raise RecordingError(head.offset, "truncated block")
    return body, chain


def parse_frame_info(body: bytes, offset: int) -> FrameInfo:
    if len(body) < FRAME_HEAD.size:
        raise RecordingError(offset, "frame too short for its fixed header")
    info = FrameInfo(*FRAME_HEAD.unpack_from(body))
    if info.raw_len > MAX_FRAME_RAW:
        raise RecordingError(offset, f"frame claims {info.raw_len} decompressed bytes")
    if not info.base_us <= info.first_us <= info.last_us:
        raise RecordingError(offset, "frame times go backwards")
    return info


def decode_frame_events(body: bytes, offset: int) -> list[Event]:
    """All events of one frame block body, with absolute times."""
    info = parse_frame_info(body, offset)
    payload = body[FRAME_HEAD.size :]
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise RecordingError(offset, f"frame payload is not zstd: {exc}") from None
    if declared != info.raw_len:
        raise RecordingError(offset, "frame payload size does not match its header")
    try:
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=info.raw_len)
    except zstandard.ZstdError as exc:
        raise RecordingError(offset, f"frame payload is damaged: {exc}") from None
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(raw), 1))
    unpacker.feed(raw)
    events: list[Event] = []
    time_us = info.base_us
    try:
        for item in unpacker:
            delta = item[1] if isinstance(item, list) and len(item) > 1 else None
            if not isinstance(delta, int) or delta < 0:
                raise ValueError("event time is not a non-negative integer delta")
            time_us += delta
            events.append(decode_event(item, time_us))
    except (ValueError, msgpack.UnpackException) as exc:
        raise RecordingError(offset, f"frame event {len(events)} is malformed: {exc}") from None
    if len(events) != info.count:
        raise RecordingError(
            offset, f"frame holds {len(events)} events, its header says {info.count}"
        )
    if events[0].time_us != info.first_us or time_us != info.last_us:
        raise RecordingError(offset, "frame event times do not match its header")
    return events


def unpack_map(body: bytes, offset: int, what: str) -> dict[str, Any]:
    if len(body) > MAX_MAP_BODY:
        raise RecordingError(offset, f"{what} is larger than {MAX_MAP_BODY} bytes")
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise RecordingError(offset, f"{what} is not a msgpack map: {exc}") from None
    if not isinstance(value, dict):
        raise RecordingError(offset, f"{what} is not a msgpack map")
    return value


def read_preamble(blob: Blob) -> None:
    raw = blob.read_at(0, len(PREAMBLE))
    if len(raw) < len(MAGIC) or raw[: len(MAGIC)] != MAGIC:
        raise RecordingError(0, "not a hoop-tui recording (bad magic)")
    if len(raw) < len(PREAMBLE):
        raise RecordingError(len(MAGIC), "truncated before the format version")
    if raw[len(MAGIC)] != FORMAT_VERSION:
        raise RecordingError(
            len(MAGIC),
            f"unsupported format version {raw[len(MAGIC)]} "
            f"(this hoop-tui reads version {FORMAT_VERSION})",
        )


class RecordingReader:
    """An open recording. Use `RecordingReader.open(location)` (a path or an `s3://` URL);
    close it, or use it in `with`. `path` is the location as given (a URL stays a string)."""

    def __init__(self, path: Path | str, handle: Blob) -> None:
        self.path = path
        self.location = as_location(path)
        self._handle = handle
        self.blob = handle  # what was read from where (an S3Blob counts its GETs)
        self.size = handle.size
        read_preamble(handle)
        head = read_block_head(handle, len(PREAMBLE), self.size)
        if head.kind != KIND_HEADER:
            raise RecordingError(head.offset, "the first block is not a header")
        body, _ = read_block(handle, head)
        header_map = unpack_map(body, head.offset, "header")
        try:
            self.header = RecordingHeader.from_map(header_map)
        except ValueError as exc:
            raise RecordingError(head.offset, str(exc)) from None
        self.header_end = head.end
        self.trailer: dict[str, Any] | None = None
        self.problem: str | None = None
        self.problem_offset: int | None = None
        self.frame_offsets: array[int] = array("Q")
        self.frame_first_us: array[int] = array("q")
        self.last_us = 0
        self.readable_end = self.header_end
        if not self._open_from_trailer():
            self._scan()

    @classmethod
    def open(cls, path: Path | str) -> RecordingReader:
        location = as_location(path)
        handle = open_blob(location)
        try:
            return cls(location if is_url(location) else Path(location), handle)
        except BaseException:
            handle.close()
            raise

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def complete(self) -> bool:
        return self.trailer is not None and self.problem is None

    @property
    def frame_count(self) -> int:
        return len(self.frame_offsets)

    @property
    def end_reason(self) -> str | None:
        return None if self.trailer is None else str(self.trailer.get("end_reason"))

    # -- opening -------------------------------------------------------------------------------

    def _open_from_trailer(self) -> bool:
        """Fast path: footer -> trailer -> index. False when any part is missing or damaged."""
        if self.size < self.header_end + FOOTER.size:
            return False
        handle = self._handle
        trailer_offset, magic = FOOTER.unpack(handle.read_at(self.size - FOOTER.size, FOOTER.size))
        if magic != FOOTER_MAGIC or not self.header_end <= trailer_offset < self.size:
            return False
        try:
            head = read_block_head(handle, trailer_offset, self.size)
            if head.kind != KIND_TRAILER:
                return False
            body, stored_chain = read_block(handle, head)
            previous_chain = handle.read_at(trailer_offset - CHAIN_SIZE, CHAIN_SIZE)
            if chain_next(previous_chain, head.kind, body) != stored_chain:
                return False
            trailer = unpack_map(body, trailer_offset, "trailer")
            offsets = array("Q")
            offsets.frombytes(trailer["index_offsets"])
            first_us = array("q")
            first_us.frombytes(trailer["index_first_us"])
        except (RecordingError, KeyError, TypeError, ValueError):
            return False
        if len(offsets) != len(first_us):
            return False
        if sys.byteorder == "big":
            offsets.byteswap()
            first_us.byteswap()
        self.trailer = trailer
        self.frame_offsets = offsets
        self.frame_first_us = first_us
        self.last_us = int(trailer.get("end_us", 0))
        self.readable_end = self.size
        return True

    def _scan(self) -> None:
        """Rebuild the index from block heads; stop, and say why, at the first bad block."""
        handle = self._handle
        offset = self.header_end
        expected_seq = 0
        last_us = 0
        heads_size = BLOCK_HEAD.size + FRAME_HEAD.size
        while offset < self.size:
            try:
                # One read per block: its head and, for a frame, the frame's fixed header.
                raw = handle.read_at(offset, heads_size)
                head = parse_block_head(raw, offset, self.size)
                if head.kind == KIND_HEADER:
                    raise RecordingError(offset, "a second header block")
                if head.kind == KIND_FRAME:
                    frame_head = raw[BLOCK_HEAD.size : BLOCK_HEAD.size + head.length]
                    info = parse_frame_info(frame_head, offset)
                    if info.seq != expected_seq or info.base_us != last_us:
                        raise RecordingError(
                            offset, f"frame {info.seq} does not follow frame {expected_seq - 1}"
                        )
                    self.frame_offsets.append(offset)
                    self.frame_first_us.append(info.first_us)
                    expected_seq += 1
                    last_us = info.last_us
                elif head.kind == KIND_TRAILER:
                    body, _ = read_block(handle, head)
                    self.trailer = unpack_map(body, offset, "trailer")
            except RecordingError as exc:
                self._stop(exc)
                break
            offset = head.end
            self.readable_end = offset
            self.last_us = last_us
            if self.trailer is not None:
                break

    def _stop(self, exc: RecordingError) -> None:
        if self.problem is None:
            self.problem = exc.message
            self.problem_offset = exc.offset

    # -- reading -------------------------------------------------------------------------------

    def frame_index_at(self, time_us: int) -> int:
        """The frame holding the event shown at `time_us`: the last frame starting at or
        before it (0 when the time is before the first frame)."""
        return max(0, bisect_right(self.frame_first_us, time_us) - 1)

    def read_frame(self, index: int) -> list[Event]:
        offset = self.frame_offsets[index]
        # The block ends before the next frame (or the end of what can be read): head and
        # body come in one read, which for a recording in object storage is one GET.
        following = (
            self.frame_offsets[index + 1] if index + 1 < self.frame_count else self.readable_end
        )
        span = following - offset
        if BLOCK_OVERHEAD < span <= MAX_BLOCK_BODY + BLOCK_OVERHEAD:
            raw = self._handle.read_at(offset, span)
            head = parse_block_head(raw, offset, self.size)
            if head.kind == KIND_FRAME and head.end - offset <= len(raw):
                body = raw[BLOCK_HEAD.size : BLOCK_HEAD.size + head.length]
                return decode_frame_events(body, offset)
        head = read_block_head(self._handle, offset, self.size)
        if head.kind != KIND_FRAME:
            raise RecordingError(offset, "the index points at a block that is not a frame")
        body, _ = read_block(self._handle, head)
        return decode_frame_events(body, offset)

    def events(self, start_us: int = 0, end_us: int | None = None) -> Iterator[Event]:
        """Events in order from `start_us` on. A damaged frame ends the iteration and is
        reported in `problem`/`problem_offset` rather than raised."""
        first = self.frame_index_at(start_us) if start_us > 0 else 0
        for index in range(first, self.frame_count):
            try:
                frame = self.read_frame(index)
            except RecordingError as exc:
                self._stop(exc)
                self.readable_end = min(self.readable_end, exc.offset)
                return
            for event in frame:
                if event.time_us < start_us:
                    continue
                if end_us is not None and event.time_us > end_us:
                    return
                yield event

    def describe_problem(self) -> str | None:
        """One line for a user: where the readable part ends and why."""
        if self.problem is None:
            return None
        return (
            f"readable up to offset {self.readable_end} ({format_time(self.last_us)}); "
            f"at offset {self.problem_offset}: {self.problem}"
        )


def format_time(time_us: int) -> str:
    seconds, micros = divmod(max(0, time_us), 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{micros // 1000:03d}"
