"""One caller's connection to one target: the upstream login, the recording, the open channels.

A link exists from the moment the gateway knows who goes where (after the login for
`alice+web1`, at the forwarding request for `-J`) until either side leaves, the gateway stops or
the session idles out; `end(reason)` is the one way out and runs once, closing the recording
with that reason. Recording is fail-closed: a channel that cannot be recorded is refused, and a
recording that breaks mid-session ends the session; no byte is forwarded before it is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import asyncssh

from proxy.auth import Identity
from proxy.config import GatewayConfig, TargetConfig
from proxy.session import GatewaySession, RecordingUnavailable, SessionRegistry
from proxy.ssh.agent import AgentRelay, caller_offered_agent, forward_from_target
from proxy.ssh.upstream import TargetUnavailable, connect_target

if TYPE_CHECKING:
    from storage.recorder import RecordingWriter

log = logging.getLogger("hoop.ssh")

CHANNEL_CLOSE_GRACE = 2.0  # seconds a channel gets to flush its last words when a session ends


__all__ = ["Closable", "LinkRegistry", "RecordingUnavailable", "TargetLink", "watch_idle"]


class Closable(Protocol):
    """What a link needs from each of its channels to end them."""

    def shut_down(self, message: str) -> None: ...

    async def wait_closed(self) -> None: ...

    def pause_for_recording(self, paused: bool) -> None: ...


@dataclass(slots=True)
class LinkRegistry:
    """The live links of a gateway, so that stopping it can end each one properly (their
    sessions are also in the gateway's `SessionRegistry`, with PostgreSQL's)."""

    links: set[TargetLink] = field(default_factory=set)

    async def end_all(self, reason: str, message: str) -> None:
        await asyncio.gather(*(link.end(reason, message) for link in list(self.links)))


class TargetLink:
    """A caller, a target, the upstream SSH connection and the session (with its recording):
    the SSH owner of a `GatewaySession`."""

    def __init__(
        self,
        config: GatewayConfig,
        registry: LinkRegistry,
        identity: Identity,
        target: TargetConfig,
        client: str,
        mode: str,
        extra: dict[str, Any] | None = None,
        sessions: SessionRegistry | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.identity = identity
        self.target = target
        self.client = client
        self.mode = mode
        self.extra = dict(extra or {})  # the header's extra: read when the recording starts
        self.session = GatewaySession(
            sessions if sessions is not None else SessionRegistry(),
            config,
            identity,
            target.name,
            "ssh",
            client,
            self,
            mode=mode,
            extra=self.extra,
        )
        self.upstream: asyncssh.SSHClientConnection | None = None
        self.client_conn: asyncssh.SSHServerConnection | None = None
        self.channels: dict[int, Closable] = {}
        self.agent: AgentRelay | None = None  # set when the caller's agent is forwarded
        self._agent_grant: asyncio.Future[None] | None = None
        self._agent_noted = False
        self.ended = False
        self.end_reason = ""
        self.last_activity = time.monotonic()
        self.waiting = 0  # commands of this session being judged or held: never idle then
        self._next_channel = 0
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        registry.links.add(self)

    def __repr__(self) -> str:
        return f"<link {self.identity.name}->{self.target.name} {self.mode}>"

    @property
    def session_id(self) -> str:
        return self.session.id

    @property
    def recording(self) -> RecordingWriter | None:
        return self.session.recording

    # -- the upstream side -------------------------------------------------------------------

    async def connect(self) -> None:
        """Log in to the target; TargetUnavailable (with the caller's message) if that fails."""
        try:
            self.upstream = await connect_target(self.target, on_lost=self._upstream_lost)
        except TargetUnavailable as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
                self._ready.exception()  # retrieved here, so an unused failure is not logged
            raise
        log.info(
            "%s from %s connected to target %s (%s)",
            self.identity.name,
            self.client,
            self.target.name,
            self.mode,
        )
        if not self._ready.done():
            self._ready.set_result(None)
        if self.ended:
            self.upstream.close()

    async def ready(self) -> asyncssh.SSHClientConnection:
        """Wait for the upstream login started by `connect`; TargetUnavailable if it failed.

        Called when a channel starts, after the caller's requests for it: if the caller has
        forwarded its agent and the target allows that, it is granted here, once per link."""
        await asyncio.shield(self._ready)
        if self.upstream is None or self.ended:
            raise TargetUnavailable(f"the session to {self.target.name} has ended")
        if (
            self._agent_grant is None
            and self.target.agent_forwarding
            and caller_offered_agent(self.client_conn)
        ):
            self._agent_grant = asyncio.ensure_future(self._grant_agent(self.upstream))
        if self._agent_grant is not None:
            await asyncio.shield(self._agent_grant)
        if self.upstream is None or self.ended:
            raise TargetUnavailable(f"the session to {self.target.name} has ended")
        return self.upstream

    # -- agent forwarding (see proxy/ssh/agent.py) -------------------------------------------

    async def _grant_agent(self, upstream: asyncssh.SSHClientConnection) -> None:
        """The caller forwarded its agent (`ssh -A`) and the target allows it: from now on the
        target's sessions get the caller's agent, through a relay that records each use."""
        assert self.client_conn is not None
        relay: AgentRelay | None = None
        try:
            relay = AgentRelay(self.client_conn, self._agent_opened, self._agent_closed)
            path = await relay.start()
        except OSError as exc:
            log.error("%r: cannot start the agent relay, not forwarding the agent: %s", self, exc)
            if relay is not None:
                relay.close()
            return
        if self.ended or not forward_from_target(upstream, path):
            relay.close()
            return
        self.agent = relay
        log.info(
            "agent forwarding granted: %s's agent to target %s, for this session (from %s)",
            self.identity.name,
            self.target.name,
            self.client,
        )
        self._note_agent_grant()

    def _note_agent_grant(self) -> None:
        """Record the grant once, as soon as the session has a recording."""
        if self.agent is None or self._agent_noted or self.recording is None:
            return
        self._agent_noted = True
        self.session.record_annotation(
            f"agent forwarding granted: {self.target.name} may use {self.identity.name}'s "
            "ssh agent (ssh -A) while this session lasts",
            "gateway",
        )

    def _agent_opened(self) -> int | None:
        if self.ended or self.recording is None:
            return None
        number = self.new_channel_number()
        detail = f"auth-agent@openssh.com from {self.target.name} to the caller's agent"
        if not self.session.record_channel_open(number, "agent", detail):
            return None
        self.touch()
        log.info(
            "target %s uses %s's forwarded agent (session %s)",
            self.target.name,
            self.identity.name,
            self.session_id,
        )
        return number

    def _agent_closed(self, number: int) -> None:
        self.session.record_channel_close(number)

    def _upstream_lost(self, exc: Exception | None) -> None:
        self.spawn(self.end("target closed", f"hoop: connection to {self.target.name} lost"))

    # -- recording ---------------------------------------------------------------------------

    async def start_recording(self, term: str = "", cols: int = 0, rows: int = 0) -> None:
        """Start the recording with the first channel (off the event loop); later channels
        wait for the first. RecordingUnavailable if it cannot start."""
        if self.ended:
            raise RecordingUnavailable("the session has ended")
        await self.session.start(term=term, cols=cols, rows=rows)
        self._note_agent_grant()

    # -- what the session asks of its owner ----------------------------------------------------

    def pause_for_recording(self, paused: bool) -> None:
        """The recorder is behind (or caught up): stop (or resume) reading both sides."""
        for channel in list(self.channels.values()):
            channel.pause_for_recording(paused)

    def end_session(self, reason: str, message: str) -> None:
        self.spawn(self.end(reason, message))

    def recording_broke(self, exc: BaseException) -> None:
        self.session.recording_broke(exc)

    # -- channels ----------------------------------------------------------------------------

    def new_channel_number(self) -> int:
        number = self._next_channel
        self._next_channel += 1
        return number

    def add_channel(self, channel: Closable) -> int:
        number = self.new_channel_number()
        self.channels[number] = channel
        return number

    def remove_channel(self, number: int) -> None:
        self.channels.pop(number, None)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a task that belongs to this link, keeping a reference until it finishes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task of %r failed", self, exc_info=task.exception())

    # -- the end -----------------------------------------------------------------------------

    async def end(self, reason: str, message: str = "") -> None:
        """End the session once: tell the caller why, close both sides, close the recording."""
        if self.ended:
            await self._done.wait()
            return
        self.ended = True
        self.end_reason = reason
        if not self._ready.done():
            self._ready.set_exception(TargetUnavailable(message or reason))
            self._ready.exception()
        try:
            await self._close_everything(reason, message)
        finally:
            self.registry.links.discard(self)
            self._done.set()
        log.info(
            "session %s of %s to %s ended: %s",
            self.session_id or "(not recorded)",
            self.identity.name,
            self.target.name,
            reason,
        )

    async def _close_everything(self, reason: str, message: str) -> None:
        channels = list(self.channels.values())
        for channel in channels:
            try:
                channel.shut_down(message)
            except Exception:
                log.exception("shutting down a channel of %r failed", self)
        if channels:  # let the goodbye message reach the caller before the connection goes
            waits = [asyncio.ensure_future(channel.wait_closed()) for channel in channels]
            _, pending = await asyncio.wait(waits, timeout=CHANNEL_CLOSE_GRACE)
            for waiting in pending:
                waiting.cancel()
        if self.agent is not None:
            self.agent.close()
        if self.upstream is not None:
            self.upstream.close()
        if self.client_conn is not None:
            self.client_conn.close()
        await self.session.close(reason)


async def watch_idle(registry: LinkRegistry, timeout: float) -> None:
    """End links with no traffic for `timeout` seconds; runs for the life of the gateway. A
    link waiting on a held command is not idle: ending it would withdraw the hold."""
    interval = max(0.05, min(timeout / 4, 30.0))
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        for link in list(registry.links):
            if not link.ended and not link.waiting and now - link.last_activity >= timeout:
                link.spawn(
                    link.end(
                        "idle timeout",
                        f"hoop: session idle for {timeout:g} s, closed by the gateway",
                    )
                )
