"""OIDC: people through the device flow (RFC 8628), agents through client-credentials tokens.

`config` reads `[oidc]` and `[[agents]]`; `tokens` verifies a JWT against a key set (pure);
`device` is the device flow's polling as a state machine (pure); `client` does the HTTP:
discovery, the provider's JWKS with rotation, the device authorization and token requests.
"""
