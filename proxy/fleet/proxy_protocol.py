"""The PROXY protocol (versions 1 and 2), as HAProxy sends it before a balanced TCP stream, so
that the gateway records and throttles the caller's real address, not the balancer's.

Sans-IO: `parse(data)` looks at the bytes received so far and answers with the header, or with
how many more bytes it needs *at least* (never more than the header holds, so a reader that asks
for exactly that many never reads into the SSH or PostgreSQL stream behind it), or raises
`ProxyHeaderError`. The spec is haproxy's doc/proxy-protocol.txt.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
V1_MIN = 15  # "PROXY UNKNOWN\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family and transport, length


class V2Command(IntEnum):
    LOCAL = 0x0  # the balancer's own connection (a health check): no caller behind it
    PROXY = 0x1


class V2Family(IntEnum):
    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


class V2Transport(IntEnum):
    UNSPEC = 0x0
    STREAM = 0x1
    DGRAM = 0x2


V2_ADDRESS_SIZES = {V2Family.UNSPEC: 0, V2Family.INET: 12, V2Family.INET6: 36, V2Family.UNIX: 216}


class ProxyHeaderError(ValueError):
    """A header that is not a PROXY header, or a malformed one: the connection is refused."""


@dataclass(frozen=True, slots=True)
class NeedData:
    """Read at least this many more bytes, then call `parse` again with all of them."""

    count: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a header says. `source` is None when it names no caller (v1 UNKNOWN, v2 LOCAL or
    an address family other than TCP over IPv4/IPv6): then the connection's own peer stands."""

    version: int
    length: int  # bytes of the stream the header took
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def starts_like_header(data: bytes) -> bool:
    """Whether the first bytes of a stream are (the start of) a PROXY header. Neither an SSH
    client ("SSH-2.0-...") nor a PostgreSQL client (a length, starting with zero) begins so."""
    if not data:
        return False
    return V1_PREFIX.startswith(data[:6]) or V2_SIGNATURE.startswith(data[:12])


def parse(data: bytes) -> ProxyHeader | NeedData:
    """The header at the start of `data`, or how many more bytes it needs. Bytes past the
    header are left alone (the header's `length` says where the stream starts)."""
    if not data:
        return NeedData(V1_MIN)
    if data[0:1] == V1_PREFIX[0:1]:
        return _parse_v1(data)
    if data[0:1] == V2_SIGNATURE[0:1]:
        return _parse_v2(data)
    raise ProxyHeaderError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | NeedData:
    head = data[: len(V1_PREFIX)]
    if not V1_PREFIX.startswith(head):
        raise ProxyHeaderError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data[:V1_MAX]:
            raise ProxyHeaderError("PROXY v1 header without CRLF within 107 bytes")
        return NeedData(max(1, V1_MIN - len(data)))
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    parts = text.split(" ")
    if parts[0] != "PROXY" or len(parts) < 2:
        raise ProxyHeaderError("malformed PROXY v1 header")
    if parts[1] == "UNKNOWN":  # anything may follow; the receiver ignores it
        return ProxyHeader(1, end + 2, None, None)
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise ProxyHeaderError(f"malformed PROXY v1 header: {text[:60]!r}")
    version = 4 if parts[1] == "TCP4" else 6
    source = (_v1_address(parts[2], version), _v1_port(parts[4]))
    destination = (_v1_address(parts[3], version), _v1_port(parts[5]))
    return ProxyHeader(1, end + 2, source, destination)


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 header: {text[:45]!r} is not an address") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY v1 header: {text!r} is not a TCP{version} address")
    return str(address)


def _v1_port(text: str) -> int:
    leading_zero = len(text) > 1 and text[0] == "0"
    if not text.isascii() or not text.isdigit() or len(text) > 5 or leading_zero:
        raise ProxyHeaderError(f"PROXY v1 header: {text[:8]!r} is not a port")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY v1 header: {port} is not a port")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | NeedData:
    signature = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(signature):
        raise ProxyHeaderError("not a PROXY protocol header")
    if len(data) < V2_FIXED:
        return NeedData(V2_FIXED - len(data))
    version, command_code = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version}")
    try:
        command = V2Command(command_code)
        family = V2Family(data[13] >> 4)
        transport = V2Transport(data[13] & 0x0F)
    except ValueError:
        raise ProxyHeaderError("PROXY v2 header with an unknown command or family") from None
    (length,) = struct.unpack_from("!H", data, 14)
    total = V2_FIXED + length
    if len(data) < total:
        return NeedData(total - len(data))
    if length < V2_ADDRESS_SIZES[family]:
        raise ProxyHeaderError("PROXY v2 header shorter than its addresses")
    body = data[V2_FIXED:total]
    if command is V2Command.LOCAL or transport is not V2Transport.STREAM:
        return ProxyHeader(2, total, None, None)
    if family is V2Family.INET:
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", body)
        return ProxyHeader(
            2,
            total,
            (str(ipaddress.IPv4Address(src)), sport),
            (str(ipaddress.IPv4Address(dst)), dport),
        )
    if family is V2Family.INET6:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", body)
        return ProxyHeader(
            2,
            total,
            (str(ipaddress.IPv6Address(src)), sport),
            (str(ipaddress.IPv6Address(dst)), dport),
        )
    return ProxyHeader(2, total, None, None)  # UNSPEC or UNIX: no TCP caller to name


def v1_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header for a TCP connection (what tests and the bench send)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n").encode(
        "ascii"
    )


def v2_header(
    source: tuple[str, int] | None, destination: tuple[str, int] | None, tlvs: bytes = b""
) -> bytes:
    """A v2 header: PROXY over TCP when addresses are given, else LOCAL."""
    if source is None or destination is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = V2Family.INET if src.version == 4 else V2Family.INET6
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    return (
        V2_SIGNATURE
        + bytes([0x21, (family << 4) | V2Transport.STREAM])
        + struct.pack("!H", len(body))
        + body
    )
