"""The control API: how the workstation and scripts talk to a running gateway.

A UNIX socket in the data directory, owner-only. Both directions carry msgpack maps:

    request   {"id": 7, "op": "holds.decide", "args": {...}}
    response  {"id": 7, "ok": true, "result": ...}   or   {"id": 7, "ok": false, "error": "..."}
    event     {"event": "hold.decided", "data": {...}}          (pushed to subscribers)

The codec is sans-IO; the server and client are thin asyncio shells around it. The server
always knows which person acts: it reads the peer's OS user from the socket (SO_PEERCRED) and
maps it to a gateway identity with the `identify` callback the gateway gives it. That mapping
may ask the OS user database and the directory, so it runs off the event loop (a worker
thread, a coroutine): a slow or stopped directory makes that one connection wait and then fail
closed with the reason, while sessions and other connections go on.

One exception, for the workstation the gateway runs itself for a remote approver
(`ssh -t bob@gateway console`): the gateway issues a console ticket (random, single-use,
short-lived, bound to bob) and hands it to that child in `$HOOP_CONSOLE_TICKET`. The child
presents it as its first message, `{"id": 1, "op": "ticket", "args": {"ticket": "..."}}`, and
the connection acts as bob for its whole life, limited to `REMOTE_OPS`: a ticket only ever
narrows what a connection may do, never widens it. Only a peer running as the gateway's own OS
user may present one; a wrong, used or expired ticket closes the connection with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import pwd
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from proxy.holds.broker import Person
from storage.private import private_dir
from storage.state import Grant, Hold, Refused, StoreUnavailable

SOCKET_NAME = "control.sock"
HOLDS_TOPIC = "holds"  # events carry a Hold (`Hold.to_json`): hold.created/updated/decided
GRANTS_TOPIC = "grants"  # events carry a Grant: grant.requested/decided/ended
MAX_MESSAGE = 1024 * 1024

TICKET_ENV = "HOOP_CONSOLE_TICKET"  # how the gateway hands a console ticket to its child
TICKET_TTL_S = 60.0
# What a connection bound by a console ticket may do: what the line console offers (holds,
# grants), and the live sessions that concern its person (their own, and those with a held
# command they may decide: the handlers check), listed, watched and their screens shown.
# Ending sessions and the audit log stay with the operators on the gateway host
# ([control.operators]); operations registered later are refused to ticket holders until
# they are added here (fail closed).
REMOTE_OPS = frozenset(
    {
        "whoami",
        "subscribe",
        "unsubscribe",
        "holds.list",
        "holds.decide",
        "grants.list",
        "grants.request",
        "grants.decide",
        "grants.revoke",
        "sessions.list",
        "sessions.screen",
        "sessions.watch",
    }
)
REMOTE_TOPICS = frozenset({HOLDS_TOPIC, GRANTS_TOPIC})
# What an event carries: a hold or grant (serialised here, `to_json`), or a plain map
Payload = Hold | Grant | dict[str, Any]


class ControlProtocolError(Exception):
    """The peer sent something that is not a control message."""


class ControlError(Exception):
    """A request the gateway refused, with its reason."""


class ControlCodec:
    """Sans-IO framing: feed bytes, get whole messages; encode messages to bytes."""

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_MESSAGE * 4)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        try:
            self._unpacker.feed(data)
            messages = list(self._unpacker)
        except (msgpack.UnpackException, ValueError, msgpack.BufferFull) as exc:
            raise ControlProtocolError(f"malformed control message: {exc}") from None
        for message in messages:
            if not isinstance(message, dict):
                raise ControlProtocolError("a control message must be a map")
        return messages

    @staticmethod
    def encode(message: dict[str, Any]) -> bytes:
        data: bytes = msgpack.packb(message, use_bin_type=True)
        if len(data) > MAX_MESSAGE:
            raise ControlProtocolError(f"control message of {len(data)} bytes is too large")
        return data


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def peer_uid(sock: socket.socket) -> int:
    """The OS user id on the other end of a UNIX socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


def os_user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


@dataclass(slots=True)
class _Ticket:
    person: Person
    expires_at: float
    used: bool = False


class Tickets:
    """Console tickets: random, single-use, short-lived, each bound to one person.

    Only a digest of each ticket is kept, so the tickets themselves are nowhere in the gateway
    once handed out; used and expired ones are remembered for a while to say why they fail."""

    def __init__(
        self, *, ttl_s: float = TICKET_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._book: dict[str, _Ticket] = {}

    @staticmethod
    def _digest(ticket: str) -> str:
        return hashlib.sha256(ticket.encode("utf-8", "replace")).hexdigest()

    def issue(self, person: Person) -> str:
        now = self._clock()
        for digest, old in list(self._book.items()):  # forget what cannot matter any more
            if old.expires_at + 10 * self.ttl_s < now:
                del self._book[digest]
        ticket = secrets.token_urlsafe(32)
        self._book[self._digest(ticket)] = _Ticket(person, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: object) -> Person:
        """The person a ticket stands for, once; ControlError for anything else."""
        if not isinstance(ticket, str) or not 16 <= len(ticket) <= 256:
            raise ControlError("console ticket refused: not a console ticket")
        found = self._book.get(self._digest(ticket))
        if found is None:
            raise ControlError("console ticket refused: unknown ticket")
        if found.used:
            raise ControlError("console ticket refused: it was already used")
        found.used = True  # one try, whatever happens next
        if self._clock() > found.expires_at:
            raise ControlError("console ticket refused: it has expired")
        return found.person

    def __len__(self) -> int:
        return sum(1 for ticket in self._book.values() if not ticket.used)


@dataclass(slots=True, eq=False)  # identity equality: callers live in a set
class ControlPeer:
    """One connected control client: who it is, and the topics it subscribed to."""

    person: Person
    writer: asyncio.StreamWriter
    topics: set[str] = field(default_factory=set)
    # the operations this connection may call; None for every one (an operator's connection)
    ops: frozenset[str] | None = None

    @property
    def restricted(self) -> bool:
        """A console ticket's connection: it sees only the holds and grants that concern its
        person (see `Person.concerned_by`), and only the operations in `REMOTE_OPS`."""
        return self.ops is not None

    def sees(self, topic: str, item: Payload) -> bool:
        """Whether this connection may see `item` published on `topic`: a ticket's connection
        sees only the holds and grants that concern its person."""
        if not (self.restricted and topic in REMOTE_TOPICS):
            return True
        return isinstance(item, Hold | Grant) and self.person.concerned_by(item)

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(ControlCodec.encode(message))


Handler = Callable[[ControlPeer, dict[str, Any]], Awaitable[Any]]
# An in-process receiver of published (topic, event, data)
Listener = Callable[[str, str, dict[str, Any]], None]
# OS user name -> the person it acts as (None: not mapped); may be a coroutine function
Identify = Callable[[str], "Person | Awaitable[Person | None] | None"]


class ControlServer:
    """Serves registered operations on the control socket and pushes published events."""

    def __init__(self, path: Path, identify: Identify) -> None:
        self.path = path
        self._identify = identify
        self._handlers: dict[str, Handler] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "whoami": self._whoami,
            "ticket": self._ticket_again,
        }
        self._callers: set[ControlPeer] = set()
        self.tickets = Tickets()
        self._listeners: list[tuple[frozenset[str], Listener]] = []
        self._server: asyncio.AbstractServer | None = None

    def register(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    def handler(self, op: str) -> Handler | None:
        """What serves `op` now, so an extension can wrap it (the fleet's watch relay)."""
        return self._handlers.get(op)

    async def start(self) -> None:
        private_dir(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)  # the socket is born owner-only
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for caller in list(self._callers):
                caller.writer.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def listen(self, listener: Listener, topics: Collection[str]) -> Callable[[], None]:
        """Receive what is published on `topics` in-process, as the SSH console and the
        notifier do; returns the function that stops it."""
        entry = (frozenset(topics), listener)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry)

    def watched(self, topic: str) -> bool:
        """Whether anyone would receive an event on `topic`: the hot path asks before it builds
        one for every chunk of session output, so a listener of holds must not make every
        session's output watched."""
        return any(topic in topics for topics, _ in self._listeners) or any(
            topic in caller.topics for caller in self._callers
        )

    def publish(
        self, topic: str, event: str, item: Payload, extra: dict[str, Any] | None = None
    ) -> None:
        """Push an event to every caller subscribed to `topic` that may see it, and to
        in-process listeners; a Hold or Grant goes out as its `to_json()`, with `extra`'s keys
        beside (a hold's `caller`: person or agent, as holds.list rows have it)."""
        data = item if isinstance(item, dict) else item.to_json()
        if extra:
            data = {**data, **extra}
        for topics, listener in list(self._listeners):
            if topic in topics:
                listener(topic, event, data)
        message = {"event": event, "data": data}
        for caller in list(self._callers):
            if topic in caller.topics and caller.sees(topic, item):
                caller.send(message)

    async def _subscribe(self, caller: ControlPeer, args: dict[str, Any]) -> list[str]:
        topics = {str(topic) for topic in args.get("topics", [])}
        if caller.ops is not None and not topics <= REMOTE_TOPICS:
            refused = ", ".join(sorted(topics - REMOTE_TOPICS))
            raise ControlError(f"the remote console cannot subscribe to {refused}")
        caller.topics.update(topics)
        return sorted(caller.topics)

    async def _ticket_again(self, caller: ControlPeer, args: dict[str, Any]) -> None:
        raise ControlError(
            f"this connection already acts as {caller.person.name}; "
            "a console ticket is only accepted as the first message"
        )

    async def _unsubscribe(self, caller: ControlPeer, args: dict[str, Any]) -> list[str]:
        caller.topics.difference_update(str(topic) for topic in args.get("topics", []))
        return sorted(caller.topics)

    async def _whoami(self, caller: ControlPeer, args: dict[str, Any]) -> dict[str, Any]:
        return {"name": caller.person.name, "groups": sorted(caller.person.groups)}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection's task. It never ends cancelled: asyncio's stream callback would
        print a CancelledError traceback for each connection still open when the loop shuts
        down (quitting `hoop-tui up` with the workstation attached)."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve_connection(reader, writer)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        uid = peer_uid(writer.get_extra_info("socket"))
        os_user = await asyncio.to_thread(os_user_name, uid)  # NSS may ask a directory
        try:
            person = await self._person(os_user)
        except Exception as exc:  # the directory is slow or down: fail closed, say why
            writer.write(
                ControlCodec.encode(
                    {
                        "id": 0,
                        "ok": False,
                        "error": f"cannot tell which gateway identity the OS user {os_user} "
                        f"is ({exc}); the user directory did not answer, try again later",
                    }
                )
            )
            writer.close()
            return
        # A console ticket comes only from the gateway's own OS user (the child it spawned).
        may_present_ticket = uid == os.geteuid()
        unmapped = {
            "id": 0,
            "ok": False,
            "error": f"the OS user {os_user} is not mapped to a gateway identity "
            "(add it under [control.operators] in the configuration)",
        }
        if person is None and not may_present_ticket:
            writer.write(ControlCodec.encode(unmapped))
            writer.close()
            return
        caller: ControlPeer | None = None
        codec = ControlCodec()
        try:
            while data := await reader.read(65536):
                for message in codec.feed(data):
                    if caller is None:
                        if message.get("op") == "ticket":
                            caller = self._redeem(message, writer, may_present_ticket)
                            if caller is None:
                                return
                            continue
                        if person is None:
                            writer.write(ControlCodec.encode(unmapped))
                            return
                        caller = ControlPeer(person, writer)
                        self._callers.add(caller)
                    await self._dispatch(caller, message)
                await writer.drain()
        except ControlProtocolError as exc:
            writer.write(ControlCodec.encode({"id": 0, "ok": False, "error": str(exc)}))
        except ConnectionError:
            pass
        finally:
            if caller is not None:
                self._callers.discard(caller)
            writer.close()

    async def _person(self, os_user: str) -> Person | None:
        found = self._identify(os_user)
        if inspect.isawaitable(found):
            return await found
        return found

    def _redeem(
        self, message: dict[str, Any], writer: asyncio.StreamWriter, allowed: bool
    ) -> ControlPeer | None:
        """Bind a new connection to the person of its console ticket, or refuse it (None)."""
        request_id = message.get("id", 0)
        args = message.get("args")
        try:
            if not allowed:
                raise ControlError(
                    "console ticket refused: only the gateway's own OS user may present one"
                )
            person = self.tickets.redeem(args.get("ticket") if isinstance(args, dict) else None)
        except ControlError as exc:
            writer.write(ControlCodec.encode({"id": request_id, "ok": False, "error": str(exc)}))
            return None
        caller = ControlPeer(person, writer, ops=REMOTE_OPS)
        self._callers.add(caller)
        caller.send({"id": request_id, "ok": True, "result": {"name": person.name}})
        return caller

    async def _dispatch(self, caller: ControlPeer, message: dict[str, Any]) -> None:
        request_id = message.get("id", 0)
        op = message.get("op")
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            caller.send({"id": request_id, "ok": False, "error": f"unknown operation {op!r}"})
            return
        if caller.ops is not None and op not in caller.ops and op != "ticket":
            caller.send(
                {
                    "id": request_id,
                    "ok": False,
                    "error": f"{op} is not available in the remote console; "
                    "use the workstation on the gateway host",
                }
            )
            return
        args = message.get("args") or {}
        try:
            result = await handler(caller, args if isinstance(args, dict) else {})
        except (Refused, ControlError, StoreUnavailable) as exc:
            caller.send({"id": request_id, "ok": False, "error": str(exc)})
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            caller.send({"id": request_id, "ok": False, "error": f"bad arguments for {op}: {exc}"})
        else:
            caller.send({"id": request_id, "ok": True, "result": result})


class ControlClient:
    """An asyncio client for the control socket: `call()` for requests, `events()` for pushes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._codec = ControlCodec()
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._refused: ControlError | None = None  # why the gateway turned this client away
        self._pump = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def connect(cls, path: Path, *, ticket: str | None = None) -> ControlClient:
        """Connect; with a console ticket, present it first and act as its person (or fail)."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"cannot reach the gateway at {path}: is `hoop-tui gateway` running?"
            ) from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (the socket is owner-only)") from None
        client = cls(reader, writer)
        if ticket is not None:
            try:
                await client.call("ticket", ticket=ticket)
            except ControlError:
                await client.close()
                raise
        return client

    async def _read_loop(self) -> None:
        try:
            while data := await self._reader.read(65536):
                for message in self._codec.feed(data):
                    if "event" in message:
                        await self._events.put(message)
                        continue
                    future = self._waiting.pop(message.get("id", 0), None)
                    if future is None and not message.get("ok", True):
                        error = ControlError(str(message.get("error")))
                        for pending in self._waiting.values():
                            pending.set_exception(error)
                        self._waiting.clear()
                        self._refused = error
                    elif future is not None and not future.done():
                        if message.get("ok"):
                            future.set_result(message.get("result"))
                        else:
                            future.set_exception(ControlError(str(message.get("error"))))
        except (ConnectionError, ControlProtocolError):
            pass
        finally:
            closed = self._refused or ControlError("the gateway closed the control connection")
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(closed)
            self._waiting.clear()
            await self._events.put(None)

    async def call(self, op: str, **args: Any) -> Any:
        if self._pump.done():
            raise self._refused or ControlError("the control connection is closed")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._writer.write(ControlCodec.encode({"id": request_id, "op": op, "args": args}))
        await self._writer.drain()
        return await future

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while (message := await self._events.get()) is not None:
            yield message

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
