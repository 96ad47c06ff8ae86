"""The workstation's queue, driven by Pilot against a real control socket."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import time

import pytest
from textual.app import App
from textual.widgets import DataTable, Input, Static

from hoop_tui.workstation.app import Workstation
from hoop_tui.workstation.queue import DecisionDialog, QueueScreen
from hoop_tui.workstation.replay import PlaybackScreen
from proxy.holds.broker import ApprovalBroker, Person
from proxy.holds.control import ControlServer, socket_path
from proxy.holds.service import ApprovalService
from storage.recorder import new_session_id, start_recording
from storage.schema import EventType
from storage.sqlite_state import SqliteState
from storage.state import Hold, HoldStatus
from tests.storage.helpers import make_header


@pytest.fixture
async def service(tmp_path):
    people = {getpass.getuser(): Person("bob", frozenset({"oncall"}))}
    control = ControlServer(socket_path(tmp_path), people.get)
    approvals = ApprovalService(ApprovalBroker(SqliteState.in_data_dir(tmp_path), "gw"), control)
    await control.start()
    await approvals.start()
    approvals.data_dir = tmp_path
    yield approvals
    await approvals.stop()
    await control.stop()


async def _held(service, **request):
    """Hold a command and wait for its outcome, as a held session does."""
    return await service.wait_for(await service.request_hold(**request))


def _hold(service, command="systemctl restart nginx"):
    return asyncio.ensure_future(
        _held(
            service,
            session_id="s1",
            user="alice",
            target="web1",
            command=command,
            rule="restarts",
            approvers=["oncall"],
            approvals=1,
            timeout_s=600,
        )
    )


async def _until(pilot, condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        await pilot.pause(0.05)


async def test_a_hold_arrives_live_and_is_approved_with_keys(service):
    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service)
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        assert "alice" in str(table.get_row_at(0)) and "systemctl rest" in str(table.get_row_at(0))
        detail = app.queue.query_one("#hold-detail", Static)
        assert "systemctl restart nginx" in str(detail.render())  # whole, whatever the width
        (pending,) = app.queue.holds
        app.queue.show_screen(pending, ["$ systemctl restart nginx"])  # as the gateway answers
        screen_pane = app.queue.query_one("#hold-screen", Static)
        await _until(pilot, lambda: "alice's terminal now" in str(screen_pane.render()))
        await pilot.press("a")
        await _until(pilot, lambda: isinstance(app.screen, DecisionDialog))
        await pilot.press(*"ok by me")
        await pilot.press("enter")
        hold = await asyncio.wait_for(waiting, 5)
        assert hold.status is HoldStatus.APPROVED
        assert hold.decisions[-1].by == "bob" and hold.decisions[-1].reason == "ok by me"
        await _until(pilot, lambda: table.row_count == 0)
        await _until(pilot, lambda: "terminal now" not in str(screen_pane.render()))


async def test_deny_needs_a_reason_in_the_dialog(service):
    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service, "reboot")
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        await pilot.press("d")
        await _until(pilot, lambda: isinstance(app.screen, DecisionDialog))
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DecisionDialog)  # still open: no reason given
        app.screen.query_one("#reason", Input).value = "not during the incident"
        await pilot.press("enter")
        hold = await asyncio.wait_for(waiting, 5)
        assert hold.status is HoldStatus.DENIED


async def test_another_approvers_decision_clears_the_row_everywhere(service):
    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service)
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        (hold,) = await service.broker.pending_holds()
        await service.decide_hold(
            hold.id, Person("carol", frozenset({"oncall"})), approve=True, reason=""
        )
        await _until(pilot, lambda: table.row_count == 0)
        assert (await waiting).approved_by == ["carol"]


async def test_a_held_command_is_shown_as_text_never_as_markup_or_escapes(service):
    """The command of a hold is the requester's text. Read as Textual markup, `[/x]` crashed
    every approver's workstation while the hold was pending, and `[b]...[/b]` or a colour
    could change what the approver reads; its ESC and CR bytes reached their terminal. The
    queue, the detail, the notification and the dialog show it as text, controls escaped."""
    command = "touch /tmp/restart.x [b]rm -rf /[/b] [/x] \x1b[2K\rls"
    shown = "touch /tmp/restart.x [b]rm -rf /[/b] [/x] \\x1b[2K\\rls"
    app = Workstation(service.data_dir)
    async with app.run_test(size=(160, 40)) as pilot:  # wide enough for the whole command
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service, command)
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        await pilot.pause(0.3)
        assert app.is_running and app.return_code is None
        assert shown in str(table.get_row_at(0)[-1])
        assert shown in str(app.queue.query_one("#hold-detail", Static).render())
        await pilot.press("a")
        await _until(pilot, lambda: isinstance(app.screen, DecisionDialog))
        assert shown in str(app.screen.query_one("#dialog-command", Static).render())
        await pilot.press("escape")
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting  # withdrawn while the workstation still shows the queue


async def test_recordings_browser_filters_and_opens_a_transcript(service):
    header = make_header(
        new_session_id(), user="dave", target="db9", started_at_us=time.time_ns() // 1000
    )
    writer = start_recording(service.data_dir, header)
    writer.record(EventType.OUTPUT, 0, b"hello from db9\r\n")
    writer.close("client closed")
    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await pilot.press("2")
        table = app.screen.query_one("#sessions", DataTable)
        assert table.row_count == 1
        app.screen.query_one("#filter", Input).value = "nobody"
        await pilot.pause(0.1)
        assert table.row_count == 0
        app.screen.query_one("#filter", Input).value = "dave"
        await pilot.pause(0.1)
        assert table.row_count == 1
        table.focus()
        await pilot.press("t")
        await pilot.pause(0.2)
        log = app.screen.query_one("#transcript")
        assert "hello from db9" in "\n".join(str(line) for line in log.lines)
        await pilot.press("escape")
        await pilot.press("enter")  # an ssh session opens in replay
        for _ in range(100):
            if isinstance(app.screen, PlaybackScreen):
                break
            await pilot.pause(0.05)
        assert isinstance(app.screen, PlaybackScreen)
        await pilot.press("end")
        assert "hello from db9" in app.screen.player.text()


def _toasts(app) -> str:
    return " | ".join(str(n.message) for n in app._notifications)


async def test_a_withdrawn_hold_is_said_in_words_not_a_silent_vanishing(service):
    """The requester gave up (Ctrl-C, or the client went away): the row leaves and a toast
    says withdrawn and why, where the last word used to be `New hold ...` (issue 17, 2)."""
    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service)
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        (hold_id,) = app.queue.holds
        waiting.cancel("the caller disconnected")
        await _until(pilot, lambda: table.row_count == 0)
        await _until(pilot, lambda: f"{hold_id} withdrawn: the caller disconnected" in _toasts(app))


async def test_the_detail_shows_the_expiry_and_marks_a_hold_about_to_expire(service):
    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service)
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        detail = app.queue.query_one("#hold-detail", Static)
        assert "expires at" in str(detail.render()) and "about to expire" not in str(
            detail.render()
        )
        now = time.time()
        app.queue.clock = lambda: now + 570  # 30 s left of the 10 minutes
        await _until(pilot, lambda: "about to expire" in str(detail.render()), timeout=10)
        await _until(pilot, lambda: str(table.get_row_at(0)[0]) in ("0:30", "0:29"), timeout=10)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting  # withdrawn while the workstation still runs


async def test_own_command_is_refused_before_a_reason_is_typed(service):
    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = asyncio.ensure_future(
            _held(
                service,
                session_id="s1",
                user="bob",
                target="web1",
                command="reboot",
                rule="r",
                approvers=["oncall"],
                approvals=1,
                timeout_s=600,
            )
        )
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        await pilot.press("a")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, DecisionDialog)
        assert "your own command" in _toasts(app)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting  # withdrawn while the workstation still runs


async def test_question_mark_lists_the_workstation_keys_and_closes_again(service):
    from hoop_tui.workstation.keys import KeysScreen

    app = Workstation(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        for closing_key in ("question_mark", "escape"):
            await pilot.press("question_mark")
            await _until(pilot, lambda: isinstance(app.screen, KeysScreen))
            shown = " ".join(str(w.render()) for w in app.screen.query(Static))
            assert "Approve" in shown and "Deny" in shown and "Recordings" not in shown
            assert "recordings: browse" in shown
            await pilot.press(closing_key)
            await _until(pilot, lambda: not isinstance(app.screen, KeysScreen))


async def test_keys_that_cannot_act_offline_say_why(tmp_path):
    app = Workstation(tmp_path, offline=True)
    async with app.run_test() as pilot:
        await pilot.press("1")
        await pilot.pause(0.2)
        assert "Offline: no gateway" in _toasts(app)


async def test_the_requesters_terminal_beside_a_hold_is_asked_for_again(service):
    """The 'terminal now' preview was loaded once, when the row was highlighted, and was
    minutes old by the time an approver read it (issue 17, 3)."""
    asked: list[str] = []

    class Counting(Workstation):
        def load_hold_screen(self, hold):
            asked.append(hold.id)
            return super().load_hold_screen(hold)

    app = Counting(service.data_dir)
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service)
        table = app.queue.query_one("#holds", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        first = len(asked)
        await _until(pilot, lambda: len(asked) >= first + 2, timeout=8)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting  # withdrawn while the workstation still runs


async def test_a_webhook_that_cannot_be_reached_is_shown_to_the_approver(service):
    """Notifications never block the data path, so a failure is said where approvers look."""
    from proxy.notify import Notifier, parse_notify

    app = Workstation(service.data_dir)
    (dead,) = parse_notify(
        {"notify": [{"url": "http://127.0.0.1:9/hook", "retries": 0, "timeout": 1}]}, "gw.toml"
    )
    notifier = Notifier(service.control, (dead,))
    notifier.start()
    try:
        async with app.run_test() as pilot:
            await _until(pilot, lambda: app.person == "bob")
            await pilot.pause(0.2)  # subscribed
            waiting = _hold(service)
            await _until(pilot, lambda: "notification hold.raised" in _toasts(app), timeout=10)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting  # withdrawn while the workstation still runs
    finally:
        await notifier.stop()


async def test_a_new_hold_alerts_as_the_alert_option_says(service):
    alerts: list[tuple[str, str]] = []

    class Recording(Workstation):
        def alert(self, title, body):
            alerts.append((title, body))
            super().alert(title, body)

    app = Recording(service.data_dir, alert="osc777")
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        waiting = _hold(service, "reboot now")
        await _until(pilot, lambda: alerts)
        assert alerts[0][1] == "alice@web1: reboot now" and app.alert_kind == "osc777"
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting  # withdrawn while the workstation still runs


async def test_ups_welcome_sits_in_the_empty_queue_instead_of_covering_it(service):
    """`hoop-tui up`'s welcome (how to connect, where the passwords are) was a toast over the
    queue's detail pane; it now fills the empty queue and covers nothing (issue 17, 11)."""
    app = Workstation(service.data_dir, welcome="ssh -p 2222 demo+local@127.0.0.1")
    async with app.run_test() as pilot:
        await _until(pilot, lambda: app.person == "bob")
        pane = app.queue.query_one("#hold-screen", Static)
        await _until(pilot, lambda: "demo+local@127.0.0.1" in str(pane.render()))
        assert "demo+local" not in _toasts(app)


async def test_a_hold_pushed_while_the_queue_is_not_on_screen_is_kept_not_a_crash():
    """Hold events come from the control socket whenever they come: one before the queue
    screen is composed is listed once it shows, and one after the app closed is no crash."""
    queue = QueueScreen()
    now = time.time()
    hold = Hold("h-1", "s1", "gw", "alice", "web1", "reboot", "r", ["oncall"], 1, now, now + 60)
    queue.hold_changed(hold)

    class QueueOnly(App[None]):
        CSS_PATH = Workstation.CSS_PATH

        def on_mount(self) -> None:
            self.push_screen(queue)

    app = QueueOnly()
    async with app.run_test() as pilot:
        await _until(pilot, lambda: queue.query("#holds"))
        assert queue.query_one("#holds", DataTable).row_count == 1
        assert "alice on web1" in str(queue.query_one("#hold-detail", Static).render())
    hold.status = HoldStatus.WITHDRAWN
    queue.hold_changed(hold)  # the app is gone; the event still arrives
    assert queue.holds == {}
