"""The PostgreSQL gateway's asyncio shell: the listener, and per client connection the order of
its life and the byte pumps around the sans-IO `PgSession`.

A client connects to `[gateway] pg_listen` (default 127.0.0.1:15432) and names a target by
its database name (the target's `name`, or its `database`). The gateway:

1. answers SSLRequest with its certificate (`tls.py`), refuses GSSENCRequest with 'N', maps
   CancelRequest to the upstream (`login.read_startup`);
2. logs the client in (`login.ClientLogin`; see `docs/sql-classes.md`, "Logging in");
3. starts the session's recording (no recording, no session) in a worker thread while it
   logs in to the target with its own credential (`upstream.log_in_upstream`); the client never
   sees that credential, and nothing reaches the target before the client is authenticated and
   admitted. Read-only targets get `default_transaction_read_only=on`;
4. relays, with every statement judged by the policy (`judging.py`) and carried out by the
   Enforcer.

Configuration is `settings.py`; the session after login is `session.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Callable
from typing import cast

from proxy.auth import Authenticator, Identity
from proxy.config import GatewayConfig
from proxy.fleet.listener import ProxiedServer, start_stream_server
from proxy.fleet.settings import trusted_proxies
from proxy.holds.enforcement import Enforcer, Outcome
from proxy.pg import classify as sqlclass
from proxy.pg.judging import make_decider, outcome_text
from proxy.pg.login import ClientLogin, LoginCache, LoginRefused, read_startup
from proxy.pg.scram import ScramError
from proxy.pg.session import (
    QUERY_CANCELED,
    End,
    Judge,
    PgSession,
    conforming_refusal,
    encoding_refusal,
)
from proxy.pg.settings import (
    DEFAULT_PG_LISTEN,
    PgSettings,
    PgTarget,
    UnparsableMode,
    parse_pg_settings,
)
from proxy.pg.tls import ensure_certificate, server_tls_context
from proxy.pg.upstream import (
    FORWARDED_PARAMS,
    SpareLogins,
    Upstream,
    cancel_upstream,
    log_in_upstream,
)
from proxy.pg.wire import (
    PROTOCOL_3_0,
    AuthCode,
    Authentication,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    NegotiateProtocolVersion,
    ProtocolError,
    StartupMessage,
)
from proxy.policy import Action, Caller, Policy, parse_policy
from proxy.session import GatewaySession, RecordingUnavailable, SessionRegistry
from storage.masking import Masker, MaskPolicy

__all__ = [
    "DEFAULT_PG_LISTEN",
    "FORWARDED_PARAMS",
    "LoginCache",
    "LoginRefused",
    "PgConnection",
    "PgGateway",
    "PgSettings",
    "PgTarget",
    "UnparsableMode",
    "ensure_certificate",
    "make_decider",
    "parse_pg_settings",
    "pg_enabled",
    "server_tls_context",
    "start_pg_gateway",
]

log = logging.getLogger("hoop.pg")

READ_SIZE = 256 * 1024
MAX_HELD_BUFFER = 16 * 1024 * 1024  # client bytes queued behind a held statement, at most
CLOSE_GRACE_S = 5.0
NOT_RECORDED = "hoop: the gateway cannot record this session"
DRAIN_ABOVE = 64 * 1024  # bytes queued on a transport before the other side waits for it


# ---------------------------------------------------------------------------------------------
# The gateway


class PgGateway:
    """The PostgreSQL listener of a running gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        enforcer: Enforcer,
        *,
        policy: Policy | None = None,
        authenticator: Authenticator | None = None,
        settings: PgSettings | None = None,
        classifier: sqlclass.Classifier | None = None,
        sessions: SessionRegistry | None = None,
    ) -> None:
        self.config = config
        self.enforcer = enforcer
        self.settings = settings or parse_pg_settings(config)
        self.policy = policy if policy is not None else parse_policy(config.raw, config.path)
        self._own_auth = authenticator is None
        self.auth = authenticator or Authenticator(config)
        self.classifier = classifier or sqlclass.Classifier(
            sql_functions=self.settings.sql_functions
        )
        self.tls: ssl.SSLContext | None = None
        self.server: asyncio.Server | ProxiedServer | None = None
        self.connections: set[PgConnection] = set()
        # the gateway's sessions, SSH and PostgreSQL alike: the live list, watch, the tap
        self.sessions = sessions if sessions is not None else SessionRegistry()
        self.cancel_keys: dict[tuple[int, bytes], PgConnection] = {}
        self.logins = LoginCache(self.settings.login_cache)
        self.spares = SpareLogins(self.settings.spare_logins)
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by the gateway runtime: just-in-time access (None, or why not), masking rules.
        self.access_guard: Callable[[Identity, str], str | None] | None = None
        self.masks: MaskPolicy | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.tls = await asyncio.to_thread(server_tls_context, self.settings, self.config.data_dir)
        trusted = trusted_proxies(self.config)
        if trusted:  # behind HAProxy: the caller's address comes from its PROXY header
            self.server = await start_stream_server(
                self._accept,
                self.settings.listen_host,
                self.settings.listen_port,
                trusted,
                limit=READ_SIZE,
            )
        else:
            self.server = await asyncio.start_server(
                self._accept,
                self.settings.listen_host,
                self.settings.listen_port,
                reuse_address=True,
                limit=READ_SIZE,
            )
        log.info("PostgreSQL gateway listening on %s:%d", self.settings.listen_host, self.port)

    def end_sessions(self, user: str, target: str, reason: str, message: str) -> None:
        """End the live sessions of `user` on `target` (a grant they relied on ended)."""
        for conn in list(self.connections):
            identity, conn_target = conn.identity, conn.target
            if identity and conn_target and (identity.name, conn_target.name) == (user, target):
                conn.shutdown(reason, message)

    async def stop(self) -> None:
        """Stop accepting, end every session (recordings closed), wait for them."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.shutdown("gateway stopped", "hoop: the gateway is shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        await self.spares.close()
        if self._own_auth:
            self.auth.close()
        log.info("PostgreSQL gateway stopped")

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = PgConnection(self, reader, writer)
        conn.task = asyncio.ensure_future(conn.run())
        self._tasks.add(conn.task)
        conn.task.add_done_callback(self._tasks.discard)

    def new_cancel_key(self, conn: PgConnection, pid: int | None = None) -> tuple[int, bytes]:
        """The client's BackendKeyData: the upstream's PID when known, and a secret of the
        gateway's own, which CancelRequest is matched against."""
        while True:
            key = (pid or secrets.randbelow(2**31 - 1) + 1, secrets.token_bytes(4))
            if key not in self.cancel_keys:
                self.cancel_keys[key] = conn
                return key


def pg_enabled(config: GatewayConfig) -> bool:
    """Whether the configuration has PostgreSQL targets (and so needs the listener)."""
    return any(target.protocol == "postgres" for target in config.targets.values())


async def start_pg_gateway(
    config: GatewayConfig,
    enforcer: Enforcer,
    *,
    policy: Policy | None = None,
    authenticator: Authenticator | None = None,
    sessions: SessionRegistry | None = None,
) -> PgGateway:
    """Start the PostgreSQL listener; `await gateway.stop()` ends it. ConfigError when the
    configuration is wrong, OSError when the address cannot be bound. `sessions`: the
    gateway's SessionRegistry, so that PostgreSQL sessions are listed and watched with SSH's."""
    gateway = PgGateway(
        config, enforcer, policy=policy, authenticator=authenticator, sessions=sessions
    )
    await gateway.start()
    return gateway


# ---------------------------------------------------------------------------------------------
# One client connection


class PgConnection:
    """A client connection: login, recording and upstream login, then the relay."""

    def __init__(
        self, gateway: PgGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gateway = gateway
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.task: asyncio.Task[None] | None = None
        self.gsession: GatewaySession | None = None  # from admission on
        self.login_deadline = 0.0  # (loop time) the recording's opening is bounded by it too
        self.cancelled_early = False  # a Ctrl-C came before the recording was open
        self.identity: Identity | None = None
        self.target: PgTarget | None = None
        self.session: PgSession | None = None
        self.masker: Masker | None = None  # this caller's masking rules here, once logged in
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.up_key: tuple[int, bytes] | None = None
        self.client_encoding: str | None = None  # as the target reported it at login
        self.key: tuple[int, bytes] | None = None
        self.judge_task: asyncio.Task[None] | None = None
        self.relay = Relay(self)
        self.ended = False
        self.end_reason = ""

    # -- the gateway session (its recording) and what it needs from this connection -----------

    @property
    def session_id(self) -> str:
        return self.gsession.id if self.gsession is not None else ""

    def pause_for_recording(self, paused: bool) -> None:
        """SessionOwner: the recorder is behind, stop (or resume) reading both sides."""
        for upstream in (False, True):
            if paused:
                self.relay.pause_reading(upstream=upstream, reason="recording")
            else:
                self.relay.resume_reading(upstream=upstream, reason="recording")

    def end_session(self, reason: str, message: str) -> None:
        """SessionOwner: end the connection (an operator, a grant, a broken recording)."""
        if reason == "recording failed" and self.session is not None:
            self.session.fatal("58030", message)  # in its place in the response stream
            self.relay.flush()
            self.shutdown(reason)
        else:
            self.shutdown(reason, message)

    async def _recorded_upstream(self, params: dict[str, str]) -> Upstream:
        """The upstream login, with the recording's start (a worker thread) begun beside it:
        the client is authenticated and admitted by now. A spare login made for a client like
        this one is taken when there is one. The client may be greeted before the recording
        is open (recording never holds up the login), but nothing it sends is read, and so
        nothing reaches the target, until the recording is open (`Relay.run`); a recording
        that has already failed by the time the target is ready refuses the login here."""
        target, spares = self.target, self.gateway.spares
        assert target is not None and self.identity is not None
        self.gsession = GatewaySession(
            self.gateway.sessions,
            self.gateway.config,
            self.identity,
            target.name,
            "postgres",
            self.client,
            self,
            extra={
                "database": target.database,
                "application_name": params.get("application_name", ""),
                "read_only": target.read_only,
            },
        )
        opening = self.gsession.begin()
        try:
            upstream = await spares.take(target, params) or await log_in_upstream(target, params)
        except BaseException:
            with contextlib.suppress(BaseException):
                await opening
            raise
        if opening.done() and not opening.cancelled() and opening.exception() is not None:
            upstream.writer.close()
            if isinstance(failure := opening.exception(), RecordingUnavailable):
                raise LoginRefused("58030", _not_recorded(failure))
            opening.result()  # anything else: as it is
        return upstream

    # -- the life of a connection --------------------------------------------------------------

    async def run(self) -> None:
        self.gateway.connections.add(self)
        try:
            if await self._logged_in():
                await self.relay.run()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as exc:
            log.debug("connection from %s ended: %s", self.client, exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("PostgreSQL connection from %s failed", self.client)
            with contextlib.suppress(Exception):
                self.send_fatal("XX000", "hoop: internal gateway error")
        finally:
            await self._finish()

    async def _logged_in(self) -> bool:
        """The login within its time limit; False (the client told why) when it did not."""
        timeout = self.gateway.settings.login_timeout
        self.login_deadline = asyncio.get_running_loop().time() + timeout
        try:
            return await asyncio.wait_for(self._login(), timeout)
        except LoginRefused as exc:
            self.end_reason = f"login refused: {exc}"
            self.send_fatal(exc.sqlstate, str(exc))
        except TimeoutError:
            self.send_fatal("08006", "hoop: login timed out")
        except (ProtocolError, ScramError) as exc:
            self.send_fatal("08P01", f"hoop: invalid login message: {exc}")
        return False

    def send_fatal(self, sqlstate: str, message: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(ErrorResponse.make(sqlstate, message, severity="FATAL").encode())

    async def _login(self) -> bool:
        """Startup, TLS, client login, recording, upstream login, the client's greeting. False
        when the connection ended first or was a cancel request."""
        gateway = self.gateway
        startup = await read_startup(self.reader, self.writer, gateway.tls, self.gateway_cancel)
        if startup is None:
            return False
        user, target = self._startup_target(startup.message)
        login = ClientLogin(
            self.reader,
            self.writer,
            gateway.settings,
            gateway.auth,
            gateway.logins,
            self.client,
            startup.leftover,
        )
        identity = await login.authenticate(user, startup.tls)
        self.relay.pending_client = login.messages.take_buffered()  # a client that did not wait
        self._admit(identity, target)
        self.identity, self.target = identity, target
        upstream = await self._recorded_upstream(startup.message.params)
        self.up_reader, self.up_writer = upstream.reader, upstream.writer
        self.up_key = upstream.key
        await self._greet(upstream)
        # For the next client like this one, once this one is in: a client refused at its
        # greeting (settings the gateway cannot read SQL under) makes no target login.
        gateway.spares.refill(target, startup.message.params)
        return True

    def _startup_target(self, packet: StartupMessage) -> tuple[str, PgTarget]:
        """The user and target a StartupMessage names; LoginRefused for what is not allowed."""
        params = packet.params
        if packet.protocol != PROTOCOL_3_0:
            options = tuple(key for key in params if key.startswith("_pq_."))
            self.writer.write(NegotiateProtocolVersion(0, options).encode())
        if "replication" in params and params["replication"].lower() not in ("false", "off", "0"):
            raise LoginRefused("42501", "hoop: replication connections are not allowed")
        user = params.get("user", "")
        database = params.get("database") or user
        if not user:
            raise LoginRefused("28000", "hoop: no user name given")
        target = self.gateway.settings.target_for(database)
        if target is None:
            raise LoginRefused("3D000", f'hoop: no PostgreSQL target named "{database}"')
        return user, target

    def _admit(self, identity: Identity, target: PgTarget) -> None:
        """An authenticated caller's access to the target: its groups, just-in-time access."""
        if not target.allows(identity.groups):
            raise LoginRefused("42501", f"hoop: {identity.name} may not use {target.name}")
        guard = self.gateway.access_guard
        problem = guard(identity, target.name) if guard is not None else None
        if problem is not None:
            raise LoginRefused("42501", problem)

    async def _greet(self, upstream: Upstream) -> None:
        """The client's end of the login, once the target is ready: refused when the session's
        settings are ones the gateway cannot read SQL under, else AuthenticationOk, the
        target's greeting, a cancel key of the gateway's and ReadyForQuery."""
        # The client's startup parameter, PGCLIENTENCODING, the role's or database's setting:
        # whatever decided it, the reported value is the one rows come in.
        self.masker = self._masker()
        refusal = encoding_refusal(upstream.encoding, masking=self.masker is not None)
        # Off (a startup parameter, a role's or database's setting), the server would read
        # backslashes in strings differently from the gateway's parser.
        refusal = refusal or conforming_refusal(upstream.conforming)
        if refusal is not None:
            raise LoginRefused(*refusal)
        self.client_encoding = upstream.encoding
        # The server's own PID (NOTIFY carries it, pg_terminate_backend takes it), with a
        # secret of the gateway's: the upstream's never leaves the gateway.
        pid = upstream.key[0] if upstream.key is not None else None
        self.key = self.gateway.new_cancel_key(self, pid)
        out = [Authentication(AuthCode.OK).encode(), *upstream.greeting]
        out.append(BackendKeyData(self.key[0], self.key[1]).encode())
        out.append(upstream.ready)
        self.writer.write(b"".join(out))
        await self.writer.drain()
        self.relay.pending_upstream = upstream.leftover

    def _masker(self) -> Masker | None:
        """The masking rules that apply to this caller on this target, if any."""
        masks = self.gateway.masks
        if masks is None or self.identity is None or self.target is None:
            return None
        masker = masks.for_caller(self.identity.groups, self.target.name)
        return masker if masker.rules else None

    def new_session(self) -> PgSession:
        """The sans-IO session of this logged-in connection."""
        assert self.identity is not None and self.target is not None
        assert self.gsession is not None
        settings = self.gateway.settings
        caller = Caller.of(self.identity)
        session = PgSession(
            make_decider(self.gateway.policy, caller, self.target),
            self.gateway.classifier,
            self.gsession,
            sample_rows=settings.sample_rows,
            unparsable=settings.unparsable,
        )
        session.masker = self.masker
        session.set_client_encoding(self.client_encoding)
        session.typos_are_syntax_errors = self.gateway.policy.default is Action.ALLOW
        log.info(
            "session %s: %s from %s -> %s",
            self.session_id,
            self.identity.name,
            self.client,
            self.target.name,
        )
        self.session = session
        return session

    # -- judging -------------------------------------------------------------------------------

    def judge(self, command: Judge) -> None:
        """Carry out a verdict that is not a plain allow, in its own task."""
        self.judge_task = asyncio.ensure_future(self._judge(command))

    async def _judge(self, command: Judge) -> None:
        session, gsession = self.session, self.gsession
        assert session is not None and gsession is not None
        assert self.identity is not None and self.target is not None
        verdict = command.verdict

        def notify(text: str) -> None:
            session.notice(f"hoop: {text}")
            self.relay.flush()

        try:
            outcome: Outcome = await self.gateway.enforcer.enforce(
                gsession,
                user=self.identity.name,
                target=self.target.name,
                channel=0,
                command=command.statement,
                verdict=verdict,
                notify=notify,
            )
        except asyncio.CancelledError:
            if not self.ended:
                session.judged(False, "canceling statement due to user request", QUERY_CANCELED)
                self.relay.flush()
            raise
        except Exception:
            log.exception("enforcing a verdict failed; refusing the statement")
            outcome = Outcome(False, "the gateway could not carry out its policy")
        finally:
            self.judge_task = None
            self.relay.resume_reading(upstream=False, reason="held")
        if self.ended:
            return
        session.judged(outcome.allowed, outcome_text(verdict, outcome.allowed, outcome.message))
        with contextlib.suppress(ConnectionError, OSError):
            await self.relay.flush_and_drain()

    # -- cancel and shutdown -------------------------------------------------------------------

    async def gateway_cancel(self, request: CancelRequest) -> None:
        conn = self.gateway.cancel_keys.get((request.pid, request.secret))
        if conn is not None:
            await conn.cancel()

    async def cancel(self) -> None:
        """The client's Ctrl-C: withdraw a held statement, or cancel on the upstream. Before
        the recording is open (the client greeted, nothing it sent read yet) the target has
        nothing to cancel: what the client sent must not run, so the relay ends the connection
        instead of starting (`Relay.run`)."""
        if self.session is None and self.gsession is not None:
            self.cancelled_early = True
            return
        if self.judge_task is not None:
            self.judge_task.cancel()
            return
        if self.target is not None and self.up_key is not None:
            await cancel_upstream(self.target, self.up_key)

    def shutdown(self, reason: str, message: str = "") -> None:
        """End the connection from outside the pumps (stop, upstream lost, recording failed)."""
        if self.ended:
            return
        self.ended = True
        self.end_reason = self.end_reason or reason
        if message:
            self.send_fatal("57P01", message)
        if self.judge_task is not None:
            self.judge_task.cancel()
        if self.up_writer is not None:
            self.up_writer.close()
        self.writer.close()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    async def _finish(self) -> None:
        self.ended = True
        if self.judge_task is not None:
            self.judge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.judge_task
        if self.key is not None:
            self.gateway.cancel_keys.pop(self.key, None)
        await self._close_sockets()
        if self.gsession is not None:  # the recording closed, the session off the live list
            await self.gsession.close(self.end_reason or "client disconnected")
        self.gateway.connections.discard(self)
        if self.session_id:
            log.info("session %s ended: %s", self.session_id, self.end_reason)

    async def _close_sockets(self) -> None:
        if self.up_writer is not None:
            with contextlib.suppress(Exception):
                if self.session is not None and not self.up_writer.is_closing():
                    self.up_writer.write(b"X\x00\x00\x00\x04")
                self.up_writer.close()
        with contextlib.suppress(Exception):  # a client that stops reading cannot hold us
            await asyncio.wait_for(self.writer.drain(), CLOSE_GRACE_S)
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_GRACE_S)
        except TimeoutError:
            self.writer.transport.abort()
        except Exception:  # the peer is gone already: nothing left to close
            pass


# ---------------------------------------------------------------------------------------------
# The byte pumps of a logged-in connection


class Relay:
    """Moves bytes between the client, the sans-IO session and the target, with flow control
    end to end (a side that cannot take more pauses the other's reading; a held statement
    bounds what is read behind it), and turns the session's commands into actions."""

    def __init__(self, connection: PgConnection) -> None:
        self.connection = connection
        self.session: PgSession | None = None
        self.pending_upstream = b""  # target bytes read during the login, past its greeting
        self.pending_client = b""  # client bytes read during the login, past its last message
        self._done: asyncio.Future[None] | None = None
        self._transports: dict[bool, asyncio.Transport] = {}  # by "is upstream"
        self._read_pauses: dict[bool, set[str]] = {False: set(), True: set()}

    async def run(self) -> None:
        conn = self.connection
        if not await self._recording_opened():
            return
        self.session = conn.new_session()
        if self.pending_upstream:
            self.session.upstream_data(self.pending_upstream)
            await self.flush_and_drain()
        assert conn.up_writer is not None and conn.up_reader is not None
        self._done = asyncio.get_running_loop().create_future()
        self._attach(conn.writer, conn.reader, upstream=False)
        self._attach(conn.up_writer, conn.up_reader, upstream=True)
        await self._done

    async def _recording_opened(self) -> bool:
        """Wait for the recording begun with the login, within what is left of the login's
        time limit; until it is open nothing the client sends is read. False (the client told
        why, the connection to end) when it failed, took too long, or the client pressed
        Ctrl-C meanwhile (the statements it sent must then not run)."""
        conn = self.connection
        assert conn.gsession is not None
        left = conn.login_deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(conn.gsession.start(), max(0.0, left))
        except (RecordingUnavailable, TimeoutError) as exc:
            late = isinstance(exc, TimeoutError)
            conn.end_reason = "login refused: the recording " + (
                "did not start in time" if late else "could not start"
            )
            conn.send_fatal(
                "58030",
                _not_recorded(exc) + (" (its recording did not start in time)" if late else ""),
            )
            return False
        if conn.cancelled_early:
            conn.end_reason = "cancelled before the recording was open"
            conn.send_fatal(
                "57014",
                "hoop: canceling statement due to user request; it came before the session's"
                " recording was open, so nothing that was sent ran and the connection is closed",
            )
            return False
        return True

    def _attach(
        self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, *, upstream: bool
    ) -> None:
        """Hand a logged-in side's transport from its stream to a `RelaySide`, with any bytes
        the stream had already read."""
        # TCP or TLS, asyncio's or uvloop's (which does not subclass asyncio.Transport).
        transport = cast(asyncio.Transport, writer.transport)
        side = RelaySide(self, upstream, transport.get_protocol())
        transport.set_protocol(side)
        self._transports[upstream] = transport
        # Bytes the stream read past the login; StreamReader has no public way to take them.
        buffered: bytearray = getattr(reader, "_buffer", bytearray())
        leftover = bytes(buffered)
        buffered.clear()
        if not upstream:
            leftover, self.pending_client = self.pending_client + leftover, b""
        # A stream whose buffer filled up paused the transport it was made with, and after
        # start_tls that is the TCP transport under TLS: resuming the TLS transport below does
        # not touch it, and the side would never be read again (issue 19: a 1 MB query sent
        # right after the login stalled). The stream resumes what it paused itself.
        resume = getattr(reader, "_maybe_resume_transport", None)
        if callable(resume):
            resume()
        if leftover:
            self.side_data(upstream, leftover)
        if reader.at_eof():
            self.side_closed(upstream)
        elif not transport.is_closing():
            transport.resume_reading()  # the stream may have paused it with a full buffer

    def side_data(self, upstream: bool, data: bytes) -> None:
        session, conn = self.session, self.connection
        if session is None or conn.ended:
            return
        try:
            if upstream:
                session.upstream_data(data)
            else:
                if conn.gsession is not None:
                    conn.gsession.count_traffic(bytes_in=len(data))
                session.client_data(data)
            self.flush()
        except Exception:
            log.exception("PostgreSQL session %s failed", conn.session_id)
            conn.send_fatal("XX000", "hoop: internal gateway error")
            conn.end_reason = conn.end_reason or "internal gateway error"
            self.end()
            return
        if session.closed:
            self.end()
        elif not upstream and session.paused and session.buffered > MAX_HELD_BUFFER:
            self.pause_reading(upstream=False, reason="held")  # a held statement: stop reading
        elif session.waiting and not session.paused and session.buffered > MAX_HELD_BUFFER:
            # Waiting for the server's answer to an encoding change: the same bound (that
            # answer's bytes come through here and resume reading).
            self.pause_reading(upstream=False, reason="waiting")
        else:
            self.resume_reading(upstream=False, reason="waiting")

    def side_closed(self, upstream: bool) -> None:
        session, conn = self.session, self.connection
        if upstream:
            if session is not None and session.upstream_fatal:
                pass  # the server's own FATAL went to the client: just close, as it did
            elif session is not None and not session.closed and not conn.ended:
                assert conn.target is not None
                session.fatal(
                    "08006", f"hoop: the connection to target {conn.target.name} was lost"
                )
                self.flush()
            conn.end_reason = conn.end_reason or "target closed"
        else:
            conn.end_reason = conn.end_reason or "client disconnected"
        self.end()

    def end(self) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)

    def pause_reading(self, *, upstream: bool, reason: str) -> None:
        """Stop reading one side for a reason (the other side is full, a statement is held)."""
        reasons = self._read_pauses[upstream]
        transport = self._transports.get(upstream)
        if not reasons and transport is not None and not transport.is_closing():
            transport.pause_reading()
        reasons.add(reason)

    def resume_reading(self, *, upstream: bool, reason: str) -> None:
        reasons = self._read_pauses[upstream]
        if reason not in reasons:
            return
        reasons.discard(reason)
        transport = self._transports.get(upstream)
        if not reasons and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def flush(self) -> None:
        session, conn = self.session, self.connection
        if session is None:
            return
        if session.to_upstream and conn.up_writer is not None:
            conn.up_writer.write(bytes(session.to_upstream))
            session.to_upstream.clear()
        if session.to_client:
            if conn.gsession is not None:  # the live list's IN/OUT: wire bytes
                conn.gsession.count_traffic(bytes_out=len(session.to_client))
            conn.writer.write(bytes(session.to_client))
            session.to_client.clear()
        if not session.commands:
            return
        for command in session.take_commands():
            if isinstance(command, Judge):
                conn.judge(command)
            elif isinstance(command, End):
                conn.end_reason = conn.end_reason or command.reason
                conn.shutdown(command.reason)

    async def flush_and_drain(self) -> None:
        """Flow control end to end: a side that cannot take more pauses the other's reading."""
        self.flush()
        up = self.connection.up_writer
        if up is not None and _queued(up) > DRAIN_ABOVE:
            await up.drain()
        if _queued(self.connection.writer) > DRAIN_ABOVE:
            await self.connection.writer.drain()


class RelaySide(asyncio.Protocol):
    """One side of a logged-in connection. Its bytes go straight into the sans-IO session and
    the answer leaves on the other side within the same callback: no task wake-up, no future
    and no stream buffer per message, which is a third of a Python relay's cost per statement.
    Flow control and closing are also passed to the stream protocol it replaced, so that the
    StreamWriter's `drain()` and `wait_closed()` keep working for the rest of the connection.
    """

    def __init__(self, relay: Relay, upstream: bool, replaced: asyncio.BaseProtocol) -> None:
        self.relay = relay
        self.upstream = upstream
        self.replaced = replaced

    def data_received(self, data: bytes) -> None:
        self.relay.side_data(self.upstream, data)

    def eof_received(self) -> bool:
        self.relay.side_closed(self.upstream)
        return False

    def pause_writing(self) -> None:
        # This side cannot take more: stop reading the side that feeds it.
        self.replaced.pause_writing()
        self.relay.pause_reading(upstream=not self.upstream, reason="peer full")

    def resume_writing(self) -> None:
        self.replaced.resume_writing()
        self.relay.resume_reading(upstream=not self.upstream, reason="peer full")

    def connection_lost(self, exc: Exception | None) -> None:
        self.replaced.connection_lost(exc)
        self.relay.side_closed(self.upstream)


def _not_recorded(exc: BaseException) -> str:
    """What the client is told when its recording cannot start: a reason meant for callers
    (the recording spool is full) is included; others name paths and stay in the log."""
    why = getattr(exc.__cause__, "public_reason", None)
    return f"{NOT_RECORDED}: {why}" if why else NOT_RECORDED


def _queued(writer: asyncio.StreamWriter) -> int:
    """Bytes waiting on a transport; 0 once it is closing (a closed TLS transport raises)."""
    if writer.is_closing():
        return 0
    try:
        return int(writer.transport.get_write_buffer_size())
    except AttributeError:
        return 0
