"""OIDC: people through the device flow (RFC 8628), agents through client-credentials tokens.

Where it sits: beside `proxy.auth`, which asks it who a token names; the SSH server mixes in
its keyboard-interactive login. `config` reads `[oidc]` and `[[agents]]`; `tokens` verifies a
JWT against a key set (pure); `identity` turns verified claims into a person or an agent
(pure); `device` is the device flow's polling as a state machine (pure); `client` does the
HTTP: discovery, the provider's JWKS with rotation, the device authorization and token
requests; `ssh_login` is the SSH login with OIDC beside passwords; `certs` issues the
short-lived credentials of `hoop-tui login`; `expiry` ends a session when its token expires.
"""
