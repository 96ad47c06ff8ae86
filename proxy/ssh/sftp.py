"""Reading the SFTP packets that cross a bridge, to record file operations (sans-IO).

The bridge relays SFTP bytes untouched; it also feeds them here, requests from the caller and
replies from the target, and records the `FileOperation`s that come out: an open, the bytes read
and written through each handle when it is closed, a rename, a remove, a mkdir, each with its
path and outcome. SFTP version 3 (what OpenSSH speaks). A stream that stops making sense is
not fatal: the observer says so once and stops itemising; the raw bytes are recorded anyway.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

MAX_PACKET = 4 * 1024 * 1024  # far above OpenSSH's 256 KiB; larger means we lost the framing
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

OPEN_READ = 0x01
OPEN_WRITE = 0x02
OPEN_APPEND = 0x04
OPEN_CREATE = 0x08
OPEN_TRUNCATE = 0x10


class Packet(IntEnum):
    INIT = 1
    VERSION = 2
    OPEN = 3
    CLOSE = 4
    READ = 5
    WRITE = 6
    LSTAT = 7
    FSTAT = 8
    SETSTAT = 9
    FSETSTAT = 10
    OPENDIR = 11
    READDIR = 12
    REMOVE = 13
    MKDIR = 14
    RMDIR = 15
    REALPATH = 16
    STAT = 17
    RENAME = 18
    READLINK = 19
    SYMLINK = 20
    STATUS = 101
    HANDLE = 102
    DATA = 103
    NAME = 104
    ATTRS = 105
    EXTENDED = 200
    EXTENDED_REPLY = 201


STATUS_OK = 0
STATUS_EOF = 1


@dataclass(frozen=True, slots=True)
class FileOperation:
    """One thing done to a file, as recorded: `op`, the path as sent, a byte count, an outcome."""

    op: str
    path: bytes
    size: int = 0
    detail: str = ""


class MalformedPacket(Exception):
    pass


class _Cursor:
    """Reads SFTP wire types from one packet body."""

    def __init__(self, body: bytes | memoryview) -> None:
        self.body = memoryview(body)
        self.pos = 0

    def u32(self) -> int:
        if self.pos + 4 > len(self.body):
            raise MalformedPacket("truncated uint32")
        (value,) = _U32.unpack_from(self.body, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        if self.pos + 8 > len(self.body):
            raise MalformedPacket("truncated uint64")
        (value,) = _U64.unpack_from(self.body, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        size = self.u32()
        if self.pos + size > len(self.body):
            raise MalformedPacket("truncated string")
        value = bytes(self.body[self.pos : self.pos + size])
        self.pos += size
        return value

    def string_length(self) -> int:
        """Skip a string, returning only its length (WRITE data need not be copied)."""
        size = self.u32()
        if self.pos + size > len(self.body):
            raise MalformedPacket("truncated string")
        self.pos += size
        return size


class PacketFramer:
    """Cuts a byte stream into SFTP packets: `feed` bytes, iterate (type, body)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, memoryview]]:
        self._buffer += data
        offset = 0
        buffer = self._buffer
        try:
            while len(buffer) - offset >= 5:
                (length,) = _U32.unpack_from(buffer, offset)
                if length < 1 or length > MAX_PACKET:
                    raise MalformedPacket(f"packet length {length}")
                if len(buffer) - offset - 4 < length:
                    break
                view = memoryview(buffer)[offset + 5 : offset + 4 + length]
                kind = buffer[offset + 4]
                offset += 4 + length
                try:
                    yield kind, view
                finally:
                    view.release()
        finally:
            if offset:
                del self._buffer[:offset]


@dataclass(slots=True)
class _OpenFile:
    path: bytes
    directory: bool
    flags: int = 0
    read: int = 0
    written: int = 0


@dataclass(slots=True)
class _Request:
    kind: int
    path: bytes = b""
    other: bytes = b""
    handle: bytes = b""
    size: int = 0
    flags: int = 0


@dataclass(slots=True)
class SftpObserver:
    """Pairs requests with replies to produce FileOperations; both directions are fed here."""

    _requests: dict[int, _Request] = field(default_factory=dict)
    _handles: dict[bytes, _OpenFile] = field(default_factory=dict)
    _from_client: PacketFramer = field(default_factory=PacketFramer)
    _from_target: PacketFramer = field(default_factory=PacketFramer)
    broken: bool = False

    def client_data(self, data: bytes) -> list[FileOperation]:
        """Bytes the caller sent (requests)."""
        return self._consume(self._from_client, data, self._request)

    def target_data(self, data: bytes) -> list[FileOperation]:
        """Bytes the target sent (replies)."""
        return self._consume(self._from_target, data, self._reply)

    def finish(self, reason: str = "channel closed") -> list[FileOperation]:
        """Handles still open when the channel ends: report what went through them."""
        ops: list[FileOperation] = []
        for open_file in self._handles.values():
            ops.extend(_closed(open_file, reason))
        self._handles.clear()
        self._requests.clear()
        return ops

    def _consume(self, framer: PacketFramer, data: bytes, handler: object) -> list[FileOperation]:
        if self.broken:
            return []
        ops: list[FileOperation] = []
        try:
            for kind, body in framer.feed(data):
                handler(kind, _Cursor(body), ops)  # type: ignore[operator]
        except MalformedPacket as exc:
            self.broken = True
            ops.append(FileOperation("unparsed", b"", 0, f"SFTP stream not understood: {exc}"))
        return ops

    def _request(self, kind: int, cursor: _Cursor, ops: list[FileOperation]) -> None:
        if kind in (Packet.INIT, Packet.VERSION):
            return
        request_id = cursor.u32()
        request = _Request(kind)
        if kind == Packet.OPEN:
            request.path = cursor.string()
            request.flags = cursor.u32()
        elif kind in (Packet.OPENDIR, Packet.REMOVE, Packet.MKDIR, Packet.RMDIR, Packet.SETSTAT):
            request.path = cursor.string()
        elif kind in (Packet.RENAME, Packet.SYMLINK):
            request.path = cursor.string()
            request.other = cursor.string()
        elif kind in (Packet.CLOSE, Packet.READ):
            request.handle = cursor.string()
        elif kind == Packet.WRITE:
            request.handle = cursor.string()
            cursor.u64()
            request.size = cursor.string_length()
        elif kind == Packet.EXTENDED:
            name = cursor.string()
            if name in (b"posix-rename@openssh.com", b"hardlink@openssh.com"):
                request.kind = Packet.RENAME if name.startswith(b"posix") else Packet.SYMLINK
                request.path = cursor.string()
                request.other = cursor.string()
            else:
                return
        else:
            return
        self._requests[request_id] = request

    def _reply(self, kind: int, cursor: _Cursor, ops: list[FileOperation]) -> None:
        if kind == Packet.VERSION:
            return
        request_id = cursor.u32()
        request = self._requests.pop(request_id, None)
        if request is None:
            return
        if kind == Packet.HANDLE and request.kind in (Packet.OPEN, Packet.OPENDIR):
            handle = cursor.string()
            directory = request.kind == Packet.OPENDIR
            self._handles[handle] = _OpenFile(request.path, directory, request.flags)
            if directory:
                ops.append(FileOperation("list", request.path, 0, "ok"))
            else:
                ops.append(FileOperation("open", request.path, 0, _mode(request.flags)))
        elif kind == Packet.DATA and request.kind == Packet.READ:
            open_file = self._handles.get(request.handle)
            if open_file is not None:
                open_file.read += len(cursor.string())
        elif kind == Packet.STATUS:
            self._status(request, cursor, ops)

    def _status(self, request: _Request, cursor: _Cursor, ops: list[FileOperation]) -> None:
        code = cursor.u32()
        outcome = "ok" if code == STATUS_OK else f"failed: {_message(cursor, code)}"
        kind = request.kind
        if kind == Packet.WRITE:
            open_file = self._handles.get(request.handle)
            if open_file is not None and code == STATUS_OK:
                open_file.written += request.size
        elif kind == Packet.CLOSE:
            open_file = self._handles.pop(request.handle, None)
            if open_file is not None and not open_file.directory:
                ops.extend(_closed(open_file, outcome))
        elif kind in (Packet.OPEN, Packet.OPENDIR):
            op = "open" if kind == Packet.OPEN else "list"
            ops.append(FileOperation(op, request.path, 0, f"{_mode(request.flags)} {outcome}"))
        elif kind in _PATH_OPS:
            detail = outcome
            if request.other:
                detail = f"to {_text(request.other)}: {outcome}"
            ops.append(FileOperation(_PATH_OPS[kind], request.path, 0, detail))


_PATH_OPS: dict[int, str] = {
    Packet.REMOVE: "remove",
    Packet.MKDIR: "mkdir",
    Packet.RMDIR: "rmdir",
    Packet.RENAME: "rename",
    Packet.SYMLINK: "link",
    Packet.SETSTAT: "setstat",
}


def _closed(open_file: _OpenFile, outcome: str) -> list[FileOperation]:
    """What a handle did, once it is closed: a read and/or a write total."""
    ops = []
    if (open_file.read or not open_file.written) and (
        open_file.read or open_file.flags & OPEN_READ
    ):
        ops.append(FileOperation("read", open_file.path, open_file.read, outcome))
    if open_file.written or open_file.flags & OPEN_WRITE:
        ops.append(FileOperation("write", open_file.path, open_file.written, outcome))
    return ops


def _mode(flags: int) -> str:
    if not flags:
        return ""
    parts = []
    if flags & OPEN_READ:
        parts.append("read")
    if flags & OPEN_WRITE:
        parts.append("write")
    if flags & OPEN_APPEND:
        parts.append("append")
    if flags & OPEN_CREATE:
        parts.append("create")
    if flags & OPEN_TRUNCATE:
        parts.append("truncate")
    return "+".join(parts)


def _message(cursor: _Cursor, code: int) -> str:
    try:
        return _text(cursor.string()) or f"status {code}"
    except MalformedPacket:
        return f"status {code}"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------------
# Judging requests before the target sees them

STATUS_PERMISSION_DENIED = 3
STATUS_OP_UNSUPPORTED = 8
OPEN_TOUCHES = OPEN_WRITE | OPEN_APPEND | OPEN_CREATE | OPEN_TRUNCATE

# Extensions that only read metadata or act through handles already judged at open.
_HARMLESS_EXTENSIONS = frozenset(
    {
        b"statvfs@openssh.com",
        b"fstatvfs@openssh.com",
        b"fsync@openssh.com",
        b"limits@openssh.com",
        b"expand-path@openssh.com",
        b"home-directory",
        b"users-groups-by-id@openssh.com",
        b"copy-data",
    }
)


@dataclass(frozen=True, slots=True)
class FileRequest:
    """An SFTP request a file rule judges: `operations` are (operation, path) pairs with the
    path as sent (`cwd` is the directory relative paths start from, when known); `unknown`
    names a request the gateway cannot read. Forward `packet` if allowed, else answer
    `refusal(...)` to the caller instead."""

    request_id: int
    packet: bytes
    operations: tuple[tuple[str, str], ...]
    cwd: str | None = None
    unknown: str = ""

    def refusal(self, message: str, code: int = STATUS_PERMISSION_DENIED) -> bytes:
        """The SSH_FXP_STATUS reply that refuses this request with `message`."""
        text = message.encode("utf-8", "replace")
        body = _U32.pack(self.request_id) + _U32.pack(code)
        body += _U32.pack(len(text)) + text + _U32.pack(2) + b"en"
        return _U32.pack(len(body) + 1) + bytes([Packet.STATUS]) + body


@dataclass(slots=True)
class SftpGate:
    """Cuts the caller's SFTP stream into whole packets; those that read, write, delete,
    rename, list, make directories, change attributes or link come out as `FileRequest`s to
    judge, the rest as bytes to forward. The target's replies are fed to `target_data` so the
    gate learns the working directory (the answer to `realpath .`) and the paths of handles,
    and knows where its packets end: a refusal may only be sent to the caller between two of
    them (`at_boundary`). A stream it cannot cut is `broken`: nothing more is forwarded."""

    _from_client: PacketFramer = field(default_factory=PacketFramer)
    _from_target: PacketFramer = field(default_factory=PacketFramer)
    _realpath_dot: set[int] = field(default_factory=set)
    _opening: dict[int, bytes] = field(default_factory=dict)
    _handles: dict[bytes, str] = field(default_factory=dict)
    cwd: str | None = None
    broken: str = ""

    def client_data(self, data: bytes) -> list[bytes | FileRequest]:
        """Bytes from the caller: whole packets to forward, or requests to judge first."""
        if self.broken:
            return []
        items: list[bytes | FileRequest] = []
        try:
            for kind, body in self._from_client.feed(data):
                packet = _U32.pack(len(body) + 1) + bytes([kind]) + bytes(body)
                request = self._judged(kind, _Cursor(body), packet)
                if request is None:
                    if items and isinstance(items[-1], bytes):
                        items[-1] += packet
                    else:
                        items.append(packet)
                else:
                    items.append(request)
        except MalformedPacket as exc:
            self.broken = f"SFTP request not understood: {exc}"
        return items

    def target_data(self, data: bytes) -> None:
        """Bytes from the target (forwarded as they are): learn cwd and handle paths."""
        try:
            for kind, body in self._from_target.feed(data):
                self._reply(kind, _Cursor(body))
        except MalformedPacket:
            self._from_target = PacketFramer()
            self.cwd = None  # what we learnt may be wrong now: relative paths are unknown

    @property
    def at_boundary(self) -> bool:
        return not self._from_target._buffer

    def _judged(self, kind: int, cursor: _Cursor, packet: bytes) -> FileRequest | None:
        if kind in (Packet.INIT, Packet.VERSION):
            return None
        request_id = cursor.u32()
        operations: list[tuple[str, str]] = []
        if kind == Packet.OPEN:
            path = _path(cursor.string())
            flags = cursor.u32()
            self._opening[request_id] = path.encode()
            if flags & OPEN_READ or not flags & OPEN_TOUCHES:
                operations.append(("read", path))
            if flags & OPEN_TOUCHES:
                operations.append(("write", path))
        elif kind == Packet.OPENDIR:
            path = _path(cursor.string())
            self._opening[request_id] = path.encode()
            operations.append(("list", path))
        elif kind in (Packet.REMOVE, Packet.RMDIR):
            operations.append(("delete", _path(cursor.string())))
        elif kind == Packet.MKDIR:
            operations.append(("mkdir", _path(cursor.string())))
        elif kind == Packet.SETSTAT:
            operations.append(("chmod", _path(cursor.string())))
        elif kind == Packet.FSETSTAT:
            operations.append(("chmod", self._handles.get(cursor.string(), "")))
        elif kind == Packet.RENAME:
            operations += [("rename", _path(cursor.string())), ("rename", _path(cursor.string()))]
        elif kind == Packet.SYMLINK:
            operations += [("symlink", _path(cursor.string())), ("symlink", _path(cursor.string()))]
        elif kind == Packet.CLOSE:
            self._handles.pop(cursor.string(), None)
            return None
        elif kind == Packet.REALPATH:
            if cursor.string() in (b"", b"."):
                self._realpath_dot.add(request_id)
            return None
        elif kind == Packet.EXTENDED:
            name = cursor.string()
            if name == b"posix-rename@openssh.com":
                operations += [("rename", _path(cursor.string())) for _ in range(2)]
            elif name == b"hardlink@openssh.com":
                operations += [("symlink", _path(cursor.string())) for _ in range(2)]
            elif name == b"lsetstat@openssh.com":
                operations.append(("chmod", _path(cursor.string())))
            elif name not in _HARMLESS_EXTENSIONS:
                unknown = f"the SFTP extension {_text(name)}, which the gateway cannot read"
                return FileRequest(request_id, packet, (), self.cwd, unknown)
            else:
                return None
        else:
            return None
        return FileRequest(request_id, packet, tuple(operations), self.cwd)

    def _reply(self, kind: int, cursor: _Cursor) -> None:
        if kind == Packet.VERSION:
            return
        request_id = cursor.u32()
        if kind == Packet.NAME and request_id in self._realpath_dot:
            self._realpath_dot.discard(request_id)
            if cursor.u32() >= 1:
                self.cwd = _path(cursor.string())
        elif kind == Packet.HANDLE and request_id in self._opening:
            path = _path(self._opening.pop(request_id))
            if self.cwd is not None and not path.startswith("/"):
                path = self.cwd.rstrip("/") + "/" + path
            self._handles[cursor.string()] = path
        else:
            self._realpath_dot.discard(request_id)
            self._opening.pop(request_id, None)


def _path(value: bytes) -> str:
    """A path as a server written in C would use it: up to its first NUL byte."""
    return _text(value.split(b"\0", 1)[0])
