"""The client side of a PostgreSQL login: the startup packets (SSLRequest, GSSENCRequest,
CancelRequest, StartupMessage), TLS, and authentication: SCRAM-SHA-256 against a verifier in
`[postgres.scram]`, or a password inside TLS checked against the user's scrypt hash or by an
LDAP bind (plain connections only with `[postgres] allow_plain = true`). Verified passwords are
remembered for a while (`LoginCache`) so that a pool or a `psql -c` loop does not pay the
check at each connection. Nothing here talks to a target."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.auth import Authenticator, Identity
from proxy.pg.scram import MECHANISM, ScramError, ScramServer, Verifier
from proxy.pg.settings import PgSettings
from proxy.pg.wire import (
    AuthCode,
    Authentication,
    CancelRequest,
    Frame,
    GSSENCRequest,
    MessageReader,
    PasswordMessage,
    ProtocolError,
    SSLRequest,
    StartupMessage,
    StartupReader,
    decode_frontend,
)

log = logging.getLogger("hoop.pg")

MAX_STARTUP_READ = 16384
LOGIN_MAX_MESSAGE = 64 * 1024
READ_SIZE = 256 * 1024


class LoginRefused(Exception):
    """The client may not in; `sqlstate` and the message go to the client as FATAL."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


# ---------------------------------------------------------------------------------------------
# Verified passwords, for a while


class LoginCache:
    """Passwords that passed the scrypt check or the LDAP bind in the last `ttl` seconds, so
    that a client reconnecting (a pool, `psql -c` in a loop) does not pay that check again.
    Entries are HMAC-SHA256 digests of user and password under a key made at start and held
    only in memory: never the password, never on disk. A wrong password is never cached, so
    guessing still goes through the check and its throttle; a changed or revoked password
    is honoured once its entry expires (at most `ttl` seconds)."""

    MAX_ENTRIES = 4096

    def __init__(self, ttl: float, clock: Callable[[], float] | None = None) -> None:
        self.ttl = ttl
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[float, Identity]] = {}

    def _digest(self, user: str, password: str) -> bytes:
        message = user.encode("utf-8", "surrogatepass") + b"\x00"
        return hmac.digest(self._key, message + password.encode("utf-8", "surrogatepass"), "sha256")

    def get(self, user: str, password: str) -> Identity | None:
        if self.ttl <= 0:
            return None
        digest = self._digest(user, password)
        found = self._entries.get(digest)
        if found is None:
            return None
        expires_at = found[1].expires_at  # a token's own end (OIDC), before the cache's
        if found[0] <= self._clock() or (expires_at is not None and expires_at <= time.time()):
            del self._entries[digest]
            return None
        return found[1]

    def put(self, user: str, password: str, identity: Identity) -> None:
        if self.ttl <= 0 or identity.kind == "agent":
            # An agent's token is checked at every login (a signature with cached keys, and
            # with [oidc] introspection the provider's cached word), so a token or client
            # revoked at the provider, or an agent revoked here, is refused at once.
            return
        now = self._clock()
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            while len(self._entries) >= self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
        self._entries[self._digest(user, password)] = (now + self.ttl, identity)


# ---------------------------------------------------------------------------------------------
# The startup packets


@dataclass(slots=True)
class Startup:
    """A client's StartupMessage, whether it came inside TLS, and what it sent after it."""

    message: StartupMessage
    tls: bool
    leftover: bytes


async def read_startup(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls: ssl.SSLContext | None,
    cancel: Callable[[CancelRequest], Awaitable[None]],
) -> Startup | None:
    """Answer SSLRequest (with TLS when the gateway has it) and GSSENCRequest ('N') until the
    StartupMessage; None when the client left, or sent a CancelRequest (passed to `cancel`)."""
    startup = StartupReader()
    tls_done = False
    while True:
        packet = startup.next()
        if packet is None:
            data = await reader.read(MAX_STARTUP_READ)
            if not data:
                return None
            startup.feed(data)
        elif isinstance(packet, SSLRequest):
            if startup.take_buffered():
                raise ProtocolError("data after SSLRequest before the TLS handshake")
            if tls_done or tls is None:
                writer.write(b"N")
                continue
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(tls)
            tls_done = True
        elif isinstance(packet, GSSENCRequest):
            writer.write(b"N")
        elif isinstance(packet, CancelRequest):
            await cancel(packet)
            return None
        else:
            assert isinstance(packet, StartupMessage)
            return Startup(packet, tls_done, startup.take_buffered())


# ---------------------------------------------------------------------------------------------
# Authentication


class ClientLogin:
    """Authenticates one client: `await authenticate(user, tls)` gives its Identity or raises
    LoginRefused. Bytes the client sent past its last login message stay in `messages`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: PgSettings,
        auth: Authenticator,
        logins: LoginCache,
        client: str,
        leftover: bytes,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self.auth = auth
        self.logins = logins
        self.client = client
        self.messages = MessageReader(LOGIN_MAX_MESSAGE)
        self.messages.feed(leftover)

    async def authenticate(self, user: str, tls: bool) -> Identity:
        settings = self.settings
        if not tls and not settings.allow_plain:
            raise LoginRefused(
                "28000",
                "hoop: the gateway requires TLS (connect with sslmode=require); "
                "plain connections are accepted only with [postgres] allow_plain = true",
            )
        verifier = settings.scram.get(user)
        if verifier is not None or not (tls or settings.plain_passwords):
            return await self._scram(user, verifier)
        return await self._cleartext(user)

    async def _cleartext(self, user: str) -> Identity:
        """A password inside TLS (or plain, where allowed): scrypt hash or LDAP bind."""
        self.writer.write(Authentication(AuthCode.CLEARTEXT_PASSWORD).encode())
        password = (await self._password()).password()
        remembered = self.logins.get(user, password)
        if remembered is not None:
            return remembered
        host = self.client.rpartition(":")[0]
        result = await self.auth.check_password(user, password, host)
        if result.identity is None:
            if result.message:
                raise LoginRefused("28000", result.message.strip())
            raise _failed(user)
        if result.identity.service_account:
            raise LoginRefused("28000", "hoop: service accounts log in with keys only")
        self.logins.put(user, password, result.identity)
        return result.identity

    async def _scram(self, user: str, verifier: Verifier | None) -> Identity:
        """SCRAM-SHA-256 against the user's verifier (needs no TLS). An unknown user runs
        against a fake verifier, and failures are slowed down like password failures."""
        auth = self.auth
        local = auth.users.get(user)
        key = (self.client.rpartition(":")[0], user)
        wait = auth.throttle.reserve(key)
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            last = await self._scram_exchange(user, ScramServer(verifier))
        except BaseException:
            auth.throttle.failed(key)
            raise
        auth.throttle.succeeded(key)
        self.writer.write(Authentication(AuthCode.SASL_FINAL, last).encode())
        if local is not None:
            return Identity(local.name, frozenset(local.groups), local.service_account, "local")
        return Identity(user, frozenset(), False, "scram")

    async def _scram_exchange(self, user: str, server: ScramServer) -> bytes:
        """The SASL messages up to the server's final message (not yet sent)."""
        self.writer.write(Authentication.sasl([MECHANISM]).encode())
        initial = await self._password()
        mechanism, response = initial.sasl_initial()
        if mechanism != MECHANISM or response is None:
            raise LoginRefused("28000", "hoop: only SCRAM-SHA-256 is offered")
        first = server.first(response)
        self.writer.write(Authentication(AuthCode.SASL_CONTINUE, first).encode())
        final = await self._password()
        try:
            return server.final(final.data)
        except ScramError:
            log.warning("failed SCRAM login for %r from %s", user, self.client)
            raise _failed(user) from None

    async def _password(self) -> PasswordMessage:
        await self.writer.drain()
        message = decode_frontend(await self._read_message())
        if not isinstance(message, PasswordMessage):
            raise ProtocolError("expected a password message")
        return message

    async def _read_message(self) -> Frame:
        while True:
            item = self.messages.next()
            if item is not None:
                return item
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("client closed the connection during login")
            self.messages.feed(data)


def _failed(user: str) -> LoginRefused:
    return LoginRefused("28P01", f'password authentication failed for user "{user}"')
