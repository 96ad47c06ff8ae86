"""`hoop-tui state migrate`, `state copy --from` and `status`, run as a person would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from storage.catalogue import SqliteCatalogue
from storage.schema import RecordingHeader
from storage.state import Hold


def hoop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hoop_tui", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def fleet_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\ndata_dir = "data"\ninstance = "gw-a"\n\n[state]\nurl = "{url}"\n{extra}'
    )
    return config


def embedded_data_dir(tmp_path: Path) -> Path:
    """An embedded gateway's data directory: one held command, one recorded session."""
    data = tmp_path / "old"
    data.mkdir()
    db = sqlite3.connect(data / "state.db")
    db.executescript(
        "CREATE TABLE holds (id TEXT PRIMARY KEY, status TEXT, created_at REAL, body TEXT);"
        "CREATE TABLE grants (id TEXT PRIMARY KEY, status TEXT, requested_at REAL, body TEXT);"
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, actor TEXT,"
        " action TEXT, subject TEXT, detail TEXT);"
    )
    now = time.time()
    hold = Hold(
        "h-0a0b0c",
        "s1",
        "old-gw",
        "alice",
        "web1",
        "cat /etc/shadow",
        "etc",
        ["ops"],
        1,
        now,
        now + 60,
    )
    db.execute(
        "INSERT INTO holds VALUES (?, ?, ?, ?)",
        (hold.id, "pending", now, json.dumps(hold.to_json())),
    )
    db.execute(
        "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
        (now, "alice", "hold_requested", hold.id, "{}"),
    )
    db.commit()
    db.close()
    header = RecordingHeader("5e551011", "alice", "web1", "ssh", int(now * 1e6), "10.1.1.1:2")
    SqliteCatalogue.in_data_dir(data).add_session(header, data / "x.hrec")
    return data


def test_migrate_then_copy_an_embedded_gateway_then_status(tmp_path: Path, state_url: str) -> None:
    config = fleet_config(tmp_path, state_url)
    before = hoop("status", "--config", str(config))
    assert before.returncode == 1 and "hoop-tui state migrate" in before.stderr

    first = hoop("state", "migrate", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "applied 1:" in first.stdout and "schema version 1" in first.stdout
    again = hoop("state", "migrate", "--config", str(config))
    assert again.returncode == 0 and "applied" not in again.stdout

    old = embedded_data_dir(tmp_path)
    copied = hoop("state", "copy", "--from", str(old), "--config", str(config))
    assert copied.returncode == 0, copied.stderr
    assert "1 holds, 0 grants, 1 audit, 1 sessions" in copied.stdout
    twice = hoop("state", "copy", "--from", str(old), "--config", str(config))
    assert "0 holds, 0 grants, 0 audit, 0 sessions" in twice.stdout

    status = hoop("status", "--json", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pending_holds"] == 1


def test_a_password_in_the_url_is_refused_and_one_from_the_environment_is_used(
    tmp_path: Path, state_url: str
) -> None:
    with_password = state_url.replace("postgres@", "postgres:hunter2@")
    result = hoop("state", "migrate", "--config", str(fleet_config(tmp_path, with_password)))
    assert result.returncode == 1
    assert "state.url" in result.stderr and "password_env" in result.stderr
    assert "hunter2" not in result.stderr

    config = fleet_config(tmp_path, state_url, 'password_env = "HOOP_TEST_STATE_PW"\n')
    unset = hoop("state", "migrate", "--config", str(config))
    assert unset.returncode == 1 and "HOOP_TEST_STATE_PW" in unset.stderr
    ok = hoop("state", "migrate", "--config", str(config), env={"HOOP_TEST_STATE_PW": "x"})
    assert ok.returncode == 0, ok.stderr  # trust auth: any password does
