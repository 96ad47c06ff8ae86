"""The workstation's recordings browser and replay, on recordings that live in object storage
(the catalogue holds their URLs; nothing of them is on the local disk)."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable

from hoop_tui.workstation.app import Workstation
from hoop_tui.workstation.replay import PlaybackScreen
from storage.catalogue import SessionQuery, SqliteCatalogue
from tests.hoop_tui.workstation.test_sql_timeline import SIZE, wait_for_screen
from tests.storage.s3.test_gateway import drained, setup


async def test_the_workstation_lists_and_replays_a_recording_from_the_store(harness, store_running):
    setup(harness, store_running)
    await harness.start()
    result = await harness.ssh_direct("alice+web1", "echo replayed-from-the-store")
    assert result.status == 0
    await asyncio.sleep(0.2)
    await drained(harness)
    (row,) = SqliteCatalogue.in_data_dir(harness.data_dir).find_sessions(SessionQuery())
    assert row.path.startswith("s3://")
    assert not list((harness.data_dir / "recordings").rglob("*.hrec"))

    app = Workstation(harness.data_dir, offline=True, config=harness.directory / "gateway.toml")
    async with app.run_test(size=SIZE) as pilot:
        table = pilot.app.screen.query_one("#sessions", DataTable)
        for _ in range(200):  # read off the UI thread: the headers come from the store
            if table.row_count:
                break
            await pilot.pause(0.05)
        shown = [str(cell) for cell in table.get_row(row.id)]
        assert shown[-1] == "client closed", shown  # its recording was found and matches
        await pilot.press("enter")
        replay = await wait_for_screen(pilot, PlaybackScreen)
        replay.player.seek(replay.player.duration_us)
        assert "replayed-from-the-store" in "\n".join(replay.player.lines())
