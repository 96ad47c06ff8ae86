"""Live sessions on the control socket: `sessions.list`, `sessions.watch`, `sessions.screen`
and `sessions.end`, for SSH and PostgreSQL sessions alike (anything in the gateway's
`SessionRegistry`, proxy/session.py).

What a person sees of a session is what its recording holds, so masked the same way:
- a terminal session: its last screen (rendered from the recording, off the event loop), then
  its output as it comes;
- a PostgreSQL session: its statement timeline so far (each statement, what the gateway decided
  and held, what came back), then each new line of it as it is recorded.

An operator sees every session; a console user (`ssh bob@gateway console`) only their own and
those with a held command they may decide, so the approver reads the requester's context beside
the hold. A session someone may not see gets the answer an unknown id gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.holds.broker import DecisionRefused
from proxy.holds.control import ControlPeer, ControlServer
from proxy.holds.service import ApprovalService
from proxy.pg.timeline import statement_timeline, timeline_line
from proxy.session import GatewaySession, SessionRegistry
from storage.schema import EVENTS, Event, EventType


class LiveSessions:
    """The `sessions.*` operations over one gateway's sessions; `tap` is the registry's tap."""

    def __init__(
        self, sessions: SessionRegistry, control: ControlServer, approvals: ApprovalService
    ) -> None:
        self.sessions = sessions
        self.control = control
        self.approvals = approvals
        # the last screen rendered for a session and the recording's size then: approvers ask
        # every 2 s beside a hold, and a held session rarely writes anything meanwhile
        self._screens: dict[str, tuple[int, list[str]]] = {}
        sessions.tap = self.tap
        for op, handler in {
            "sessions.list": self.list,
            "sessions.watch": self.watch,
            "sessions.end": self.end,
            "sessions.screen": self.screen,
        }.items():
            control.register(op, handler)

    def tap(self, session: GatewaySession, event: EventType, fields: tuple[Any, ...]) -> None:
        """Stream what a session shows to whoever watches it (as recorded, so masked)."""
        topic = f"session:{session.id}"
        if not self.control.watched(topic):
            return
        if event is EventType.OUTPUT:
            channel, data = fields[0], fields[1]
        elif session.protocol == "postgres" and session.recording is not None:
            spec = EVENTS[event]
            at = session.recording.elapsed_us()
            line = timeline_line(Event(event, at, dict(zip(spec.fields, fields, strict=False))))
            if line is None:
                return
            channel, data = 0, f"{line}\r\n".encode()
        else:
            return
        self.control.publish(
            topic, "session.output", {"session_id": session.id, "channel": channel, "data": data}
        )

    async def _concerning(self, caller: ControlPeer) -> Callable[[GatewaySession], bool]:
        """Which live sessions a caller may list, watch and see: every one for an operator;
        for a console user, their own and those with a held command they may decide."""
        if not caller.restricted:
            return lambda session: True
        pending = await self.approvals.pending_holds()
        deciding = {h.session_id for h in pending if caller.person.concerned_by(h)}
        name = caller.person.name
        return lambda session: session.identity.name == name or session.id in deciding

    async def list(self, caller: ControlPeer, args: dict[str, Any]) -> list[dict[str, Any]]:
        concerns = await self._concerning(caller)
        return [s.describe() for s in self.sessions.live().values() if concerns(s)]

    async def _one(self, caller: ControlPeer, args: dict[str, Any]) -> GatewaySession:
        """The one live session `args["id"]` starts, among those that concern the caller."""
        session_id = str(args["id"])
        concerns = await self._concerning(caller)
        matches = [
            session
            for sid, session in self.sessions.live().items()
            if sid.startswith(session_id) and concerns(session)
        ]
        if len(matches) != 1:
            raise DecisionRefused(f"no single live session {session_id}")
        return matches[0]

    async def watch(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        """Stream a live session to this caller, read-only, until it stops or the session
        ends."""
        session = await self._one(caller, args)
        caller.topics.add(f"session:{session.id}")
        return {"id": session.id, "user": session.identity.name, "target": session.target}

    async def screen(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        """The session as its user sees it now, rendered from its recording so far (on
        request, off the event loop: no terminal emulation on the forwarding path)."""
        session = await self._one(caller, args)
        recording = session.recording
        if recording is None:
            return {"id": session.id, "lines": []}
        path = recording.path
        size = path.stat().st_size if path.exists() else -1
        cached = self._screens.get(session.id)
        if cached is None or cached[0] != size:  # rendered again only when the file grew
            render = statement_timeline if session.protocol == "postgres" else screen_of_recording
            cached = (size, await asyncio.to_thread(render, path))
            live = self.sessions.live()
            self._screens = {sid: v for sid, v in self._screens.items() if sid in live}
            self._screens[session.id] = cached
        return {"id": session.id, "lines": cached[1]}

    async def end(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        session = await self._one(caller, args)
        reason = str(args.get("reason") or "").strip()
        if not reason:
            raise DecisionRefused("ending a session needs a reason (--reason)")
        by = caller.person.name
        await self.approvals.audit(by, "session_ended", session.id, reason=reason)
        session.end(f"ended by {by}: {reason}", f"hoop: {by} ended this session: {reason}")
        return {"id": session.id, "ended": True}


def screen_of_recording(path: Path) -> list[str]:
    """The last screen of a (possibly still growing) terminal recording, as text lines."""
    from replay.player import Player
    from storage.reader import RecordingError, RecordingReader

    try:
        with RecordingReader.open(path) as reader:
            player = Player.open(reader)
            player.seek(player.duration_us)
            return [line.rstrip() for line in player.lines()]
    except (OSError, RecordingError) as exc:
        return [f"(cannot render the session: {exc})"]
