"""What of a recording is searchable, and indexing it into `storage.search.SearchIndex`.

A recording becomes lines with their times: what the terminal showed (decoded, control
sequences removed, one entry per line, timed by the output that ended it), and one entry per
command, exec, SQL statement, verdict, hold and file transfer, as the transcript writes them.
Keystrokes are not indexed: what was typed and echoed is in the output, and what was typed
unechoed (a password) must not become searchable. The recording is already masked, so the index
holds masked text only.
"""

from __future__ import annotations

import codecs
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from replay.export import EventLog, describe_event, strip_terminal_controls
from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.reader import RecordingReader
from storage.schema import EventType
from storage.search import SEARCH_NAME, Entry, SearchIndex
from storage.writer import RecordingSummary

log = logging.getLogger(__name__)

MAX_LINE = 1000  # longer lines are cut: a hit needs context, not a megabyte of it
SKIPPED = (EventType.INPUT, EventType.RESIZE, EventType.MASK)


def searchable(log: EventLog) -> Iterator[Entry]:
    """(time in µs from the start, kind, text) for each line worth finding."""
    decoders: dict[object, codecs.IncrementalDecoder] = {}
    pending: dict[object, str] = {}
    last_us = 0
    for event in log.events():
        last_us = event.time_us
        if event.type is EventType.OUTPUT:
            channel = event["channel"]
            decoder = decoders.setdefault(channel, codecs.getincrementaldecoder("utf-8")("replace"))
            text = pending.pop(channel, "") + strip_terminal_controls(decoder.decode(event["data"]))
            *lines, rest = text.replace("\r", "\n").split("\n")
            for line in lines:
                if line.strip():
                    yield Entry(event.time_us, "output", line[:MAX_LINE])
            if len(rest) > MAX_LINE:
                yield Entry(event.time_us, "output", rest[:MAX_LINE])
                rest = ""
            if rest:
                pending[channel] = rest
        elif event.type not in SKIPPED:
            yield Entry(event.time_us, event.name, describe_event(event)[:MAX_LINE])
    for rest in pending.values():
        if rest.strip():
            yield Entry(last_us, "output", rest)


def index_recording(index: SearchIndex, session_id: str, path: Path | str) -> int:
    """Index one closed recording; returns how many entries it gave."""
    with RecordingReader.open(path) as reader:
        return index.replace(session_id, searchable(reader))


def index_when_closed(data_dir: Path) -> Callable[[RecordingSummary], None]:
    """What a gateway runs as a recording closes: queue it for the data directory's indexer
    thread, so a long recording's index never delays the end of its session. An index that
    fails is logged and caught up by the next `hoop-tui search`; the recording itself is never
    at stake."""
    indexer = _indexer_of(data_dir / SEARCH_NAME)
    return lambda summary: indexer.add(summary.header.session_id, summary.path)


class _Indexer:
    """One thread per search index, started on demand, that indexes closed recordings in the
    order they closed, over one connection kept while work comes, and closed (the thread
    ends) after `IDLE_S` without any: a burst of short sessions costs one connection and
    one checkpoint, not one each, and an idle gateway holds no search.db open."""

    IDLE_S = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, Path | str]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def add(self, session_id: str, path: Path | str) -> None:
        with self._lock:
            self._queue.put((session_id, path))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"index-{self.path.parent.name}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        index: SearchIndex | None = None
        try:
            while True:
                try:
                    session_id, path = self._queue.get(timeout=self.IDLE_S)
                except queue.Empty:
                    with self._lock:  # nothing came: end, unless add() got in just now
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                try:
                    index = index or SearchIndex(self.path)
                    index_recording(index, session_id, path)
                except Exception as exc:  # the next search indexes it again
                    log.warning("session %s not indexed for search: %s", session_id, exc)
        finally:
            if index is not None:
                index.close()  # now, not when the collector finds it (open files)


_INDEXERS: dict[Path, _Indexer] = {}
_INDEXERS_LOCK = threading.Lock()


def _indexer_of(path: Path) -> _Indexer:
    with _INDEXERS_LOCK:
        return _INDEXERS.setdefault(path, _Indexer(path))


def index_missing(
    data_dir: Path, progress: object | None = None, catalogue: Any = None
) -> tuple[int, list[tuple[str, str]]]:
    """Index every finished, catalogued session the index does not have yet: those closed while
    no gateway indexed them (a crash, or recordings made before the index existed). Returns how
    many were indexed and (session id, problem) for those that could not be read. With a
    fleet's `catalogue`, other instances' sessions are indexed too (read from the store)."""
    if catalogue is None:
        catalogue = SqliteCatalogue.in_data_dir(data_dir)
    index = SearchIndex.in_data_dir(data_dir)
    done = index.indexed_sessions()
    todo = [
        row
        for row in catalogue.find_sessions(SessionQuery())
        if row.ended_at_us is not None and row.id not in done
    ]
    problems: list[tuple[str, str]] = []
    update = getattr(progress, "update", None)
    for number, row in enumerate(todo):
        try:
            index_recording(index, row.id, row.path)
        except (OSError, ValueError) as exc:
            problems.append((row.id, str(exc)))
        if update is not None:
            update(number + 1, len(todo))
    return len(todo) - len(problems), problems
