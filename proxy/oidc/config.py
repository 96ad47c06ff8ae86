"""`[oidc]` and `[[agents]]`: where people and agents prove who they are, validated whole.

```toml
[oidc]
issuer = "https://login.example.com/realms/ops"   # <issuer>/.well-known/openid-configuration
client_id = "hoop-gateway"                        # the gateway's own client (device flow)
client_secret_env = "HOOP_OIDC_SECRET"            # optional: a confidential client's secret
scopes = ["openid", "profile", "groups"]
username_claim = "preferred_username"
groups_claim = "groups"
audience = "urn:hoop:gateway"                     # what agents' access tokens are issued for
algorithms = ["RS256", "ES256"]                   # never none, never HS*
clock_skew = "30s"                                # at most 60 s

[[agents]]
name = "ci-bot"                                   # how policy, the queue and recordings name it
client_id = "ci-bot"                              # the token's client_id (or azp) claim
owner = "alice"                                   # a person, or "group:dev"
```
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# As proxy.config has them; this module does not import it (proxy.config imports this one).
LOGIN_SEPARATOR = "+"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SHELL_MODES = ("guard", "strict")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class OidcConfigError(Exception):
    """A problem in [oidc] or [[agents]]; load_config turns it into proxy.config's own."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path, self.key, self.problem = path, key, problem


def parse_duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    found = _DURATION.match(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError('must be a duration such as "30s", "10m" or "1h"')
    return float(found.group(1)) * _UNITS[found.group(2)]


OIDC_KEYS = frozenset(
    {
        "issuer",
        "client_id",
        "client_secret_env",
        "scopes",
        "groups_claim",
        "username_claim",
        "audience",
        "algorithms",
        "clock_skew",
        "device_flow",
        "owner_may_approve",
        "agent_max_session",
        "introspection",
        "introspection_cache",
    }
)
AGENT_KEYS = frozenset(
    {"name", "client_id", "owner", "groups", "revoked", "shell_mode", "max_session"}
)
# Asymmetric algorithms only: a provider signs with a private key, the gateway checks with the
# public one it publishes. HS* would let anyone holding the (public) key sign.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
DEFAULT_SCOPES = ("openid", "profile", "groups")
MAX_CLOCK_SKEW = 60.0
MAX_INTROSPECTION_CACHE = 300.0
DEFAULT_AGENT_MAX_SESSION = 3600.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A program with an OIDC client of its own (client-credentials grant)."""

    name: str
    client_id: str
    owner: str
    groups: tuple[str, ...] = ()
    revoked: bool = False
    shell_mode: str = "strict"
    max_session: float = DEFAULT_AGENT_MAX_SESSION


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret_env: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    audience: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    clock_skew: float = 30.0
    device_flow: bool = True
    owner_may_approve: bool = False
    agent_max_session: float = DEFAULT_AGENT_MAX_SESSION
    # Ask the provider's introspection endpoint (RFC 7662) whether an agent's token is still
    # active (a client or token revoked there), at most every `introspection_cache` seconds
    # per token; an endpoint that cannot answer refuses the login (fail closed).
    introspection: bool = False
    introspection_cache: float = 30.0


def loopback_url(url: str) -> bool:
    """Whether `url` names this machine (plain http is accepted there, for tests only)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _text(path: Path, table: dict[str, Any], key: str, where: str, default: str | None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise OidcConfigError(path, f"{where}.{key}", "must be a non-empty string")
    return value


def _names(path: Path, table: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise OidcConfigError(path, f"{where}.{key}", "must be a list of non-empty strings")
    return tuple(value)


def _seconds(path: Path, table: dict[str, Any], key: str, where: str, default: float) -> float:
    if key not in table:
        return default
    try:
        return parse_duration(table[key])
    except ValueError as exc:
        raise OidcConfigError(path, f"{where}.{key}", str(exc)) from None


def _flag(path: Path, table: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise OidcConfigError(path, f"{where}.{key}", "must be true or false")
    return value


def _unknown(path: Path, table: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise OidcConfigError(path, f"{where}.{key}", f"unknown key (known: {known})")


def parse_oidc(path: Path, section: object) -> OidcConfig | None:
    if section is None:
        return None
    if not isinstance(section, dict):
        raise OidcConfigError(path, "oidc", "must be a table ([oidc])")
    _unknown(path, section, OIDC_KEYS, "oidc")
    issuer = _text(path, section, "issuer", "oidc", None).rstrip("/")
    scheme = urlsplit(issuer).scheme
    if scheme != "https" and not (scheme == "http" and loopback_url(issuer)):
        raise OidcConfigError(
            path, "oidc.issuer", "must be an https:// URL (http only on loopback)"
        )
    algorithms = _names(path, section, "algorithms", "oidc") or DEFAULT_ALGORITHMS
    for name in algorithms:
        if name not in ASYMMETRIC_ALGORITHMS:
            raise OidcConfigError(
                path,
                "oidc.algorithms",
                f"{name!r} is not allowed: only public-key signatures "
                f"({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); never none or HS*",
            )
    skew = _seconds(path, section, "clock_skew", "oidc", 30.0)
    if not 0 <= skew <= MAX_CLOCK_SKEW:
        raise OidcConfigError(path, "oidc.clock_skew", "must be between 0 and 60 seconds")
    cache = _seconds(path, section, "introspection_cache", "oidc", 30.0)
    if not 0 <= cache <= MAX_INTROSPECTION_CACHE:
        raise OidcConfigError(path, "oidc.introspection_cache", "must be between 0 and 300 seconds")
    audience = section.get("audience")
    if audience is not None and (not isinstance(audience, str) or not audience):
        raise OidcConfigError(path, "oidc.audience", "must be a non-empty string")
    return OidcConfig(
        issuer=issuer,
        client_id=_text(path, section, "client_id", "oidc", None),
        client_secret_env=section.get("client_secret_env")
        and _text(path, section, "client_secret_env", "oidc", None),
        scopes=_names(path, section, "scopes", "oidc") or DEFAULT_SCOPES,
        groups_claim=_text(path, section, "groups_claim", "oidc", "groups"),
        username_claim=_text(path, section, "username_claim", "oidc", "preferred_username"),
        audience=audience,
        algorithms=algorithms,
        clock_skew=skew,
        device_flow=_flag(path, section, "device_flow", "oidc", True),
        owner_may_approve=_flag(path, section, "owner_may_approve", "oidc", False),
        agent_max_session=_seconds(
            path, section, "agent_max_session", "oidc", DEFAULT_AGENT_MAX_SESSION
        ),
        introspection=_flag(path, section, "introspection", "oidc", False),
        introspection_cache=cache,
    )


def parse_agents(
    path: Path, entries: object, oidc: OidcConfig | None, users: Any
) -> dict[str, AgentConfig]:
    """`[[agents]]` by name. Names are callers' names: none may be a local user's."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise OidcConfigError(path, "agents", "must be an array of tables ([[agents]])")
    if entries and oidc is None:
        raise OidcConfigError(
            path, "agents", "agents log in with OIDC tokens: add an [oidc] section"
        )
    if entries and oidc is not None and oidc.audience in (None, oidc.client_id):
        raise OidcConfigError(
            path,
            "oidc.audience",
            "agents' access tokens need an audience of their own (not the gateway's client_id, "
            "which is what people's ID tokens are issued for)",
        )
    agents: dict[str, AgentConfig] = {}
    clients: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"agents[{index}]"
        if not isinstance(entry, dict):
            raise OidcConfigError(path, where, "must be a table")
        agent = _agent(path, entry, where, oidc)
        if agent.name in agents or agent.name in users:
            raise OidcConfigError(path, f"{where}.name", f"{agent.name!r} already names a caller")
        if oidc is not None and agent.client_id == oidc.client_id:
            raise OidcConfigError(
                path,
                f"{where}.client_id",
                "is the gateway's own client: its tokens belong to the people who sign in "
                "through it; give the agent a client of its own",
            )
        if agent.client_id in clients:
            raise OidcConfigError(
                path, f"{where}.client_id", f"{agent.client_id!r} is listed twice"
            )
        agents[agent.name] = agent
        clients.add(agent.client_id)
    return agents


def _agent(path: Path, entry: dict[str, Any], where: str, oidc: OidcConfig | None) -> AgentConfig:
    _unknown(path, entry, AGENT_KEYS, where)
    name = _text(path, entry, "name", where, None)
    if LOGIN_SEPARATOR in name or not NAME_PATTERN.match(name):
        raise OidcConfigError(
            path, f"{where}.name", "may hold letters, digits, '.', '_' and '-' only"
        )
    shell_mode = entry.get("shell_mode", "strict")
    if shell_mode not in SHELL_MODES:
        raise OidcConfigError(path, f"{where}.shell_mode", 'must be "guard" or "strict"')
    default_max = oidc.agent_max_session if oidc else DEFAULT_AGENT_MAX_SESSION
    return AgentConfig(
        name=name,
        client_id=_text(path, entry, "client_id", where, name),
        owner=_text(path, entry, "owner", where, None),
        groups=_names(path, entry, "groups", where) or (),
        revoked=_flag(path, entry, "revoked", where, False),
        shell_mode=str(shell_mode),
        max_session=_seconds(path, entry, "max_session", where, default_max),
    )
