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
        assert str(row[-1]) == HOSTILE_REASON
        assert [str(cell) for cell in row[1:4]] == ["alice", "web1", "ssh"]
