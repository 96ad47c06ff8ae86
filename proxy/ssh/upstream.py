"""Logging in to a target with the credential only the gateway holds.

The target's host key is pinned in the config: anything else is refused before authentication,
so the gateway's credential is never offered to an impostor. Failures become `TargetUnavailable`
with a message meant for the caller's terminal; it names the target, never the credential.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import asyncssh

from proxy.config import TargetConfig
from proxy.ssh.corking import lean_writes

log = logging.getLogger("hoop.ssh.upstream")

CONNECT_TIMEOUT = 15.0
KEEPALIVE_INTERVAL = 30.0
# AES-GCM first: with AES-NI it is several times cheaper per byte than asyncssh's ChaCha20.
UPSTREAM_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes128-ctr",
]


class TargetUnavailable(Exception):
    """The gateway could not log in to the target; `str(exc)` is for the caller."""


class _UpstreamClient(asyncssh.SSHClient):
    """Tells the link when the target connection goes away."""

    def __init__(self, on_lost: Callable[[Exception | None], None] | None) -> None:
        self._on_lost = on_lost
        self._authenticated = False

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        lean_writes(conn)

    def auth_completed(self) -> None:
        self._authenticated = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._authenticated and self._on_lost is not None:
            self._on_lost(exc)


def _credentials(target: TargetConfig) -> tuple[list[asyncssh.SSHKey], str | None]:
    """The gateway's key and password for `target`, or TargetUnavailable (the reason logged,
    never shown to the caller)."""
    client_keys: list[asyncssh.SSHKey] = []
    password: str | None = None
    try:
        if target.key_file is not None:
            client_keys = [asyncssh.read_private_key(target.key_file)]
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        log.error("target %s: cannot read key_file %s: %s", target.name, target.key_file, exc)
        raise TargetUnavailable(
            f"the gateway's credential for {target.name} is unavailable; tell an administrator"
        ) from None
    if target.password_env:
        password = os.environ.get(target.password_env)
        if password is None and not client_keys:
            log.error("target %s: $%s is not set", target.name, target.password_env)
            raise TargetUnavailable(
                f"the gateway's credential for {target.name} is unavailable; tell an administrator"
            )
    return client_keys, password


async def connect_target(
    target: TargetConfig, on_lost: Callable[[Exception | None], None] | None = None
) -> asyncssh.SSHClientConnection:
    """An authenticated SSH connection to `target`, or TargetUnavailable saying why not.

    `on_lost` is called when the established connection closes, for whatever reason.
    """
    assert target.host_key is not None
    trusted = [asyncssh.import_public_key(target.host_key)]
    client_keys, password = _credentials(target)
    where = f"{target.name} ({target.host}:{target.port})"
    try:
        return await asyncssh.connect(
            target.host,
            target.port,
            username=target.user,
            known_hosts=(trusted, [], []),
            client_keys=client_keys or None,
            password=password,
            agent_path=None,
            config=None,
            preferred_auth=("publickey", "password", "keyboard-interactive"),
            connect_timeout=CONNECT_TIMEOUT,
            keepalive_interval=KEEPALIVE_INTERVAL,
            encryption_algs=UPSTREAM_CIPHERS,
            client_factory=lambda: _UpstreamClient(on_lost),
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        log.error("target %s: host key mismatch: %s", where, exc)
        raise TargetUnavailable(
            f"target {target.name} presented a host key that does not match the one pinned in "
            "the gateway configuration; refusing to connect (tell an administrator)"
        ) from None
    except asyncssh.PermissionDenied:
        log.error("target %s rejected the gateway's credential for user %r", where, target.user)
        raise TargetUnavailable(
            f"target {target.name} rejected the gateway's credential for {target.user!r}; "
            "tell an administrator"
        ) from None
    except asyncssh.DisconnectError as exc:
        log.error("target %s disconnected during login: %s", where, exc.reason)
        raise TargetUnavailable(
            f"target {target.name} closed the connection during login: {exc.reason}"
        ) from None
    except TimeoutError:
        log.error("target %s: connection timed out", where)
        raise TargetUnavailable(f"target {target.name} is unreachable: timed out") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        log.error("target %s: cannot connect: %s", where, reason)
        raise TargetUnavailable(f"target {target.name} is unreachable: {reason}") from None
