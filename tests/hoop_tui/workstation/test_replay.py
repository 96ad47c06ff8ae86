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

from hoop_tui.workstation.replay import PlaybackScreen, TerminalView
from replay.player import Player
from replay.sources import open_source

DATA = Path(__file__).parents[2] / "replay" / "data"


class ReplayApp(App[None]):
    CSS_PATH = str(Path(__file__).parents[3] / "hoop_tui" / "workstation" / "workstation.tcss")

    def __init__(self, player: Player) -> None:
        super().__init__()
        self.player = player

    def on_mount(self) -> None:
        self.push_screen(PlaybackScreen(DATA / "vim.cast", "vim", self.player))


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
        assert isinstance(screen, PlaybackScreen)
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


class CastApp(App[None]):
    CSS_PATH = ReplayApp.CSS_PATH

    def __init__(self, path: Path, cache: Path) -> None:
        super().__init__()
        self.path = path
        self.player = Player.open(open_source(path), cache_dir=cache)

    def on_mount(self) -> None:
        self.push_screen(PlaybackScreen(self.path, "cast", self.player))


def _cast(path: Path, width: int, height: int, events: list[tuple[float, str]]) -> Path:
    lines = [json.dumps({"version": 2, "width": width, "height": height})]
    lines += [json.dumps([at, "o", text]) for at, text in events]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_a_session_as_large_as_the_window_fits_whole_when_zoomed(tmp_path):
    """A 160x45 session in a 160x45 terminal showed scrollbars and hid the last column and the
    footer (issue 17, item 9): no scrollbar takes a column, and `z` gives the whole window."""
    corner = "\x1b[45;160HZ\x1b[1;1HA"
    app = CastApp(_cast(tmp_path / "big.cast", 160, 45, [(0.5, corner)]), tmp_path)
    async with app.run_test(size=(160, 45)) as pilot:
        screen = app.screen
        await pilot.press("end")
        view = screen.query_one(TerminalView)
        assert view.size.width == 160  # no scrollbar column
        await pilot.press("z")
        await pilot.pause()
        assert view.size.height == 45
        assert _view_text(view)[44].endswith("Z") and len(_view_text(view)[44]) == 160
        await pilot.press("z")
        await pilot.pause()
        assert screen.query_one("#replay-status").display


async def test_search_marks_the_text_moves_on_goes_back_and_wraps(tmp_path):
    events = [
        (1.0, "first needle here\r\n"),
        (2.0, "\x1b[2J\x1b[Hnothing\r\n"),
        (3.0, "\x1b[2J\x1b[Hsecond needle there\r\n"),
        (4.0, "\x1b[2J\x1b[Hend\r\n"),
    ]
    app = CastApp(_cast(tmp_path / "s.cast", 40, 5, events), tmp_path)
    async with app.run_test(size=(80, 20)) as pilot:
        screen = app.screen
        player = screen.player
        await pilot.press("slash")
        await pilot.pause()
        app.screen.query_one("#search").value = "needle"
        await pilot.press("enter")
        await pilot.pause()
        assert player.time_us == 1_000_000 and "first needle" in player.text()
        view = screen.query_one(TerminalView)
        marked = [seg for seg in view.render_line(0) if seg.style and seg.style.bgcolor]
        assert "".join(seg.text for seg in marked) == "needle"
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert player.time_us == 3_000_000
        await pilot.press("right_square_bracket")  # no later hit: wraps to the first
        await pilot.pause()
        assert player.time_us == 1_000_000
        assert any("wrapped" in str(n.message) for n in app._notifications)
        await pilot.press("left_square_bracket")  # none before the first: wraps to the last
        await pilot.pause()
        assert player.time_us == 3_000_000


async def test_stepping_past_either_end_rings_the_bell_and_stays(player, monkeypatch):
    app = ReplayApp(player)
    rung: list[bool] = []
    monkeypatch.setattr(app, "bell", lambda: rung.append(True))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("end", "right")
        assert player.position == player.event_count
        await pilot.press("home", "left")
        assert player.position == 0
        assert isinstance(app.screen, PlaybackScreen)
        status = str(app.screen.query_one("#replay-status").render())
        assert f"event 0/{player.event_count}" in status
    assert rung == [True, True]
