"""What the SSH login name says: `alice` (pick a target later) or `alice+web1` (go straight there).

`+` is allowed in OpenSSH user names and never appears in a gateway user or target name, so the
split is unambiguous. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import LOGIN_SEPARATOR


@dataclass(frozen=True, slots=True)
class LoginName:
    user: str
    target: str | None = None


def parse_login(name: str) -> LoginName:
    """`alice+web1` -> (alice, web1); `alice` -> (alice, None); the last `+` separates."""
    user, sep, target = name.rpartition(LOGIN_SEPARATOR)
    if not sep or not user or not target:
        return LoginName(name)
    return LoginName(user, target)
