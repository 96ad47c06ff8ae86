"""Keyboard-interactive logins to the gateway's SSH server, with OIDC beside passwords.

`OidcLogin` is mixed into the SSH server's `CallerServer`. Whoever connects gets a challenge
that fits the name they typed:
- a local or directory person (their entry was found when the login began): `Password:`, as
  asyncssh asks by itself when a server has no keyboard-interactive of its own;
- an agent of `[[agents]]`: `Access token:`, its client-credentials token (hidden);
- anyone else, with `[oidc] device_flow` on: the device flow (RFC 8628). The instructions
  show the verification URL and the user code, with no prompt to answer, so plain `ssh` (and
  scripts without a terminal) just wait; the gateway polls the provider as it asks, verifies
  the ID token, and the person is in once their provider name is the name they typed.
The wait is bounded by the gateway's login timeout. The identity carries the token's expiry:
the connection's sessions end then (`arm_expiry`), and an agent's after its maximum length.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import asyncssh

from proxy.auth import DirectoryUnavailable, Identity, oidc_identity
from proxy.names import fold_name
from proxy.oidc import expiry
from proxy.oidc.certs import IssueRefused
from proxy.oidc.device import DeviceFlowFailed, DeviceStart
from proxy.oidc.identity import person_for
from proxy.oidc.tokens import TokenRefused

log = logging.getLogger("hoop.oidc")

PASSWORD_PROMPT = (("Password:", False),)
TOKEN_PROMPT = (("Access token:", False),)


class OidcLogin:
    """Keyboard-interactive for `CallerServer` (which provides these attributes)."""

    context: Any
    conn: asyncssh.SSHServerConnection | None
    client: str
    client_host: str
    login: Any
    identity: Identity | None
    key_identity: Identity | None
    _kbdint_mode: str = ""
    _device: DeviceStart | None = None
    _expiry: asyncio.TimerHandle | None = None
    _issuing: asyncio.Future[None] | None = None
    _token_tried: bool = False

    def _banner(self, message: str) -> None:
        raise NotImplementedError

    async def validate_password(self, username: str, password: str) -> bool:
        raise NotImplementedError

    def kbdint_auth_supported(self) -> bool:
        return True

    async def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        auth = self.context.auth
        name = self.login.user
        known = self.key_identity is not None and self.key_identity.source != "oidc"
        if known or auth.oidc is None:
            self._kbdint_mode = "password"
            return ("", "", "en-US", PASSWORD_PROMPT)
        if any(fold_name(name) == fold_name(agent) for agent in auth.agents):
            if self._token_tried:
                return False  # one token per connection: a refused one is not asked again
            self._token_tried = True
            self._kbdint_mode = "token"
            return ("", f"Agent {name}: paste its access token.\n", "", TOKEN_PROMPT)
        if not auth.oidc.config.device_flow:
            self._kbdint_mode = "password"
            return ("", "", "en-US", PASSWORD_PROMPT)
        if self._device is not None:
            return False  # one sign-in per connection: clients retry keyboard-interactive
        # Each device flow started counts as an attempt for this name and address (the login
        # throttle), so a flood of connections cannot make the gateway flood the provider.
        key = (self.client_host, name)
        wait = auth.throttle.reserve(key)
        auth.throttle.failed(key)
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            self._device = await auth.oidc.start_device_flow()
        except (DeviceFlowFailed, TokenRefused) as exc:
            self._banner(f"hoop: single sign-on is unavailable: {exc}\r\n")
            return False
        self._kbdint_mode = "device"
        log.info("device flow started for %r from %s", name, self.client)
        return ("hoop: single sign-on", self._device.instructions(), "", ())

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        mode, self._kbdint_mode = self._kbdint_mode, ""
        if mode == "password":
            return len(responses) == 1 and await self.validate_password(username, responses[0])
        if mode == "token":
            return len(responses) == 1 and await self.validate_password(username, responses[0])
        if mode == "device" and self._device is not None:
            return await self._finish_device_flow(self._device)
        return False

    async def _finish_device_flow(self, start: DeviceStart) -> bool:
        auth = self.context.auth
        name = self.login.user
        try:
            claims, _tokens = await asyncio.wait_for(
                auth.oidc.finish_device_flow(start), self.context.config.ssh.login_timeout
            )
            person = person_for(claims, auth.oidc.config)
        except TimeoutError:
            self._banner("hoop: the sign-in was not approved in time; connect again\r\n")
            return False
        except (DeviceFlowFailed, TokenRefused) as exc:
            log.warning("device flow for %r from %s failed: %s", name, self.client, exc)
            self._banner(f"hoop: sign-in refused: {exc}\r\n")
            return False
        problem = self._name_problem(name, person.name) or await self._directory_problem(
            person.name
        )
        if problem is not None:
            log.warning("device flow for %r from %s: %s", name, self.client, problem)
            self._banner(f"hoop: sign-in refused: {problem}\r\n")
            return False
        self.identity = oidc_identity(person)
        auth.throttle.succeeded((self.client_host, name))
        log.info("%s signed in with OIDC (subject %s)", person.name, person.subject)
        return True

    def _name_problem(self, typed: str, signed_in: str) -> str | None:
        auth = self.context.auth
        if fold_name(typed) != fold_name(signed_in):
            return f"you signed in as {signed_in!r}; connect as {signed_in} (not {typed})"
        if auth.local_name(signed_in) or any(
            fold_name(signed_in) == fold_name(agent) for agent in auth.agents
        ):
            return f"{signed_in!r} is the name of a local user or agent of this gateway"
        return None

    async def _directory_problem(self, signed_in: str) -> str | None:
        """With a directory as well, its people keep their names: an OIDC sign-in under the
        name of a directory entry is refused, and so is any while the directory cannot say
        (fail closed: it might be someone's)."""
        try:
            entry = await self.context.auth.directory_person(signed_in)
        except DirectoryUnavailable:
            return "the user directory cannot be asked whether that name is taken; try later"
        if entry is not None:
            return f"{signed_in!r} is a directory user of this gateway; log in with its password"
        return None

    def start_issue(self, command: str, chan: Any) -> None:
        """`hoop-login <public key>` (what `hoop-tui login` runs): a certificate for that key
        and a gateway password, as one JSON line; refused with a reason on stderr."""
        credentials = self.context.auth.credentials
        identity = self.identity
        assert identity is not None

        async def run() -> None:
            public_key = command.partition(" ")[2].strip()
            try:
                if credentials is None:
                    raise IssueRefused("this gateway has no [oidc] section")
                issued = await credentials.async_issue(identity, public_key)
            except IssueRefused as exc:
                chan.write_stderr(f"hoop: no credentials issued: {exc}\r\n".encode())
                chan.exit(1)
                return
            log.info("issued a certificate to %s until %s", identity.name, issued.valid_before)
            answer = {
                "name": identity.name,
                "kind": identity.kind,
                "owner": identity.owner,
                "valid_before": issued.valid_before,
                "certificate": issued.certificate,
                "password": issued.password,
            }
            chan.write((json.dumps(answer) + "\n").encode())
            chan.exit(0)

        self._issuing = asyncio.ensure_future(run())

    def arm_expiry(self) -> None:
        """End this connection, with its sessions, when the identity's token expires (or an
        agent's session reaches its maximum length): a menu or console has no session."""
        if self.identity is not None:
            self._expiry = expiry.arm(self.context.config, self.identity, self._expired)

    def _expired(self, reason: str, message: str) -> None:
        assert self.identity is not None
        log.info("%s from %s: %s; ending the connection", self.identity.name, self.client, reason)
        links = [
            link for link in (getattr(self, "link", None), *getattr(self, "jump_links", ())) if link
        ]
        if links:
            links[0].spawn(self._end_links(links, reason, message))
        else:
            self._end_links_now(message)

    async def _end_links(self, links: list[Any], reason: str, message: str) -> None:
        await asyncio.gather(*(link.end(reason, message) for link in links), return_exceptions=True)
        self._end_links_now("")

    def _end_links_now(self, message: str) -> None:
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message.strip() or "sign-in expired")

    def disarm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
