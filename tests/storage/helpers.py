"""Small recordings built deterministically with the sans-IO encoder, for storage tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage.encoder import RecordingEncoder
from storage.schema import EventType, RecordingHeader
from storage.signing import key_id

TimedEvent = tuple[EventType, int, tuple[Any, ...]]


def make_header(session_id: str = "0" * 32, **overrides: Any) -> RecordingHeader:
    values: dict[str, Any] = {
        "session_id": session_id,
        "user": "alice",
        "target": "web1",
        "protocol": "ssh",
        "started_at_us": 1_700_000_000_000_000,
        "client": "127.0.0.1:50000",
        "term": "xterm-256color",
        "cols": 80,
        "rows": 24,
        "gateway_id": "gw-test",
    }
    values.update(overrides)
    return RecordingHeader(**values)


SAMPLE_EVENTS: list[TimedEvent] = [
    (EventType.CHANNEL_OPEN, 0, (0, "session", "pty")),
    (EventType.OUTPUT, 1_000, (0, b"$ ")),
    (EventType.INPUT, 500_000, (0, b"l")),
    (EventType.INPUT, 600_000, (0, b"s\r")),
    (EventType.COMMAND, 600_100, (0, "shell", "ls")),
    (EventType.VERDICT, 600_200, (0, "allow", "default", "")),
    (EventType.OUTPUT, 700_000, (0, b"a.txt  b.txt\r\n$ ")),
    (EventType.RESIZE, 1_500_000, (0, 120, 40)),
    (EventType.OUTPUT, 2_000_000, (0, "caf\u00e9 \u6f22\u5b57\r\n".encode())),
    (EventType.EXIT_STATUS, 2_500_000, (0, 0)),
]


def write_recording(
    path: Path,
    events: list[TimedEvent],
    signer: Ed25519PrivateKey,
    *,
    header: RecordingHeader | None = None,
    frame_every: int = 3,
    checkpoint_every: int = 2,
    end_reason: str | None = "client closed",
) -> RecordingHeader:
    """Write `events`, closing a frame every `frame_every` events and signing every
    `checkpoint_every` frames; leave the file without a trailer when `end_reason` is None."""
    header = header or make_header()
    header.signing_key_id = key_id(signer.public_key())
    encoder = RecordingEncoder(header, signer)
    with path.open("wb") as out:
        out.write(encoder.start())
        for number, (etype, time_us, values) in enumerate(events, start=1):
            encoder.add(int(etype), time_us, values)
            if number % frame_every == 0:
                out.write(encoder.flush_frame())
                if encoder.frames_since_checkpoint >= checkpoint_every:
                    out.write(encoder.checkpoint())
        if end_reason is None:
            out.write(encoder.flush_frame())
            out.write(encoder.checkpoint())
        else:
            last = events[-1][1] if events else 0
            out.write(encoder.finish(last, end_reason))
    return header
