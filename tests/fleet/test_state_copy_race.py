"""`hoop-tui state copy --from` run twice at once (two operators, or a retry while the first is
still going) copies an embedded gateway's audit log once, not twice."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.fleet.test_state_command import fleet_config, hoop


def _audit_only_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "old"
    data.mkdir()
    db = sqlite3.connect(data / "state.db")
    db.executescript(
        "CREATE TABLE holds (id TEXT PRIMARY KEY, status TEXT, created_at REAL, body TEXT);"
        "CREATE TABLE grants (id TEXT PRIMARY KEY, status TEXT, requested_at REAL, body TEXT);"
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, actor TEXT,"
        " action TEXT, subject TEXT, detail TEXT);"
    )
    db.execute(
        "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (time.time(), "bob", "session_ended", "5e551011", '{"reason": "x"}'),
    )
    db.commit()
    db.close()
    return data


def test_two_copies_at_once_copy_the_audit_log_once(tmp_path: Path, state_url: str) -> None:
    config = fleet_config(tmp_path, state_url)
    migrated = hoop("state", "migrate", "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    old = _audit_only_data_dir(tmp_path)
    argv = [sys.executable, "-m", "hoop_tui", "state", "copy", "--from", str(old)]
    with psycopg.connect(state_url) as blocker:
        # writes to the audit table wait until we let go: both copies get as far as they can
        blocker.execute("LOCK TABLE audit IN EXCLUSIVE MODE")
        copies = [
            subprocess.Popen([*argv, "--config", str(config)], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        with psycopg.connect(state_url, autocommit=True) as watcher:
            while True:  # both copies waiting on a lock
                row = watcher.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.datname = current_database()"
                ).fetchone()
                if row is not None and row[0] >= 2:
                    break
                assert time.monotonic() < deadline, "the copies never reached the audit table"
                assert all(c.poll() is None for c in copies)
                time.sleep(0.1)
        blocker.commit()
    for copy in copies:
        out, _ = copy.communicate(timeout=60)
        assert copy.returncode == 0, out
    with psycopg.connect(state_url) as conn:
        rows = conn.execute(
            "SELECT action, count(*) FROM audit WHERE action IN ('state_copied', 'session_ended')"
            " GROUP BY action ORDER BY action"
        ).fetchall()
    assert rows == [("session_ended", 1), ("state_copied", 1)]
