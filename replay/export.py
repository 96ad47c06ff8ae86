"""Plain-text and JSON-lines views of a recording, for people and for scripts.

`text` is a transcript a person can read: the terminal output with control sequences removed,
interleaved with one line per command, verdict, hold, transfer and SQL event. `jsonl` is one
JSON object per event, lossless: bytes that are not UTF-8 are given in base64 under `<field>_b64`.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any, Protocol

from storage.reader import format_time
from storage.schema import Event, EventType, RecordingHeader

# CSI, OSC (ended by BEL or ST), other two-byte escapes, and C0 controls but TAB and LF.
ANSI_PATTERN = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[@-Z\\-_]"
    r"|[\x00-\x08\x0b-\x1f\x7f]"
)

STREAM_EVENTS = (EventType.OUTPUT, EventType.INPUT)


class EventLog(Protocol):
    """What an export reads: a `RecordingReader`, or a `MaskedSource` showing one through
    today's mask rules."""

    @property
    def header(self) -> RecordingHeader: ...

    def events(self) -> Iterator[Event]: ...


def strip_terminal_controls(text: str) -> str:
    return ANSI_PATTERN.sub("", text.replace("\r\n", "\n"))


def describe_event(event: Event) -> str:
    """One readable line for a non-stream event."""
    fields = event.fields
    match event.type:
        case EventType.EXEC:
            return f"exec: {as_text(fields['command'])}"
        case EventType.COMMAND:
            return f"command ({fields['source']}): {fields['command']}"
        case EventType.VERDICT:
            message = f": {fields['message']}" if fields.get("message") else ""
            return f"verdict {fields['action']} by rule {fields['rule']}{message}"
        case EventType.HOLD_REQUESTED:
            return (
                f"hold {fields['hold_id']} requested by rule {fields['rule']}: {fields['command']}"
            )
        case EventType.HOLD_DECIDED:
            return (
                f"hold {fields['hold_id']} {fields['decision']} by {fields['by']}: "
                f"{fields['reason']}"
            )
        case EventType.SQL_STATEMENT:
            return f"sql: {fields['statement']}"
        case EventType.FILE_TRANSFER:
            return f"file {fields['op']}: {as_text(fields['path'])} ({fields['size']} bytes)"
        case EventType.RESIZE:
            return f"resize {fields['cols']}x{fields['rows']}"
        case EventType.SESSION_END:
            return f"session end: {fields['reason']}"
    shown = ", ".join(f"{k}={as_text(v)}" for k, v in fields.items() if v is not None)
    return f"{event.name}: {shown}"


def export_text(reader: EventLog, out: IO[str]) -> int:
    header = reader.header
    out.write(
        f"# session {header.session_id}: {header.user} -> {header.target} ({header.protocol})"
        f" from {header.client or 'unknown'}\n"
    )
    decoders: dict[Any, codecs.IncrementalDecoder] = {}
    at_line_start = True
    count = 0
    for event in reader.events():
        count += 1
        if event.type is EventType.OUTPUT:
            decoder = decoders.setdefault(
                event["channel"], codecs.getincrementaldecoder("utf-8")("replace")
            )
            text = strip_terminal_controls(decoder.decode(event["data"]))
            if text:
                out.write(text)
                at_line_start = text.endswith("\n")
            continue
        if event.type is EventType.INPUT:
            continue
        if not at_line_start:
            out.write("\n")
            at_line_start = True
        out.write(f"[{format_time(event.time_us)}] {describe_event(event)}\n")
    return count


def export_jsonl(reader: EventLog, out: IO[str]) -> int:
    count = 0
    for event in reader.events():
        record: dict[str, Any] = {"t": event.time_us / 1_000_000, "type": event.name}
        for key, value in event.fields.items():
            if isinstance(value, bytes):
                try:
                    record[key] = value.decode("utf-8")
                except UnicodeDecodeError:
                    record[key + "_b64"] = base64.b64encode(value).decode("ascii")
            else:
                record[key] = value
        out.write(json.dumps(record, ensure_ascii=False, default=as_text) + "\n")
        count += 1
    return count


def as_text(value: Any) -> str:
    """Bytes as UTF-8 text (undecodable bytes replaced), anything else as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
