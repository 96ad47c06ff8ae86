"""The workstation's search across recordings: `f` in the browser, the hits, and Enter opening
the replay at the hit (issue 17, Add)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from textual.widgets import DataTable, Input

from hoop_tui.workstation.app import Workstation
from hoop_tui.workstation.replay import PlaybackScreen
from hoop_tui.workstation.search import SearchResultsScreen
from storage.catalogue import SqliteCatalogue
from storage.recorder import recording_path
from storage.schema import EventType
from storage.writer import RecordingSummary
from tests.storage.helpers import make_header, write_recording


def _recorded(data_dir, number: int, user: str, events) -> None:
    header = make_header(f"{number:032x}", user=user, started_at_us=1_764_000_000_000_000)
    path = recording_path(data_dir, header)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_recording(path, events, Ed25519PrivateKey.generate(), header=header)
    catalogue = SqliteCatalogue.in_data_dir(data_dir)
    catalogue.add_session(header, path)
    end = events[-1][1]
    catalogue.finish_session(
        RecordingSummary(path, header, path.stat().st_size, len(events), end, "closed", {}, {})
    )


async def _until(pilot, condition, tries=200):
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition never met")


async def test_f_finds_a_line_and_enter_opens_the_replay_at_it(tmp_path):
    _recorded(tmp_path, 1, "erin", [(EventType.OUTPUT, 1_000, (0, b"nothing here\r\n"))])
    _recorded(
        tmp_path,
        2,
        "frank",
        [
            (EventType.OUTPUT, 1_000, (0, b"$ make deploy\r\n")),
            (EventType.OUTPUT, 7_000_000, (0, b"error: basalt-quota exceeded\r\n")),
            (EventType.OUTPUT, 9_000_000, (0, b"\x1b[2J\x1b[Hcleared\r\n")),
        ],
    )
    app = Workstation(tmp_path, offline=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("f")
        await _until(pilot, lambda: app.screen.query("#search"))
        app.screen.query_one("#search", Input).value = "basalt-quota"
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, SearchResultsScreen))
        table = app.screen.query_one("#hits", DataTable)
        assert table.row_count == 1
        cells = [str(cell) for cell in table.get_row_at(0)]
        assert cells[:4] == ["00000000", "+7.0s", "frank@web1", "output"]
        assert "[basalt-quota]" in cells[4]
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, PlaybackScreen))
        player = app.screen.player
        assert player.time_us == 7_000_000  # the moment of the hit, before the screen cleared
        assert "basalt-quota exceeded" in player.text()
