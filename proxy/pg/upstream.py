"""The gateway's own login to a PostgreSQL target: TCP, TLS as the target's `sslmode` says,
a StartupMessage with the client's harmless parameters, the gateway's credential (SCRAM-SHA-256,
md5, cleartext or trust, as the target asks; the client never sees it), and the greeting the
client is then given. Also the CancelRequest the gateway sends for a client's Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.pg.login import READ_SIZE, LoginRefused
from proxy.pg.scram import MECHANISM, ScramClient, ScramError, md5_password
from proxy.pg.settings import PgTarget
from proxy.pg.tls import client_tls_context
from proxy.pg.wire import (
    PROTOCOL_3_0,
    AuthCode,
    Authentication,
    Backend,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    Message,
    MessageReader,
    ParameterStatus,
    PasswordMessage,
    ReadyForQuery,
    SSLRequest,
    StartupMessage,
    decode_backend,
)

log = logging.getLogger("hoop.pg")

# Startup parameters passed on to the target; anything else (options, role, replication...)
# could change what the session may do, so it stays at the gateway.
FORWARDED_PARAMS = frozenset(
    {
        "application_name",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "IntervalStyle",
        "extra_float_digits",
        "search_path",
        "lc_monetary",
        "lc_numeric",
        "lc_time",
        "standard_conforming_strings",
        "bytea_output",
    }
)


@dataclass(slots=True)
class Upstream:
    """A target connection the gateway has logged in to, and what it said on the way."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    key: tuple[int, bytes] | None = None  # the target's BackendKeyData: never to the client
    greeting: list[bytes] = field(default_factory=list)  # ParameterStatus and notices
    encoding: str | None = None  # the session's client_encoding, as the target reports it
    conforming: str | None = None  # and its standard_conforming_strings
    ready: bytes = b""  # the target's ReadyForQuery
    leftover: bytes = b""  # bytes after it (none, from a well-behaved server)


async def upstream_tls(
    target: PgTarget, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """TLS to the target as its `sslmode` says: `prefer` falls back to a plain connection
    only when the server answers that it has no TLS; `require` encrypts without checking
    the certificate; `verify-full` checks it against `ca_file` (else the system's CAs)
    and the target's host name. Anything less than asked for refuses the login."""
    writer.write(SSLRequest().encode())
    await writer.drain()
    try:
        answer = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        raise LoginRefused("08006", f"hoop: target {target.name} closed the connection") from None
    if answer == b"N" and target.sslmode == "prefer":
        log.info("target %s has no TLS; sslmode=prefer continues without", target.name)
        return
    if answer != b"S":
        raise LoginRefused("08006", f"hoop: target {target.name} does not offer TLS")
    try:
        await writer.start_tls(
            client_tls_context(target),
            server_hostname=target.host if target.sslmode == "verify-full" else None,
        )
    except (ssl.SSLError, OSError) as exc:
        log.warning("TLS to target %s failed: %s", target.name, exc)
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
        raise LoginRefused(
            "08006",
            f"hoop: TLS to target {target.name} failed ({reason or 'handshake failed'})",
        ) from None


async def open_target(target: PgTarget) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the target, inside TLS when its sslmode asks for it."""
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port, limit=READ_SIZE)
    except OSError as exc:
        raise LoginRefused(
            "08006", f"hoop: cannot reach target {target.name}: {exc.strerror or exc}"
        ) from None
    if target.sslmode != "disable":
        try:
            await upstream_tls(target, reader, writer)
        except BaseException:
            writer.close()
            raise
    return reader, writer


def startup_params(target: PgTarget, params: dict[str, str]) -> dict[str, str]:
    """The gateway's StartupMessage: its own user and database, the client's harmless
    parameters, and read-only transactions on a read-only target."""
    startup = {"user": target.user, "database": target.database}
    startup.update({k: v for k, v in params.items() if k in FORWARDED_PARAMS})
    if target.read_only:
        startup["options"] = "-c default_transaction_read_only=on"
    return startup


class Credential:
    """Answers the target's authentication requests with the gateway's credential: a
    dispatch on the request's code, each giving the bytes to send (or none)."""

    def __init__(self, target: PgTarget) -> None:
        self.target = target
        self.scram: ScramClient | None = None

    def answer(self, message: Authentication) -> bytes:
        handler = _AUTH_HANDLERS.get(message.code)
        if handler is None or (message.code in _SCRAM_STEPS and self.scram is None):
            raise LoginRefused(
                "08006", f"hoop: target {self.target.name} asks for an unsupported login"
            )
        return handler(self, message)

    def _password(self) -> str:
        password = self.target.password()
        if password is None:
            name = self.target.name
            log.error("no credential for target %s (password_env/password_file)", name)
            raise LoginRefused("08006", f"hoop: the gateway has no credential for {name}")
        return password

    def _ok(self, message: Authentication) -> bytes:
        return b""

    def _cleartext(self, message: Authentication) -> bytes:
        return PasswordMessage(self._password().encode("utf-8") + b"\x00").encode()

    def _md5(self, message: Authentication) -> bytes:
        hashed = md5_password(self.target.user, self._password(), message.data[:4])
        return PasswordMessage(hashed).encode()

    def _sasl(self, message: Authentication) -> bytes:
        if MECHANISM not in message.mechanisms():
            raise LoginRefused("08006", f"hoop: {self.target.name} offers no SCRAM-SHA-256")
        self.scram = ScramClient(self._password())
        return PasswordMessage.sasl_initial_of(MECHANISM, self.scram.first()).encode()

    def _sasl_continue(self, message: Authentication) -> bytes:
        assert self.scram is not None
        return PasswordMessage(self.scram.final(message.data)).encode()

    def _sasl_final(self, message: Authentication) -> bytes:
        assert self.scram is not None
        try:
            self.scram.verify(message.data)
        except ScramError as exc:
            raise LoginRefused("08006", f"hoop: target {self.target.name}: {exc}") from None
        return b""


_SCRAM_STEPS = (AuthCode.SASL_CONTINUE, AuthCode.SASL_FINAL)
_AUTH_HANDLERS: dict[int, Callable[[Credential, Authentication], bytes]] = {
    AuthCode.OK: Credential._ok,
    AuthCode.CLEARTEXT_PASSWORD: Credential._cleartext,
    AuthCode.MD5_PASSWORD: Credential._md5,
    AuthCode.SASL: Credential._sasl,
    AuthCode.SASL_CONTINUE: Credential._sasl_continue,
    AuthCode.SASL_FINAL: Credential._sasl_final,
}


async def log_in_upstream(target: PgTarget, params: dict[str, str]) -> Upstream:
    """Connect and log in to the target; LoginRefused (the connection closed) when it cannot
    be done. The client has seen nothing of it yet."""
    reader, writer = await open_target(target)
    try:
        writer.write(StartupMessage(PROTOCOL_3_0, startup_params(target, params)).encode())
        await writer.drain()
        upstream = Upstream(reader, writer)
        await _until_ready(target, upstream)
    except BaseException:
        writer.close()
        raise
    return upstream


async def _until_ready(target: PgTarget, upstream: Upstream) -> None:
    """The target's login messages up to its ReadyForQuery, answered and kept."""
    messages = MessageReader()
    credential = Credential(target)
    while True:
        item = messages.next()
        if item is None:
            data = await upstream.reader.read(READ_SIZE)
            if not data:
                raise LoginRefused(
                    "08006", f"hoop: target {target.name} closed the connection at login"
                )
            messages.feed(data)
            continue
        message = decode_backend(item)
        if isinstance(message, ReadyForQuery):
            upstream.ready = message.encode()
            upstream.leftover = messages.take_buffered()
            return
        answer = _login_message(target, upstream, credential, message)
        if answer:
            upstream.writer.write(answer)
            await upstream.writer.drain()


def _login_message(
    target: PgTarget, upstream: Upstream, credential: Credential, message: Message
) -> bytes:
    """Take in one login message of the target; the bytes to answer it with, if any."""
    if isinstance(message, Authentication):
        return credential.answer(message) or b""
    if isinstance(message, BackendKeyData):
        upstream.key = (message.pid, message.secret)
    elif isinstance(message, ParameterStatus):
        if message.name == "client_encoding":
            upstream.encoding = message.value
        elif message.name == "standard_conforming_strings":
            upstream.conforming = message.value
        upstream.greeting.append(message.encode())
    elif isinstance(message, ErrorResponse) and message.TYPE == Backend.ERROR_RESPONSE:
        log.warning(
            "target %s refused the gateway's login: %s %s",
            target.name,
            message.sqlstate,
            message.message,
        )
        raise LoginRefused(
            "08006",
            f"hoop: target {target.name} refused the gateway's login (the gateway's log says why)",
        )
    else:  # notices during login
        upstream.greeting.append(message.encode())
    return b""


async def cancel_upstream(target: PgTarget, key: tuple[int, bytes]) -> None:
    """Send the target's CancelRequest. It carries the server's own secret: it goes inside
    TLS whenever the login did (the target's sslmode), and is not sent where TLS cannot be
    had."""
    with contextlib.suppress(OSError, LoginRefused, asyncio.IncompleteReadError):
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            if target.sslmode != "disable":
                await upstream_tls(target, reader, writer)
            writer.write(CancelRequest(key[0], key[1]).encode())
            await writer.drain()
        finally:
            writer.close()


# ---------------------------------------------------------------------------------------------
# Spare logins


SpareKey = tuple[PgTarget, tuple[tuple[str, str], ...]]


class SpareLogins:
    """A target login made ahead of time, one per (target, startup parameters), so that the
    next client admitted with the same parameters (a pool, `psql -c` in a loop) does not wait
    for all of the target's login (issue 19: set-up cost). Each is a fresh backend no client
    has used, kept at most `ttl` seconds, at most `limit` in all.

    Only an admitted login asks for a spare (`refill`, after its own client authenticated and
    was admitted), so a client that has not authenticated never causes target traffic. A
    spare the target closed or spoke on meanwhile is dropped, and the client's login is made
    as usual."""

    def __init__(self, ttl: float, limit: int = 8) -> None:
        self.ttl = ttl
        self.limit = limit
        self._spares: dict[SpareKey, tuple[Upstream, asyncio.TimerHandle]] = {}
        self._pending: dict[SpareKey, asyncio.Task[Upstream | None]] = {}
        self._claimed: set[asyncio.Task[Upstream | None]] = set()

    async def take(self, target: PgTarget, params: dict[str, str]) -> Upstream | None:
        """A spare login for this target and parameters: a waiting one, or the one under way
        (it is further along than a new login would be); None when there is none."""
        key = _spare_key(target, params)
        found = self._spares.pop(key, None)
        if found is not None:
            found[1].cancel()
            return _usable(found[0])
        task = self._pending.pop(key, None)
        if task is None:
            return None
        self._claimed.add(task)  # this client's alone now: no other takes it, none keeps it
        try:
            upstream = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_close_result)  # the client went: the login is not used
            raise
        return _usable(upstream) if upstream is not None else None

    def refill(self, target: PgTarget, params: dict[str, str]) -> None:
        """Log in a spare for the next client like this one, in the background."""
        key = _spare_key(target, params)
        if self.ttl <= 0 or key in self._spares or key in self._pending:
            return
        if len(self._spares) + len(self._pending) >= self.limit:
            return
        task = asyncio.ensure_future(self._log_in(target, params))
        self._pending[key] = task
        task.add_done_callback(lambda done: self._logged_in(key, done))

    async def _log_in(self, target: PgTarget, params: dict[str, str]) -> Upstream | None:
        try:
            return await log_in_upstream(target, params)
        except (LoginRefused, OSError, asyncio.IncompleteReadError) as exc:
            log.debug("no spare login for target %s: %s", target.name, exc)
            return None

    def _logged_in(self, key: SpareKey, task: asyncio.Task[Upstream | None]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if task in self._claimed:
            self._claimed.discard(task)
            return
        upstream = None if task.cancelled() else task.result()
        if upstream is None:
            return
        expiry = asyncio.get_running_loop().call_later(self.ttl, self._expire, key, upstream)
        self._spares[key] = (upstream, expiry)

    def _expire(self, key: SpareKey, upstream: Upstream) -> None:
        found = self._spares.get(key)
        if found is not None and found[0] is upstream:
            del self._spares[key]
        _close(upstream)

    async def close(self) -> None:
        """Drop every spare and stop the logins under way."""
        pending = list(self._pending.values())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for upstream, expiry in self._spares.values():
            expiry.cancel()
            _close(upstream)
        self._spares.clear()


def _usable(upstream: Upstream) -> Upstream | None:
    """The spare, unless the target ended it or sent something while it waited."""
    buffered = getattr(upstream.reader, "_buffer", b"")
    if upstream.leftover or buffered or upstream.reader.at_eof() or upstream.writer.is_closing():
        _close(upstream)
        return None
    return upstream


def _close_result(task: asyncio.Task[Upstream | None]) -> None:
    if not task.cancelled() and task.exception() is None and (upstream := task.result()):
        _close(upstream)


def _spare_key(target: PgTarget, params: dict[str, str]) -> SpareKey:
    return target, tuple(sorted(startup_params(target, params).items()))


def _close(upstream: Upstream) -> None:
    with contextlib.suppress(Exception):
        if not upstream.writer.is_closing():
            upstream.writer.write(b"X\x00\x00\x00\x04")  # Terminate
        upstream.writer.close()
