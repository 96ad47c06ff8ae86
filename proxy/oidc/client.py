"""The gateway's HTTP conversation with the provider (httpx): discovery, the JWKS with key
rotation, the device flow's requests. Everything it learns is judged by `tokens` and `device`.

Discovery reads `<issuer>/.well-known/openid-configuration` and refuses a document naming
another issuer. Production providers are reached over https; plain http is accepted only for
an issuer on loopback (the tests' provider). The key set is cached; a token naming a key the
cache lacks fetches it again (at most every `refetch_after` seconds, so a flood of made-up key
ids cannot make the gateway hammer the provider), which is how a provider's key rotation is
followed. Every request has a timeout; a provider that does not answer refuses the login.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from proxy.oidc.config import OidcConfig, loopback_url
from proxy.oidc.device import DeviceFlowFailed, DevicePoll, DeviceStart
from proxy.oidc.tokens import Expectation, TokenRefused, UnknownKey, looks_like_jwt, verify

log = logging.getLogger("hoop.oidc")

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HTTP_TIMEOUT = 10.0
JWKS_MAX_AGE = 600.0


class ProviderUnavailable(TokenRefused):
    def __init__(self, message: str) -> None:
        super().__init__("provider-unavailable", message)


class OidcClient:
    """One provider, shared by every login of a gateway."""

    def __init__(self, config: OidcConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.refetch_after = 2.0
        self._metadata: dict[str, Any] | None = None
        self._jwks: dict[str, Any] = {"keys": []}
        self._jwks_at = float("-inf")
        self._lock = asyncio.Lock()
        # sha256(token) -> (the provider's answer, until when it is trusted)
        self._introspected: dict[str, tuple[dict[str, Any], float]] = {}

    def _secret(self) -> str | None:
        name = self.config.client_secret_env
        return os.environ.get(name) if name else None

    async def _get(self, url: str) -> dict[str, Any]:
        self._check_url(url)
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                answer = await http.get(url)
                answer.raise_for_status()
                body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderUnavailable(f"the identity provider did not answer ({exc})") from None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"{url} did not return a JSON object")
        return body

    async def _post(self, url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self._check_url(url)
        data = {**data, "client_id": self.config.client_id}
        secret = self._secret()
        if secret:
            data["client_secret"] = secret
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                answer = await http.post(url, data=data)
                body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise DeviceFlowFailed(f"the identity provider did not answer ({exc})") from None
        return answer.status_code, body if isinstance(body, dict) else {}

    def _check_url(self, url: str) -> None:
        if not url.startswith("https://") and not (url.startswith("http://") and loopback_url(url)):
            raise ProviderUnavailable(f"refusing to talk to the provider over plain http: {url}")

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            found = await self._get(f"{self.config.issuer}/.well-known/openid-configuration")
            if str(found.get("issuer", "")).rstrip("/") != self.config.issuer:
                raise ProviderUnavailable(
                    f"the discovery document names issuer {found.get('issuer')!r}, "
                    f"not {self.config.issuer!r}"
                )
            self._metadata = found
        return self._metadata

    async def jwks(self, *, refresh: bool = False) -> dict[str, Any]:
        async with self._lock:
            now = self.clock()
            stale = now - self._jwks_at > JWKS_MAX_AGE
            if stale or (refresh and now - self._jwks_at >= self.refetch_after):
                uri = (await self.metadata()).get("jwks_uri")
                if not isinstance(uri, str):
                    raise ProviderUnavailable("the provider publishes no jwks_uri")
                self._jwks = await self._get(uri)
                self._jwks_at = now
                kids = [k.get("kid") for k in self._jwks.get("keys", []) if isinstance(k, dict)]
                log.info("fetched the provider's keys: %s", kids)
            return self._jwks

    async def verify(self, token: str, audience: str, nonce: str | None = None) -> dict[str, Any]:
        """Claims of a token the provider signed for `audience`, or TokenRefused."""
        cfg = self.config
        expect = Expectation(cfg.issuer, audience, cfg.algorithms, cfg.clock_skew, nonce)
        try:
            return verify(token, await self.jwks(), expect, self.clock())
        except UnknownKey:
            return verify(token, await self.jwks(refresh=True), expect, self.clock())

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        """An agent's access token: a JWT verified here and, with `[oidc] introspection`, still
        active at the provider; without a JWT, what introspection says of it (an opaque
        token), judged by the same issuer, audience and expiry."""
        audience = self.config.audience or self.config.client_id
        if looks_like_jwt(token):
            claims = await self.verify(token, audience)
            if self.config.introspection:
                await self.introspect(token)
            return claims
        if not self.config.introspection:
            raise TokenRefused("malformed", "not a signed JWT")
        claims = await self.introspect(token)
        issuer = str(claims.get("iss", self.config.issuer)).rstrip("/")
        if issuer != self.config.issuer:
            raise TokenRefused(
                "wrong-issuer", f"the token was issued by {issuer!r}, not by {self.config.issuer!r}"
            )
        aud = claims.get("aud")
        if audience not in (aud if isinstance(aud, list) else [aud]):
            raise TokenRefused(
                "wrong-audience", f"the token is not meant for this gateway (audience {audience!r})"
            )
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or self.clock() > exp + self.config.clock_skew:
            raise TokenRefused("expired", "the token has expired (sign in again)")
        return claims

    async def introspect(self, token: str) -> dict[str, Any]:
        """The provider's RFC 7662 answer for an active token; TokenRefused("inactive") when it
        says the token (or its client) is revoked or unknown; ProviderUnavailable when it
        cannot say (fail closed). Answers are kept `introspection_cache` seconds."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        cached = self._introspected.get(key)
        if cached is None or cached[1] <= now:
            cached = (await self._ask_introspection(token), now + self.config.introspection_cache)
            self._introspected = {k: v for k, v in self._introspected.items() if v[1] > now}
            self._introspected[key] = cached
        answer = cached[0]
        if answer.get("active") is not True:
            raise TokenRefused(
                "inactive",
                "the provider says this token is no longer active (revoked, or its client is)",
            )
        return answer

    async def _ask_introspection(self, token: str) -> dict[str, Any]:
        endpoint = (await self.metadata()).get("introspection_endpoint")
        if not isinstance(endpoint, str):
            raise ProviderUnavailable("the provider publishes no introspection_endpoint")
        try:
            status, body = await self._post(
                endpoint, {"token": token, "token_type_hint": "access_token"}
            )
        except DeviceFlowFailed as exc:
            raise ProviderUnavailable(str(exc)) from None
        if status != 200 or not isinstance(body.get("active"), bool):
            why = body.get("error_description") or body.get("error") or f"HTTP {status}"
            log.warning("token introspection failed: %s", why)
            raise ProviderUnavailable(
                f"the identity provider could not say whether the token is active ({why})"
            )
        return body

    # -- device flow ---------------------------------------------------------------------------

    async def start_device_flow(self) -> DeviceStart:
        endpoint = (await self.metadata()).get("device_authorization_endpoint")
        if not isinstance(endpoint, str):
            raise DeviceFlowFailed("the identity provider does not offer the device flow")
        status, body = await self._post(endpoint, {"scope": " ".join(self.config.scopes)})
        if status != 200:
            why = body.get("error_description") or body.get("error") or status
            raise DeviceFlowFailed(f"the identity provider refused to start: {why}")
        return DeviceStart.parse(body)

    async def finish_device_flow(
        self, start: DeviceStart, sleep: Callable[[float], Any] = asyncio.sleep
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Poll until the person approves: (ID token claims, the token response)."""
        endpoint = (await self.metadata()).get("token_endpoint")
        if not isinstance(endpoint, str):
            raise DeviceFlowFailed("the identity provider publishes no token endpoint")
        poll = DevicePoll.begin(start, time.monotonic())
        while True:
            await sleep(poll.next_wait(time.monotonic()))
            status, body = await self._post(
                endpoint, {"grant_type": DEVICE_GRANT, "device_code": start.device_code}
            )
            tokens = poll.answer(status, body)
            if tokens is not None:
                break
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise DeviceFlowFailed("the provider returned no ID token (is 'openid' a scope?)")
        claims = await self.verify(id_token, self.config.client_id)
        audience = claims.get("aud")
        shared = isinstance(audience, list) and len(audience) > 1
        if shared and claims.get("azp") != self.config.client_id:  # OIDC Core 3.1.3.7
            raise TokenRefused(
                "wrong-audience", "the ID token is shared with other clients (azp is not ours)"
            )
        return claims, tokens
