"""Verifying a JWT from the provider: pure, given its key set, the settings and the time.

Order of checks, each refusal with a reason a person can act on: the token must be a JWT; its
`alg` must be one of the allowed public-key algorithms (`none` and HS* are refused by name,
whatever the settings: an HS256 token "signed" with the provider's public key is forgery);
its issuer must be the configured one (read before the signature only to say why it is
refused); its `kid` must name a key the provider publishes, of the algorithm's key type; then
signature, audience, expiry and not-before (within the clock skew), and the nonce where one
was sent. Nothing unverified is ever used to let a caller in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import PyJWKError

# The JWK key type each algorithm family needs: a key of another type never verifies it.
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class TokenRefused(Exception):
    """A token the gateway does not accept. `reason` is short and stable (for tests and the
    audit); the message says what it means."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnknownKey(TokenRefused):
    """The token names a key the cached set lacks: the caller may fetch the set again once."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a token must say to be accepted."""

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    clock_skew: float
    nonce: str | None = None


def header_of(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise TokenRefused("malformed", "not a signed JWT") from None
    return dict(header)


def looks_like_jwt(text: str) -> bool:
    """A compact JWS (`eyJ...` header, three dot-separated parts): a password never is."""
    return text.startswith("eyJ") and text.count(".") == 2 and len(text) > 40


def check_algorithm(header: dict[str, Any], allowed: tuple[str, ...]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise TokenRefused("alg-none", "the token is not signed (alg none is never accepted)")
    if alg.upper().startswith("HS"):
        raise TokenRefused(
            "alg-hmac",
            f"the token is signed with {alg}, a shared-secret algorithm; the gateway accepts "
            "only the provider's public-key signatures",
        )
    if alg not in allowed:
        raise TokenRefused(
            "alg-not-allowed", f"the token is signed with {alg}, not one of {', '.join(allowed)}"
        )
    return alg


def unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError:
        raise TokenRefused("malformed", "the token's claims are not JSON") from None
    return dict(claims)


def find_key(jwks: dict[str, Any], header: dict[str, Any], alg: str) -> jwt.PyJWK:
    """The published key the token names, usable for `alg`; UnknownKey when there is none."""
    kid = header.get("kid")
    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict)]
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
    keys = [k for k in keys if k.get("use", "sig") == "sig"]
    wanted = KEY_TYPES.get(alg[:2])
    keys = [k for k in keys if k.get("kty") == wanted and k.get("alg", alg) == alg]
    if len(keys) != 1:
        raise UnknownKey(
            "unknown-key",
            f"the token is signed by a key the provider does not publish (kid {kid!r}): "
            "a token from another provider, or a key the provider has retired",
        )
    try:
        return jwt.PyJWK(json.loads(json.dumps(keys[0])), algorithm=alg)
    except PyJWKError as exc:
        raise TokenRefused("bad-key", f"the provider's key {kid!r} is unusable: {exc}") from None


def verify(token: str, jwks: dict[str, Any], expect: Expectation, now: float) -> dict[str, Any]:
    """The token's claims when everything holds; TokenRefused (or UnknownKey) otherwise."""
    header = header_of(token)
    alg = check_algorithm(header, expect.algorithms)
    issuer = unverified_claims(token).get("iss")
    if issuer != expect.issuer:
        raise TokenRefused(
            "wrong-issuer", f"the token was issued by {issuer!r}, not by {expect.issuer!r}"
        )
    key = find_key(jwks, header, alg)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=expect.audience,
            issuer=expect.issuer,
            leeway=expect.clock_skew,
            options={"require": ["exp", "iss", "aud"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("expired", "the token has expired (sign in again)") from None
    except jwt.InvalidAudienceError:
        raise TokenRefused(
            "wrong-audience",
            f"the token is not meant for this gateway (audience {expect.audience!r})",
        ) from None
    except jwt.ImmatureSignatureError:
        raise TokenRefused("not-yet-valid", "the token is not valid yet") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("bad-signature", "the token's signature does not verify") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused("missing-claim", f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRefused("invalid", f"the token is not valid: {exc}") from None
    _check_times(claims, expect, now)
    if expect.nonce is not None and claims.get("nonce") != expect.nonce:
        raise TokenRefused("wrong-nonce", "the ID token's nonce is not the one the gateway sent")
    return dict(claims)


def _check_times(claims: dict[str, Any], expect: Expectation, now: float) -> None:
    """PyJWT reads the system clock; the gateway's injected `now` decides too."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or now > exp + expect.clock_skew:
        raise TokenRefused("expired", "the token has expired (sign in again)")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and now + expect.clock_skew < nbf:
        raise TokenRefused("not-yet-valid", "the token is not valid yet")
