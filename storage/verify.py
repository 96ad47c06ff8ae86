"""Proving a recording: walk every block, recompute the hash chain, check each signature.

A recording is intact when the chain holds from the preamble to the footer, every checkpoint
is signed by the expected key, and the file ends with a trailer, a final checkpoint and the
footer. Anything else is reported with the first bad offset, the last time that can be read
and the last time a valid signature covers.

An intact file is not yet proof of *which* session it records: a file can be copied over
another's name, and the catalogue is a plain database anyone with the data directory may edit.
The header is covered by the chain and the signatures, so it is the truth; `binding_problems`
holds the file's place and its catalogue row against it, and `recording_problem` does the cheap
part of that (header read, not verified) for listings.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from storage.catalogue import SessionRow
from storage.encoder import chain_next, chain_start, signed_message
from storage.objectstore import Blob, as_location, is_url, open_blob
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
    path: Path | str  # a local path, or the URL of a recording in object storage
    ok: bool
    problem: str | None
    bad_offset: int | None
    last_good_us: int
    signed_until_us: int | None
    frames: int
    events: int
    session_id: str = ""
    header: RecordingHeader | None = None
    # the file's place or catalogue row disagree with its header (see `binding_problems`)
    binding: list[str] | None = None
    # the chain holds to where the file stops, and only the end is missing (no trailer yet,
    # maybe half a block): what a recording looks like while its session is still going
    unfinished: bool = False
    # ...and a writer is alive (its flock, or the fleet's live registry): not a failure
    still_writing: bool = False
    # ...and its catalogue row records that the gateway stopped without closing it (a crash,
    # recovered; or ended-unknown): intact and signed up to `signed_until_us`, not a failure
    ended_without_close: str | None = None

    @property
    def who(self) -> str:
        """What the signed header says: session, user, target."""
        if self.header is None:
            return ""
        h = self.header
        how = h.protocol
        extra = h.extra or {}
        if h.protocol == "asciicast" or "imported_from" in extra:
            # signed by the gateway's key on import, but never a session through the gateway
            source = extra.get("imported_from", "a cast file")
            how = f"imported from {source}, not recorded by the gateway"
        return f"session {h.session_id}, user {h.user}, target {h.target} ({how})"

    def bind(self, problems: list[str]) -> None:
        """Record what `binding_problems` found: any of it fails the report."""
        self.binding = problems
        if problems:
            self.ok = False

    def live(self) -> None:
        """A writer is alive (the caller has the evidence: see `writer_alive`) and the file is
        intact as far as it goes: still being written, no failure (the rest is not signed
        yet). The catalogue row alone is no evidence: anyone who can edit it could clear an
        end to pass a cut file off as live."""
        if self.unfinished and not self.binding and self.header is not None:
            self.still_writing = True

    def stopped(self, end_reason: str) -> None:
        """The catalogue row records an abrupt end (`abrupt_end`) and the file is intact as
        far as it goes: the gateway died before it could close it; what it proves is what
        was signed. A cut file whose row says it ended normally stays FAILED."""
        if self.unfinished and not self.binding and self.header is not None:
            self.ended_without_close = end_reason

    def summary(self) -> str:
        who = f"{self.who}, " if self.header is not None else ""
        signed_to = (
            format_time(self.signed_until_us) if self.signed_until_us is not None else "nothing"
        )
        if self.still_writing:
            return (
                f"{self.path}: still being written, intact so far, {who}{self.frames} frames, "
                f"{self.events} events, signed up to {signed_to} (a gateway is writing it "
                "now; verify it again once the session has ended)"
            )
        if self.ended_without_close is not None:
            return (
                f"{self.path}: ended without a close ({self.ended_without_close}), intact and "
                f"signed up to {signed_to}, {who}{self.frames} frames, {self.events} events "
                "(the gateway stopped before closing it: nothing after that is proven)"
            )
        if self.ok:
            return (
                f"{self.path}: OK, {who}{self.frames} frames, {self.events} events, "
                f"signed to the end ({format_time(self.last_good_us)})"
            )
        if self.problem is None and self.binding:
            return f"{self.path}: FAILED, {who}but " + "; ".join(self.binding)
        if self.bad_offset is None:  # nothing was read: there is no offset or time to give
            return f"{self.path}: FAILED: {self.problem}"
        return (
            f"{self.path}: FAILED at offset {self.bad_offset}: {self.problem}; "
            f"last good time {format_time(self.last_good_us)}, signed up to {signed_to}"
            + (f" ({self.who})" if self.header is not None else "")
        )


def writer_alive(path: Path | str) -> bool:
    """Whether a gateway is writing this local file now: the writer holds an exclusive flock
    on it until it closes it (storage/writer.py), and the kernel drops it when the process
    dies. A URL, a missing file or a file nobody locks: False."""
    location = as_location(path)
    if is_url(location):
        return False
    try:
        fd = os.open(location, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also lets go of the shared lock, when it was granted
    return False


def abrupt_end(row: SessionRow | None) -> bool:
    """Whether a catalogue row records that its gateway stopped without closing the session:
    recovered after a crash (storage/recorder.py CRASH_REASON), or marked ended-unknown by
    another instance when this one stopped heart-beating (storage/pg_state.py)."""
    reason = (row.end_reason or "") if row is not None else ""
    return (
        row is not None
        and row.ended_at_us is not None
        and (reason.endswith("(recovered)") or reason.startswith("ended-unknown"))
    )


def read_header(path: Path | str) -> RecordingHeader:
    """The header block of a recording (a path or an `s3://` URL), read but not verified.
    RecordingError or OSError."""
    handle = open_blob(path, tail=False)
    try:
        size = handle.size
        read_preamble(handle)
        head = read_block_head(handle, len(PREAMBLE), size)
        if head.kind != KIND_HEADER:
            raise RecordingError(head.offset, "the first block is not a header")
        body, _ = read_block(handle, head)
        try:
            return RecordingHeader.from_map(unpack_map(body, head.offset, "header"))
        except ValueError as exc:
            raise RecordingError(head.offset, str(exc)) from None
    finally:
        handle.close()


def binding_problems(
    header: RecordingHeader,
    path: Path | str,
    row: SessionRow | None,
    expected_path: Path | str | None,
) -> list[str]:
    """How a recording's place and catalogue row disagree with its (signed) header: empty
    when they agree. `expected_path` is where the gateway files this session (None for a
    file outside the data directory, which may be named anything); `row` is the catalogue's
    row for the header's session id (None: the catalogue does not know it)."""
    problems = []
    # The name as given, not only the file it resolves to: a symbolic link at another
    # session's name resolves to this session's own file.
    if expected_path is not None and (
        _name(path) != _name(expected_path) or not _same_file(path, expected_path)
    ):
        problems.append(
            f"the header says session {header.session_id}, whose recording belongs at "
            f"{expected_path}: this file was moved, renamed or copied over another's"
        )
    if row is None:
        if expected_path is not None:
            problems.append(f"the catalogue has no row for session {header.session_id}")
        return problems
    for what, catalogued, recorded in (
        ("session", row.id, header.session_id),
        ("user", row.user, header.user),
        ("target", row.target, header.target),
        ("protocol", row.protocol, header.protocol),
        ("start", row.started_at_us, header.started_at_us),
        ("service account", row.service_account, header.service_account),
    ):
        if catalogued != recorded:
            problems.append(f"the catalogue says {what} {catalogued!r}, the recording {recorded!r}")
    if expected_path is not None and not _same_file(row.path, path):
        problems.append(f"the catalogue files this session at {row.path}")
    return problems


def recording_problem(row: SessionRow) -> str | None:
    """Why a catalogue row's recording cannot be taken for it, in a few words for a listing:
    `missing`, `unreadable: ...`, or `mismatch: ...` when the file's header names another
    session, user or target. None when they agree (`verify` proves the rest)."""
    path = as_location(row.path)
    try:
        header = read_header(path)
    except FileNotFoundError:
        return "missing"
    except (OSError, RecordingError) as exc:
        return f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    problems = binding_problems(header, path, row, None)
    if header.session_id != row.id or _name(path).removesuffix(".hrec") != header.session_id:
        problems = [p for p in problems if not p.startswith("the catalogue says session ")]
        problems.insert(0, f"the file holds session {header.session_id}")
    return "mismatch: " + "; ".join(problems) if problems else None


def _name(location: Path | str) -> str:
    return as_location(location).rstrip("/").rsplit("/", 1)[-1]


def _same_file(one: Path | str, other: Path | str) -> bool:
    first, second = as_location(one), as_location(other)
    if is_url(first) or is_url(second):
        return first == second  # an object's name is its identity
    try:
        return Path(first).resolve() == Path(second).resolve()
    except OSError:
        return False


ProgressCallback = Callable[[int, int], None]


def verify_recording(
    path: Path | str,
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
        walker.fail(None, f"cannot read: {exc.strerror or exc}")
    return walker.report()


class _ChainWalker:
    def __init__(
        self, path: Path | str, public_key: Ed25519PublicKey, progress: ProgressCallback | None
    ) -> None:
        location = as_location(path)
        self.path: Path | str = location if is_url(location) else Path(location)
        self.public_key = public_key
        self.progress = progress
        self.problem: str | None = None
        self.bad_offset: int | None = None
        self.last_good_us = 0
        self.signed_until_us: int | None = None
        self.frames = 0
        self.events = 0
        self.session_id = ""
        self.header: RecordingHeader | None = None
        self.complete = False
        self.unfinished = False

    def fail(self, offset: int | None, message: str) -> None:
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
            header=self.header,
            unfinished=self.unfinished and self.problem is not None,
        )

    def walk(self) -> None:
        handle = open_blob(self.path)
        try:
            self._walk(handle)
        finally:
            handle.close()

    def _walk(self, handle: Blob) -> None:
        size = handle.size
        read_preamble(handle)
        chain = chain_start()
        offset = len(PREAMBLE)
        expected_seq = 0
        trailer_offset: int | None = None
        pending_us = 0
        previous_chain = chain
        signed_after_trailer = False
        while offset < size:
            if trailer_offset is not None and self._at_footer(handle, offset, size, trailer_offset):
                self.complete = signed_after_trailer
                break
            try:
                head = read_block_head(handle, offset, size)
                body, stored = read_block(handle, head)
            except RecordingError as exc:
                # a block cut short by the end of the file, before any trailer: the
                # writer may be in the middle of it
                self.unfinished = trailer_offset is None and exc.message.startswith("truncated")
                raise
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
                self.unfinished = self.header is not None
            elif not signed_after_trailer:
                what = "no signed checkpoint after the trailer"
            else:
                what = "no footer"
            raise RecordingError(
                offset, f"incomplete recording ({what}): the writer stopped before the end"
            )

    def _at_footer(self, handle: Blob, offset: int, size: int, trailer_offset: int) -> bool:
        if size - offset != FOOTER.size:
            return False
        pointed, magic = FOOTER.unpack(handle.read_at(offset, FOOTER.size))
        if magic != FOOTER_MAGIC or pointed != trailer_offset:
            raise RecordingError(offset, "damaged footer")
        return True

    def _check_header(self, body: bytes, offset: int) -> None:
        try:
            header = RecordingHeader.from_map(unpack_map(body, offset, "header"))
        except ValueError as exc:
            raise RecordingError(offset, str(exc)) from None
        self.session_id = header.session_id
        self.header = header
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
