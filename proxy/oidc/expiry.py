"""When a session must end because of who opened it: the token that proved the caller expires
(`Identity.expires_at`), or an agent's session reaches its `max_session`. Pure arithmetic, and a
timer that asks the session to end (proxy/session.py arms it when the recording opens, so it
covers SSH and PostgreSQL alike)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

EXPIRED_MESSAGE = "hoop: your sign-in has expired; the session ends. Connect again to sign in."
AGENT_LIMIT_MESSAGE = "hoop: this agent's session reached its maximum length and ends."


def ends_on_expiry(raw: dict[str, Any]) -> bool:
    """`[policy] on_expiry = "end"` (the default): the session ends when its token expires;
    "review" and "deny" keep it open and judge each later command strictly (proxy/policy.py)."""
    section = raw.get("policy")
    return not isinstance(section, dict) or section.get("on_expiry", "end") == "end"


def session_deadline(
    identity: Any, agents: dict[str, Any], now: float, *, end_on_expiry: bool = True
) -> tuple[float, str, str] | None:
    """(when, reason, message) of the first limit this caller's session meets, or None."""
    deadlines: list[tuple[float, str, str]] = []
    expires_at = getattr(identity, "expires_at", None)
    if expires_at is not None and end_on_expiry:
        deadlines.append((float(expires_at), "token expired", EXPIRED_MESSAGE))
    agent = agents.get(identity.name) if getattr(identity, "kind", "") == "agent" else None
    if agent is not None and agent.max_session > 0:
        deadlines.append((now + agent.max_session, "agent session limit", AGENT_LIMIT_MESSAGE))
    return min(deadlines) if deadlines else None


def arm(config: Any, identity: Any, end: Callable[[str, str], None]) -> asyncio.TimerHandle | None:
    """Call `end(reason, message)` at the session's deadline (at once if it has passed);
    `config` is the GatewayConfig (its agents, and `[policy] on_expiry`)."""
    now = time.time()
    deadline = session_deadline(
        identity, config.agents, now, end_on_expiry=ends_on_expiry(config.raw)
    )
    if deadline is None:
        return None
    when, reason, message = deadline
    return asyncio.get_running_loop().call_later(max(0.0, when - now), end, reason, message)
