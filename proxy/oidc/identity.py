"""Who a verified token names: an agent (by its client id, from `[[agents]]`) or a person (by
the configured username and groups claims). Pure: claims and settings in, a caller or a
refusal out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proxy.oidc.config import AgentConfig, OidcConfig
from proxy.oidc.tokens import TokenRefused
from proxy.policy import owner_refusal

# A person's name from the provider: plain ASCII, as [[users]] names are (and '@', for providers
# naming people by e-mail). Anything else could look like someone else's name to an approver
# (a Cyrillic 'а' in "аlice") while folding to no name the gateway knows.
PERSON_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


@dataclass(frozen=True, slots=True)
class OidcCaller:
    name: str
    groups: frozenset[str]
    kind: str  # "person" or "agent"
    expires_at: float
    owner: str | None = None
    client_id: str | None = None
    subject: str | None = None


def agent_for(claims: dict[str, Any], agents: dict[str, AgentConfig]) -> OidcCaller:
    """The agent an access token was issued to (its `client_id`, else `azp`)."""
    client = claims.get("client_id") or claims.get("azp")
    if not isinstance(client, str) or not client:
        raise TokenRefused("no-client", "the token names no client (client_id or azp claim)")
    found = [agent for agent in agents.values() if agent.client_id == client]
    if not found:
        raise TokenRefused(
            "unknown-client",
            f"client {client!r} is not an agent of this gateway (no [[agents]] entry)",
        )
    agent = found[0]
    if agent.revoked:
        raise TokenRefused(
            "revoked-client", f"client {client!r} (agent {agent.name}) has been revoked"
        )
    return OidcCaller(
        agent.name,
        frozenset(agent.groups),
        "agent",
        float(claims["exp"]),
        owner=agent.owner,
        client_id=client,
        subject=str(claims.get("sub", "")) or None,
    )


def person_for(claims: dict[str, Any], config: OidcConfig) -> OidcCaller:
    """The person an ID token names, with the groups its groups claim lists."""
    name = claims.get(config.username_claim)
    if not isinstance(name, str) or not name.strip():
        raise TokenRefused(
            "no-username", f"the ID token has no {config.username_claim!r} claim to name you by"
        )
    if not PERSON_NAME.match(name.strip()):
        raise TokenRefused(
            "unsafe-username",
            f"the provider names you {name.strip()!r}; the gateway accepts names of ASCII "
            "letters, digits, '.', '_', '@' and '-' only (ask your administrator to set "
            f"{config.username_claim!r} to such a name)",
        )
    raw = claims.get(config.groups_claim, [])
    if isinstance(raw, str):
        raw = [raw]
    groups = (
        frozenset(str(g).removeprefix("/") for g in raw if str(g))
        if isinstance(raw, list)
        else frozenset()
    )
    return OidcCaller(
        name.strip(),
        groups,
        "person",
        float(claims["exp"]),
        subject=str(claims.get("sub", "")) or None,
    )


def describe_name(config: Any, name: str) -> dict[str, str]:
    """What the queue shows about a requester known only by name: an agent of `[[agents]]`
    (with its owner and client id), else a person."""
    agent = config.agents.get(name)
    if agent is None:
        return {"caller_kind": "person"}
    return {"caller_kind": "agent", "owner": agent.owner, "client_id": agent.client_id}


def answered_for(config: Any, name: str, groups: frozenset[str]) -> frozenset[str]:
    """The agents `name` (with `groups`) answers for as their owner, whose requests they may
    therefore not decide; none when `[oidc] owner_may_approve` is true. `config` is the
    GatewayConfig."""
    oidc = config.oidc
    if oidc is None or oidc.owner_may_approve:
        return frozenset()
    owners = {agent.name: agent.owner for agent in config.agents.values()}
    return frozenset(
        agent for agent in owners if owner_refusal(name, groups, agent, owners) is not None
    )
