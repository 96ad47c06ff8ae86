"""Starting and finishing a session's recording inside a data directory.

This is what the gateway calls: it picks the file's place, signs with the data directory's
key and keeps the session catalogue in step with the file, so a session is never catalogued
without a recording or recorded without a catalogue row.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.objectstore import StoreSettings
from storage.reader import RecordingError, RecordingReader
from storage.schema import EventType, RecordingHeader
from storage.signing import key_id, load_or_create_signing_key
from storage.writer import RecordingFailed, RecordingSummary, RecordingWriter

__all__ = [
    "RecordingFailed",
    "RecordingSummary",
    "RecordingWriter",
    "new_session_id",
    "recording_path",
    "recover_unfinished",
    "start_recording",
]

RECORDINGS_DIR = "recordings"
SUFFIX = ".hrec"
CRASH_REASON = "gateway stopped unexpectedly (recovered)"


def new_session_id() -> str:
    return uuid.uuid4().hex


def recording_path(data_dir: Path, header: RecordingHeader) -> Path:
    """data_dir/recordings/YYYY/MM/DD/<session id>.hrec, by the session's UTC start day."""
    day = datetime.fromtimestamp(header.started_at_us / 1_000_000, tz=UTC)
    return data_dir / RECORDINGS_DIR / f"{day:%Y/%m/%d}" / f"{header.session_id}{SUFFIX}"


def start_recording(
    data_dir: Path,
    header: RecordingHeader,
    *,
    on_failure: Callable[[BaseException], None] | None = None,
    catalogue: SqliteCatalogue | None = None,
    after_close: Callable[[RecordingSummary, Path | str], None] | None = None,
    store: StoreSettings | None = None,
) -> RecordingWriter:
    """Open a new recording and catalogue it. Raises RecordingFailed when either cannot be
    done, so the caller refuses the session instead of running it unrecorded. `after_close`
    runs on the writer thread once the file is complete and catalogued (the search index).
    With a `store` the file is written to its spool and shipped to object storage, and the
    catalogue holds its URL; SpoolFull (a RecordingFailed) when too much waits for the store."""
    spool = None
    if store is not None:
        from storage.spool import shared_spool

        spool = shared_spool(store, data_dir)
        spool.check_room()
    try:
        signer = load_or_create_signing_key(data_dir)
        header.signing_key_id = key_id(signer.public_key())
        catalogue = catalogue or SqliteCatalogue.in_data_dir(data_dir)
        on_segment: Callable[[int | None, bool], None] | None = None
        location: Path | str
        if spool is not None and store is not None:
            location = store.location_of(header.session_id, header.started_at_us)
            path = spool.begin(header.session_id, location)
            session_id = header.session_id

            def on_segment(end: int | None, final: bool) -> None:
                spool.segment_ready(session_id, end, final)
        else:
            path = location = recording_path(data_dir, header)
        finish = catalogue.finish_session

        def on_closed(summary: RecordingSummary) -> None:
            finish(summary)
            if after_close is not None:
                after_close(summary, location)

        writer = RecordingWriter(
            path,
            header,
            signer,
            on_failure=on_failure,
            on_closed=on_closed,
            on_segment=on_segment,
        )
        catalogue.add_session(header, location)
    except Exception as exc:  # disk, key and catalogue problems alike: refuse the session
        raise RecordingFailed(f"cannot start a recording in {data_dir}: {exc}") from exc
    return writer


def recover_unfinished(
    catalogue: SqliteCatalogue,
    gateway_id: str,
    locate: Callable[[str], str] | None = None,
) -> list[str]:
    """Close the catalogue rows of sessions this gateway left open when it died: each gets
    the time its recording can be read to and a 'recovered' end reason. Returns their ids.
    `locate` turns a row's location into where to read it now (the spool's copy of a
    recording that has not reached object storage yet)."""
    recovered: list[str] = []
    for row in catalogue.find_sessions(SessionQuery(unfinished_only=True)):
        if row.gateway_id != gateway_id:
            continue
        counts: Counter[str] = Counter()
        verdicts: Counter[str] = Counter()
        end_us, size = 0, 0
        try:
            where = locate(row.path) if locate is not None else row.path
            with RecordingReader.open(where) as reader:
                size = reader.size
                header = reader.header
                for event in reader.events():
                    counts[event.name] += 1
                    end_us = event.time_us
                    if event.type is EventType.VERDICT:
                        verdicts[str(event["action"])] += 1
        except (OSError, RecordingError):
            header = _header_of(row.id, row.user, row.target, row.protocol, row.started_at_us)
        catalogue.finish_session(
            RecordingSummary(
                path=Path(row.path),
                header=header,
                size=size,
                event_count=sum(counts.values()),
                end_us=end_us,
                end_reason=CRASH_REASON,
                counts=dict(counts),
                verdicts=dict(verdicts),
            )
        )
        recovered.append(row.id)
    return recovered


def _header_of(
    session_id: str, user: str, target: str, protocol: str, started: int
) -> RecordingHeader:
    return RecordingHeader(
        session_id=session_id, user=user, target=target, protocol=protocol, started_at_us=started
    )
