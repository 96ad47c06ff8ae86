"""The legacy scp observer, without sockets: the sender's stream in, copied files out."""

from __future__ import annotations

import pytest

from proxy.ssh.scp import Direction, ScpObserver
from proxy.ssh.sftp import FileOperation

# scp -r of a directory holding a 5-byte file and an empty one, then a top-level file.
STREAM = (
    b"T1700000000 0 1700000000 0\n"
    b"D0755 0 docs\n"
    b"C0644 5 a.txt\nhello\x00"
    b"C0600 0 empty\n\x00"
    b"E\n"
    b"C0644 3 top.bin\n\x01\x02\x03\x00"
)
EXPECTED = [
    FileOperation("write", b"docs/a.txt", 5, "scp into /srv/in: ok"),
    FileOperation("write", b"docs/empty", 0, "scp into /srv/in: ok"),
    FileOperation("write", b"top.bin", 3, "scp into /srv/in: ok"),
]


@pytest.mark.parametrize(
    ("command", "direction", "where"),
    [
        ("scp -t /srv/in", Direction.UPLOAD, b"/srv/in"),
        ("scp -r -d -t -- '/srv/with space'", Direction.UPLOAD, b"/srv/with space"),
        ("/usr/bin/scp -f /etc/hosts", Direction.DOWNLOAD, b"/etc/hosts"),
    ],
)
def test_commands_that_are_scp_transfers(command: str, direction: Direction, where: bytes) -> None:
    observer = ScpObserver.for_command(command)
    assert observer is not None
    assert (observer.direction, observer.where) == (direction, where)


@pytest.mark.parametrize("command", ["ls -t /tmp", "scp a b", "scp 'unterminated", ""])
def test_other_commands_are_not(command: str) -> None:
    assert ScpObserver.for_command(command) is None


def test_a_recursive_upload_gives_each_file() -> None:
    observer = ScpObserver(Direction.UPLOAD, b"/srv/in")
    assert observer.feed(STREAM) + observer.finish() == EXPECTED


def test_every_split_point_gives_the_same_files() -> None:
    for cut in range(len(STREAM)):
        observer = ScpObserver(Direction.UPLOAD, b"/srv/in")
        assert observer.feed(STREAM[:cut]) + observer.feed(STREAM[cut:]) == EXPECTED


def test_a_download_cut_short_reports_what_arrived() -> None:
    observer = ScpObserver(Direction.DOWNLOAD, b"/etc/big")
    assert observer.feed(b"C0644 100 big\n" + b"x" * 40) == []
    assert observer.finish() == [
        FileOperation("read", b"big", 100, "scp from /etc/big: incomplete: 40 bytes arrived")
    ]


def test_nonsense_stops_the_observer() -> None:
    observer = ScpObserver(Direction.UPLOAD, b"/x")
    assert observer.feed(b"Zwhat is this\nC0644 1 a\nA\x00") == []
    assert observer.broken
