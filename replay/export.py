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

# CSI, OSC (ended by BEL or ST), charset designations (ESC ( B), other two-byte escapes
# (ESC 7 and ESC 8 save and restore the cursor), and C0 controls but TAB and LF.
ANSI_PATTERN = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[()*+\-./][ -~]"
    r"|\x1b[0-~]"
    # other controls in runs, not one by one: a dump of NULs is millions of matches otherwise
    # (38 s to index 256 MB of them); ESC stays out of the run so a sequence after it is seen
    r"|[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]+"
    r"|\x1b"
)
# Text drawn in place between a cursor save and restore: a status line that redraws itself
# (the gateway's "held ... (0:07; Ctrl-C withdraws)"), shown once per change of its words.
OVERLAY_PATTERN = re.compile(r"\x1b7(.*?)\x1b8", re.DOTALL)
CLOCK = re.compile(r"\b\d+:\d\d\b")

STREAM_EVENTS = (EventType.OUTPUT, EventType.INPUT)


class EventLog(Protocol):
    """What an export reads: a `RecordingReader`, or a `MaskedSource` showing one through
    today's mask rules."""

    @property
    def header(self) -> RecordingHeader: ...

    def events(self) -> Iterator[Event]: ...


def strip_terminal_controls(text: str) -> str:
    return ANSI_PATTERN.sub("", text.replace("\r\n", "\n"))


def drop_repeated_overlays(text: str, last: dict[Any, str], channel: Any) -> str:
    """`text` without the in-place redraws that only change a clock (`1:07`) since the last one
    on `channel` (`last` remembers it): a ticking status becomes one line in a transcript."""

    def keep_once(found: re.Match[str]) -> str:
        # only a clock may change: other digits are what the target printed, and an overlay
        # must not become a way to hide output from an auditor reading the transcript
        shape = CLOCK.sub("#", found.group(1))
        if last.get(channel) == shape:
            return ""
        last[channel] = shape
        return found.group(0) + "\n"

    return OVERLAY_PATTERN.sub(keep_once, text)


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
            by = f"by rule {fields['rule']}" if fields.get("rule") else "by default (no rule)"
            return f"verdict {fields['action']} {by}{message}"
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
    overlays: dict[Any, str] = {}
    at_line_start = True
    count = 0
    for event in reader.events():
        count += 1
        if event.type is EventType.OUTPUT:
            channel = event["channel"]
            decoder = decoders.setdefault(channel, codecs.getincrementaldecoder("utf-8")("replace"))
            raw = drop_repeated_overlays(decoder.decode(event["data"]), overlays, channel)
            text = strip_terminal_controls(raw)
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
