"""Recordings in a data directory: the file, the key and the catalogue kept in step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.recorder import (
    CRASH_REASON,
    RecordingFailed,
    new_session_id,
    recover_unfinished,
    start_recording,
)
from storage.schema import EventType
from storage.signing import PUBLIC_KEY_NAME, load_public_key
from storage.verify import verify_recording
from tests.storage.helpers import make_header

REPO = Path(__file__).resolve().parents[2]


def _header(user="alice", target="web1", started=None):
    return make_header(
        new_session_id(), user=user, target=target, started_at_us=started or time.time_ns() // 1000
    )


def test_a_recording_is_catalogued_from_start_to_end(tmp_path):
    writer = start_recording(tmp_path, _header())
    catalogue = SqliteCatalogue.in_data_dir(tmp_path)
    (live,) = catalogue.find_sessions(SessionQuery(user="alice"))
    assert live.ended_at_us is None and live.path == str(writer.path)
    writer.record(EventType.VERDICT, 0, "deny", "r1", "no")
    writer.record(EventType.HOLD_REQUESTED, "h1", "systemctl restart x", "r2", ["oncall"])
    summary = writer.close("client closed")
    row = catalogue.get_session(writer.header.session_id)
    assert row is not None
    assert row.end_reason == "client closed"
    assert row.denies == 1 and row.holds == 1 and row.events == 3
    assert row.size == summary.size == writer.path.stat().st_size
    key = load_public_key(tmp_path / PUBLIC_KEY_NAME)
    assert verify_recording(writer.path, key).ok
    assert (tmp_path / "recording_key").stat().st_mode & 0o777 == 0o600


def test_catalogue_search_by_user_target_and_time(tmp_path):
    catalogue = SqliteCatalogue.in_data_dir(tmp_path)
    day = 86_400 * 1_000_000
    base = 1_700_000_000_000_000
    for user, target, started in [
        ("alice", "web1", base),
        ("alice", "db1", base + day),
        ("bob", "web1", base + 2 * day),
    ]:
        start_recording(tmp_path, _header(user, target, started), catalogue=catalogue).close("x")
    assert [r.target for r in catalogue.find_sessions(SessionQuery(user="alice"))] == [
        "db1",
        "web1",
    ]
    assert [r.user for r in catalogue.find_sessions(SessionQuery(target="web1"))] == [
        "bob",
        "alice",
    ]
    window = SessionQuery(since_us=base + day // 2, until_us=base + day + 1)
    assert [r.target for r in catalogue.find_sessions(window)] == ["db1"]


def test_an_unwritable_data_dir_refuses_the_session(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    with pytest.raises(RecordingFailed, match="cannot start a recording"):
        start_recording(blocker, _header())


@pytest.mark.programs
def test_sessions_of_a_crashed_gateway_are_recovered(tmp_path):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from pathlib import Path
                from storage.recorder import start_recording, new_session_id
                from storage.schema import EventType
                from tests.storage.helpers import make_header
                header = make_header(new_session_id(), gateway_id="gw-1",
                                     started_at_us=time.time_ns() // 1000)
                writer = start_recording(Path(sys.argv[1]), header)
                writer.record(EventType.COMMAND, 0, "shell", "ls")
                writer.record(EventType.VERDICT, 0, "allow", "default", "")
                time.sleep(0.5)
                print("ready", flush=True)
                time.sleep(60)
                """
            ),
            str(tmp_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    child.kill()
    child.wait()
    catalogue = SqliteCatalogue.in_data_dir(tmp_path)
    assert recover_unfinished(catalogue, "another-gateway") == []
    (recovered,) = recover_unfinished(catalogue, "gw-1")
    row = catalogue.get_session(recovered)
    assert row is not None
    assert row.end_reason == CRASH_REASON
    assert row.counts == {"command": 1, "verdict": 1}
    assert row.size == os.path.getsize(row.path)
    assert recover_unfinished(catalogue, "gw-1") == []
