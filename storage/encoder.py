"""Sans-IO recording encoder: events in, file bytes out.

It owns everything about the layout (blocks, hash chain, frame numbering, delta times, index,
signatures) and nothing about threads, clocks or files, so the writer thread, `import-cast` and
the tests all produce byte-identical layouts the same way.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage.schema import (
    BLOCK_HEAD,
    CHECKPOINT_HEAD,
    EVENTS,
    FOOTER,
    FOOTER_MAGIC,
    FRAME_HEAD,
    KIND_CHECKPOINT,
    KIND_FRAME,
    KIND_HEADER,
    KIND_TRAILER,
    NO_FRAME,
    PREAMBLE,
    SECURITY_CODES,
    SIGN_CONTEXT,
    EventType,
    RecordingHeader,
)

FRAME_TARGET_RAW = 512 * 1024
MAX_EVENT_DATA = 1024 * 1024
SPLITTABLE = frozenset({int(EventType.OUTPUT), int(EventType.INPUT)})
_VERDICT = int(EventType.VERDICT)
_NAMES = {int(code): spec.name for code, spec in EVENTS.items()}


def chain_next(previous: bytes, kind: bytes, body: bytes) -> bytes:
    """The chain value of a block: it covers the block and, through `previous`, all before it."""
    digest = hashlib.blake2b(previous, digest_size=32)
    digest.update(kind)
    digest.update(len(body).to_bytes(4, "big"))
    digest.update(body)
    return digest.digest()


def chain_start() -> bytes:
    return hashlib.blake2b(PREAMBLE, digest_size=32).digest()


def signed_message(session_id: str, chain: bytes) -> bytes:
    return SIGN_CONTEXT + session_id.encode("ascii") + chain


@dataclass(slots=True)
class EncoderTotals:
    """What a finished recording contains, for its trailer and the session catalogue."""

    event_count: int = 0
    frame_count: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    last_us: int = 0


class RecordingEncoder:
    """Turns a header and a stream of timed events into the blocks of a recording file.

    Call `start()` once, `add()` for each event, `flush_frame()` whenever a frame should be
    closed, `checkpoint()` to sign what has been written, and `finish()` at the end. Each call
    returns the bytes to append to the file, in order.
    """

    def __init__(
        self, header: RecordingHeader, signer: Ed25519PrivateKey, *, level: int = 3
    ) -> None:
        self.header = header
        self._signer = signer
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._raw = bytearray()  # the open frame's packed events
        self._chain = chain_start()
        self._offset = 0
        self._seq = 0
        self._frame_base_us = 0
        self._frame_first_us = 0
        self._pending_count = 0
        self.pending_security = False
        self.totals = EncoderTotals()
        self._index_offsets = array("Q")
        self._index_first_us = array("q")
        self._last_checkpoint_seq = NO_FRAME
        self.finished = False

    @property
    def offset(self) -> int:
        """Bytes produced so far: the size of the file once they are written."""
        return self._offset

    @property
    def pending_bytes(self) -> int:
        return len(self._raw)

    @property
    def pending_count(self) -> int:
        return self._pending_count

    def _block(self, kind: bytes, body: bytes) -> bytes:
        self._chain = chain_next(self._chain, kind, body)
        block = BLOCK_HEAD.pack(kind, len(body)) + body + self._chain
        self._offset += len(block)
        return block

    def start(self) -> bytes:
        body = msgpack.packb(self.header.to_map(), use_bin_type=True)
        self._offset = len(PREAMBLE)
        return PREAMBLE + self._block(KIND_HEADER, body)

    def add(self, code: int, time_us: int, values: tuple[Any, ...]) -> None:
        """Queue one event into the open frame. Large terminal data is split so that no single
        event exceeds MAX_EVENT_DATA; times never go backwards."""
        if code in SPLITTABLE and len(values) == 2 and len(values[1]) > MAX_EVENT_DATA:
            channel, data = values
            for start in range(0, len(data), MAX_EVENT_DATA):
                self.add(code, time_us, (channel, data[start : start + MAX_EVENT_DATA]))
            return
        totals = self.totals
        if time_us < totals.last_us:
            time_us = totals.last_us
        if self._pending_count == 0:
            self._frame_base_us = totals.last_us
            self._frame_first_us = time_us
        self._raw += self._pack([code, time_us - totals.last_us, *values])
        totals.last_us = time_us
        self._pending_count += 1
        totals.event_count += 1
        totals.counts[_NAMES[code]] += 1
        if code in SECURITY_CODES:
            self.pending_security = True
            if code == _VERDICT and len(values) > 1:
                totals.verdicts[str(values[1])] += 1

    def flush_frame(self) -> bytes:
        """Close the open frame; b"" when it holds nothing."""
        if self._pending_count == 0:
            return b""
        raw = self._raw
        self._raw = bytearray()
        payload = self._compressor.compress(raw)
        head = FRAME_HEAD.pack(
            self._seq,
            self._frame_base_us,
            self._frame_first_us,
            self.totals.last_us,
            self._pending_count,
            len(raw),
        )
        self._index_offsets.append(self._offset)
        self._index_first_us.append(self._frame_first_us)
        block = self._block(KIND_FRAME, head + payload)
        self._seq += 1
        self.totals.frame_count += 1
        self._pending_count = 0
        self.pending_security = False
        return block

    @property
    def frames_since_checkpoint(self) -> int:
        last = -1 if self._last_checkpoint_seq == NO_FRAME else self._last_checkpoint_seq
        return self._seq - 1 - last

    def checkpoint(self) -> bytes:
        """Sign the chain as it stands: proof for every byte written so far."""
        last_seq = self._seq - 1 if self._seq else NO_FRAME
        signature = self._signer.sign(signed_message(self.header.session_id, self._chain))
        self._last_checkpoint_seq = last_seq
        body = CHECKPOINT_HEAD.pack(last_seq, self.totals.last_us) + signature
        return self._block(KIND_CHECKPOINT, body)

    def finish(self, end_us: int, reason: str) -> bytes:
        """Record the session's end and close the file: last frame, trailer, signature, footer."""
        if self.finished:
            return b""
        self.add(int(EventType.SESSION_END), end_us, (reason,))
        out = self.flush_frame()
        totals = self.totals
        trailer = {
            "end_us": totals.last_us,
            "end_reason": reason,
            "event_count": totals.event_count,
            "frame_count": totals.frame_count,
            "counts": dict(totals.counts),
            "verdicts": dict(totals.verdicts),
            "index_offsets": _little_endian(self._index_offsets),
            "index_first_us": _little_endian(self._index_first_us),
            "keyframes": [],
        }
        trailer_offset = self._offset
        out += self._block(KIND_TRAILER, msgpack.packb(trailer, use_bin_type=True))
        out += self.checkpoint()
        footer = FOOTER.pack(trailer_offset, FOOTER_MAGIC)
        self._offset += len(footer)
        self.finished = True
        return out + footer


def _little_endian(values: array[Any]) -> bytes:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()
