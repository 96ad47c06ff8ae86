"""THE table of recording event types, and the constants of the file layout.

Every event any part of hoop_tui records is declared here, once; writers and readers take the
field names and order from this table, so nothing records an ad-hoc dict. The layout is
specified in docs/recording-format.md; change both together.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

FORMAT_VERSION = 1
MAGIC = b"HOOPREC"
PREAMBLE = MAGIC + bytes([FORMAT_VERSION])
FOOTER_MAGIC = b"HOOPEND\x00"
SIGN_CONTEXT = b"HOOPREC-SIGN\x00"

MAX_BLOCK_BODY = 64 * 1024 * 1024
MAX_FRAME_RAW = 64 * 1024 * 1024
MAX_MAP_BODY = 16 * 1024 * 1024

CHAIN_SIZE = 32
BLOCK_HEAD = struct.Struct(">cI")  # kind, body length
FRAME_HEAD = struct.Struct(">QqqqII")  # seq, base_us, first_us, last_us, count, raw_len
CHECKPOINT_HEAD = struct.Struct(">Qq")  # seq of last frame, last_us
SIGNATURE_SIZE = 64
FOOTER = struct.Struct(">Q8s")  # trailer offset, FOOTER_MAGIC
NO_FRAME = 2**64 - 1


# One-byte block kinds, compared with file contents as they are.
KIND_HEADER = b"H"
KIND_FRAME = b"F"
KIND_CHECKPOINT = b"C"
KIND_TRAILER = b"T"


class EventType(IntEnum):
    OUTPUT = 1
    INPUT = 2
    RESIZE = 3
    EXEC = 4
    EXIT_STATUS = 5
    SIGNAL = 6
    FILE_TRANSFER = 7
    PORT_FORWARD = 8
    SQL_STATEMENT = 9
    SQL_RESULT = 10
    SQL_ERROR = 11
    COMMAND = 12
    VERDICT = 13
    HOLD_REQUESTED = 14
    HOLD_DECIDED = 15
    MASK = 16
    ANNOTATION = 17
    SESSION_END = 18
    CHANNEL_OPEN = 19
    CHANNEL_CLOSE = 20


@dataclass(frozen=True, slots=True)
class EventSpec:
    """How one event type is laid out: its field names in wire order, and whether it is
    security-relevant (its frame is written to disk at once)."""

    type: EventType
    fields: tuple[str, ...]
    security: bool = False

    @property
    def name(self) -> str:
        return self.type.name.lower()


EVENTS: dict[EventType, EventSpec] = {
    spec.type: spec
    for spec in (
        EventSpec(EventType.OUTPUT, ("channel", "data")),
        EventSpec(EventType.INPUT, ("channel", "data")),
        EventSpec(EventType.RESIZE, ("channel", "cols", "rows")),
        EventSpec(EventType.EXEC, ("channel", "command"), security=True),
        EventSpec(EventType.EXIT_STATUS, ("channel", "status")),
        EventSpec(EventType.SIGNAL, ("channel", "name")),
        EventSpec(EventType.FILE_TRANSFER, ("channel", "op", "path", "size", "detail")),
        EventSpec(
            EventType.PORT_FORWARD,
            ("channel", "action", "direction", "host", "port", "bytes_in", "bytes_out"),
            security=True,
        ),
        EventSpec(EventType.SQL_STATEMENT, ("statement", "params"), security=True),
        EventSpec(EventType.SQL_RESULT, ("columns", "rows", "sample", "duration_us")),
        EventSpec(EventType.SQL_ERROR, ("sqlstate", "message")),
        EventSpec(EventType.COMMAND, ("channel", "source", "command"), security=True),
        EventSpec(EventType.VERDICT, ("channel", "action", "rule", "message"), security=True),
        EventSpec(
            EventType.HOLD_REQUESTED, ("hold_id", "command", "rule", "approvers"), security=True
        ),
        EventSpec(EventType.HOLD_DECIDED, ("hold_id", "decision", "by", "reason"), security=True),
        # `column`: the SQL result column of a row mask; added later, so old files lack it.
        EventSpec(EventType.MASK, ("channel", "rule", "position", "length", "token", "column")),
        EventSpec(EventType.ANNOTATION, ("text", "by")),
        EventSpec(EventType.SESSION_END, ("reason",), security=True),
        EventSpec(EventType.CHANNEL_OPEN, ("channel", "kind", "detail"), security=True),
        EventSpec(EventType.CHANNEL_CLOSE, ("channel",)),
    )
}

EVENTS_BY_NAME: dict[str, EventSpec] = {spec.name: spec for spec in EVENTS.values()}
SECURITY_CODES = frozenset(int(t) for t, spec in EVENTS.items() if spec.security)


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded event as a reader returns it: its type, its absolute time in microseconds
    since the session start, and its fields by name (missing trailing fields are None)."""

    type: EventType
    time_us: int
    fields: dict[str, Any]

    @property
    def name(self) -> str:
        return self.type.name.lower()

    def __getitem__(self, field: str) -> Any:
        return self.fields[field]

    def get(self, field: str, default: Any = None) -> Any:
        return self.fields.get(field, default)


HEADER_KEYS: tuple[str, ...] = (
    "format_version",
    "session_id",
    "user",
    "service_account",
    "target",
    "protocol",
    "client",
    "started_at_us",
    "term",
    "cols",
    "rows",
    "gateway_id",
    "signing_key_id",
    "extra",
)


@dataclass(slots=True)
class RecordingHeader:
    """Who, where and when: the first block of every recording."""

    session_id: str
    user: str
    target: str
    protocol: str
    started_at_us: int
    client: str = ""
    service_account: bool = False
    term: str = ""
    cols: int = 0
    rows: int = 0
    gateway_id: str = ""
    signing_key_id: str = ""
    extra: dict[str, Any] | None = None

    def to_map(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "session_id": self.session_id,
            "user": self.user,
            "service_account": self.service_account,
            "target": self.target,
            "protocol": self.protocol,
            "client": self.client,
            "started_at_us": self.started_at_us,
            "term": self.term,
            "cols": self.cols,
            "rows": self.rows,
            "gateway_id": self.gateway_id,
            "signing_key_id": self.signing_key_id,
            "extra": self.extra or {},
        }

    @classmethod
    def from_map(cls, data: dict[str, Any]) -> RecordingHeader:
        """Build a header from a decoded map; raises ValueError naming a missing or bad key."""
        required = {"session_id": str, "user": str, "target": str, "protocol": str}
        for key, kind in required.items():
            if not isinstance(data.get(key), kind):
                raise ValueError(f"header key {key!r} is missing or not a {kind.__name__}")
        started = data.get("started_at_us")
        if not isinstance(started, int):
            raise ValueError("header key 'started_at_us' is missing or not an integer")
        extra = data.get("extra")
        return cls(
            session_id=data["session_id"],
            user=data["user"],
            target=data["target"],
            protocol=data["protocol"],
            started_at_us=started,
            client=str(data.get("client") or ""),
            service_account=bool(data.get("service_account")),
            term=str(data.get("term") or ""),
            cols=int(data.get("cols") or 0),
            rows=int(data.get("rows") or 0),
            gateway_id=str(data.get("gateway_id") or ""),
            signing_key_id=str(data.get("signing_key_id") or ""),
            extra=extra if isinstance(extra, dict) else {},
        )


def decode_event(item: Any, time_us: int) -> Event:
    """Turn one decoded msgpack event array into an Event; raises ValueError when malformed."""
    if not isinstance(item, list) or len(item) < 2:
        raise ValueError("event is not an array of at least two items")
    code = item[0]
    try:
        spec = EVENTS[EventType(code)]
    except ValueError:
        raise ValueError(f"unknown event type {code!r}") from None
    # Fields are only ever added at the end: values past the ones this reader knows come from
    # a newer writer and are left out, so old readers still read new recordings.
    values = item[2 : 2 + len(spec.fields)]
    fields = dict(zip(spec.fields, values, strict=False))
    for missing in spec.fields[len(values) :]:
        fields[missing] = None
    return Event(spec.type, time_us, fields)
