"""The device authorization grant (RFC 8628) as a state machine: what the token endpoint
answered -> wait and ask again, or done, or refused. Pure; `client` does the requests.

The provider sets the pace: `interval` seconds between polls (5 when it does not say), five
more after each `slow_down`; `authorization_pending` means ask again; `access_denied` and
`expired_token` end the flow with a reason; the code's `expires_in` bounds the whole wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0


@dataclass(frozen=True, slots=True)
class DeviceStart:
    """What the person is shown, and what the gateway polls with."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float

    @staticmethod
    def parse(body: dict[str, Any]) -> DeviceStart:
        try:
            uri = body.get("verification_uri") or body["verification_url"]  # Google's spelling
            return DeviceStart(
                device_code=str(body["device_code"]),
                user_code=str(body["user_code"]),
                verification_uri=str(uri),
                verification_uri_complete=body.get("verification_uri_complete"),
                expires_in=float(body.get("expires_in", 600)),
                interval=float(body.get("interval", DEFAULT_INTERVAL)),
            )
        except (KeyError, TypeError, ValueError):
            raise DeviceFlowFailed("the provider's device authorization is incomplete") from None

    def instructions(self) -> str:
        """What the person reads in their terminal."""
        lines = [
            "Sign in with your identity provider:",
            f"  open {self.verification_uri}",
            f"  and enter the code {self.user_code}",
        ]
        if self.verification_uri_complete:
            lines.append(f"  (or open {self.verification_uri_complete})")
        lines.append(f"Waiting for your approval (the code expires in {int(self.expires_in)} s)")
        return "\n".join(lines) + "\n"


class DeviceFlowFailed(Exception):
    """The flow ended without tokens; the message says why, for the person."""


@dataclass(slots=True)
class DevicePoll:
    """When to ask the token endpoint next, and what each answer means."""

    started_at: float
    interval: float
    expires_at: float
    polls: int = 0

    @staticmethod
    def begin(start: DeviceStart, now: float) -> DevicePoll:
        return DevicePoll(now, max(1.0, start.interval), now + start.expires_in)

    def next_wait(self, now: float) -> float:
        if now >= self.expires_at:
            raise DeviceFlowFailed("the code expired before it was approved; connect again")
        return min(self.interval, self.expires_at - now)

    def answer(self, status: int, body: dict[str, Any]) -> dict[str, Any] | None:
        """The tokens when the person approved; None to poll again; DeviceFlowFailed else."""
        self.polls += 1
        if status == 200 and "access_token" in body:
            return body
        error = body.get("error")
        if error == "authorization_pending":
            return None
        if error == "slow_down":
            self.interval += SLOW_DOWN_STEP
            return None
        if error == "access_denied":
            raise DeviceFlowFailed("the sign-in was declined at the identity provider")
        if error == "expired_token":
            raise DeviceFlowFailed("the code expired before it was approved; connect again")
        described = body.get("error_description") or error or f"HTTP {status}"
        raise DeviceFlowFailed(f"the identity provider refused: {described}")
