"""The recordings browser: the catalogue as a table, shown as plain text."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from hoop_tui.workstation.app import Workstation
from storage.catalogue import SqliteCatalogue
from storage.recorder import RecordingSummary
from storage.schema import RecordingHeader

HOSTILE_REASON = "target said: [/bold] no [red]such[/red] [link=http://x]thing"


def catalogue_one(data_dir: Path, end_reason: str) -> str:
    header = RecordingHeader(
        session_id="a" * 32,
        user="alice",
        target="web1",
        protocol="ssh",
        started_at_us=1_764_000_000_000_000,
    )
    path = data_dir / "a.hrec"
    catalogue = SqliteCatalogue.in_data_dir(data_dir)
    catalogue.add_session(header, path)
    catalogue.finish_session(RecordingSummary(path, header, 1000, 10, 1_000_000, end_reason))
    return header.session_id


async def test_an_end_reason_is_shown_as_written_never_read_as_markup(tmp_path: Path) -> None:
    """End reasons carry words from targets and clients; brackets in them are text."""
    session_id = catalogue_one(tmp_path, HOSTILE_REASON)
    app = Workstation(tmp_path, offline=True)
    async with app.run_test(size=(160, 20)) as pilot:
        await pilot.pause()
        table = pilot.app.screen.query_one("#sessions", DataTable)
        row = table.get_row(session_id)
        assert str(row[-1]).endswith(f" | {HOSTILE_REASON}")  # (its file is not there)
        assert [str(cell) for cell in row[1:4]] == ["alice", "web1", "ssh"]


async def test_a_missing_or_mismatched_recording_is_shown_as_such(tmp_path: Path) -> None:
    """The catalogue is only a database: a row whose file is gone, or whose file's header
    names another user, says so in the table instead of passing for a good recording."""
    import sqlite3

    from storage.recorder import new_session_id, start_recording
    from storage.schema import EventType
    from tests.storage.helpers import make_header

    paths = {}
    for user in ("alice", "bob", "carol"):
        writer = start_recording(tmp_path, make_header(new_session_id(), user=user))
        writer.record(EventType.OUTPUT, 0, b"x")
        paths[user] = writer.close("client closed").path
    paths["alice"].unlink()
    with sqlite3.connect(tmp_path / "catalogue.db") as db:
        db.execute("UPDATE sessions SET user = 'mallory' WHERE id = ?", (paths["bob"].stem,))
    app = Workstation(tmp_path, offline=True)
    async with app.run_test(size=(200, 20)) as pilot:
        await pilot.pause()
        table = pilot.app.screen.query_one("#sessions", DataTable)
        ends = {
            str(table.get_row(p.stem)[1]): str(table.get_row(p.stem)[-1]) for p in paths.values()
        }
    assert ends["alice"] == "RECORDING missing | client closed"
    assert ends["mallory"].startswith(
        "RECORDING mismatch: the catalogue says user 'mallory', the recording 'bob'"
    )
    assert ends["carol"] == "client closed"
