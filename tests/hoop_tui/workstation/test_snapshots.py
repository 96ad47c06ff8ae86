"""Snapshot tests of the workstation's main views (pytest-textual-snapshot): a change in what
the user sees shows up as a diff of the rendered screen."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from textual.app import App

from hoop_tui.workstation.app import Workstation
from hoop_tui.workstation.mask_review import MaskReviewScreen
from hoop_tui.workstation.queue import QueueScreen
from hoop_tui.workstation.sql_timeline import SqlTimelineScreen
from replay.player import Player
from replay.sources import open_source
from storage.catalogue import SqliteCatalogue
from storage.recorder import recording_path
from storage.schema import EventType
from storage.state import Decision, Hold
from storage.writer import RecordingSummary
from tests.hoop_tui.workstation.test_replay import DATA, ReplayApp
from tests.hoop_tui.workstation.test_sql_timeline import wait_for_screen
from tests.storage.helpers import SAMPLE_EVENTS, TimedEvent, make_header, write_recording

# The events of a real session through the PostgreSQL gateway (tests/replay/pg_session.py),
# with the times, hold ids and tokens fixed so that the picture does not change between runs.
SECRETS_SQL = (
    "select 'user' || n as name, 'hunter' || n as password_hash, "
    "'paid with 4111 1111 1111 1111' as note from generate_series(1, 3) n"
)
MASKED_ROW = ["********", "paid with **** **** **** 1111"]
PG_EVENTS: list[TimedEvent] = [
    (EventType.SQL_STATEMENT, 12_202, ("create temp table h (id int, email text)", [])),
    (EventType.SQL_RESULT, 15_096, ([], 0, [], 2_833)),
    (EventType.SQL_STATEMENT, 15_784, (SECRETS_SQL, [])),
    *[
        event
        for row in (1, 2, 3)
        for event in (
            (EventType.MASK, 16_800 + row * 80, (0, "passwords", row, 7, f"tok_5a5e0{row}d1c2b3")),
            (EventType.MASK, 16_805 + row * 80, (0, "cards", row, 19, "tok_68461c4333f0")),
        )
    ],
    (
        EventType.SQL_RESULT,
        17_075,
        (
            ["name", "password_hash", "note"],
            3,
            [[f"user{n}", *MASKED_ROW] for n in (1, 2, 3)],
            1_231,
        ),
    ),
    (EventType.SQL_STATEMENT, 18_136, ("select upper($1) as shout", ["hello"])),
    (EventType.SQL_RESULT, 18_972, ([], 1, [["HELLO"]], 811)),
    (EventType.SQL_STATEMENT, 19_352, ("select 1/0", [])),
    (EventType.SQL_ERROR, 19_685, ("22012", "division by zero")),
    (EventType.SQL_STATEMENT, 20_109, ("truncate h", [])),
    (EventType.VERDICT, 20_232, (0, "deny", "no-truncate", "truncate needs a change request")),
    (
        EventType.SQL_ERROR,
        20_267,
        ("42501", "hoop: truncate needs a change request (rule no-truncate)"),
    ),
    (EventType.SQL_STATEMENT, 20_752, ("insert into h values (1, 'carol@example.org')", [])),
    (EventType.VERDICT, 20_830, (0, "review", "review-writes", "needs approval from oncall")),
    (EventType.HOLD_REQUESTED, 21_120, ("h-eafbf0", "insert ...", "review-writes", ["oncall"])),
    (EventType.HOLD_DECIDED, 72_746, ("h-eafbf0", "approved", "bob", "ticket 42")),
    (EventType.SQL_RESULT, 73_480, ([], 1, [], 640)),
    (EventType.SQL_STATEMENT, 74_993, ("insert into h values (2, 'dave@example.org')", [])),
    (EventType.VERDICT, 75_116, (0, "review", "review-writes", "needs approval from oncall")),
    (EventType.HOLD_REQUESTED, 75_308, ("h-d30181", "insert ...", "review-writes", ["oncall"])),
    (EventType.HOLD_DECIDED, 125_447, ("h-d30181", "denied", "bob", "not during the freeze")),
    (
        EventType.SQL_ERROR,
        125_520,
        ("42501", "hoop: h-d30181 denied by bob: not during the freeze"),
    ),
    (EventType.SQL_STATEMENT, 126_151, ("select count(*) from h", [])),
    (EventType.SQL_RESULT, 126_799, (["count"], 1, [["1"]], 632)),
    (EventType.SESSION_END, 127_977, ("client terminated",)),
]


def _catalogue(data_dir: Path) -> None:
    catalogue = SqliteCatalogue.in_data_dir(data_dir)
    signer = Ed25519PrivateKey.generate()
    for number, (user, target) in enumerate([("alice", "web1"), ("bob", "db1")]):
        header = make_header(
            f"{number:032x}",
            user=user,
            target=target,
            started_at_us=1_764_000_000_000_000 + number * 3_600_000_000,
        )
        path = recording_path(data_dir, header)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_recording(path, SAMPLE_EVENTS, signer, header=header)
        catalogue.add_session(header, path)
        catalogue.finish_session(
            RecordingSummary(
                path,
                header,
                path.stat().st_size,
                11,
                2_500_000,
                "client closed",
                {"output": 3},
                {"deny": number},
            )
        )


def test_the_recordings_view(snap_compare, tmp_path):
    _catalogue(tmp_path)
    assert snap_compare(Workstation(tmp_path, offline=True), terminal_size=(110, 20))


def test_the_replay_view_of_vim(snap_compare, tmp_path):
    player = Player.open(open_source(DATA / "vim.cast"), cache_dir=tmp_path)
    player.seek(player.duration_us // 2)
    assert snap_compare(ReplayApp(player), terminal_size=(100, 34))


@pytest.fixture
def pg_data_dir(tmp_path, no_config) -> Path:
    """A data directory with the PostgreSQL session catalogued."""
    data_dir = tmp_path / "data"
    header = make_header(
        "5" * 32,
        user="alice",
        target="guarded",
        protocol="postgres",
        started_at_us=1_764_000_000_000_000,
        term="",
        cols=0,
        rows=0,
    )
    path = recording_path(data_dir, header)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_recording(path, PG_EVENTS, Ed25519PrivateKey.generate(), header=header)
    catalogue = SqliteCatalogue.in_data_dir(data_dir)
    catalogue.add_session(header, path)
    catalogue.finish_session(
        RecordingSummary(
            path, header, path.stat().st_size, len(PG_EVENTS), 127_977, "client terminated",
            {"sql_statement": 8}, {"deny": 1, "review": 2},
        )
    )  # fmt: skip
    return data_dir


def test_the_sql_timeline_view(snap_compare, pg_data_dir):
    async def open_second_statement(pilot) -> None:
        await pilot.press("enter")
        await wait_for_screen(pilot, SqlTimelineScreen)
        await pilot.press("n")

    app = Workstation(pg_data_dir, offline=True)
    assert snap_compare(app, terminal_size=(130, 42), run_before=open_second_statement)


def test_the_mask_review_view(snap_compare, pg_data_dir):
    async def open_review(pilot) -> None:
        await pilot.press("M")
        await wait_for_screen(pilot, MaskReviewScreen)

    app = Workstation(pg_data_dir, offline=True)
    assert snap_compare(app, terminal_size=(110, 24), run_before=open_review)


SIZES = [(80, 24), (100, 30), (160, 45)]
QUEUE_NOW = 1_764_000_600.0


class QueueApp(App[None]):
    """The queue screen alone, fed holds as the control API hands them over, at a fixed time."""

    CSS_PATH = Workstation.CSS_PATH

    def __init__(self, holds: list[Hold]) -> None:
        super().__init__()
        self.queue = QueueScreen(clock=lambda: QUEUE_NOW)
        self.holds = holds

    async def on_mount(self) -> None:
        await self.push_screen(self.queue)
        self.queue.replace_all(self.holds)


def _queue_holds() -> list[Hold]:
    def hold(number: int, user: str, target: str, command: str, rule: str, left: float):
        return Hold(
            id=f"h-{number:06x}",
            session_id=f"{number:032x}",
            gateway_id="gw",
            user=user,
            target=target,
            command=command,
            rule=rule,
            approvers=["oncall"],
            approvals_needed=2 if number == 2 else 1,
            created_at=QUEUE_NOW - 95 * number,
            expires_at=QUEUE_NOW + left,
            decisions=[Decision("carol", True, "", QUEUE_NOW - 30)] if number == 2 else [],
        )

    return [
        hold(1, "alice", "web1", "systemctl restart nginx", "restarts-need-review", 512),
        hold(
            2,
            "deploy-bot",
            "prod-db",
            "psql -c 'delete from sessions where created_at < now() - interval ''30 days'' "
            "and user_id in (select id from users where disabled)' --set ON_ERROR_STOP=1",
            "writes-need-review",
            41,
        ),
        hold(3, "bob", "web2", "sudo apt-get upgrade -y", "sudo-needs-review", 3599),
    ]


@pytest.mark.parametrize("size", SIZES, ids=[f"{c}x{r}" for c, r in SIZES])
def test_the_queue_keeps_time_left_whole_at_every_size(snap_compare, monkeypatch, size):
    """Time left first, the command cut last; the detail shows the expiry (issue 17, 2)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert snap_compare(QueueApp(_queue_holds()), terminal_size=size)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("size", SIZES, ids=[f"{c}x{r}" for c, r in SIZES])
def test_the_recordings_view_at_every_size(snap_compare, tmp_path, size):
    _catalogue(tmp_path)
    assert snap_compare(Workstation(tmp_path, offline=True), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=[f"{c}x{r}" for c, r in SIZES])
def test_the_replay_view_at_every_size(snap_compare, tmp_path, size):
    player = Player.open(open_source(DATA / "vim.cast"), cache_dir=tmp_path)
    player.seek(player.duration_us // 2)
    assert snap_compare(ReplayApp(player), terminal_size=size)
