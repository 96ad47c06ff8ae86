"""The workstation app: connects to the gateway's control socket, keeps the queue live and
sends decisions as the person the gateway recognises on that socket. Replays show recordings
through the `[[masks]]` of the gateway's configuration as it is now.

Remote mode (`ssh -t bob@gateway console`, with a console ticket): the gateway runs this app for
bob, who acts through the ticket only. The recordings browser reads the data directory
directly, so it is not there in remote mode, nor is saving screenshots to the gateway's disk."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from hoop_tui.workstation.alerts import alert_sequence
from hoop_tui.workstation.keys import KeysScreen
from hoop_tui.workstation.live import LiveScreen, WatchScreen
from hoop_tui.workstation.queue import QueueScreen, ending_notice
from hoop_tui.workstation.recordings import RecordingsScreen
from proxy.config import DEFAULT_CONFIG_NAME, ConfigError, load_config, resolve_config_path
from proxy.holds.console import printable
from proxy.holds.control import ControlClient, ControlError, socket_path
from proxy.notify import NOTIFY_TOPIC
from replay.masking_view import CurrentMasks, load_current_masks
from storage.state import Hold, HoldStatus

RECONNECT_S = 2.0


def gateway_config_of(data_dir: Path) -> Path | None:
    """The configuration of the gateway that owns `data_dir`, when the workstation was not told:
    the one `hoop-tui up` keeps inside it, else $HOOP_CONFIG or ./gateway.toml if it names
    this data directory."""
    inside = data_dir / DEFAULT_CONFIG_NAME
    if inside.is_file():
        return inside
    usual = resolve_config_path(None)
    try:
        if usual.is_file() and load_config(usual).data_dir.resolve() == data_dir.resolve():
            return usual
    except (ConfigError, OSError):
        pass
    return None


class Workstation(App[None]):
    """`hoop-tui tui`: 1 queue, 2 recordings, 3 live sessions; ? lists every key of the screen
    and ctrl+p (the command palette) every action."""

    TITLE = "hoop_tui"
    CSS_PATH = Path(__file__).with_name("workstation.tcss")  # also for subclasses elsewhere
    BINDINGS = [
        Binding("1", "show('queue')", "Queue"),
        Binding("2", "show('recordings')", "Recordings"),
        Binding("3", "show('live')", "Live"),
        Binding("question_mark", "show_help_panel", "Keys"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        data_dir: Path,
        *,
        offline: bool = False,
        welcome: str = "",
        config: Path | None = None,
        ticket: str | None = None,
        alert: str = "osc9",
    ) -> None:
        super().__init__()
        self.alert_kind = alert  # `hoop-tui tui --alert`
        if ticket is not None and offline:
            raise ValueError("the remote console has no offline mode")
        self.data_dir = data_dir
        self.offline = offline  # browse recordings only; no gateway needed
        self.welcome = welcome
        self.ticket = ticket  # remote mode: act as the person of this console ticket, once
        self.remote = ticket is not None
        self.config = None if self.remote else config or gateway_config_of(data_dir)
        self.masks: CurrentMasks | None = None
        self.client: ControlClient | None = None
        self.queue = QueueScreen()
        self.live = LiveScreen(remote=self.remote)
        self.watching: WatchScreen | None = None
        self.person = ""

    def on_mount(self) -> None:
        self.install_screen(self.queue, "queue")
        if not self.remote:  # the browser reads the gateway's data directory itself
            self.masks = self._load_masks()
            self.install_screen(RecordingsScreen(self.data_dir, self.masks), "recordings")
        self.install_screen(self.live, "live")
        if self.offline:
            self.push_screen("recordings")
            self.sub_title = "offline: recordings only"
            return
        self.push_screen("queue")
        self.sub_title = "connecting to the gateway..."
        self.queue.welcome = self.welcome  # shown in the empty queue, covering nothing
        self.follow_gateway()

    def _load_masks(self) -> CurrentMasks | None:
        """Today's mask rules of the configuration, applied to every replay. A configuration
        that does not load is shown, and recordings are shown as recorded."""
        if self.config is None:
            return None
        try:
            masks = load_current_masks(load_config(self.config))
        except (ConfigError, OSError) as exc:
            self.notify(f"{exc}; recordings are shown as recorded", title="Masks", timeout=30)
            return None
        return masks if masks.active else None

    def action_show(self, name: str) -> None:
        if self.remote and name == "recordings":
            self.notify(
                "Recordings are not available in the remote console: run `hoop-tui tui` "
                "on the gateway host.",
                severity="warning",
            )
            return
        if self.offline and name in ("queue", "live"):
            self.notify(
                "Offline: no gateway, so no holds or live sessions. Run `hoop-tui tui` beside "
                "a running gateway to approve.",
                severity="warning",
            )
            return
        self.switch_screen(name)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # the recordings key is not even shown in the footer of the remote console ...
        return not (self.remote and action == "show" and parameters == ("recordings",))

    def on_key(self, event: events.Key) -> None:
        """... and pressing it there says why nothing happens, rather than nothing."""
        if self.remote and event.key == "2":
            event.stop()
            self.action_show("recordings")

    def action_show_help_panel(self) -> None:
        """`?`: the keys of this screen and of the workstation, closed by `?` or Esc."""
        if isinstance(self.screen, KeysScreen):
            self.screen.dismiss()
            return
        self.push_screen(KeysScreen(self.screen, remote=self.remote, offline=self.offline))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if not (self.remote and command.title == "Screenshot"):  # no files on the gateway
                yield command

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        if self.remote:
            self.notify("Screenshots are not available in the remote console.")
            return
        super().action_screenshot(filename, path)

    @work(exclusive=True, group="control")
    async def follow_gateway(self) -> None:
        """Stay connected: load the queue, then apply pushed events; reconnect when lost.

        In remote mode the console ticket works once: when that connection is refused or
        lost, the app ends (and so does the ssh session) instead of connecting as anyone else."""
        while True:
            try:
                self.client = await ControlClient.connect(
                    socket_path(self.data_dir), ticket=self.ticket
                )
                me = await self.client.call("whoami")
                self.person = me["name"]
                self.queue.person = self.person
                topics = ["holds"] if self.remote else ["holds", NOTIFY_TOPIC]
                await self.client.call("subscribe", topics=topics)
                held = await self.client.call("holds.list")
                self.queue.replace_all(
                    [Hold.from_json(data) for data in held],
                    {str(data["id"]): data["caller"] for data in held if data.get("caller")},
                )
                where = "remote console" if self.remote else str(self.data_dir)
                self.sub_title = f"{self.person} @ {where}"
                async for message in self.client.events():
                    self._on_event(message)
                self.sub_title = "the gateway went away; reconnecting..."
                problem = "the gateway closed the connection"
            except ControlError as exc:
                self.sub_title = f"not connected: {exc}"
                problem = str(exc)
            if self.remote:
                self.exit(return_code=1, message=f"hoop: {problem}")
                return
            await asyncio.sleep(RECONNECT_S)

    def _on_event(self, message: dict[str, Any]) -> None:
        event, data = message["event"], message["data"]
        if event == "session.output":
            if self.watching is not None and data["session_id"] == self.watching.session["id"]:
                self.watching.output(data["data"])
            return
        if event == "notify.failed":  # a webhook the gateway could not reach
            self.notify(data["message"], title="Notification failed", severity="warning")
            return
        if not event.startswith("hold."):
            return
        hold = Hold.from_json(data)
        if event == "hold.created":
            self.alert(f"hoop: hold {hold.id}", f"{hold.user}@{hold.target}: {hold.command}")
            self.notify(  # the requester's text: never markup, controls escaped
                f"{hold.user}@{hold.target}: {printable(hold.command)}",
                title=f"New hold {hold.id}",
                timeout=10,
                markup=False,
            )
        elif event == "hold.decided" and hold.id in self.queue.holds:
            # approved, denied, withdrawn or expired: said in words, never a silent vanishing
            self.notify(
                printable(ending_notice(hold)),
                title="Hold ended",
                severity="information" if hold.status is HoldStatus.APPROVED else "warning",
                markup=False,
            )
        self.queue.hold_changed(hold, data.get("caller"))

    def alert(self, title: str, body: str) -> None:
        """A new hold: the bell and a desktop notification, as `--alert` says."""
        sequence = alert_sequence(self.alert_kind, title, body)
        if sequence and not self.is_headless and self._driver is not None:
            self._driver.write(sequence)

    # -- what the screens ask for (their Messages) ---------------------------------------------

    def on_queue_screen_screen_requested(self, message: QueueScreen.ScreenRequested) -> None:
        self.load_hold_screen(message.hold)

    def on_queue_screen_decided(self, message: QueueScreen.Decided) -> None:
        self.decide_hold(message.hold_id, message.approve, message.reason)

    def on_live_screen_refresh_requested(self, _message: LiveScreen.RefreshRequested) -> None:
        self.load_sessions()

    def on_live_screen_watch_requested(self, message: LiveScreen.WatchRequested) -> None:
        self.watch_session(message.session)

    def on_live_screen_end_requested(self, message: LiveScreen.EndRequested) -> None:
        self.end_session(message.session_id, message.reason)

    def on_watch_screen_stopped(self, _message: WatchScreen.Stopped) -> None:
        self.stop_watching()
        if isinstance(self.screen, WatchScreen):
            self.pop_screen()

    # -- the gateway's answers ------------------------------------------------------------------

    @work(exclusive=True, group="hold-screen")
    async def load_hold_screen(self, hold: Hold) -> None:
        if self.client is None:
            return
        try:
            found = await self.client.call("sessions.screen", id=hold.session_id)
        except ControlError:
            return  # the session ended, or is on another gateway
        self.queue.show_screen(hold.id, found["lines"])

    @work(exclusive=True, group="sessions")
    async def load_sessions(self) -> None:
        if self.client is None or self.offline:
            return
        try:
            self.live.show_sessions(await self.client.call("sessions.list"))
        except ControlError as exc:
            self.notify(str(exc), severity="error", title="Live sessions")

    @work(group="watch")
    async def watch_session(self, session: dict[str, Any]) -> None:
        if self.client is None:
            return
        try:
            found = await self.client.call("sessions.screen", id=session["id"])
            await self.client.call("sessions.watch", id=session["id"])
        except ControlError as exc:
            self.notify(str(exc), severity="error", title="Watch")
            return
        self.watching = WatchScreen(session, found["lines"])
        self.push_screen(self.watching)

    def stop_watching(self) -> None:
        if self.watching is not None and self.client is not None:
            topic = f"session:{self.watching.session['id']}"
            self.run_worker(self.client.call("unsubscribe", topics=[topic]), group="watch")
        self.watching = None

    @work(group="sessions-end")  # not "sessions": its refreshes are exclusive and would cancel
    async def end_session(self, session_id: str, reason: str) -> None:
        if self.client is None:
            return
        try:
            await self.client.call("sessions.end", id=session_id, reason=reason)
            self.notify(f"session {session_id[:8]} ended")
        except ControlError as exc:
            self.notify(str(exc), severity="error", title="End session")
        self.load_sessions()

    @work(group="decisions")
    async def decide_hold(self, hold_id: str, approve: bool, reason: str) -> None:
        if self.client is None:
            self.notify("Not connected to the gateway.", severity="error")
            return
        try:
            await self.client.call("holds.decide", id=hold_id, approve=approve, reason=reason)
        except ControlError as exc:
            self.notify(str(exc), severity="error", title=f"{hold_id} not decided")
