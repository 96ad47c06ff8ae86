"""The fleet's configuration: `[state]` (shared state in PostgreSQL) and the `[gateway]` keys a
fleet adds (`instance`, read by proxy/config.py as the gateway id, and `trusted_proxies`).

```toml
[gateway]
instance = "gw-a"
trusted_proxies = ["10.0.0.5", "10.0.1.0/24"]   # HAProxy; only these may send PROXY headers

[state]
url = "postgresql://hoop@db.internal:5432/hoop"  # never a password here
password_env = "HOOP_STATE_PASSWORD"              # the password, from the environment
heartbeat = "2s"                                  # how often this instance says it is alive
lost_after = "10s"                                # silent this long: its sessions end-unknown
```
Without `[state]` the gateway keeps SQLite in its data directory, exactly as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxy.config import ConfigError, GatewayConfig, parse_duration
from proxy.fleet.listener import Network, parse_trusted

STATE_KEYS = frozenset({"url", "password_env", "pool_size", "heartbeat", "lost_after", "timeout"})


@dataclass(frozen=True, slots=True)
class StateSettings:
    url: str
    password_env: str | None = None
    pool_size: int = 10
    heartbeat_s: float = 2.0
    lost_after_s: float = 10.0
    timeout_s: float = 5.0

    def password(self) -> str | None:
        """The password from `password_env`; ConfigError-worthy when the variable is unset."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ValueError(f"[state] password_env names {self.password_env}, which is not set")
        return value


def trusted_proxies(config: GatewayConfig) -> tuple[Network, ...]:
    gateway = config.raw.get("gateway", {})
    values = gateway.get("trusted_proxies", [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(config.path, "gateway.trusted_proxies", "must be a list of addresses")
    try:
        return parse_trusted(values)
    except ValueError as exc:
        raise ConfigError(config.path, "gateway.trusted_proxies", str(exc)) from None


def state_settings(config: GatewayConfig) -> StateSettings | None:
    """`[state]`, checked; None when absent (the embedded SQLite state)."""
    section = config.raw.get("state")
    if section is None:
        return None
    path = config.path
    if not isinstance(section, dict):
        raise ConfigError(path, "state", "must be a table")
    for key in section:
        if key not in STATE_KEYS:
            raise ConfigError(
                path, f"state.{key}", f"unknown key (known: {', '.join(sorted(STATE_KEYS))})"
            )
    url = section.get("url")
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(path, "state.url", 'must be a URL like "postgresql://hoop@db/hoop"')
    _refuse_password_in(url, path)
    password_env = section.get("password_env")
    if password_env is not None and (not isinstance(password_env, str) or not password_env):
        raise ConfigError(path, "state.password_env", "must name an environment variable")
    pool_size = section.get("pool_size", 10)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or not 1 <= pool_size <= 200:
        raise ConfigError(path, "state.pool_size", "must be a number from 1 to 200")
    durations = {}
    for key, default in (("heartbeat", 2.0), ("lost_after", 10.0), ("timeout", 5.0)):
        try:
            durations[key] = parse_duration(section[key]) if key in section else default
        except ValueError as exc:
            raise ConfigError(path, f"state.{key}", str(exc)) from None
        if durations[key] <= 0:
            raise ConfigError(path, f"state.{key}", "must be more than zero")
    if durations["lost_after"] < 3 * durations["heartbeat"]:
        raise ConfigError(path, "state.lost_after", "must be at least three heartbeats")
    return StateSettings(
        url=url,
        password_env=password_env,
        pool_size=pool_size,
        heartbeat_s=durations["heartbeat"],
        lost_after_s=durations["lost_after"],
        timeout_s=durations["timeout"],
    )


def _refuse_password_in(url: str, path: object) -> None:
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(str(path), "state.url", "is not a URL") from None
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise ConfigError(
            str(path),
            "state.url",
            "holds a password; put it in an environment variable and name it in state.password_env",
        )


def peer_settings(config: GatewayConfig) -> tuple[str, int, str] | None:
    """`[gateway] peer_listen` (and `peer_advertise`, the address other instances dial when
    the listen address is a wildcard): where this instance serves the peer channel, or None."""
    gateway = config.raw.get("gateway", {})
    listen = gateway.get("peer_listen")
    if listen is None:
        return None
    from proxy.config import parse_host_port

    try:
        host, port = parse_host_port(str(listen), 7443)
    except ValueError as exc:
        raise ConfigError(
            config.path, "gateway.peer_listen", f'must be "host:port": {exc}'
        ) from None
    advertise = gateway.get("peer_advertise")
    if advertise is None:
        if host in ("", "0.0.0.0", "::"):
            raise ConfigError(
                config.path,
                "gateway.peer_advertise",
                "needed when peer_listen is a wildcard: the address other instances dial",
            )
        advertise = f"{host}:{port}"
    if not isinstance(advertise, str) or ":" not in advertise:
        raise ConfigError(config.path, "gateway.peer_advertise", 'must be "host:port"')
    return host, port, advertise
