"""Watching a live session from any instance: the control operation `sessions.watch` on
instance B, for a session carried by instance A, opens the peer channel to A (proxy/fleet/peer.py)
and republishes what A streams on B's control socket, under the same topic a local session's
output has (`session:<id>`), so the command line and the workstation need not know where the
session runs.

A decides nothing about who may watch: B has authenticated its caller and applies the same
rule as for a local session (an operator sees every session; a console user their own, and
those with a held command they may decide) before it asks A.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.fleet.peer import PeerError, PeerServer, PeerStream, connect
from storage.state import HoldStatus, LiveSession, StoreUnavailable

log = logging.getLogger("hoop.fleet.watch")

QUEUE_LIMIT = 2048  # events waiting for a slow peer: past this the watcher loses output, not A
RELAYED = ("sessions.screen", "sessions.end")  # what a peer may ask of a session carried here


@dataclass(frozen=True, slots=True)
class PeerPerson:
    """Who asked, on the peer instance (it checked they may): named in the audit log."""

    name: str
    groups: frozenset[str] = frozenset()


@dataclass(slots=True)
class PeerCaller:
    """The caller a relayed request runs as here: unrestricted, since the asking instance
    applied its caller's restrictions before it asked."""

    person: PeerPerson
    topics: set[str] = field(default_factory=set)
    restricted: bool = False


class FleetWatch:
    """Both sides: `serve` answers peers' watch requests for local sessions; `handler` wraps
    the local `sessions.watch` so an id that matches no local session is looked up in the
    fleet."""

    def __init__(
        self,
        *,
        control: Any,
        store: Any,
        gateway_id: str,
        secret: bytes,
        local_sessions: Callable[[], set[str]],
    ) -> None:
        self.control = control
        self.store = store
        self.gateway_id = gateway_id
        self.secret = secret
        self.local_sessions = local_sessions
        self.server = PeerServer(secret, {"watch": self._serve_watch, "call": self._serve_call})
        self.local_handlers: dict[str, Any] = {}  # op -> this instance's own control handler
        self._relays: dict[str, asyncio.Task[None]] = {}

    async def start(self, host: str, port: int) -> None:
        await self.server.start(host, port)

    async def stop(self) -> None:
        for task in list(self._relays.values()):
            task.cancel()
        await self.server.stop()

    # -- the instance carrying the session ---------------------------------------------------

    async def _serve_watch(self, message: dict[str, Any], stream: PeerStream) -> None:
        session_id = str(message.get("id", ""))
        if session_id not in self.local_sessions():
            await stream.send({"event": "error", "item": {"error": "no such live session"}})
            return
        topic = f"session:{session_id}"
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_LIMIT)

        def listener(_topic: str, event: str, item: dict[str, Any]) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((event, item))

        stop = self.control.listen(listener, [topic])
        try:
            await stream.send({"event": "session.watching", "item": {"id": session_id}})
            while True:
                try:
                    event, item = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    if session_id not in self.local_sessions():
                        break
                    continue
                await stream.send({"event": event, "item": item})
            await stream.send({"event": "session.ended", "item": {"id": session_id}})
        finally:
            stop()

    async def _serve_call(self, message: dict[str, Any], stream: PeerStream) -> None:
        """`sessions.screen` or `sessions.end` for a local session, asked by a peer that has
        checked its caller may (the answer goes back as it would to a local operator)."""
        op = str(message.get("name", ""))
        handler = self.local_handlers.get(op) if op in RELAYED else None
        args = message.get("args")
        if handler is None or not isinstance(args, dict):
            await stream.send({"error": f"{op} cannot be relayed"})
            return
        caller = PeerCaller(PeerPerson(str(message.get("by") or "a peer instance")))
        try:
            result = await handler(caller, args)
        except Exception as exc:
            await stream.send({"error": str(exc)})
            return
        await stream.send({"result": result})

    # -- the instance the watcher is on ------------------------------------------------------

    def handler(self, local: Any) -> Any:
        """The `sessions.watch` handler: the local one, else a session on another instance."""

        async def watch(caller: Any, args: dict[str, Any]) -> dict[str, Any]:
            try:
                found: dict[str, Any] = await local(caller, args)
                return found
            except Exception as refused:
                remote = await self._remote(caller, str(args.get("id", "")))
                if remote is None:
                    raise refused from None
                return remote

        return watch

    def relay(self, op: str, local: Any) -> Any:
        """The `op` handler (screen, end): the local one, else the instance carrying it."""
        self.local_handlers[op] = local

        async def handle(caller: Any, args: dict[str, Any]) -> Any:
            try:
                return await local(caller, args)
            except Exception as refused:
                session = await self._find(caller, str(args.get("id", "")))
                if session is None:
                    raise refused from None
                return await self._call(session, op, args, caller.person.name)

        return handle

    def lister(self, local: Any) -> Any:
        """`sessions.list`: this instance's sessions, then those of the others that concern
        the caller (from the shared registry, each with its `gateway_id`)."""

        async def handle(caller: Any, args: dict[str, Any]) -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = await local(caller, args)
            try:
                live = await self.store.live_sessions()
            except StoreUnavailable:
                return rows
            for session in live:
                if session.gateway_id != self.gateway_id and await self._concerns(caller, session):
                    rows.append(
                        {
                            "id": session.id,
                            "user": session.user,
                            "target": session.target,
                            "protocol": session.protocol,
                            "client": session.client,
                            "started_at": session.started_at,
                            "gateway_id": session.gateway_id,
                        }
                    )
            return rows

        return handle

    async def _find(self, caller: Any, prefix: str) -> LiveSession | None:
        if not prefix:
            return None
        try:
            live = await self.store.live_sessions()
        except StoreUnavailable:
            return None
        matches = [
            s
            for s in live
            if s.id.startswith(prefix)
            and s.gateway_id != self.gateway_id
            and await self._concerns(caller, s)
        ]
        return matches[0] if len(matches) == 1 else None

    async def _peer_of(self, session: LiveSession) -> tuple[str, int] | None:
        try:
            instances = {i.id: i for i in await self.store.instances()}
        except StoreUnavailable:
            return None
        instance = instances.get(session.gateway_id)
        if instance is None or not instance.peer_address or instance.state != "up":
            return None
        host, _, port = instance.peer_address.rpartition(":")
        return host, int(port)

    async def _call(self, session: LiveSession, op: str, args: dict[str, Any], by: str) -> Any:
        from proxy.holds.broker import DecisionRefused

        where = await self._peer_of(session)
        if where is None:
            raise DecisionRefused(
                f"session {session.id[:8]} is on {session.gateway_id}, which cannot be reached"
            )
        try:
            stream = await connect(where[0], where[1], self.secret)
        except (OSError, TimeoutError, PeerError) as exc:
            raise DecisionRefused(f"{session.gateway_id} cannot be reached: {exc}") from None
        try:
            await stream.send(
                {"op": "call", "name": op, "args": {**args, "id": session.id}, "by": by}
            )
            async for answer in stream:
                if "error" in answer:
                    raise DecisionRefused(f"{session.gateway_id}: {answer['error']}")
                return answer.get("result")
        finally:
            stream.close()
        raise DecisionRefused(f"{session.gateway_id} closed the channel")

    async def _concerns(self, caller: Any, session: LiveSession) -> bool:
        if not caller.restricted:
            return True
        if session.user == caller.person.name:
            return True
        pending = await self.store.list_holds(HoldStatus.PENDING)
        return any(h.session_id == session.id and caller.person.concerned_by(h) for h in pending)

    async def _remote(self, caller: Any, prefix: str) -> dict[str, Any] | None:
        session = await self._find(caller, prefix)
        if session is None:
            return None
        where = await self._peer_of(session)
        if where is None:
            return None
        topic = f"session:{session.id}"
        caller.topics.add(topic)
        if session.id not in self._relays or self._relays[session.id].done():
            self._relays[session.id] = asyncio.ensure_future(
                self._relay(where[0], where[1], session.id, topic)
            )
        return {
            "id": session.id,
            "user": session.user,
            "target": session.target,
            "gateway_id": session.gateway_id,
        }

    async def _relay(self, host: str, port: int, session_id: str, topic: str) -> None:
        try:
            stream = await connect(host, port, self.secret)
        except (OSError, TimeoutError, PeerError) as exc:
            log.warning("cannot reach %s:%d to watch %s: %s", host, port, session_id, exc)
            return
        try:
            await stream.send({"op": "watch", "id": session_id})
            async for message in stream:
                event, item = str(message.get("event")), message.get("item") or {}
                if isinstance(item, dict) and event.startswith("session."):
                    self.control.publish(topic, event, item)
                if event in ("session.ended", "error") or not self.control.watched(topic):
                    break
        except (OSError, PeerError) as exc:
            log.warning("watching %s through %s:%d ended: %s", session_id, host, port, exc)
        finally:
            stream.close()
            self._relays.pop(session_id, None)
