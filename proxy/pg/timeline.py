"""A PostgreSQL session's statement timeline so far, as text lines, read from its recording
(so as recorded: typed secrets and masked values stay masked). It is what an approver sees
beside a held statement, in the place an SSH session's terminal screen goes: the statements
before it, their verdicts, results and errors, and the held one last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.reader import RecordingError, RecordingReader
from storage.schema import Event, EventType

TIMELINE_LINES = 60  # the last lines shown
MAX_TEXT = 240  # characters of one statement on its line


def statement_timeline(location: Path | str, limit: int = TIMELINE_LINES) -> list[str]:
    """The last `limit` lines of the timeline of the (possibly still growing) recording."""
    lines: list[str] = []
    try:
        with RecordingReader.open(location) as reader:
            for event in reader.events():
                line = timeline_line(event)
                if line is not None:
                    lines.append(line)
    except (OSError, RecordingError) as exc:
        return [f"(cannot read the session: {exc})"]
    return lines[-limit:] if limit > 0 else lines


def timeline_line(event: Event) -> str | None:
    """One event's line of the timeline (None: not part of it); also what a watcher of the
    live session is sent as each event is recorded (proxy/live.py)."""
    kind = event.type
    at = f"{event.time_us / 1e6:9.3f}s "
    indent = " " * len(at)
    if kind is EventType.SQL_STATEMENT:
        params = event.get("params") or []
        shown = f"  params: {', '.join(_short(p) for p in params)}" if params else ""
        return at + _short(event["statement"]) + shown
    if kind is EventType.SQL_RESULT:
        duration = (event.get("duration_us") or 0) / 1000
        return f"{indent}  -> {event['rows']} row(s), {duration:.1f} ms"
    if kind is EventType.SQL_ERROR:
        return f"{indent}  -> error {event['sqlstate']}: {_short(event['message'])}"
    if kind is EventType.VERDICT:
        rule = f" (rule {event['rule']})" if event.get("rule") else ""
        return f"{indent}  verdict: {event['action']}{rule}"
    if kind is EventType.HOLD_REQUESTED:
        return f"{indent}  HELD for review ({event.get('rule') or 'policy'}): {event['hold_id']}"
    if kind is EventType.HOLD_DECIDED:
        return f"{indent}  hold {event['decision']} by {event.get('by') or '-'}"
    return None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
