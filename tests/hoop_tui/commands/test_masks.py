"""`hoop-tui masks dry-run` as a user runs it: a real process, real recordings and catalogue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from storage.catalogue import SqliteCatalogue
from storage.schema import EventType
from storage.signing import load_or_create_signing_key
from tests.storage.helpers import make_header, write_recording

pytestmark = pytest.mark.programs

RULES = """
[[masks]]
name = "cards"
detector = "credit_card"
style = "last4"

[[masks]]
name = "passwords"
column = "password"
"""


def hoop(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "hoop_tui.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def data_dir(tmp_path) -> Path:
    directory = tmp_path / "data"
    key = load_or_create_signing_key(directory)
    catalogue = SqliteCatalogue.in_data_dir(directory)
    for number in range(3):
        header = make_header(f"{number:032x}", started_at_us=1_700_000_000_000_000 + number)
        path = directory / f"{number}.hrec"
        events = [
            (EventType.OUTPUT, 1_000, (0, b"card 4111 1111 ")),
            (EventType.OUTPUT, 1_050, (0, b"1111 1111\r\n")),
            (EventType.SQL_RESULT, 2_000, (["password"], 1, [["x"]], 3)),
        ]
        write_recording(path, events, key, header=header)
        catalogue.add_session(header, path)
    return directory


def test_dry_run_over_the_last_n_sessions(data_dir, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    result = hoop(
        "masks", "dry-run", "--rule-file", str(rules), "--last", "2", "--data-dir", str(data_dir)
    )
    assert result.returncode == 0, result.stderr
    assert "2 recording(s) scanned" in result.stdout
    assert "cards" in result.stdout and "2 match(es) in 2 session(s)" in result.stdout
    assert "4111" not in result.stdout
    assert f"{2:032x}" in result.stdout and f"{0:032x}" not in result.stdout  # newest first
    as_json = json.loads(
        hoop(
            "masks", "dry-run", "--rule-file", str(rules), "--data-dir", str(data_dir), "--json"
        ).stdout
    )
    assert as_json["rules"]["cards"]["count"] == 3
    assert as_json["rules"]["passwords"]["count"] == 3
    sample = as_json["samples"][0]
    assert (sample["rule"], sample["position"], sample["length"]) == ("cards", 5, 19)


def test_dry_run_on_given_files(data_dir, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    result = hoop(
        "masks",
        "dry-run",
        "--rule-file",
        str(rules),
        "--recording",
        str(data_dir / "1.hrec"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sessions"] == [f"{1:032x}"]


def test_a_bad_rule_file_is_one_line_naming_rule_and_key(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[masks]]\nname = "x"\npattern = "a(b"\n')
    result = hoop("masks", "dry-run", "--rule-file", str(rules), "--recording", "none.hrec")
    assert result.returncode != 0
    assert "masks #1 (x).pattern: not a valid regular expression" in result.stderr
    assert "Traceback" not in result.stderr
    missing = hoop("masks", "dry-run", "--rule-file", str(tmp_path / "nope.toml"))
    assert "no such file" in missing.stderr
