"""The statement timeline of a PostgreSQL session, as a reviewer uses it: a real session through
the gateway (tests/replay/pg_session.py), opened from the recordings screen with Enter."""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from hoop_tui.workstation.app import Workstation
from hoop_tui.workstation.recordings import RecordingsScreen
from hoop_tui.workstation.sql_timeline import SqlTimelineScreen
from tests.replay.pg_session import (
    APPROVED_INSERT,
    DENIED_INSERT,
    SECRETS_QUERY,
    RecordedSession,
    recorded_session,
    todays_config,
)

SIZE = (150, 45)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, postgres: tuple[str, int]) -> RecordedSession:
    return recorded_session(tmp_path_factory.mktemp("pg-session"))


async def wait_for_screen(pilot: Pilot[Any], kind: type) -> Any:
    """The screen a worker thread pushes, once it is shown."""
    for _ in range(200):
        await pilot.pause(0.02)
        if isinstance(pilot.app.screen, kind):
            await pilot.pause()
            return pilot.app.screen
    raise AssertionError(f"{kind.__name__} did not open; showing {pilot.app.screen!r}")


def detail(screen: SqlTimelineScreen) -> str:
    return str(screen.query_one("#statement-text", Static).render())


def status(screen: Any) -> str:
    return str(screen.query_one("#replay-status", Static).render())


def cells(table: DataTable[Any]) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(row)] for row in range(table.row_count)]


async def open_timeline(pilot: Pilot[Any]) -> SqlTimelineScreen:
    await pilot.pause()
    assert isinstance(pilot.app.screen, RecordingsScreen)
    await pilot.press("enter")
    return await wait_for_screen(pilot, SqlTimelineScreen)


async def test_enter_on_a_postgres_session_opens_its_statements(session, no_config):
    app = Workstation(session.data_dir, offline=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        rows = cells(screen.query_one("#statements", DataTable))
        assert [(r[0], r[3], r[4]) for r in rows] == [
            ("1", "allowed", "0"),
            ("2", "allowed", "3"),
            ("3", "allowed", "1"),
            ("4", "allowed", "-"),
            ("5", "denied", "-"),
            ("6", "held→approved", "1"),
            ("7", "held→denied", "-"),
            ("8", "allowed", "1"),
        ]
        assert rows[3][6] == "22012 division by zero"
        assert rows[4][5] == "truncate h" and rows[4][6].startswith("42501 hoop: truncate")
        assert rows[5][5] == APPROVED_INSERT  # recorded unmasked: no rule for e-mail yet
        assert all(r[1].startswith("00:00:0") and r[2] != "-" for r in rows)
        assert "Statement 1 of 8" in detail(screen)
        assert "create temp table h" in detail(screen)
        assert status(screen).startswith("statement 1/8   2 held   2 denied   1 error")
        assert "masks:" not in status(screen)  # shown as recorded


async def test_keys_move_between_statements_holds_denials_and_errors(session):
    app = Workstation(session.data_dir, offline=True, config=session.config)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        steps = [
            ("down", 1),
            ("n", 2),
            ("p", 1),
            ("e", 3),  # division by zero
            ("d", 4),  # truncate, denied by rule
            ("h", 5),  # held, approved
            ("d", 6),  # held, denied
            ("h", 6),  # no hold after it: stays
            ("home", 0),
            ("end", 7),
            ("up", 6),
        ]
        for key, expected in steps:
            await pilot.press(key)
            await pilot.pause()
            assert screen.current == expected, key
            assert f"Statement {expected + 1} of 8" in detail(screen), key
            assert status(screen).startswith(f"statement {expected + 1}/8"), key
        await pilot.press("end", "n")  # past the last one: stays
        assert screen.current == 7


async def test_the_details_show_sql_parameters_rule_hold_error_and_first_rows(session):
    app = Workstation(session.data_dir, offline=True, config=session.config)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        rows = screen.query_one("#statement-rows", DataTable)
        assert not rows.display  # no rows for a CREATE
        await pilot.press("n")
        text = detail(screen)
        assert " ".join(SECRETS_QUERY.split()[:6]) in " ".join(text.split())
        assert "passwords: column password_hash, row 1, 7 chars, tok_" in text
        assert "cards: column note, row 2, 19 chars, tok_" in text
        assert "First rows (3 of 3)" in text
        assert rows.display
        assert [str(c.label) for c in rows.columns.values()] == ["name", "password_hash", "note"]
        assert cells(rows) == [
            [f"user{n}", "********", "paid with **** **** **** 1111"] for n in (1, 2, 3)
        ]
        await pilot.press("n")
        assert "$1        hello" in detail(screen)
        assert cells(rows) == [["HELLO"]]
        await pilot.press("d")
        text = detail(screen)
        assert "Verdict   denied" in text
        assert "Rule      no-truncate: truncate needs a change request" in text
        assert "Error     42501 hoop: truncate needs a change request" in text
        await pilot.press("h")
        text = detail(screen)
        assert "Verdict   held→approved" in text
        assert "approvers: oncall" in text
        assert "Decision  approved by bob after " in text and ": ticket 42" in text
        await pilot.press("h")
        text = detail(screen)
        assert DENIED_INSERT in text and "Verdict   held→denied" in text
        assert "denied by bob after " in text and ": not during the freeze" in text


async def test_slash_searches_the_sql_and_wraps_around(session):
    app = Workstation(session.data_dir, offline=True, config=session.config)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        for expected in (5, 6, 5):
            await pilot.press("slash", *"INSERT", "enter")
            await pilot.pause()
            assert screen.current == expected
            assert f"Statement {expected + 1} of 8" in detail(screen)
        await pilot.press("slash", *"nowhere", "enter")
        await pilot.pause()
        assert screen.current == 5
        assert any("No statement contains 'nowhere'" in n.message for n in app._notifications)


async def test_enter_focuses_the_details_and_escape_goes_back_step_by_step(session):
    app = Workstation(session.data_dir, offline=True, config=session.config)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        table = screen.query_one("#statements", DataTable)
        assert table.has_focus
        await pilot.press("down", "enter")
        assert screen.query_one("#statement-detail").has_focus
        await pilot.press("n")  # the statement keys still work from the details
        assert screen.current == 2
        await pilot.press("escape")
        assert table.has_focus and app.screen is screen
        await pilot.press("escape")
        assert isinstance(app.screen, RecordingsScreen)


async def test_todays_mask_rules_are_applied_and_the_status_line_says_so(session):
    app = Workstation(session.data_dir, offline=True, config=todays_config(session))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_timeline(pilot)
        assert status(screen).endswith("masks: 3 mask rules of today.toml applied")
        rows = cells(screen.query_one("#statements", DataTable))
        assert rows[5][5] == "insert into h values (1, '*****************')"
        assert "dave@example.org" not in rows[6][5]
        await pilot.press("h")
        text = detail(screen)
        assert "carol@example.org" not in text
        assert "emails: SQL text, 17 chars, tok_" in text and "(today's rules)" in text
