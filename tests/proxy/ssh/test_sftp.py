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
    FileRequest,
    Packet,
    SftpGate,
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


# -- the gate: which requests are judged, at any packet split ----------------------------------

GATED = b"".join(
    [
        packet(Packet.INIT, u32(3)),
        packet(Packet.REALPATH, u32(20), string(b".")),
        packet(Packet.OPEN, u32(21), string(b"notes"), u32(OPEN_READ), u32(0)),
        packet(Packet.STAT, u32(22), string(b"/etc/passwd")),
        packet(Packet.OPEN, u32(23), string(b"/tmp/o"), u32(OPEN_WRITE | OPEN_CREATE), u32(0)),
        packet(Packet.REMOVE, u32(24), string(b"/tmp/x")),
        packet(
            Packet.EXTENDED, u32(25), string(b"hardlink@openssh.com"), string(b"/a"), string(b"/b")
        ),
        packet(Packet.EXTENDED, u32(26), string(b"evil@example.com"), string(b"/a")),
        packet(Packet.FSETSTAT, u32(27), string(b"H9"), u32(0)),
    ]
)
GATED_OPERATIONS = [
    (("read", "notes"),),
    (("write", "/tmp/o"),),
    (("delete", "/tmp/x"),),
    (("symlink", "/a"), ("symlink", "/b")),
    (),
    (("chmod", ""),),
]


def gate_run(chunks: list[bytes]) -> tuple[bytes, list[tuple[tuple[str, str], ...]], bytes]:
    """What the gate forwards unjudged, the operations it asks about, and its packets in
    order with each judged packet where it came (a judged one is forwarded when allowed)."""
    gate = SftpGate()
    forwarded = b""
    judged: list[tuple[tuple[str, str], ...]] = []
    in_order = b""
    for chunk in chunks:
        for item in gate.client_data(chunk):
            if isinstance(item, FileRequest):
                judged.append(item.operations)
                in_order += item.packet
            else:
                forwarded += item
                in_order += item
    return forwarded, judged, in_order


def test_the_gate_asks_about_every_request_that_touches_a_file_at_any_split() -> None:
    whole = gate_run([GATED])
    assert whole[1] == GATED_OPERATIONS
    assert whole[2] == GATED  # nothing lost, nothing reordered
    assert packet(Packet.STAT, u32(22), string(b"/etc/passwd")) in whole[0]
    for cut in range(len(GATED)):
        assert gate_run([GATED[:cut], GATED[cut:]]) == whole


def test_the_gate_learns_the_working_directory_and_refuses_between_replies() -> None:
    gate = SftpGate()
    gate.client_data(packet(Packet.REALPATH, u32(1), string(b".")))
    reply = packet(Packet.NAME, u32(1), u32(1), string(b"/home/alice"), string(b""), u32(0))
    gate.target_data(reply[:7])
    assert not gate.at_boundary
    gate.target_data(reply[7:])
    assert gate.at_boundary and gate.cwd == "/home/alice"
    (request,) = gate.client_data(packet(Packet.REMOVE, u32(2), string(b"x")))
    assert isinstance(request, FileRequest) and request.cwd == "/home/alice"
    refusal = request.refusal("no")
    observer = SftpObserver()
    observer.client_data(packet(Packet.REMOVE, u32(2), string(b"x")))
    assert observer.target_data(refusal) == [FileOperation("remove", b"x", 0, "failed: no")]


def test_a_stream_the_gate_cannot_cut_is_broken() -> None:
    gate = SftpGate()
    assert gate.client_data(b"\xff\xff\xff\xff garbage") == []
    assert gate.broken


def test_a_path_is_judged_as_a_c_server_reads_it_up_to_a_nul() -> None:
    (request,) = SftpGate().client_data(
        packet(Packet.OPEN, u32(1), string(b"/etc/shadow\0.txt"), u32(OPEN_READ), u32(0))
    )
    assert isinstance(request, FileRequest)
    assert request.operations == (("read", "/etc/shadow"),)
