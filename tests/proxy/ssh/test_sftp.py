"""The SFTP observer, without sockets: packets in, file operations out, at any packet split."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.ssh.sftp import (
    OPEN_CREATE,
    OPEN_READ,
    OPEN_TRUNCATE,
    OPEN_WRITE,
    FileOperation,
    Packet,
    SftpObserver,
)


def string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def packet(kind: int, *parts: bytes) -> bytes:
    body = bytes([kind]) + b"".join(parts)
    return struct.pack(">I", len(body)) + body


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


OK = u32(0) + string(b"") + string(b"")

# An upload of 5 bytes to /tmp/a, a download of 3 bytes, a rename, a failed remove.
CLIENT = b"".join(
    [
        packet(Packet.INIT, u32(3)),
        packet(
            Packet.OPEN,
            u32(1),
            string(b"/tmp/a"),
            u32(OPEN_WRITE | OPEN_CREATE | OPEN_TRUNCATE),
            u32(0),
        ),
        packet(Packet.WRITE, u32(2), string(b"H1"), u64(0), string(b"hello")),
        packet(Packet.CLOSE, u32(3), string(b"H1")),
        packet(Packet.OPEN, u32(4), string(b"/tmp/a"), u32(OPEN_READ), u32(0)),
        packet(Packet.READ, u32(5), string(b"H2"), u64(0), u32(32768)),
        packet(Packet.READ, u32(6), string(b"H2"), u64(3), u32(32768)),
        packet(Packet.CLOSE, u32(7), string(b"H2")),
        packet(
            Packet.EXTENDED,
            u32(8),
            string(b"posix-rename@openssh.com"),
            string(b"/tmp/a"),
            string(b"/tmp/b"),
        ),
        packet(Packet.REMOVE, u32(9), string(b"/tmp/none")),
        packet(Packet.MKDIR, u32(10), string(b"/tmp/d"), u32(0)),
    ]
)
TARGET = b"".join(
    [
        packet(Packet.VERSION, u32(3)),
        packet(Packet.HANDLE, u32(1), string(b"H1")),
        packet(Packet.STATUS, u32(2), OK),
        packet(Packet.STATUS, u32(3), OK),
        packet(Packet.HANDLE, u32(4), string(b"H2")),
        packet(Packet.DATA, u32(5), string(b"hel")),
        packet(Packet.STATUS, u32(6), u32(1), string(b"EOF"), string(b"")),
        packet(Packet.STATUS, u32(7), OK),
        packet(Packet.STATUS, u32(8), OK),
        packet(Packet.STATUS, u32(9), u32(2), string(b"No such file"), string(b"")),
        packet(Packet.STATUS, u32(10), OK),
    ]
)
EXPECTED = [
    FileOperation("open", b"/tmp/a", 0, "write+create+truncate"),
    FileOperation("write", b"/tmp/a", 5, "ok"),
    FileOperation("open", b"/tmp/a", 0, "read"),
    FileOperation("read", b"/tmp/a", 3, "ok"),
    FileOperation("rename", b"/tmp/a", 0, "to /tmp/b: ok"),
    FileOperation("remove", b"/tmp/none", 0, "failed: No such file"),
    FileOperation("mkdir", b"/tmp/d", 0, "ok"),
]


def run(client_chunks: list[bytes], target_chunks: list[bytes]) -> list[FileOperation]:
    observer = SftpObserver()
    ops = []
    for chunk in client_chunks:
        ops += observer.client_data(chunk)
    for chunk in target_chunks:
        ops += observer.target_data(chunk)
    return ops + observer.finish()


def test_a_session_gives_its_file_operations() -> None:
    assert run([CLIENT], [TARGET]) == EXPECTED


def test_every_split_point_gives_the_same_operations() -> None:
    for cut in range(len(CLIENT)):
        assert run([CLIENT[:cut], CLIENT[cut:]], [TARGET]) == EXPECTED
    for cut in range(len(TARGET)):
        assert run([CLIENT], [TARGET[:cut], TARGET[cut:]]) == EXPECTED


def test_byte_at_a_time() -> None:
    client = [CLIENT[i : i + 1] for i in range(len(CLIENT))]
    target = [TARGET[i : i + 1] for i in range(len(TARGET))]
    assert run(client, target) == EXPECTED


def test_handles_left_open_are_reported_at_the_end() -> None:
    observer = SftpObserver()
    observer.client_data(CLIENT[: CLIENT.index(packet(Packet.CLOSE, u32(3), string(b"H1")))])
    observer.target_data(TARGET[: TARGET.index(packet(Packet.STATUS, u32(3), OK))])
    assert observer.finish("client vanished") == [
        FileOperation("write", b"/tmp/a", 5, "client vanished")
    ]


def test_nonsense_is_reported_once_and_then_ignored() -> None:
    observer = SftpObserver()
    ops = observer.client_data(b"\xff\xff\xff\xff garbage")
    assert [op.op for op in ops] == ["unparsed"]
    assert observer.client_data(CLIENT) == []
    assert observer.broken


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(client: bytes, target: bytes) -> None:
    observer = SftpObserver()
    observer.client_data(client)
    observer.target_data(target)
    observer.finish()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(CLIENT)), max_size=8))
def test_random_splits(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [CLIENT[a:b] for a, b in zip([0, *points], [*points, len(CLIENT)], strict=True)]
    assert run(chunks, [TARGET]) == EXPECTED
