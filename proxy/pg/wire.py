"""PostgreSQL v3 wire protocol framing, sans-IO, both directions.

Feed bytes in, take messages out; nothing here touches a socket. Two readers:

- `StartupReader` reads the first packet of a connection, which has no type byte:
  StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.
- `MessageReader` reads typed messages (one type byte, an int32 length that counts itself, the
  body). It returns `Frame`s (type and raw body) or None when it needs more data; `decode_*`
  turns a frame into a typed message through a dispatch table keyed by the type code.

A length claim above the limit (1 GiB by default, PostgreSQL's own ceiling) or below 4 is
refused with ProtocolError before anything is allocated for it; so is a short or overlong body.
Garbage never raises anything but ProtocolError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, TypeVar

MAX_MESSAGE_LENGTH = 0x3FFFFFFF  # 1 GiB - 1: what PostgreSQL itself accepts at most
MAX_STARTUP_LENGTH = 10_000  # PostgreSQL's MAX_STARTUP_PACKET_LENGTH
PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_HEAD = struct.Struct("!cI")
_HEAD_AT = struct.Struct("!BI")


class ProtocolError(Exception):
    """The peer sent something that is not valid PostgreSQL protocol."""


class Frontend(IntEnum):
    """Type codes of messages a client sends."""

    BIND = ord("B")
    CLOSE = ord("C")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    COPY_FAIL = ord("f")
    DESCRIBE = ord("D")
    EXECUTE = ord("E")
    FLUSH = ord("H")
    FUNCTION_CALL = ord("F")
    PARSE = ord("P")
    PASSWORD = ord("p")  # also SASLInitialResponse, SASLResponse, GSSResponse
    QUERY = ord("Q")
    SYNC = ord("S")
    TERMINATE = ord("X")


class Backend(IntEnum):
    """Type codes of messages a server sends."""

    AUTHENTICATION = ord("R")
    BACKEND_KEY_DATA = ord("K")
    BIND_COMPLETE = ord("2")
    CLOSE_COMPLETE = ord("3")
    COMMAND_COMPLETE = ord("C")
    COPY_DATA = ord("d")
    COPY_DONE = ord("c")
    COPY_IN_RESPONSE = ord("G")
    COPY_OUT_RESPONSE = ord("H")
    COPY_BOTH_RESPONSE = ord("W")
    DATA_ROW = ord("D")
    EMPTY_QUERY_RESPONSE = ord("I")
    ERROR_RESPONSE = ord("E")
    FUNCTION_CALL_RESPONSE = ord("V")
    NEGOTIATE_PROTOCOL_VERSION = ord("v")
    NO_DATA = ord("n")
    NOTICE_RESPONSE = ord("N")
    NOTIFICATION_RESPONSE = ord("A")
    PARAMETER_DESCRIPTION = ord("t")
    PARAMETER_STATUS = ord("S")
    PARSE_COMPLETE = ord("1")
    PORTAL_SUSPENDED = ord("s")
    READY_FOR_QUERY = ord("Z")
    ROW_DESCRIPTION = ord("T")


class AuthCode(IntEnum):
    """The int32 that starts an Authentication message."""

    OK = 0
    KERBEROS_V5 = 2
    CLEARTEXT_PASSWORD = 3
    MD5_PASSWORD = 5
    GSS = 7
    GSS_CONTINUE = 8
    SSPI = 9
    SASL = 10
    SASL_CONTINUE = 11
    SASL_FINAL = 12


# ---------------------------------------------------------------------------------------------
# Reading bodies


class Body:
    """A cursor over one message body; every read checks the bounds."""

    __slots__ = ("data", "encoding", "pos")

    def __init__(self, data: bytes, encoding: str = "utf-8") -> None:
        self.data = data
        self.pos = 0
        self.encoding = encoding  # the session's client_encoding, as a Python codec

    def _take(self, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise ProtocolError("message body is shorter than its fields")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def int16(self) -> int:
        value: int = _I16.unpack(self._take(2))[0]
        return value

    def int32(self) -> int:
        value: int = _I32.unpack(self._take(4))[0]
        return value

    def uint32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def raw(self, size: int) -> bytes:
        return self._take(size)

    def rest(self) -> bytes:
        return self._take(len(self.data) - self.pos)

    def cstring_bytes(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolError("string field is not NUL-terminated")
        value = self.data[self.pos : end]
        self.pos = end + 1
        return value

    def cstring(self) -> str:
        try:
            return self.cstring_bytes().decode(self.encoding)
        except UnicodeDecodeError:
            what = "UTF-8" if self.encoding == "utf-8" else self.encoding
            raise ProtocolError(f"string field is not valid {what}") from None

    def count(self, item_size: int) -> int:
        """An int16 count of items at least `item_size` bytes each; refused if it cannot fit."""
        number = self.int16()
        if number < 0 or number * item_size > len(self.data) - self.pos:
            raise ProtocolError("item count does not fit the message")
        return number

    def value(self) -> bytes | None:
        """An int32 length then that many bytes; -1 is NULL."""
        size = self.int32()
        if size == -1:
            return None
        if size < 0:
            raise ProtocolError("negative value length")
        return self._take(size)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError("message body is longer than its fields")


def _cstr(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if b"\x00" in data:
        raise ValueError("a protocol string cannot contain NUL")
    return data + b"\x00"


def _value(value: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if value is None else _I32.pack(len(value)) + value


# ---------------------------------------------------------------------------------------------
# Framing


@dataclass(frozen=True, slots=True)
class Frame:
    """One typed message as it crossed the wire: its type code and raw body."""

    type: int
    body: bytes

    def encode(self) -> bytes:
        return _HEAD.pack(bytes([self.type]), len(self.body) + 4) + self.body


def frame(type_code: int, body: bytes = b"") -> bytes:
    """A whole message on the wire: type byte, length, body."""
    return _HEAD_AT.pack(type_code, len(body) + 4) + body


class MessageReader:
    """Typed messages out of a byte stream. `feed` bytes, then `next()` until it returns None.

    `raw_bytes()` hands back whole messages' bytes untouched, so a relay forwards exactly
    what it read.
    """

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.max_length = max_length
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def take_buffered(self) -> bytes:
        """Everything not yet read as messages (for a switch to TLS or a raw relay)."""
        data = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return data

    def peek_type(self) -> int | None:
        """The type code of the next message, if any of it has arrived."""
        return self._buf[self._pos] if len(self._buf) > self._pos else None

    def next_span(self) -> tuple[int, int, int] | None:
        """(type, start, end) of the next whole message inside `buffer`, or None.
        The message's bytes are `buffer[start:end]`; its body starts at start + 5."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 5:
            return None
        type_code, length = _HEAD_AT.unpack_from(buf, pos)
        if length < 4 or length > self.max_length:
            raise ProtocolError(
                f"message {chr(type_code)!r} claims a length of {length} bytes "
                f"(allowed: 4 to {self.max_length})"
            )
        end = pos + 1 + length
        if len(buf) < end:
            return None
        self._pos = end
        return type_code, pos, end

    def unread(self, start: int) -> None:
        """Give back the message `next_span` returned at `start`: it is read again later."""
        self._pos = start

    @property
    def buffer(self) -> bytearray:
        return self._buf

    def next(self) -> Frame | None:
        span = self.next_span()
        if span is None:
            return None
        type_code, start, end = span
        return Frame(type_code, bytes(self._buf[start + 5 : end]))

    def __iter__(self) -> Iterator[Frame]:
        while (item := self.next()) is not None:
            yield item


# ---------------------------------------------------------------------------------------------
# Startup packets


@dataclass(frozen=True, slots=True)
class StartupMessage:
    protocol: int
    params: dict[str, str]

    def encode(self) -> bytes:
        body = _I32.pack(self.protocol)
        for key, value in self.params.items():
            body += _cstr(key) + _cstr(value)
        body += b"\x00"
        return _I32.pack(len(body) + 4) + body


@dataclass(frozen=True, slots=True)
class SSLRequest:
    def encode(self) -> bytes:
        return _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return _I32.pack(8) + _I32.pack(GSSENC_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: bytes  # 4 bytes in protocol 3.0; longer keys came with 3.2

    def encode(self) -> bytes:
        body = _I32.pack(CANCEL_REQUEST_CODE) + _I32.pack(self.pid) + self.secret
        return _I32.pack(len(body) + 4) + body


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


class StartupReader:
    """The first packet of a connection (and the one after a TLS or GSS refusal)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take_buffered(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next(self) -> StartupPacket | None:
        if len(self._buf) < 4:
            return None
        (length,) = _I32.unpack_from(self._buf, 0)
        if length < 8 or length > MAX_STARTUP_LENGTH:
            raise ProtocolError(f"startup packet claims a length of {length} bytes")
        if len(self._buf) < length:
            return None
        body = bytes(self._buf[4:length])
        del self._buf[:length]
        return decode_startup(body)


def decode_startup(body: bytes) -> StartupPacket:
    reader = Body(body)
    code = reader.int32()
    if code == SSL_REQUEST_CODE:
        reader.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        reader.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = reader.int32()
        secret = reader.rest()
        if not 4 <= len(secret) <= 256:
            raise ProtocolError("cancel request key has a bad length")
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise ProtocolError(f"unsupported protocol version {code >> 16}.{code & 0xFFFF}")
    params: dict[str, str] = {}
    while True:
        key = reader.cstring()
        if not key:
            break
        params[key] = reader.cstring()
    reader.end()
    return StartupMessage(code, params)


# ---------------------------------------------------------------------------------------------
# Typed messages


class Message:
    """A typed message: `TYPE` is its code, `body()` its encoded body."""

    TYPE: ClassVar[int]

    def body(self) -> bytes:
        return b""

    def encode(self) -> bytes:
        return frame(self.TYPE, self.body())

    @classmethod
    def decode(cls, data: bytes) -> Message:
        Body(data).end()
        return cls()


M = TypeVar("M", bound=Message)


class Empty(Message):
    """A message with no body: equal to any other of its kind."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return self.TYPE

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- frontend ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query(Message):
    TYPE: ClassVar[int] = Frontend.QUERY
    sql: str

    def body(self) -> bytes:
        return _cstr(self.sql)

    @classmethod
    def decode(cls, data: bytes, encoding: str = "utf-8") -> Query:
        reader = Body(data, encoding)
        sql = reader.cstring()
        reader.end()
        return cls(sql)


@dataclass(frozen=True, slots=True)
class Parse(Message):
    TYPE: ClassVar[int] = Frontend.PARSE
    name: str
    sql: str
    param_types: tuple[int, ...] = ()

    def body(self) -> bytes:
        types = b"".join(_U32.pack(oid) for oid in self.param_types)
        return _cstr(self.name) + _cstr(self.sql) + _I16.pack(len(self.param_types)) + types

    @classmethod
    def decode(cls, data: bytes, encoding: str = "utf-8") -> Parse:
        reader = Body(data, encoding)
        name = reader.cstring()
        sql = reader.cstring()
        types = tuple(reader.uint32() for _ in range(reader.count(4)))
        reader.end()
        return cls(name, sql, types)


@dataclass(frozen=True, slots=True)
class Bind(Message):
    TYPE: ClassVar[int] = Frontend.BIND
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def body(self) -> bytes:
        out = [_cstr(self.portal), _cstr(self.statement), _I16.pack(len(self.param_formats))]
        out += [_I16.pack(code) for code in self.param_formats]
        out.append(_I16.pack(len(self.params)))
        out += [_value(value) for value in self.params]
        out.append(_I16.pack(len(self.result_formats)))
        out += [_I16.pack(code) for code in self.result_formats]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes, encoding: str = "utf-8") -> Bind:
        reader = Body(data, encoding)
        portal = reader.cstring()
        statement = reader.cstring()
        formats = tuple(reader.int16() for _ in range(reader.count(2)))
        params = tuple(reader.value() for _ in range(reader.count(4)))
        results = tuple(reader.int16() for _ in range(reader.count(2)))
        reader.end()
        return cls(portal, statement, formats, params, results)

    def param_format(self, index: int) -> int:
        if not self.param_formats:
            return 0
        if len(self.param_formats) == 1:
            return self.param_formats[0]
        return self.param_formats[index] if index < len(self.param_formats) else 0


@dataclass(frozen=True, slots=True)
class Describe(Message):
    TYPE: ClassVar[int] = Frontend.DESCRIBE
    kind: str  # "S" statement or "P" portal
    name: str

    def body(self) -> bytes:
        return self.kind.encode("ascii") + _cstr(self.name)

    @classmethod
    def decode(cls, data: bytes) -> Describe:
        reader = Body(data)
        kind = _kind(reader.byte())
        name = reader.cstring()
        reader.end()
        return cls(kind, name)


@dataclass(frozen=True, slots=True)
class Close(Message):
    TYPE: ClassVar[int] = Frontend.CLOSE
    kind: str
    name: str

    def body(self) -> bytes:
        return self.kind.encode("ascii") + _cstr(self.name)

    @classmethod
    def decode(cls, data: bytes) -> Close:
        reader = Body(data)
        kind = _kind(reader.byte())
        name = reader.cstring()
        reader.end()
        return cls(kind, name)


def _kind(code: int) -> str:
    if code not in (ord("S"), ord("P")):
        raise ProtocolError(f"describe/close target must be 'S' or 'P', not {code!r}")
    return chr(code)


@dataclass(frozen=True, slots=True)
class Execute(Message):
    TYPE: ClassVar[int] = Frontend.EXECUTE
    portal: str
    max_rows: int = 0

    def body(self) -> bytes:
        return _cstr(self.portal) + _I32.pack(self.max_rows)

    @classmethod
    def decode(cls, data: bytes, encoding: str = "utf-8") -> Execute:
        reader = Body(data, encoding)
        portal = reader.cstring()
        rows = reader.int32()
        reader.end()
        return cls(portal, rows)


@dataclass(frozen=True, slots=True)
class CopyData(Message):
    TYPE: ClassVar[int] = Frontend.COPY_DATA  # same code both ways
    data: bytes

    def body(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, data: bytes) -> CopyData:
        return cls(bytes(data))


@dataclass(frozen=True, slots=True)
class CopyFail(Message):
    TYPE: ClassVar[int] = Frontend.COPY_FAIL
    message: str

    def body(self) -> bytes:
        return _cstr(self.message)

    @classmethod
    def decode(cls, data: bytes) -> CopyFail:
        reader = Body(data)
        message = reader.cstring()
        reader.end()
        return cls(message)


@dataclass(frozen=True, slots=True)
class FunctionCall(Message):
    TYPE: ClassVar[int] = Frontend.FUNCTION_CALL
    payload: bytes  # kept raw: the gateway refuses fast-path calls, it never runs them

    def body(self) -> bytes:
        return self.payload

    @classmethod
    def decode(cls, data: bytes) -> FunctionCall:
        return cls(bytes(data))


@dataclass(frozen=True, slots=True)
class PasswordMessage(Message):
    """PasswordMessage, SASLInitialResponse and SASLResponse share a code; the state of the
    login says which one it is (see `sasl_initial` / `data`)."""

    TYPE: ClassVar[int] = Frontend.PASSWORD
    data: bytes

    def body(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, data: bytes) -> PasswordMessage:
        return cls(bytes(data))

    def password(self) -> str:
        reader = Body(self.data)
        value = reader.cstring()
        reader.end()
        return value

    def sasl_initial(self) -> tuple[str, bytes | None]:
        reader = Body(self.data)
        mechanism = reader.cstring()
        response = reader.value()
        reader.end()
        return mechanism, response

    @staticmethod
    def sasl_initial_of(mechanism: str, response: bytes) -> PasswordMessage:
        return PasswordMessage(_cstr(mechanism) + _value(response))


class Sync(Empty):
    TYPE: ClassVar[int] = Frontend.SYNC


class Flush(Empty):
    TYPE: ClassVar[int] = Frontend.FLUSH


class Terminate(Empty):
    TYPE: ClassVar[int] = Frontend.TERMINATE


class CopyDone(Empty):
    TYPE: ClassVar[int] = Frontend.COPY_DONE  # same code both ways


# -- backend ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authentication(Message):
    TYPE: ClassVar[int] = Backend.AUTHENTICATION
    code: int
    data: bytes = b""

    def body(self) -> bytes:
        return _I32.pack(self.code) + self.data

    @classmethod
    def decode(cls, data: bytes) -> Authentication:
        reader = Body(data)
        code = reader.int32()
        return cls(code, reader.rest())

    def mechanisms(self) -> list[str]:
        reader = Body(self.data)
        names = []
        while name := reader.cstring():
            names.append(name)
        reader.end()
        return names

    @staticmethod
    def sasl(mechanisms: list[str]) -> Authentication:
        return Authentication(AuthCode.SASL, b"".join(_cstr(m) for m in mechanisms) + b"\x00")


@dataclass(frozen=True, slots=True)
class BackendKeyData(Message):
    TYPE: ClassVar[int] = Backend.BACKEND_KEY_DATA
    pid: int
    secret: bytes

    def body(self) -> bytes:
        return _I32.pack(self.pid) + self.secret

    @classmethod
    def decode(cls, data: bytes) -> BackendKeyData:
        reader = Body(data)
        pid = reader.int32()
        secret = reader.rest()
        if not 4 <= len(secret) <= 256:
            raise ProtocolError("backend key has a bad length")
        return cls(pid, secret)


@dataclass(frozen=True, slots=True)
class ParameterStatus(Message):
    TYPE: ClassVar[int] = Backend.PARAMETER_STATUS
    name: str
    value: str

    def body(self) -> bytes:
        return _cstr(self.name) + _cstr(self.value)

    @classmethod
    def decode(cls, data: bytes) -> ParameterStatus:
        reader = Body(data)
        name, value = reader.cstring(), reader.cstring()
        reader.end()
        return cls(name, value)


@dataclass(frozen=True, slots=True)
class ReadyForQuery(Message):
    TYPE: ClassVar[int] = Backend.READY_FOR_QUERY
    status: str  # I idle, T in a transaction, E in a failed transaction

    def body(self) -> bytes:
        return self.status.encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> ReadyForQuery:
        reader = Body(data)
        status = reader.byte()
        reader.end()
        if status not in b"ITE":
            raise ProtocolError(f"bad transaction status {status!r}")
        return cls(chr(status))


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    table_oid: int = 0
    column: int = 0
    type_oid: int = 25
    type_size: int = -1
    type_modifier: int = -1
    format: int = 0


_COLUMN = struct.Struct("!IhIhih")


@dataclass(frozen=True, slots=True)
class RowDescription(Message):
    TYPE: ClassVar[int] = Backend.ROW_DESCRIPTION
    columns: tuple[Column, ...]

    def body(self) -> bytes:
        out = [_I16.pack(len(self.columns))]
        for c in self.columns:
            out.append(_cstr(c.name))
            out.append(
                _COLUMN.pack(
                    c.table_oid, c.column, c.type_oid, c.type_size, c.type_modifier, c.format
                )
            )
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes, encoding: str = "utf-8") -> RowDescription:
        reader = Body(data, encoding)
        columns = []
        for _ in range(reader.count(19)):
            name = reader.cstring()
            fields = _COLUMN.unpack(reader.raw(_COLUMN.size))
            columns.append(Column(name, *fields))
        reader.end()
        return cls(tuple(columns))


@dataclass(frozen=True, slots=True)
class DataRow(Message):
    TYPE: ClassVar[int] = Backend.DATA_ROW
    values: tuple[bytes | None, ...]

    def body(self) -> bytes:
        return _I16.pack(len(self.values)) + b"".join(_value(v) for v in self.values)

    @classmethod
    def decode(cls, data: bytes) -> DataRow:
        """The row's values; the same checks as `Body`, in one pass (every row of a masked
        result and every sampled row is read here)."""
        end = len(data)
        if end < 2:
            raise ProtocolError("message body is shorter than its fields")
        (count,) = _I16.unpack_from(data, 0)
        if count < 0 or count * 4 > end - 2:
            raise ProtocolError("item count does not fit the message")
        values: list[bytes | None] = []
        pos = 2
        for _ in range(count):
            if end - pos < 4:
                raise ProtocolError("message body is shorter than its fields")
            (size,) = _I32.unpack_from(data, pos)
            pos += 4
            if size == -1:
                values.append(None)
                continue
            if size < 0:
                raise ProtocolError("negative value length")
            if pos + size > end:
                raise ProtocolError("message body is shorter than its fields")
            values.append(data[pos : pos + size])
            pos += size
        if pos != end:
            raise ProtocolError("message body is longer than its fields")
        return cls(tuple(values))


@dataclass(frozen=True, slots=True)
class CommandComplete(Message):
    TYPE: ClassVar[int] = Backend.COMMAND_COMPLETE
    tag: str

    def body(self) -> bytes:
        return _cstr(self.tag)

    @classmethod
    def decode(cls, data: bytes) -> CommandComplete:
        reader = Body(data)
        tag = reader.cstring()
        reader.end()
        return cls(tag)

    @property
    def rows(self) -> int | None:
        """The row count at the end of the tag (`SELECT 3`, `INSERT 0 2`), if there is one."""
        last = self.tag.rpartition(" ")[2]
        return int(last) if last.isdigit() and " " in self.tag else None


# Error and notice field codes.
class Field(IntEnum):
    SEVERITY = ord("S")
    SEVERITY_NONLOCALIZED = ord("V")
    CODE = ord("C")
    MESSAGE = ord("M")
    DETAIL = ord("D")
    HINT = ord("H")
    POSITION = ord("P")


@dataclass(frozen=True, slots=True)
class ErrorResponse(Message):
    TYPE: ClassVar[int] = Backend.ERROR_RESPONSE
    fields: tuple[tuple[int, str], ...]

    def body(self) -> bytes:
        return b"".join(bytes([code]) + _cstr(value) for code, value in self.fields) + b"\x00"

    @classmethod
    def decode(cls, data: bytes, encoding: str = "utf-8") -> ErrorResponse:
        reader = Body(data, encoding)
        fields = []
        while code := reader.byte():
            fields.append((code, reader.cstring()))
        reader.end()
        return cls(tuple(fields))

    def get(self, code: int, default: str = "") -> str:
        return next((value for key, value in self.fields if key == code), default)

    @property
    def sqlstate(self) -> str:
        return self.get(Field.CODE)

    @property
    def message(self) -> str:
        return self.get(Field.MESSAGE)

    @classmethod
    def make(
        cls, sqlstate: str, message: str, severity: str = "ERROR", **extra: str
    ) -> ErrorResponse:
        fields = [
            (int(Field.SEVERITY), severity),
            (int(Field.SEVERITY_NONLOCALIZED), severity),
            (int(Field.CODE), sqlstate),
            (int(Field.MESSAGE), message),
        ]
        if "detail" in extra:
            fields.append((int(Field.DETAIL), extra["detail"]))
        if "hint" in extra:
            fields.append((int(Field.HINT), extra["hint"]))
        return cls(tuple(fields))


@dataclass(frozen=True, slots=True)
class NoticeResponse(ErrorResponse):
    TYPE: ClassVar[int] = Backend.NOTICE_RESPONSE

    @classmethod
    def decode(cls, data: bytes, encoding: str = "utf-8") -> NoticeResponse:
        return cls(ErrorResponse.decode(data, encoding).fields)


@dataclass(frozen=True, slots=True)
class NotificationResponse(Message):
    TYPE: ClassVar[int] = Backend.NOTIFICATION_RESPONSE
    pid: int
    channel: str
    payload: str

    def body(self) -> bytes:
        return _I32.pack(self.pid) + _cstr(self.channel) + _cstr(self.payload)

    @classmethod
    def decode(cls, data: bytes) -> NotificationResponse:
        reader = Body(data)
        pid = reader.int32()
        channel, payload = reader.cstring(), reader.cstring()
        reader.end()
        return cls(pid, channel, payload)


@dataclass(frozen=True, slots=True)
class ParameterDescription(Message):
    TYPE: ClassVar[int] = Backend.PARAMETER_DESCRIPTION
    type_oids: tuple[int, ...]

    def body(self) -> bytes:
        return _I16.pack(len(self.type_oids)) + b"".join(_U32.pack(o) for o in self.type_oids)

    @classmethod
    def decode(cls, data: bytes) -> ParameterDescription:
        reader = Body(data)
        oids = tuple(reader.uint32() for _ in range(reader.count(4)))
        reader.end()
        return cls(oids)


@dataclass(frozen=True, slots=True)
class CopyResponse(Message):
    """CopyInResponse, CopyOutResponse and CopyBothResponse: the same body."""

    TYPE: ClassVar[int] = Backend.COPY_IN_RESPONSE
    format: int
    column_formats: tuple[int, ...]

    def body(self) -> bytes:
        formats = b"".join(_I16.pack(f) for f in self.column_formats)
        return bytes([self.format]) + _I16.pack(len(self.column_formats)) + formats

    @classmethod
    def decode(cls, data: bytes) -> CopyResponse:
        reader = Body(data)
        fmt = reader.byte()
        formats = tuple(reader.int16() for _ in range(reader.count(2)))
        reader.end()
        return cls(fmt, formats)


@dataclass(frozen=True, slots=True)
class CopyInResponse(CopyResponse):
    TYPE: ClassVar[int] = Backend.COPY_IN_RESPONSE


@dataclass(frozen=True, slots=True)
class CopyOutResponse(CopyResponse):
    TYPE: ClassVar[int] = Backend.COPY_OUT_RESPONSE


@dataclass(frozen=True, slots=True)
class CopyBothResponse(CopyResponse):
    TYPE: ClassVar[int] = Backend.COPY_BOTH_RESPONSE


@dataclass(frozen=True, slots=True)
class FunctionCallResponse(Message):
    TYPE: ClassVar[int] = Backend.FUNCTION_CALL_RESPONSE
    value: bytes | None

    def body(self) -> bytes:
        return _value(self.value)

    @classmethod
    def decode(cls, data: bytes) -> FunctionCallResponse:
        reader = Body(data)
        value = reader.value()
        reader.end()
        return cls(value)


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion(Message):
    TYPE: ClassVar[int] = Backend.NEGOTIATE_PROTOCOL_VERSION
    newest_minor: int
    options: tuple[str, ...] = field(default=())

    def body(self) -> bytes:
        return (
            _I32.pack(self.newest_minor)
            + _I32.pack(len(self.options))
            + b"".join(_cstr(o) for o in self.options)
        )

    @classmethod
    def decode(cls, data: bytes) -> NegotiateProtocolVersion:
        reader = Body(data)
        minor = reader.int32()
        number = reader.int32()
        if number < 0 or number > len(data):
            raise ProtocolError("option count does not fit the message")
        options = tuple(reader.cstring() for _ in range(number))
        reader.end()
        return cls(minor, options)


class ParseComplete(Empty):
    TYPE: ClassVar[int] = Backend.PARSE_COMPLETE


class BindComplete(Empty):
    TYPE: ClassVar[int] = Backend.BIND_COMPLETE


class CloseComplete(Empty):
    TYPE: ClassVar[int] = Backend.CLOSE_COMPLETE


class NoData(Empty):
    TYPE: ClassVar[int] = Backend.NO_DATA


class EmptyQueryResponse(Empty):
    TYPE: ClassVar[int] = Backend.EMPTY_QUERY_RESPONSE


class PortalSuspended(Empty):
    TYPE: ClassVar[int] = Backend.PORTAL_SUSPENDED


# ---------------------------------------------------------------------------------------------
# Dispatch tables

Decoder = Callable[[bytes], Message]

FRONTEND_DECODERS: dict[int, Decoder] = {
    Frontend.BIND: Bind.decode,
    Frontend.CLOSE: Close.decode,
    Frontend.COPY_DATA: CopyData.decode,
    Frontend.COPY_DONE: CopyDone.decode,
    Frontend.COPY_FAIL: CopyFail.decode,
    Frontend.DESCRIBE: Describe.decode,
    Frontend.EXECUTE: Execute.decode,
    Frontend.FLUSH: Flush.decode,
    Frontend.FUNCTION_CALL: FunctionCall.decode,
    Frontend.PARSE: Parse.decode,
    Frontend.PASSWORD: PasswordMessage.decode,
    Frontend.QUERY: Query.decode,
    Frontend.SYNC: Sync.decode,
    Frontend.TERMINATE: Terminate.decode,
}

BACKEND_DECODERS: dict[int, Decoder] = {
    Backend.AUTHENTICATION: Authentication.decode,
    Backend.BACKEND_KEY_DATA: BackendKeyData.decode,
    Backend.BIND_COMPLETE: BindComplete.decode,
    Backend.CLOSE_COMPLETE: CloseComplete.decode,
    Backend.COMMAND_COMPLETE: CommandComplete.decode,
    Backend.COPY_DATA: CopyData.decode,
    Backend.COPY_DONE: CopyDone.decode,
    Backend.COPY_IN_RESPONSE: CopyInResponse.decode,
    Backend.COPY_OUT_RESPONSE: CopyOutResponse.decode,
    Backend.COPY_BOTH_RESPONSE: CopyBothResponse.decode,
    Backend.DATA_ROW: DataRow.decode,
    Backend.EMPTY_QUERY_RESPONSE: EmptyQueryResponse.decode,
    Backend.ERROR_RESPONSE: ErrorResponse.decode,
    Backend.FUNCTION_CALL_RESPONSE: FunctionCallResponse.decode,
    Backend.NEGOTIATE_PROTOCOL_VERSION: NegotiateProtocolVersion.decode,
    Backend.NO_DATA: NoData.decode,
    Backend.NOTICE_RESPONSE: NoticeResponse.decode,
    Backend.NOTIFICATION_RESPONSE: NotificationResponse.decode,
    Backend.PARAMETER_DESCRIPTION: ParameterDescription.decode,
    Backend.PARAMETER_STATUS: ParameterStatus.decode,
    Backend.PARSE_COMPLETE: ParseComplete.decode,
    Backend.PORTAL_SUSPENDED: PortalSuspended.decode,
    Backend.READY_FOR_QUERY: ReadyForQuery.decode,
    Backend.ROW_DESCRIPTION: RowDescription.decode,
}


def _decode(table: dict[int, Decoder], item: Frame, side: str) -> Message:
    decoder = table.get(item.type)
    if decoder is None:
        raise ProtocolError(f"unknown {side} message type {chr(item.type)!r}")
    try:
        return decoder(item.body)
    except ProtocolError:
        raise
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ProtocolError(f"bad {side} message {chr(item.type)!r}: {exc}") from None


def decode_frontend(item: Frame) -> Message:
    return _decode(FRONTEND_DECODERS, item, "frontend")


def decode_backend(item: Frame) -> Message:
    return _decode(BACKEND_DECODERS, item, "backend")


def expect(message: Message, kind: type[M]) -> M:
    """`message` as `kind`, or ProtocolError naming what arrived instead."""
    if not isinstance(message, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(message).__name__}")
    return message
