"""PostgreSQL framing: every message round-trips, survives being cut at every byte, and
garbage never raises anything but ProtocolError."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pg import wire
from proxy.pg.wire import (
    MAX_MESSAGE_LENGTH,
    MessageReader,
    ProtocolError,
    StartupReader,
    decode_backend,
    decode_frontend,
)

names = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=20)
values = st.one_of(st.none(), st.binary(max_size=40))
int16s = st.integers(-(2**15), 2**15 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
oids = st.integers(0, 2**32 - 1)
field_codes = st.sampled_from([ord(c) for c in "SVCMDHP"])

frontend_messages = st.one_of(
    st.builds(wire.Query, names),
    st.builds(wire.Parse, names, names, st.lists(oids, max_size=5).map(tuple)),
    st.builds(
        wire.Bind,
        names,
        names,
        st.lists(st.sampled_from([0, 1]), max_size=4).map(tuple),
        st.lists(values, max_size=4).map(tuple),
        st.lists(st.sampled_from([0, 1]), max_size=4).map(tuple),
    ),
    st.builds(wire.Describe, st.sampled_from("SP"), names),
    st.builds(wire.Close, st.sampled_from("SP"), names),
    st.builds(wire.Execute, names, int32s),
    st.builds(wire.CopyData, st.binary(max_size=60)),
    st.builds(wire.CopyFail, names),
    st.builds(wire.PasswordMessage, st.binary(max_size=30)),
    st.builds(wire.FunctionCall, st.binary(max_size=30)),
    st.just(wire.Sync()),
    st.just(wire.Flush()),
    st.just(wire.Terminate()),
    st.just(wire.CopyDone()),
)

columns = st.builds(wire.Column, names, oids, int16s, oids, int16s, int32s, st.sampled_from([0, 1]))
error_fields = st.lists(st.tuples(field_codes, names), max_size=5).map(tuple)
backend_messages = st.one_of(
    st.builds(wire.Authentication, st.sampled_from([0, 3, 5, 10, 11, 12]), st.binary(max_size=20)),
    st.builds(wire.BackendKeyData, int32s, st.binary(min_size=4, max_size=32)),
    st.builds(wire.ParameterStatus, names, names),
    st.builds(wire.ReadyForQuery, st.sampled_from("ITE")),
    st.builds(wire.RowDescription, st.lists(columns, max_size=4).map(tuple)),
    st.builds(wire.DataRow, st.lists(values, max_size=5).map(tuple)),
    st.builds(wire.CommandComplete, names),
    st.builds(wire.ErrorResponse, error_fields),
    st.builds(wire.NoticeResponse, error_fields),
    st.builds(wire.NotificationResponse, int32s, names, names),
    st.builds(wire.ParameterDescription, st.lists(oids, max_size=5).map(tuple)),
    st.builds(
        wire.CopyInResponse, st.sampled_from([0, 1]), st.lists(int16s, max_size=3).map(tuple)
    ),
    st.builds(
        wire.CopyOutResponse, st.sampled_from([0, 1]), st.lists(int16s, max_size=3).map(tuple)
    ),
    st.builds(wire.CopyData, st.binary(max_size=60)),
    st.builds(wire.FunctionCallResponse, values),
    st.builds(wire.NegotiateProtocolVersion, int32s, st.lists(names, max_size=3).map(tuple)),
    st.just(wire.ParseComplete()),
    st.just(wire.BindComplete()),
    st.just(wire.CloseComplete()),
    st.just(wire.NoData()),
    st.just(wire.EmptyQueryResponse()),
    st.just(wire.PortalSuspended()),
    st.just(wire.CopyDone()),
)


def _read_all(data: bytes, chunks: list[int]) -> list[wire.Frame]:
    reader = MessageReader()
    out: list[wire.Frame] = []
    position = 0
    for size in [*chunks, len(data)]:
        reader.feed(data[position : position + size])
        position += size
        out.extend(reader)
    return out


@given(st.lists(frontend_messages, min_size=1, max_size=6))
def test_frontend_round_trip(messages: list[wire.Message]) -> None:
    data = b"".join(m.encode() for m in messages)
    decoded = [decode_frontend(item) for item in _read_all(data, [])]
    assert decoded == messages


@given(st.lists(backend_messages, min_size=1, max_size=6))
def test_backend_round_trip(messages: list[wire.Message]) -> None:
    data = b"".join(m.encode() for m in messages)
    decoded = [decode_backend(item) for item in _read_all(data, [])]
    assert [type(m) for m in decoded] == [type(m) for m in messages]
    assert [m.encode() for m in decoded] == [m.encode() for m in messages]


FRONTEND_SAMPLES: list[wire.Message] = [
    wire.Query("select 'é' as x; select 2"),
    wire.Parse("s1", "select $1::int", (23,)),
    wire.Bind("p", "s1", (1,), (b"\x00\x00\x00\x01", None), (1,)),
    wire.Describe("P", "p"),
    wire.Execute("p", 0),
    wire.Sync(),
]
BACKEND_SAMPLES: list[wire.Message] = [
    wire.RowDescription((wire.Column("x", 1, 2, 25, -1, -1, 0),)),
    wire.DataRow((b"abc", None, b"")),
    wire.CommandComplete("SELECT 1"),
    wire.ErrorResponse.make("42501", "no"),
    wire.ReadyForQuery("T"),
]


SAMPLES = FRONTEND_SAMPLES + BACKEND_SAMPLES


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_cut_at_every_byte(message: wire.Message) -> None:
    data = message.encode() * 2
    decode = decode_frontend if message in FRONTEND_SAMPLES else decode_backend
    for cut in range(len(data) + 1):
        reader = MessageReader()
        reader.feed(data[:cut])
        first = list(reader)
        assert len(first) == cut // len(message.encode())
        reader.feed(data[cut:])
        frames = first + list(reader)
        assert [decode(f) for f in frames] == [message, message]
        assert reader.buffered == 0


def test_byte_by_byte() -> None:
    data = b"".join(m.encode() for m in SAMPLES)
    reader = MessageReader()
    frames = []
    for index in range(len(data)):
        reader.feed(data[index : index + 1])
        frames.extend(reader)
    assert [f.encode() for f in frames] == [m.encode() for m in SAMPLES]


def test_length_claim_of_a_gigabyte_is_refused_without_allocating() -> None:
    reader = MessageReader()
    reader.feed(b"Q" + struct.pack("!I", 0x40000000))
    with pytest.raises(ProtocolError, match="claims a length of 1073741824"):
        reader.next()
    assert MAX_MESSAGE_LENGTH == 0x3FFFFFFF
    reader = MessageReader(max_length=1000)
    reader.feed(b"D" + struct.pack("!I", 1001))
    with pytest.raises(ProtocolError):
        reader.next()
    reader = MessageReader()
    reader.feed(b"S" + struct.pack("!I", 3))
    with pytest.raises(ProtocolError, match="claims a length of 3"):
        reader.next()


def test_unknown_message_types() -> None:
    with pytest.raises(ProtocolError, match="unknown frontend message type"):
        decode_frontend(wire.Frame(ord("z"), b""))
    with pytest.raises(ProtocolError, match="unknown backend message type"):
        decode_backend(wire.Frame(ord("z"), b""))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_only_raises_protocol_error(data: bytes) -> None:
    reader = MessageReader(max_length=10_000)
    try:
        reader.feed(data)
        for item in reader:
            for decode in (decode_frontend, decode_backend):
                with contextlib.suppress(ProtocolError):
                    decode(item)
    except ProtocolError:
        pass
    startup = StartupReader()
    startup.feed(data)
    with contextlib.suppress(ProtocolError):
        startup.next()


@given(st.sampled_from(sorted(wire.FRONTEND_DECODERS)), st.binary(max_size=60))
def test_any_body_of_a_known_type(code: int, body: bytes) -> None:
    for decode in (decode_frontend, decode_backend):
        with contextlib.suppress(ProtocolError):
            decode(wire.Frame(code, body))


# -- startup packets --------------------------------------------------------------------------

STARTUPS = [
    wire.StartupMessage(wire.PROTOCOL_3_0, {"user": "alice", "database": "appdb"}),
    wire.SSLRequest(),
    wire.GSSENCRequest(),
    wire.CancelRequest(1234, b"\x01\x02\x03\x04"),
]


@pytest.mark.parametrize("packet", STARTUPS, ids=lambda p: type(p).__name__)
def test_startup_packets_cut_at_every_byte(packet: wire.StartupPacket) -> None:
    data = packet.encode()
    for cut in range(len(data) + 1):
        reader = StartupReader()
        reader.feed(data[:cut])
        if cut < len(data):
            assert reader.next() is None
            reader.feed(data[cut:])
        assert reader.next() == packet


@given(st.dictionaries(names.filter(bool), names, max_size=5))
def test_startup_round_trip(params: dict[str, str]) -> None:
    packet = wire.StartupMessage(wire.PROTOCOL_3_0, params)
    reader = StartupReader()
    reader.feed(packet.encode())
    assert reader.next() == packet


def test_startup_refusals() -> None:
    for data in (
        struct.pack("!ii", 8, 1234),  # protocol 0.1234
        struct.pack("!i", 4),  # too short
        struct.pack("!i", 0x40000000),  # a gigabyte of startup
        struct.pack("!ii", 9, wire.PROTOCOL_3_0) + b"x",  # parameter without its NUL
    ):
        reader = StartupReader()
        reader.feed(data)
        with pytest.raises(ProtocolError):
            reader.next()


def test_typed_helpers() -> None:
    assert wire.CommandComplete("INSERT 0 12").rows == 12
    assert wire.CommandComplete("SELECT 3").rows == 3
    assert wire.CommandComplete("BEGIN").rows is None
    error = wire.ErrorResponse.make("42501", "denied", hint="ask")
    assert error.sqlstate == "42501" and error.message == "denied"
    assert wire.Bind("", "", (1,), (b"a", b"b")).param_format(1) == 1
    auth = wire.Authentication.sasl(["SCRAM-SHA-256"])
    assert wire.Authentication.decode(auth.body()).mechanisms() == ["SCRAM-SHA-256"]
    initial = wire.PasswordMessage.sasl_initial_of("SCRAM-SHA-256", b"n,,n=,r=x")
    assert initial.sasl_initial() == ("SCRAM-SHA-256", b"n,,n=,r=x")
    with pytest.raises(ProtocolError):
        wire.expect(wire.Sync(), wire.Query)
