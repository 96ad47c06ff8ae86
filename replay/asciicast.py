"""asciicast v2 in and out: the lingua franca of terminal recordings.

Export turns a recording's terminal output (and input, resizes and markers for commands,
verdicts and holds) into a `.cast` file that `asciinema play` accepts. Import turns a `.cast`
file into a signed hoop_tui recording, so real-world recordings can be replayed and tested.
"""

from __future__ import annotations

import codecs
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from replay.export import as_text
from storage.encoder import FRAME_TARGET_RAW, RecordingEncoder
from storage.reader import RecordingReader
from storage.schema import EventType, RecordingHeader
from storage.signing import key_id
from storage.writer import RecordingSummary

MARKER_EVENTS = {
    EventType.COMMAND: lambda e: f"command: {e['command']}",
    EventType.EXEC: lambda e: f"exec: {as_text(e['command'])}",
    EventType.VERDICT: lambda e: f"verdict: {e['action']} ({e['rule']})",
    EventType.HOLD_REQUESTED: lambda e: f"hold {e['hold_id']}: {e['command']}",
    EventType.HOLD_DECIDED: lambda e: f"hold {e['hold_id']} {e['decision']} by {e['by']}",
    EventType.ANNOTATION: lambda e: str(e["text"]),
}


IMPORTED = "imported"


class CastError(Exception):
    """An asciicast file that cannot be imported; says where."""


def export_cast(reader: RecordingReader, out: IO[str], *, include_input: bool = False) -> int:
    """Write `reader` as asciicast v2 to `out`; returns the number of events written."""
    header = reader.header
    cast_header: dict[str, Any] = {
        "version": 2,
        "width": header.cols or 80,
        "height": header.rows or 24,
        "timestamp": header.started_at_us // 1_000_000,
        "title": f"{header.user} -> {header.target} ({header.protocol})",
    }
    if header.term:
        cast_header["env"] = {"TERM": header.term}
    out.write(json.dumps(cast_header) + "\n")
    decoders: dict[tuple[str, Any], codecs.IncrementalDecoder] = {}
    written = 0
    for event in reader.events():
        seconds = round(event.time_us / 1_000_000, 6)
        line: list[Any] | None = None
        if event.type in (EventType.OUTPUT, EventType.INPUT):
            code = "o" if event.type is EventType.OUTPUT else "i"
            if code == "i" and not include_input:
                continue
            key = (code, event["channel"])
            decoder = decoders.setdefault(key, codecs.getincrementaldecoder("utf-8")("replace"))
            text = decoder.decode(event["data"])
            if text:
                line = [seconds, code, text]
        elif event.type is EventType.RESIZE:
            line = [seconds, "r", f"{event['cols']}x{event['rows']}"]
        elif event.type in MARKER_EVENTS:
            line = [seconds, "m", MARKER_EVENTS[event.type](event)]
        if line is not None:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    return written


@dataclass(slots=True)
class CastFile:
    header: dict[str, Any]
    events: list[tuple[float, str, str]]
    complete: bool = True  # False when reading stopped at a time before the end


def read_cast(path: Path, *, until_s: float | None = None) -> CastFile:
    """Parse an asciicast v2 file strictly, naming the line of the first problem.

    With `until_s`, reading stops at the first event after that time: what follows it is
    neither read nor checked (a screen at a time needs nothing later)."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise CastError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        lines = _numbered_lines(handle, path)
        try:
            number, first = next(lines)
        except StopIteration:
            raise CastError(f"{path}: empty file, not an asciicast recording") from None
        header = _json_line(first, path, number)
        if not isinstance(header, dict) or header.get("version") != 2:
            raise CastError(f"{path}:{number}: not an asciicast v2 header (need version 2)")
        for key in ("width", "height"):
            if not isinstance(header.get(key), int) or header[key] <= 0:
                raise CastError(f"{path}:{number}: header {key!r} must be a positive integer")
        events: list[tuple[float, str, str]] = []
        complete = True
        last = 0.0
        for number, line in lines:
            item = _json_line(line, path, number)
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not isinstance(item[0], int | float)
                or not isinstance(item[1], str)
                or not isinstance(item[2], str)
            ):
                raise CastError(f"{path}:{number}: an event must be [time, code, data]")
            time_s = float(item[0])
            if time_s < last:
                raise CastError(f"{path}:{number}: event time goes backwards")
            if until_s is not None and time_s > until_s:
                complete = False
                break
            last = time_s
            events.append((time_s, item[1], item[2]))
    return CastFile(header, events, complete)


def _numbered_lines(handle: IO[str], path: Path) -> Iterator[tuple[int, str]]:
    try:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line
    except UnicodeDecodeError as exc:
        raise CastError(f"{path}: not UTF-8 text: {exc.reason}") from None


def _json_line(line: str, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise CastError(f"{path}:{number}: not JSON: {exc.msg}") from None


def header_for_cast(
    cast: CastFile, signer: Ed25519PrivateKey, *, gateway_id: str, source: Path
) -> RecordingHeader:
    """The recording header an imported cast gets: a new session id, its size and start."""
    header_in = cast.header
    env = header_in.get("env")
    timestamp = header_in.get("timestamp")
    started_s = timestamp if isinstance(timestamp, int | float) else source.stat().st_mtime
    return RecordingHeader(
        session_id=uuid.uuid4().hex,
        user=str(header_in.get("user", "imported")),
        target=str(header_in.get("title") or source.stem),
        protocol="asciicast",
        started_at_us=int(started_s * 1_000_000),
        term=str(env.get("TERM", "")) if isinstance(env, dict) else "",
        cols=header_in["width"],
        rows=header_in["height"],
        gateway_id=gateway_id,
        signing_key_id=key_id(signer.public_key()),
        extra={"imported_from": source.name},
    )


def write_cast_recording(
    cast: CastFile, header: RecordingHeader, out_path: Path, signer: Ed25519PrivateKey
) -> RecordingSummary:
    """Write `cast` as a complete signed recording at `out_path`, which must not exist."""
    encoder = RecordingEncoder(header, signer)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as out:
        out.write(encoder.start())
        end_us = 0
        for time_s, code, data in cast.events:
            time_us = round(time_s * 1_000_000)
            end_us = max(end_us, time_us)
            if code == "o":
                encoder.add(EventType.OUTPUT, time_us, (0, data.encode("utf-8")))
            elif code == "i":
                encoder.add(EventType.INPUT, time_us, (0, data.encode("utf-8")))
            elif code == "r":
                cols, _, rows = data.partition("x")
                if cols.isdigit() and rows.isdigit():
                    encoder.add(EventType.RESIZE, time_us, (0, int(cols), int(rows)))
            elif code == "m":
                encoder.add(EventType.ANNOTATION, time_us, (data, "asciicast marker"))
            if encoder.pending_bytes >= FRAME_TARGET_RAW:
                out.write(encoder.flush_frame())
        out.write(encoder.finish(end_us, IMPORTED))
    return RecordingSummary.of(out_path, encoder, IMPORTED)
