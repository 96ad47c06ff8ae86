"""The masking review, as an auditor uses it: what was masked in a session, by which rule and
where, and a jump to that point of the replay. On real sessions: PostgreSQL
(tests/replay/pg_session.py) and SSH (through the gateway to the test sshd)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from hoop_tui.workstation.app import Workstation, gateway_config_of
from hoop_tui.workstation.mask_review import MaskReviewScreen
from hoop_tui.workstation.recordings import RecordingsScreen
from hoop_tui.workstation.replay import PlaybackScreen
from hoop_tui.workstation.sql_timeline import SqlTimelineScreen
from tests.fixtures.gateway import GatewayHarness, recordings
from tests.hoop_tui.workstation.test_sql_timeline import (
    SIZE,
    cells,
    detail,
    status,
    wait_for_screen,
)
from tests.replay.pg_session import (
    RecordedSession,
    recorded_session,
    todays_config,
)

CARDS_RULE = '[[masks]]\nname = "cards"\ndetector = "credit_card"\nstyle = "last4"\n'


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, postgres: tuple[str, int]) -> RecordedSession:
    return recorded_session(tmp_path_factory.mktemp("pg-session"))


async def open_review(pilot: Any) -> MaskReviewScreen:
    await pilot.pause()
    assert isinstance(pilot.app.screen, RecordingsScreen)
    await pilot.press("M")
    return await wait_for_screen(pilot, MaskReviewScreen)


def rule_counts(screen: MaskReviewScreen) -> list[list[str]]:
    return cells(screen.query_one("#mask-rules", DataTable))


def entries(screen: MaskReviewScreen) -> list[list[str]]:
    return cells(screen.query_one("#mask-entries", DataTable))


async def test_the_review_of_a_sql_session_counts_rules_and_jumps_to_the_statement(
    session, no_config
):
    app = Workstation(session.data_dir, offline=True)
    async with app.run_test(size=SIZE) as pilot:
        review = await open_review(pilot)
        assert rule_counts(review) == [["cards", "3", "0"], ["passwords", "3", "0"]]
        shown = entries(review)
        assert [(r[1], r[2], r[3], r[5]) for r in shown] == [
            ("passwords", "statement 2, column password_hash, row 1", "7", "recording"),
            ("cards", "statement 2, column note, row 1", "19", "recording"),
            ("passwords", "statement 2, column password_hash, row 2", "7", "recording"),
            ("cards", "statement 2, column note, row 2", "19", "recording"),
            ("passwords", "statement 2, column password_hash, row 3", "7", "recording"),
            ("cards", "statement 2, column note, row 3", "19", "recording"),
        ]
        assert len({r[4] for r in shown if r[1] == "cards"}) == 1  # one card, one token
        assert all(r[4].startswith("tok_") for r in shown)
        assert status(review).startswith("6 masked values by 2 rules")
        await pilot.press("down", "enter")
        timeline = await wait_for_screen(pilot, SqlTimelineScreen)
        assert timeline.current == 1
        assert "Statement 2 of 8" in detail(timeline)


async def test_the_review_lists_what_todays_rules_add(session):
    app = Workstation(session.data_dir, offline=True, config=todays_config(session))
    async with app.run_test(size=SIZE) as pilot:
        review = await open_review(pilot)
        assert rule_counts(review) == [
            ["cards", "3", "0"],  # the card in the SQL text was masked as it was recorded
            ["passwords", "3", "0"],
            ["emails", "0", "2"],
        ]
        assert status(review).endswith("masks: 3 mask rules of today.toml applied")
        shown = entries(review)
        today = [(r[1], r[2], r[5]) for r in shown if r[5] != "recording"]
        assert today == [
            ("emails", "statement 6, SQL text, character 26", "today's rules"),
            ("emails", "statement 7, SQL text, character 26", "today's rules"),
        ]
        await pilot.press("end", "up", "enter")  # the first e-mail
        timeline = await wait_for_screen(pilot, SqlTimelineScreen)
        assert timeline.current == 5
        assert "carol@example.org" not in detail(timeline)


async def test_m_in_the_timeline_reviews_its_masks_and_enter_selects_the_statement(session):
    app = Workstation(session.data_dir, offline=True, config=todays_config(session))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        timeline = await wait_for_screen(pilot, SqlTimelineScreen)
        await pilot.press("M")
        review = await wait_for_screen(pilot, MaskReviewScreen)
        await pilot.press("escape")  # back without choosing: nothing moves
        await pilot.pause()
        assert app.screen is timeline and timeline.current == 0
        await pilot.press("M")
        review = await wait_for_screen(pilot, MaskReviewScreen)
        await pilot.press("end", "enter")  # the last act: the e-mail of statement 7
        await pilot.pause()
        assert app.screen is timeline and timeline.current == 6
        assert review not in app.screen_stack


def _secrets(tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets.txt"
    secrets.write_text("password=hunter2 end\nfiller\ncard 4111 1111 1111 1111 ok\n")
    return secrets


async def test_the_review_of_an_ssh_session_jumps_the_replay_to_the_masked_output(
    harness: GatewayHarness, tmp_path: Path
):
    harness.add_user("alice", password="alice-pw", groups=("dev",))
    harness.add_target("web1")
    harness.masks.append({"name": "passwords", "detector": "password_assignment"})
    await harness.start_runtime()
    result = await harness.ssh_jump("alice", "web1", f"cat {_secrets(tmp_path)}")
    assert result.status == 0 and "hunter2" not in result.out
    assert "4111 1111 1111 1111" in result.out  # no rule for cards yet
    await recordings(harness)
    today = harness.directory / "today.toml"
    today.write_text((harness.directory / "gateway.toml").read_text() + CARDS_RULE)

    app = Workstation(harness.data_dir, offline=True, config=today)
    async with app.run_test(size=SIZE) as pilot:
        review = await open_review(pilot)
        assert rule_counts(review) == [["cards", "0", "1"], ["passwords", "1", "0"]]
        shown = entries(review)
        assert [(r[1], r[3], r[5]) for r in shown] == [
            ("passwords", "7", "recording"),
            ("cards", "19", "today's rules"),
        ]
        assert shown[0][2].startswith("output, channel ")
        await pilot.press("down", "enter")  # the card: opens the replay where it shows
        replay = await wait_for_screen(pilot, PlaybackScreen)
        screen_text = "\n".join(replay.player.lines())
        assert "card **** **** **** 1111 ok" in screen_text
        assert "4111 1111 1111 1111" not in screen_text
        assert "masks: 2 mask rules of today.toml applied" in status(replay)

        replay.player.seek(0)
        replay._moved()
        await pilot.press("M")  # the same review from the replay
        await wait_for_screen(pilot, MaskReviewScreen)
        await pilot.press("enter")  # the recorded password mask
        await pilot.pause()
        assert app.screen is replay
        assert replay.player.position > 0
        assert "password=******* end" in "\n".join(replay.player.lines())


def test_the_workstation_finds_the_configuration_of_its_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("HOOP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    assert gateway_config_of(data_dir) is None
    elsewhere = tmp_path / "gateway.toml"  # ./gateway.toml, about another data directory
    elsewhere.write_text('[gateway]\ndata_dir = "other"\n')
    assert gateway_config_of(data_dir) is None
    elsewhere.write_text('[gateway]\ndata_dir = "data"\n')
    assert gateway_config_of(data_dir) == Path("gateway.toml")
    inside = data_dir / "gateway.toml"  # where `hoop-tui up` keeps it
    inside.write_text(f'[gateway]\ndata_dir = "{data_dir}"\n' + CARDS_RULE)
    assert gateway_config_of(data_dir) == inside
    app = Workstation(data_dir, offline=True)
    assert app.config == inside
