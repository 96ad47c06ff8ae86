"""Proving a recording: walk every block, recompute the hash chain, check each signature.

A recording is intact when the chain holds from the preamble to the footer, every checkpoint
is signed by the expected key, and the file ends with a trailer, a final checkpoint and the
footer. Anything else is reported with the first bad offset, the last time that can be read
and the last time a valid signature covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from storage.encoder import chain_next, chain_start, signed_message
from storage.reader import (
    RecordingError,
    format_time,
    parse_frame_info,
    read_block,
    read_block_head,
    read_preamble,
    unpack_map,
)
from storage.schema import (
    CHECKPOINT_HEAD,
    FOOTER,
    FOOTER_MAGIC,
    KIND_CHECKPOINT,
    KIND_FRAME,
    KIND_HEADER,
    KIND_TRAILER,
    PREAMBLE,
    SIGNATURE_SIZE,
    RecordingHeader,
)
from storage.signing import key_id


@dataclass(slots=True)
class VerifyReport:
    path: Path
    ok: bool
    problem: str | None
    bad_offset: int | None
    last_good_us: int
    signed_until_us: int | None
    frames: int
    events: int
    session_id: str = ""

    def summary(self) -> str:
        if self.ok:
            return (
                f"{self.path}: OK, {self.frames} frames, {self.events} events, "
                f"signed to the end ({format_time(self.last_good_us)})"
            )
        signed = (
            format_time(self.signed_until_us) if self.signed_until_us is not None else "nothing"
        )
        return (
            f"{self.path}: FAILED at offset {self.bad_offset}: {self.problem}; "
            f"last good time {format_time(self.last_good_us)}, signed up to {signed}"
        )


ProgressCallback = Callable[[int, int], None]


def verify_recording(
    path: Path,
    public_key: Ed25519PublicKey,
    progress: ProgressCallback | None = None,
) -> VerifyReport:
    """Check one recording end to end against `public_key`. Never raises for bad content."""
    walker = _ChainWalker(path, public_key, progress)
    try:
        walker.walk()
    except RecordingError as exc:
        walker.fail(exc.offset, exc.message)
    except OSError as exc:
        walker.fail(0, f"cannot read: {exc.strerror}")
    return walker.report()


class _ChainWalker:
    def __init__(
        self, path: Path, public_key: Ed25519PublicKey, progress: ProgressCallback | None
    ) -> None:
        self.path = path
        self.public_key = public_key
        self.progress = progress
        self.problem: str | None = None
        self.bad_offset: int | None = None
        self.last_good_us = 0
        self.signed_until_us: int | None = None
        self.frames = 0
        self.events = 0
        self.session_id = ""
        self.complete = False

    def fail(self, offset: int, message: str) -> None:
        if self.problem is None:
            self.problem = message
            self.bad_offset = offset

    def report(self) -> VerifyReport:
        ok = self.problem is None and self.complete
        return VerifyReport(
            path=self.path,
            ok=ok,
            problem=self.problem,
            bad_offset=self.bad_offset,
            last_good_us=self.last_good_us,
            signed_until_us=self.signed_until_us,
            frames=self.frames,
            events=self.events,
            session_id=self.session_id,
        )

    def walk(self) -> None:
        with self.path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(0)
            read_preamble(handle)
            chain = chain_start()
            offset = len(PREAMBLE)
            expected_seq = 0
            trailer_offset: int | None = None
            pending_us = 0
            previous_chain = chain
            signed_after_trailer = False
            while offset < size:
                if trailer_offset is not None and self._at_footer(
                    handle, offset, size, trailer_offset
                ):
                    self.complete = signed_after_trailer
                    break
                head = read_block_head(handle, offset, size)
                body, stored = read_block(handle, head)
                chain = chain_next(chain, head.kind, body)
                if chain != stored:
                    raise RecordingError(
                        offset,
                        f"hash chain broken at a {head.kind.decode()} block: it was altered, "
                        "or comes from another recording",
                    )
                if head.kind == KIND_HEADER:
                    if offset != len(PREAMBLE):
                        raise RecordingError(offset, "a second header block")
                    self._check_header(body, offset)
                elif offset == len(PREAMBLE):
                    raise RecordingError(offset, "the first block is not a header")
                elif head.kind == KIND_FRAME:
                    info = parse_frame_info(body, offset)
                    if info.seq != expected_seq:
                        raise RecordingError(offset, f"frame {info.seq} out of sequence")
                    expected_seq += 1
                    self.frames += 1
                    self.events += info.count
                    pending_us = info.last_us
                    self.last_good_us = info.last_us
                elif head.kind == KIND_CHECKPOINT:
                    self._check_signature(body, offset, chain_before=previous_chain)
                    self.signed_until_us = pending_us
                    signed_after_trailer = trailer_offset is not None
                elif head.kind == KIND_TRAILER:
                    trailer = unpack_map(body, offset, "trailer")
                    trailer_offset = offset
                    pending_us = int(trailer.get("end_us", pending_us))
                    self.last_good_us = pending_us
                previous_chain = chain
                offset = head.end
                if self.progress is not None:
                    self.progress(offset, size)
            if not self.complete:
                if trailer_offset is None:
                    what = "no trailer"
                elif not signed_after_trailer:
                    what = "no signed checkpoint after the trailer"
                else:
                    what = "no footer"
                raise RecordingError(
                    offset, f"incomplete recording ({what}): the writer stopped before the end"
                )

    def _at_footer(self, handle: BinaryIO, offset: int, size: int, trailer_offset: int) -> bool:
        if size - offset != FOOTER.size:
            return False
        handle.seek(offset)
        pointed, magic = FOOTER.unpack(handle.read(FOOTER.size))
        if magic != FOOTER_MAGIC or pointed != trailer_offset:
            raise RecordingError(offset, "damaged footer")
        return True

    def _check_header(self, body: bytes, offset: int) -> None:
        try:
            header = RecordingHeader.from_map(unpack_map(body, offset, "header"))
        except ValueError as exc:
            raise RecordingError(offset, str(exc)) from None
        self.session_id = header.session_id
        expected = key_id(self.public_key)
        if header.signing_key_id and header.signing_key_id != expected:
            raise RecordingError(
                offset,
                f"signed by key {header.signing_key_id}, not by the given key {expected} "
                "(pass the right --key)",
            )

    def _check_signature(self, body: bytes, offset: int, chain_before: bytes) -> None:
        if len(body) != CHECKPOINT_HEAD.size + SIGNATURE_SIZE:
            raise RecordingError(offset, "checkpoint has the wrong size")
        signature = body[CHECKPOINT_HEAD.size :]
        try:
            self.public_key.verify(signature, signed_message(self.session_id, chain_before))
        except InvalidSignature:
            raise RecordingError(offset, "checkpoint signature does not verify") from None
