"""Login names: who, and (optionally) which target."""

from __future__ import annotations

import pytest

from proxy.ssh.login import LoginName, parse_login


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alice", LoginName("alice")),
        ("alice+web1", LoginName("alice", "web1")),
        ("alice+web1.prod", LoginName("alice", "web1.prod")),
        ("alice+", LoginName("alice+")),
        ("+web1", LoginName("+web1")),
        ("", LoginName("")),
    ],
)
def test_parse_login(name: str, expected: LoginName) -> None:
    assert parse_login(name) == expected
