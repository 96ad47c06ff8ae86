"""The control API: how the workstation and scripts talk to a running gateway.

A UNIX socket in the data directory, owner-only. Both directions carry msgpack maps:

    request   {"id": 7, "op": "holds.decide", "args": {...}}
    response  {"id": 7, "ok": true, "result": ...}   or   {"id": 7, "ok": false, "error": "..."}
    event     {"event": "hold.decided", "data": {...}}          (pushed to subscribers)

The codec is sans-IO; the server and client are thin asyncio shells around it. The server
always knows which person acts: it reads the peer's OS user from the socket (SO_PEERCRED) and
maps it to a gateway identity with the `identify` callback the gateway gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from proxy.broker import DecisionRefused, Person

SOCKET_NAME = "control.sock"
MAX_MESSAGE = 1024 * 1024


class ProtocolError(Exception):
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
            raise ProtocolError(f"malformed control message: {exc}") from None
        for message in messages:
            if not isinstance(message, dict):
                raise ProtocolError("a control message must be a map")
        return messages

    @staticmethod
    def encode(message: dict[str, Any]) -> bytes:
        data: bytes = msgpack.packb(message, use_bin_type=True)
        if len(data) > MAX_MESSAGE:
            raise ProtocolError(f"control message of {len(data)} bytes is too large")
        return data


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def peer_os_user(sock: socket.socket) -> str:
    """The OS account on the other end of a UNIX socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


@dataclass(slots=True, eq=False)  # identity equality: callers live in a set
class Caller:
    """One connected control client: who it is, and the topics it subscribed to."""

    person: Person
    writer: asyncio.StreamWriter
    topics: set[str] = field(default_factory=set)

    def send(self, message: dict[str, Any]) -> None:
        if not self.writer.is_closing():
            self.writer.write(ControlCodec.encode(message))


Handler = Callable[[Caller, dict[str, Any]], Awaitable[Any]]


class ControlServer:
    """Serves registered operations on the control socket and pushes published events."""

    def __init__(self, path: Path, identify: Callable[[str], Person | None]) -> None:
        self.path = path
        self._identify = identify
        self._handlers: dict[str, Handler] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "whoami": self._whoami,
        }
        self._callers: set[Caller] = set()
        self._listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self._server: asyncio.AbstractServer | None = None

    def register(self, op: str, handler: Handler) -> None:
        self._handlers[op] = handler

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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

    def listen(self, listener: Callable[[str, str, dict[str, Any]], None]) -> Callable[[], None]:
        """Receive every published (topic, event, data) in-process, as the SSH console does;
        returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, topic: str, event: str, data: dict[str, Any]) -> None:
        """Push an event to every caller subscribed to `topic`, and to in-process listeners."""
        for listener in list(self._listeners):
            listener(topic, event, data)
        message = {"event": event, "data": data}
        for caller in list(self._callers):
            if topic in caller.topics:
                caller.send(message)

    async def _subscribe(self, caller: Caller, args: dict[str, Any]) -> list[str]:
        caller.topics.update(str(topic) for topic in args.get("topics", []))
        return sorted(caller.topics)

    async def _unsubscribe(self, caller: Caller, args: dict[str, Any]) -> list[str]:
        caller.topics.difference_update(str(topic) for topic in args.get("topics", []))
        return sorted(caller.topics)

    async def _whoami(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        return {"name": caller.person.name, "groups": sorted(caller.person.groups)}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        os_user = peer_os_user(sock)
        person = self._identify(os_user)
        if person is None:
            writer.write(
                ControlCodec.encode(
                    {
                        "id": 0,
                        "ok": False,
                        "error": f"the OS user {os_user} is not mapped to a gateway identity "
                        "(add it under [control.operators] in the configuration)",
                    }
                )
            )
            writer.close()
            return
        caller = Caller(person, writer)
        self._callers.add(caller)
        codec = ControlCodec()
        try:
            while data := await reader.read(65536):
                for message in codec.feed(data):
                    await self._dispatch(caller, message)
                await writer.drain()
        except ProtocolError as exc:
            caller.send({"id": 0, "ok": False, "error": str(exc)})
        except ConnectionError:
            pass
        finally:
            self._callers.discard(caller)
            writer.close()

    async def _dispatch(self, caller: Caller, message: dict[str, Any]) -> None:
        request_id = message.get("id", 0)
        op = message.get("op")
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            caller.send({"id": request_id, "ok": False, "error": f"unknown operation {op!r}"})
            return
        args = message.get("args") or {}
        try:
            result = await handler(caller, args if isinstance(args, dict) else {})
        except (DecisionRefused, ControlError) as exc:
            caller.send({"id": request_id, "ok": False, "error": str(exc)})
        except (KeyError, TypeError, ValueError) as exc:
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
    async def connect(cls, path: Path) -> ControlClient:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                f"cannot reach the gateway at {path}: is `hoop-tui gateway` running?"
            ) from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (the socket is owner-only)") from None
        return cls(reader, writer)

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
        except (ConnectionError, ProtocolError):
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
