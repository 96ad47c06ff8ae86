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
import contextlib
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from replay.export import EventLog, describe_event, strip_terminal_controls
from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.objectstore import known_settings, remember
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


def index_either(
    index: SearchIndex, session_id: str, path: Path | str, location: Path | str
) -> int:
    """Index a closed recording where it was written, or at its catalogued location once that
    is gone (a spool file shipped to the store)."""
    try:
        return index_recording(index, session_id, path)
    except FileNotFoundError:
        return index_recording(index, session_id, location)


def index_when_closed(data_dir: Path) -> Callable[[RecordingSummary, Path | str], None]:
    """What a gateway runs as a recording closes: queue it for the data directory's indexer
    thread, so a long recording's index never delays the end of its session. The file is read
    where it was written, or at its catalogued location once that is gone (a spool file
    shipped to the store). An index that fails is logged and caught up by the next
    `hoop-tui search`; the recording itself is never at stake."""
    indexer = _indexer_of(data_dir / SEARCH_NAME)
    return lambda summary, location: indexer.add(
        summary.header.session_id, summary.path, location, summary.size
    )


class _Indexer:
    """One thread per search index, started on demand, that has closed recordings indexed in
    the order they closed by one `_IndexProcess` kept while work comes, and stopped (the thread
    ends) after `IDLE_S` without any: a burst of short sessions costs one process and one
    checkpoint, not one each, and an idle gateway holds no search.db open."""

    IDLE_S = 2.0
    # Up to this size a recording is indexed on the thread itself, in milliseconds: starting a
    # process for it would cost more than it saves. Larger ones go to the process.
    IN_PROCESS_BYTES = 1 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, Path, Path | str, int]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def add(self, session_id: str, path: Path, location: Path | str, size: int) -> None:
        with self._lock:
            self._queue.put((session_id, path, location, size))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"index-{self.path.parent.name}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        child: _IndexProcess | None = None
        index: SearchIndex | None = None
        try:
            while True:
                try:
                    session_id, path, location, size = self._queue.get(timeout=self.IDLE_S)
                except queue.Empty:
                    with self._lock:  # nothing came: end, unless add() got in just now
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                if size <= self.IN_PROCESS_BYTES:
                    try:
                        index = index or SearchIndex(self.path)
                        index_either(index, session_id, path, location)
                    except Exception as exc:  # the next search indexes it again
                        log.warning("session %s not indexed for search: %s", session_id, exc)
                    continue
                try:
                    child = child or _IndexProcess(self.path)
                    child.index(session_id, path, location)
                except ValueError as exc:  # this recording; the next search indexes it again
                    log.warning("session %s not indexed for search: %s", session_id, exc)
                except Exception as exc:  # the process: a new one for the next recording
                    log.warning("session %s not indexed for search: %s", session_id, exc)
                    if child is not None:
                        child.close()
                    child = None
        finally:
            if child is not None:
                child.close()
            if index is not None:
                index.close()  # now, not when the collector finds it (open files)


class _IndexProcess:
    """A child Python, at a lower priority, that indexes recordings into one search index.

    Indexing reads and decodes a whole recording: tens of CPU seconds for a 256 MB one. In the
    gateway's own process that thread held the GIL against forwarding, and a bulk transfer
    started while the one before it was indexed ran at a tenth of its speed. In a process of
    its own it takes the other core, or what forwarding leaves. Jobs and answers are pickles on
    its stdin and on a copy of its stdout (stdout itself goes to stderr, so a stray print
    cannot break the stream); it ends when its stdin closes."""

    def __init__(self, path: Path) -> None:
        root = str(Path(__file__).resolve().parents[1])
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        self._process = subprocess.Popen(
            # -P: not the working directory first on the path, where a `replay` could wait
            [sys.executable, "-P", "-m", "replay.search", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        )
        try:
            self._send(known_settings())
        except BaseException:
            self.close()
            raise

    def _send(self, message: object) -> None:
        assert self._process.stdin is not None
        pickle.dump(message, self._process.stdin)
        self._process.stdin.flush()

    def index(self, session_id: str, path: Path, location: Path | str) -> int:
        """Index one closed recording, read at `path` or, once that is gone, at `location`;
        its entry count, or the child's error raised here."""
        assert self._process.stdout is not None
        self._send((session_id, str(path), str(location)))
        try:
            status, answer = pickle.load(self._process.stdout)
        except (EOFError, pickle.UnpicklingError) as exc:
            raise OSError(f"the indexing process ended (exit {self._process.poll()})") from exc
        if status != "ok":
            raise ValueError(answer)
        return int(answer)

    def close(self) -> None:
        """End the child: EOF on its stdin once its job is done, killed if not gone in 30 s."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        with contextlib.suppress(OSError):  # a child already gone: a broken pipe
            stdin.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        stdout.close()


def _serve(path: Path, jobs: IO[bytes], answers: IO[bytes]) -> None:
    """The child's side of `_IndexProcess`: the parent's object stores, then jobs until EOF."""
    with contextlib.suppress(OSError):
        os.nice(10)  # forwarding first
    for settings in pickle.load(jobs):
        remember(settings)
    index = SearchIndex(path)
    try:
        while True:
            try:
                session_id, path, location = pickle.load(jobs)
            except EOFError:
                return
            try:
                answer: tuple[str, object] = (
                    "ok",
                    index_either(index, session_id, path, location),
                )
            except Exception as exc:
                answer = ("error", f"{type(exc).__name__}: {exc}")
            pickle.dump(answer, answers)
            answers.flush()
    finally:
        index.close()


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


if __name__ == "__main__":
    _answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(Path(sys.argv[1]), sys.stdin.buffer, _answers)
