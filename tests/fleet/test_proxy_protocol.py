"""The PROXY protocol parser: v1 and v2 headers, cut at every byte position, never reading
past the header, and refusing what is malformed."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.fleet.proxy_protocol import (
    V2_SIGNATURE,
    NeedData,
    ProxyHeader,
    ProxyHeaderError,
    parse,
    starts_like_header,
    v1_header,
    v2_header,
)

STREAM = b"SSH-2.0-OpenSSH_9.2\r\n"


def feed_exactly(stream: bytes) -> tuple[ProxyHeader, bytes]:
    """Read as a socket reader would: exactly as many bytes as the parser asks for."""
    data = b""
    while True:
        result = parse(data)
        if isinstance(result, NeedData):
            assert result.count >= 1
            data += stream[len(data) : len(data) + result.count]
            continue
        return result, stream[len(data) :]


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (v1_header(("203.0.113.7", 51234), ("10.0.0.1", 2222)), ("203.0.113.7", 51234)),
        (v1_header(("2001:db8::7", 1), ("2001:db8::1", 2222)), ("2001:db8::7", 1)),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
        (v2_header(("203.0.113.7", 51234), ("10.0.0.1", 2222)), ("203.0.113.7", 51234)),
        (v2_header(("2001:db8::7", 65535), ("2001:db8::1", 2222)), ("2001:db8::7", 65535)),
        (
            v2_header(("198.51.100.2", 9), ("10.0.0.1", 2222), tlvs=b"\x04\x00\x01x"),
            ("198.51.100.2", 9),
        ),
        (v2_header(None, None), None),
    ],
)
def test_header_then_stream_untouched(header: bytes, source: tuple[str, int] | None) -> None:
    found, rest = feed_exactly(header + STREAM)
    assert found.source == source
    assert found.length == len(header)
    assert rest == STREAM  # not one byte of SSH was taken


@pytest.mark.parametrize(
    "header",
    [
        v1_header(("203.0.113.7", 51234), ("10.0.0.1", 2222)),
        v2_header(("2001:db8::7", 5), ("::1", 6)),
    ],
)
def test_every_cut_asks_for_more_never_too_much(header: bytes) -> None:
    for cut in range(len(header)):
        result = parse(header[:cut])
        assert isinstance(result, NeedData), cut
        assert cut + result.count <= len(header), cut


@pytest.mark.parametrize(
    "bad",
    [
        b"SSH-2.0-OpenSSH\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",  # a PostgreSQL SSLRequest
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n",  # a field missing
        b"PROXY TCP4 203.0.113.700 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",  # v6 address in TCP4
        b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 01 2\r\n",
        b"PROXY TCP4  203.0.113.7 10.0.0.1 1 2\r\n",
        b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\n",  # LF without CR
        b"PROXY " + b"A" * 120,  # no CRLF within 107 bytes
        V2_SIGNATURE + bytes([0x11, 0x11]) + struct.pack("!H", 12) + bytes(12),  # version 1
        V2_SIGNATURE + bytes([0x2F, 0x11]) + struct.pack("!H", 12) + bytes(12),  # command 15
        V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 4) + bytes(4),  # short addresses
        V2_SIGNATURE + bytes([0x21, 0x51]) + struct.pack("!H", 12) + bytes(12),  # family 5
        V2_SIGNATURE[:11] + b"X" + bytes(4),
    ],
)
def test_malformed_is_refused(bad: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        feed_exactly(bad + bytes(300))


def test_first_bytes_of_a_header_are_recognised() -> None:
    for header in (v1_header(("192.0.2.1", 1), ("192.0.2.2", 2)), v2_header(None, None)):
        for cut in range(1, 17):
            assert starts_like_header(header[:cut])
    assert not starts_like_header(STREAM)
    assert not starts_like_header(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
    assert not starts_like_header(b"")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_a_need_or_a_refusal(data: bytes) -> None:
    try:
        result = parse(data)
    except ProxyHeaderError:
        return
    if isinstance(result, NeedData):
        assert result.count >= 1
    else:
        assert 0 < result.length <= len(data)


@settings(max_examples=200, deadline=None)
@given(
    st.ip_addresses(v=4).map(str),
    st.integers(0, 65535),
    st.booleans(),
    st.binary(max_size=40),
)
def test_generated_headers_round_trip(host: str, port: int, v2: bool, rest: bytes) -> None:
    header = (v2_header if v2 else v1_header)((host, port), ("10.0.0.1", 2222))
    found, left = feed_exactly(header + rest)
    assert found.source == (host, port) and left == rest
