"""Replay in the workstation, on a real recording of vim (asciinema, imported): the widget
draws exactly what the replay engine (checked against tmux) says the screen was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from textual.app import App

from hoop_tui.workstation.replay import ReplayScreen, TerminalView
from replay.player import Player
from replay.sources import open_source

DATA = Path(__file__).parents[2] / "replay" / "data"


class ReplayApp(App[None]):
    CSS_PATH = str(Path(__file__).parents[3] / "hoop_tui" / "workstation" / "workstation.tcss")

    def __init__(self, player: Player) -> None:
        super().__init__()
        self.player = player

    def on_mount(self) -> None:
        self.push_screen(ReplayScreen(DATA / "vim.cast", "vim", self.player))


@pytest.fixture
def player(tmp_path):
    source = open_source(DATA / "vim.cast")
    return Player.open(source, cache_dir=tmp_path)


def _view_text(view: TerminalView) -> list[str]:
    lines = range(view.terminal.lines)
    return ["".join(seg.text for seg in view.render_line(y)).rstrip() for y in lines]


async def test_the_view_draws_the_engines_screen_while_stepping_and_seeking(player):
    expected = json.loads((DATA / "vim.expected.json").read_text())
    app = ReplayApp(player)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        view = screen.query_one(TerminalView)
        for _ in range(3):
            await pilot.press("right")
        assert player.position > 0
        assert _view_text(view) == [line.rstrip() for line in player.lines()]
        golden = expected[len(expected) // 2]
        player.seek(round(golden["at"] * 1_000_000))
        screen._moved()
        await pilot.pause()
        assert _view_text(view) == [line.rstrip() for line in golden["lines"]]
        status = str(screen.query_one("#replay-status").render())
        assert f"event {player.position}/{player.event_count}" in status
        await pilot.press("end")
        assert player.position == player.event_count
        await pilot.press("home")
        assert player.position == 0


async def test_play_advances_in_time_and_speed_changes(player):
    app = ReplayApp(player)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await pilot.press("plus", "plus", "plus", "plus")
        assert screen.playback.speed == 16
        await pilot.press("space")
        await pilot.pause(0.5)
        assert player.position > 0
        await pilot.press("space")
        stopped_at = player.position
        await pilot.pause(0.3)
        assert player.position == stopped_at


async def test_search_jumps_to_the_first_screen_showing_the_text(player):
    expected = json.loads((DATA / "vim.expected.json").read_text())
    word = next(
        w for screen in expected for line in screen["lines"] for w in line.split() if len(w) > 6
    )
    app = ReplayApp(player)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("slash")
        await pilot.press(*word)
        await pilot.press("enter")
        await pilot.pause()
        assert any(word in line for line in player.lines())


@pytest.mark.skipif(not shutil.which("asciinema"), reason="needs asciinema")
def test_tui_help_lists_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "hoop_tui.cli", "--help"], capture_output=True, text=True, timeout=30
    )
    assert "tui" in result.stdout
