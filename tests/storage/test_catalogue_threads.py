"""The catalogue's open files do not grow with the threads that use it: a gateway's pools
(the default executor, the recording writers) each touched catalogue.db, and with one SQLite
connection per thread kept for the thread's life the soak saw idle open files +28% after a
burst of sessions (issue 15)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.recorder import new_session_id
from storage.search import SearchIndex
from tests.storage.helpers import make_header


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_threads_that_used_the_catalogue_keep_no_files_open(tmp_path: Path) -> None:
    catalogue = SqliteCatalogue(tmp_path / "catalogue.db")
    catalogue.find_sessions(SessionQuery())
    before = open_files()
    done = threading.Event()
    used = threading.Barrier(21)

    def worker() -> None:  # a pool thread: it records a session's start, then stays idle
        catalogue.add_session(make_header(new_session_id(), user="alice"), "x.hrec")
        used.wait()
        done.wait()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    used.wait()
    try:
        assert len(catalogue.find_sessions(SessionQuery())) == 20
        assert open_files() - before <= 3, open_files() - before  # one connection at most
    finally:
        done.set()
        for thread in threads:
            thread.join()


BIG = 2 << 20  # a summary's size past which the indexing process takes the recording


@pytest.mark.programs  # the indexing process
def test_indexing_closed_recordings_leaves_no_files_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed recordings are indexed for search in a process of their own (a large one would
    hold the GIL against forwarding), driven by one thread per index, which ends it once no
    more work comes: the soak's idle gateway once held 33 search.db files open after a burst
    of sessions."""
    import gc

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    import replay.search
    from replay.search import index_when_closed
    from storage.writer import RecordingSummary
    from tests.storage.helpers import SAMPLE_EVENTS, write_recording

    signer = Ed25519PrivateKey.generate()
    summaries = []
    for _ in range(8):
        header = make_header(new_session_id())
        path = tmp_path / f"{header.session_id}.hrec"
        write_recording(path, SAMPLE_EVENTS, signer, header=header)
        summaries.append(RecordingSummary(path, header, BIG, 0, 0, "closed"))

    def not_here(*args: object) -> int:
        raise AssertionError("indexed in the gateway's own process")

    monkeypatch.setattr(replay.search, "index_recording", not_here)
    index_it = index_when_closed(tmp_path)
    index_it(summaries[0], summaries[0].path)  # the file and its tables exist from here on
    _join_indexers()
    gc.collect()
    before = open_files()
    gc.disable()  # as between two collections of a busy gateway
    try:
        for summary in summaries[1:]:
            index_it(summary, summary.path)
        _join_indexers()
        assert open_files() - before <= 0, open_files() - before
    finally:
        gc.enable()
    indexed = SearchIndex.in_data_dir(tmp_path)
    try:
        assert indexed.indexed_sessions() == {s.header.session_id for s in summaries}
    finally:
        indexed.close()


def test_a_small_recording_is_indexed_on_the_thread_without_a_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting a process costs more than indexing a short session: up to a megabyte the
    indexer's thread does it (quick tests may not start programs, so this one would fail)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from replay.search import index_when_closed
    from storage.writer import RecordingSummary
    from tests.storage.helpers import SAMPLE_EVENTS, write_recording

    header = make_header(new_session_id())
    path = tmp_path / f"{header.session_id}.hrec"
    write_recording(path, SAMPLE_EVENTS, Ed25519PrivateKey.generate(), header=header)
    index_it = index_when_closed(tmp_path)
    index_it(RecordingSummary(path, header, path.stat().st_size, 0, 0, "closed"), path)
    _join_indexers()
    indexed = SearchIndex.in_data_dir(tmp_path)
    try:
        assert indexed.indexed_sessions() == {header.session_id}
    finally:
        indexed.close()


def _join_indexers() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("index-"):
            thread.join()


@pytest.mark.programs  # the indexing process
def test_a_recording_that_cannot_be_read_is_logged_and_the_next_is_indexed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from replay.search import index_when_closed
    from storage.writer import RecordingSummary
    from tests.storage.helpers import SAMPLE_EVENTS, write_recording

    header = make_header(new_session_id())
    path = tmp_path / f"{header.session_id}.hrec"
    write_recording(path, SAMPLE_EVENTS, Ed25519PrivateKey.generate(), header=header)
    good = RecordingSummary(path, header, BIG, 0, 0, "closed")
    gone = RecordingSummary(tmp_path / "gone.hrec", make_header(new_session_id()), BIG, 0, 0, "x")
    index_it = index_when_closed(tmp_path)
    index_it(gone, tmp_path / "also-gone.hrec")  # neither where written nor where catalogued
    index_it(good, good.path)
    _join_indexers()
    assert f"session {gone.header.session_id} not indexed for search" in caplog.text
    indexed = SearchIndex.in_data_dir(tmp_path)
    try:
        assert indexed.indexed_sessions() == {header.session_id}
    finally:
        indexed.close()
