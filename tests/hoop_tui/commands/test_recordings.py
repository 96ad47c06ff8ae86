"""The recording commands as a user runs them: real `hoop-tui` processes, real files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.recorder import new_session_id, start_recording
from storage.schema import EventType
from storage.search import SearchIndex
from storage.signing import load_or_create_signing_key
from tests.storage.helpers import SAMPLE_EVENTS, make_header, write_recording

pytestmark = pytest.mark.programs


def hoop(*args: str, cwd: Path | None = None, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "hoop_tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        timeout=60,
    )


@pytest.fixture
def data_dir(tmp_path) -> Path:
    directory = tmp_path / "data"
    load_or_create_signing_key(directory)
    return directory


@pytest.fixture
def recording(data_dir) -> Path:
    path = data_dir / "s.hrec"
    write_recording(path, SAMPLE_EVENTS, load_or_create_signing_key(data_dir))
    return path


def test_info_shows_who_where_and_what(recording):
    result = hoop("info", str(recording))
    assert result.returncode == 0, result.stderr
    assert "user:       alice" in result.stdout
    assert "target:     web1 (ssh)" in result.stdout
    assert "complete, ended: client closed" in result.stdout
    as_json = json.loads(hoop("info", str(recording), "--json").stdout)
    assert as_json["counts"]["output"] == 3
    assert as_json["complete"] is True


def test_verify_passes_an_intact_file_and_names_the_bad_offset_otherwise(data_dir, recording):
    ok = hoop("verify", str(recording), "--data-dir", str(data_dir))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ": OK," in ok.stdout
    damaged = bytearray(recording.read_bytes())
    damaged[400] ^= 0x40
    bad = recording.with_name("bad.hrec")
    bad.write_bytes(bytes(damaged))
    result = hoop("verify", str(recording), str(bad), "--data-dir", str(data_dir))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].endswith("signed to the end (00:00:02.500)")
    assert "FAILED at offset" in lines[1] and "last good time" in lines[1]
    assert "Traceback" not in result.stderr


def test_verify_with_an_explicit_key_and_a_wrong_one(tmp_path, recording, data_dir):
    right = hoop("verify", str(recording), "--key", str(data_dir / "recording_key.pub"))
    assert right.returncode == 0
    other = tmp_path / "other.pem"
    from cryptography.hazmat.primitives import serialization

    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    wrong = hoop("verify", str(recording), "--key", str(other))
    assert wrong.returncode == 1
    assert "not by the given key" in wrong.stdout


def test_verify_without_any_key_says_what_to_do(tmp_path, recording):
    result = hoop("verify", str(recording), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("hoop-tui: ")
    assert "--config" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a hoop-tui recording"),
        (b"garbage" * 10, "not a hoop-tui recording"),
        (b"HOOPREC\x07" + b"\0" * 50, "unsupported format version 7"),
        (b"HOOPREC\x01H\xff\xff\xff\xff", "block claims 4294967295 bytes"),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.hrec"
    path.write_bytes(content)
    for command in ("info", "export"):
        result = hoop(command, str(path))
        assert result.returncode == 1
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert "no such file" in hoop("info", str(tmp_path / "missing")).stderr


def test_export_text_is_a_readable_transcript(recording):
    result = hoop("export", str(recording), "--format", "text")
    assert result.returncode == 0, result.stderr
    assert "a.txt  b.txt" in result.stdout
    assert "caf\u00e9 \u6f22\u5b57" in result.stdout
    assert "[00:00:00.600] command (shell): ls" in result.stdout
    assert "\x1b" not in result.stdout


def test_export_jsonl_is_lossless(tmp_path, data_dir):
    path = data_dir / "bin.hrec"
    events = [(EventType.OUTPUT, 10, (0, b"\xff\xfe raw")), (EventType.OUTPUT, 20, (0, b"ok"))]
    write_recording(path, events, load_or_create_signing_key(data_dir))
    lines = [
        json.loads(x) for x in hoop("export", str(path), "--format", "jsonl").stdout.splitlines()
    ]
    assert lines[0] == {"t": 1e-05, "type": "output", "channel": 0, "data_b64": "//4gcmF3"}
    assert lines[1]["data"] == "ok"
    assert lines[-1]["type"] == "session_end"


def test_export_asciicast_plays_in_asciinema(tmp_path, recording):
    cast = tmp_path / "s.cast"
    result = hoop("export", str(recording), "--format", "asciicast", "-o", str(cast))
    assert result.returncode == 0, result.stderr
    header = json.loads(cast.read_text().splitlines()[0])
    assert header["version"] == 2 and header["width"] == 80
    shown = subprocess.run(
        ["asciinema", "cat", str(cast)], capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "$ a.txt  b.txt\n$ caf\u00e9 \u6f22\u5b57\n"  # text mode folds CRLF


def test_import_cast_round_trip_into_the_catalogue(tmp_path, data_dir, recording):
    cast = tmp_path / "s.cast"
    hoop("export", str(recording), "--format", "asciicast", "-o", str(cast))
    result = hoop("import-cast", str(cast), "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    imported = Path(result.stdout.split(" into ")[1].strip())
    assert hoop("verify", str(imported), "--data-dir", str(data_dir)).returncode == 0
    again = tmp_path / "again.cast"
    hoop("export", str(imported), "--format", "asciicast", "-o", str(again))
    original_events = cast.read_text().splitlines()[1:]
    assert again.read_text().splitlines()[1:] == original_events
    listed = json.loads(hoop("sessions", "--data-dir", str(data_dir), "--json").stdout)
    assert [row["protocol"] for row in listed] == ["asciicast"]


def test_import_cast_rejects_bad_casts_with_the_line(tmp_path, data_dir):
    cast = tmp_path / "bad.cast"
    cast.write_text('{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "hi"]\n[oops\n')
    result = hoop("import-cast", str(cast), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert f"{cast}:3: not JSON" in result.stderr
    cast.write_text('{"version": 1}\n')
    assert (
        "not an asciicast v2 header"
        in hoop("import-cast", str(cast), "--data-dir", str(data_dir)).stderr
    )


def _catalogued(data_dir: Path, user: str, target: str, age_days: float) -> Path:
    started = int((time.time() - age_days * 86400) * 1_000_000)
    header = make_header(new_session_id(), user=user, target=target, started_at_us=started)
    writer = start_recording(data_dir, header)
    writer.record(EventType.OUTPUT, 0, b"x")
    return writer.close("client closed").path


def test_sessions_filters_and_prune_removes_files_with_rows(tmp_path, data_dir):
    old = _catalogued(data_dir, "alice", "web1", 100)
    recent = _catalogued(data_dir, "bob", "db1", 1)
    listing = hoop("sessions", "--data-dir", str(data_dir))
    assert "alice" in listing.stdout and "bob" in listing.stdout
    only_bob = json.loads(
        hoop("sessions", "--data-dir", str(data_dir), "--user", "bob", "--json").stdout
    )
    assert [r["target"] for r in only_bob] == ["db1"]
    since = json.loads(
        hoop("sessions", "--data-dir", str(data_dir), "--since", "7d", "--json").stdout
    )
    assert [r["user"] for r in since] == ["bob"]
    searched = hoop("search", "--data-dir", str(data_dir), "--json", "x")  # indexes both
    assert searched.returncode in (0, 1), searched.stderr
    assert len(SearchIndex.in_data_dir(data_dir).indexed_sessions()) == 2
    dry = hoop("prune", "--older-than", "90d", "--dry-run", "--data-dir", str(data_dir))
    assert "would remove 1 session" in dry.stdout and old.exists()
    result = hoop("prune", "--older-than", "90d", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "removed 1 session(s)" in result.stdout
    assert not old.exists() and recent.exists()
    rows = SqliteCatalogue.in_data_dir(data_dir).find_sessions(SessionQuery())
    assert [r.user for r in rows] == ["bob"]
    assert SearchIndex.in_data_dir(data_dir).indexed_sessions() == {rows[0].id}
    bad = hoop("prune", "--older-than", "ninety days", "--data-dir", str(data_dir))
    assert bad.returncode == 1 and "not a duration like 90d" in bad.stderr


def test_config_file_names_the_data_dir(tmp_path, data_dir):
    _catalogued(data_dir, "carol", "web9", 0)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "{data_dir}"\n')
    assert "carol" in hoop("sessions", cwd=tmp_path).stdout
    assert "carol" in hoop("sessions", "--config", str(config)).stdout
    config.write_text("[gateway]\ndata_dir = 5\n")
    broken = hoop("sessions", cwd=tmp_path)
    assert broken.returncode == 1
    assert "gateway.toml: gateway.data_dir: must be a non-empty string" in broken.stderr


def test_export_applies_todays_masks_in_every_format(tmp_path, data_dir):
    """A rule added after the session hides what was recorded before it, in all formats; a
    bad configuration is one line and no output file."""
    path = data_dir / "old.hrec"
    events = [
        (EventType.OUTPUT, 10, (0, b"$ cat cards\r\ncard 4111 1111 1111 1111 on file\r\n")),
        (EventType.COMMAND, 20, (0, "shell", "echo 4111111111111111")),
    ]
    write_recording(path, events, load_or_create_signing_key(data_dir))
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\ndata_dir = "{data_dir}"\n'
        '[[masks]]\nname = "cards"\ndetector = "credit_card"\nstyle = "last4"\n'
    )
    for fmt in ("text", "jsonl", "asciicast"):
        plain = hoop("export", str(path), "--format", fmt)
        assert "4111 1111 1111 1111" in plain.stdout
        masked = hoop("export", str(path), "--format", fmt, "--masks", str(config))
        assert masked.returncode == 0, masked.stderr
        assert "4111 1111 1111 1111" not in masked.stdout
        assert "4111111111111111" not in masked.stdout
        assert "**** **** **** 1111 on file" in masked.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\ndata_dir = "x"\n[[masks]]\nname = "x"\npattern = "("\n')
    out = tmp_path / "out.txt"
    result = hoop("export", str(path), "--masks", str(bad), "-o", str(out))
    assert result.returncode == 1
    assert "masks #1 (x).pattern" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not out.exists()


# -- a recording is bound to its session: its place and its catalogue row -------------------------


def _two_sessions(data_dir: Path) -> tuple[Path, Path]:
    alice = _catalogued(data_dir, "alice", "web1", 0)
    carol = _catalogued(data_dir, "carol", "db1", 0)
    return alice, carol


def test_a_recording_copied_over_another_sessions_file_fails_verify(data_dir):
    alice, carol = _two_sessions(data_dir)
    carol_id = carol.stem
    ok = hoop("verify", str(alice), str(carol), "--data-dir", str(data_dir))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{alice}: OK, session {alice.stem}, user alice, target web1 (ssh), " in ok.stdout
    alice.write_bytes(carol.read_bytes())  # carol's session passed off as alice's
    result = hoop("verify", str(alice), "--data-dir", str(data_dir))
    assert result.returncode == 1
    who = f"session {carol_id}, user carol, target db1 (ssh)"
    assert f"{alice}: FAILED, {who}, but " in result.stdout
    assert "this file was moved, renamed or copied over another's" in result.stdout
    listing = hoop("sessions", "--data-dir", str(data_dir))
    (alice_line,) = [line for line in listing.stdout.splitlines() if " alice " in line]
    assert f"RECORDING mismatch: the file holds session {carol_id}" in alice_line
    assert "the catalogue says user 'alice', the recording 'carol'" in alice_line
    (carol_line,) = [line for line in listing.stdout.splitlines() if " carol " in line]
    assert "RECORDING" not in carol_line


def test_an_edited_catalogue_row_is_shown_and_fails_verify(data_dir):
    alice, _ = _two_sessions(data_dir)
    with sqlite3.connect(data_dir / "catalogue.db") as db:
        db.execute("UPDATE sessions SET user = 'bob' WHERE id = ?", (alice.stem,))
    listing = hoop("sessions", "--data-dir", str(data_dir), "--user", "bob")
    assert "RECORDING mismatch: the catalogue says user 'bob', the recording 'alice'" in (
        listing.stdout
    )
    as_json = json.loads(hoop("sessions", "--data-dir", str(data_dir), "--json").stdout)
    problems = {row["user"]: row["recording_problem"] for row in as_json}
    assert problems["carol"] is None and "user 'bob'" in problems["bob"]
    result = hoop("verify", str(alice), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert f"session {alice.stem}, user alice, target web1" in result.stdout
    assert "the catalogue says user 'bob', the recording 'alice'" in result.stdout


def test_a_recording_moved_away_is_listed_as_missing_and_verify_all_finds_it(tmp_path, data_dir):
    alice, carol = _two_sessions(data_dir)
    clean = hoop("verify", "--all", "--data-dir", str(data_dir))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "2 recording(s), 2 catalogue row(s), 0 problem(s)" in clean.stdout
    alice.rename(tmp_path / "elsewhere.hrec")
    listing = hoop("sessions", "--data-dir", str(data_dir))
    (alice_line,) = [line for line in listing.stdout.splitlines() if " alice " in line]
    assert alice_line.endswith(f"{alice}  RECORDING missing")
    assert " client closed " in alice_line
    result = hoop("verify", "--all", "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert (
        f"{alice}: FAILED, the catalogue's session {alice.stem} (user alice, target web1) "
        "has no recording there: missing"
    ) in result.stdout
    assert f"{carol}: OK, session {carol.stem}, user carol" in result.stdout
    planted = carol.with_name(f"{alice.stem}.hrec")  # carol's file planted as alice's
    planted.write_bytes(carol.read_bytes())
    result = hoop("verify", "--all", "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert f"{planted}: FAILED, session {carol.stem}, user carol" in result.stdout
    assert "1 problem(s)" not in result.stdout  # the planted file and alice's row both fail


def test_a_row_pointed_at_another_sessions_file_is_caught(data_dir):
    """UPDATE sessions SET path = <carol's file> for alice's row: the listing and verify see
    that the file holds another session, whether alice's own file is still there or not."""
    alice, carol = _two_sessions(data_dir)
    with sqlite3.connect(data_dir / "catalogue.db") as db:
        db.execute("UPDATE sessions SET path = ? WHERE id = ?", (str(carol), alice.stem))
    listing = hoop("sessions", "--data-dir", str(data_dir), "--user", "alice")
    assert f"RECORDING mismatch: the file holds session {carol.stem}" in listing.stdout
    result = hoop("verify", "--all", "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert f"the catalogue files this session at {carol}" in result.stdout
    alice.unlink()
    result = hoop("verify", "--all", "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert f"the catalogue's session {alice.stem} (user alice, target web1)" in result.stdout


def test_a_session_id_stands_for_its_recording_and_sessions_shows_the_file(tmp_path, data_dir):
    """`hoop-tui info 0cebb3c3` said "no such file"; `sessions` showed no path (issue 17, 6)."""
    alice, carol = _two_sessions(data_dir)
    listing = hoop("sessions", "--data-dir", str(data_dir))
    assert str(alice) in listing.stdout and str(carol) in listing.stdout
    short = alice.stem[:8]
    info = hoop("info", short, "--data-dir", str(data_dir), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["header"]["session_id"] == alice.stem
    verified = hoop("verify", short, "--data-dir", str(data_dir))
    assert verified.returncode == 0 and alice.stem in verified.stdout
    text = hoop("export", alice.stem, "--data-dir", str(data_dir))
    assert text.returncode == 0 and text.stdout.startswith(f"# session {alice.stem}")
    missing = hoop("info", "abcdef12", "--data-dir", str(data_dir))
    assert missing.returncode == 1
    assert missing.stderr == f"hoop-tui: abcdef12: no such file, nor a session id in {data_dir}\n"


# -- issue 20, attack: a live recording, a missing file, a name that is not the session ----------


def test_a_recording_still_being_written_is_intact_so_far_not_failed(data_dir):
    """A live session's file has its header and frames but no trailer yet, maybe half a block:
    verify says so and does not count it as a problem; once it ends, it is OK. The same cut
    in a session the catalogue says has ended is still a failure."""
    header = make_header(new_session_id(), user="alice", target="web1")
    writer = start_recording(data_dir, header)
    writer.record(EventType.OUTPUT, 0, b"hello")
    live = hoop("verify", header.session_id, "--data-dir", str(data_dir))
    assert live.returncode == 0, live.stdout + live.stderr
    assert "still being written, intact so far" in live.stdout
    assert "FAILED" not in live.stdout and "offset" not in live.stdout
    every = hoop("verify", "--all", "--data-dir", str(data_dir))
    assert every.returncode == 0, every.stdout
    assert "still being written, intact so far" in every.stdout
    path = writer.close("client closed").path
    assert ": OK, session" in hoop("verify", str(path), "--data-dir", str(data_dir)).stdout
    ended = _catalogued(data_dir, "bob", "web1", 0)
    whole = ended.read_bytes()
    ended.write_bytes(whole[: len(whole) // 2])  # a cut inside a block, before the trailer
    cut = hoop("verify", str(ended), "--data-dir", str(data_dir))
    assert cut.returncode == 1 and "FAILED at offset" in cut.stdout
    with sqlite3.connect(data_dir / "catalogue.db") as db:
        db.execute(
            "UPDATE sessions SET ended_at_us = NULL, end_reason = NULL WHERE id = ?",
            (ended.stem,),
        )
    # the attack: cut the file and clear the row's end. No writer holds the file (its flock),
    # so the row's word is not enough to pass it off as still being written (issue 15)
    midway = hoop("verify", str(ended), "--data-dir", str(data_dir))
    assert midway.returncode == 1, midway.stdout
    assert f"{ended}: FAILED at offset" in midway.stdout
    assert "still being written" not in midway.stdout


def test_a_recording_its_gateway_died_writing_ended_without_a_close(data_dir):
    """kill -9 of the gateway: the file stops after its last signed checkpoint and the next
    start records the crash in the row ("(recovered)"). verify says so, with how far it is
    signed, and it is no failure; the same cut file with a row saying it ended normally is."""
    header = make_header(new_session_id(), user="alice", target="web1")
    writer = start_recording(data_dir, header)
    writer.record(EventType.OUTPUT, 0, b"hello")
    path = writer.close("client closed").path
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # what kill -9 leaves: no trailer
    with sqlite3.connect(data_dir / "catalogue.db") as db:
        db.execute(
            "UPDATE sessions SET end_reason = ? WHERE id = ?",
            ("gateway stopped unexpectedly (recovered)", header.session_id),
        )
    crashed = hoop("verify", "--all", "--data-dir", str(data_dir))
    assert crashed.returncode == 0, crashed.stdout
    assert (
        f"{path}: ended without a close (gateway stopped unexpectedly (recovered)), intact and "
        "signed up to "
    ) in crashed.stdout
    assert "1 ended without a close" in crashed.stdout
    with sqlite3.connect(data_dir / "catalogue.db") as db:
        db.execute(
            "UPDATE sessions SET end_reason = 'client closed' WHERE id = ?", (header.session_id,)
        )
    normal = hoop("verify", str(path), "--data-dir", str(data_dir))
    assert normal.returncode == 1 and f"{path}: FAILED at offset" in normal.stdout


def test_verify_of_a_missing_file_names_no_offset(data_dir, tmp_path):
    gone = tmp_path / "gone.hrec"
    result = hoop("verify", str(gone), "--data-dir", str(data_dir))
    assert result.returncode == 1
    assert f"{gone}: FAILED: cannot read: No such file or directory" in result.stdout
    assert "offset" not in result.stdout and "last good time" not in result.stdout


def test_a_symlink_at_another_sessions_name_does_not_verify(data_dir):
    """alice's file replaced by a symbolic link to carol's: resolving the link finds carol's
    file at carol's place, but the name verified is alice's."""
    alice, carol = _two_sessions(data_dir)
    alice.unlink()
    alice.symlink_to(carol)
    for argument in (str(alice), alice.stem):
        result = hoop("verify", argument, "--data-dir", str(data_dir))
        assert result.returncode == 1, result.stdout
        assert f"{alice}: FAILED, session {carol.stem}, user carol" in result.stdout


def test_verify_by_session_id_checks_the_file_holds_that_session(data_dir):
    """alice's row pointed at carol's file: `verify <alice's id>` must not answer OK with
    carol's recording."""
    alice, carol = _two_sessions(data_dir)
    with sqlite3.connect(data_dir / "catalogue.db") as db:
        db.execute("UPDATE sessions SET path = ? WHERE id = ?", (str(carol), alice.stem))
    result = hoop("verify", alice.stem, "--data-dir", str(data_dir))
    assert result.returncode == 1, result.stdout
    assert f"asked for session {alice.stem}" in result.stdout


def test_an_imported_cast_does_not_verify_as_a_gateway_session(tmp_path, data_dir):
    """A cast that says it is alice's on web1, imported: the gateway signs it, so its chain is
    valid, but verify and sessions must not pass it off as a session alice had through the
    gateway: they say it was imported and from where."""
    cast = tmp_path / "web1.cast"
    cast.write_text(
        '{"version": 2, "width": 80, "height": 24, "user": "alice", "title": "web1"}\n'
        '[0.5, "o", "rm -rf /\\r\\n"]\n'
    )
    result = hoop("import-cast", str(cast), "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    imported = Path(result.stdout.split(" into ")[1].strip())
    verified = hoop("verify", str(imported), "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stdout
    assert "user alice, target web1 (imported from web1.cast, not recorded by the gateway)" in (
        verified.stdout
    )
