"""The PostgreSQL gateway's asyncio shell: the listener, TLS, both logins, cancel keys, and the
byte pumps around the sans-IO `PgSession`.

A client connects to `[gateway] pg_listen` (default 127.0.0.1:15432) and names a target by
its database name (the target's `name`, or its `database`). The gateway:

1. answers SSLRequest with its certificate (self-signed, made on first start under
   `<data_dir>/pg/`), refuses GSSENCRequest with 'N', maps CancelRequest to the upstream;
2. logs the client in (see `docs/sql-classes.md`, "Logging in"): SCRAM-SHA-256 against a
   verifier in `[postgres.scram]`, or a password inside TLS checked against the user's scrypt
   hash or by an LDAP bind; plain connections only when `[postgres] allow_plain = true`;
3. starts the session's recording (no recording, no session);
4. logs in to the target with its own credential (SCRAM-SHA-256, md5, cleartext or trust, as
   the target asks); the client never sees it. Read-only targets get
   `default_transaction_read_only=on`;
5. relays, with every statement judged by the policy and carried out by the Enforcer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hmac
import ipaddress
import logging
import os
import secrets
import ssl
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from proxy.auth import Authenticator, Identity
from proxy.config import ConfigError, GatewayConfig, TargetConfig, parse_host_port
from proxy.holds.enforcement import Enforcer, Outcome
from proxy.masking import Masker, MaskPolicy
from proxy.pg import classify as sqlclass
from proxy.pg.scram import MECHANISM, ScramClient, ScramError, ScramServer, Verifier, md5_password
from proxy.pg.session import (
    QUERY_CANCELED,
    End,
    Judge,
    PgSession,
    UnparsableMode,
    conforming_refusal,
    encoding_refusal,
    refusal_message,
)
from proxy.pg.wire import (
    PROTOCOL_3_0,
    AuthCode,
    Authentication,
    Backend,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    Frame,
    GSSENCRequest,
    MessageReader,
    NegotiateProtocolVersion,
    ParameterStatus,
    PasswordMessage,
    ProtocolError,
    ReadyForQuery,
    SSLRequest,
    StartupMessage,
    StartupReader,
    decode_backend,
    decode_frontend,
)
from proxy.policy import Action, Basis, Caller, Policy, Verdict, decide_sql, parse_policy
from proxy.recording import start_session_recording
from storage.private import private_dir, private_file
from storage.schema import EventType
from storage.writer import RecordingFailed

log = logging.getLogger("hoop.pg")

DEFAULT_PG_LISTEN = "127.0.0.1:15432"
READ_SIZE = 256 * 1024
MAX_STARTUP_READ = 16384
MAX_HELD_BUFFER = 16 * 1024 * 1024  # client bytes queued behind a held statement, at most
CLOSE_GRACE_S = 5.0
DRAIN_ABOVE = 64 * 1024  # bytes queued on a transport before the other side waits for it
LOGIN_MAX_MESSAGE = 64 * 1024
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
_SETTINGS_KEYS = frozenset(
    {
        "allow_plain",
        "plain_passwords",
        "cert_file",
        "key_file",
        "sample_rows",
        "unparsable",
        "login_timeout",
        "login_cache",
        "scram",
        "sql_functions",
    }
)
_SSLMODES = ("disable", "prefer", "require", "verify-full")


class LoginRefused(Exception):
    """The client may not in; `sqlstate` and the message go to the client as FATAL."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


# ---------------------------------------------------------------------------------------------
# Configuration (parsed from config.raw: `[gateway] pg_listen`, `[postgres]`, postgres targets)


@dataclass(frozen=True, slots=True)
class PgTarget:
    name: str
    host: str
    port: int
    database: str
    user: str
    groups: tuple[str, ...]
    password_env: str | None = None
    password_file: Path | None = None
    read_only: bool = False
    sslmode: str = "disable"
    ca_file: Path | None = None

    def password(self) -> str | None:
        """The gateway's credential for the target, read when needed, never logged."""
        if self.password_env:
            return os.environ.get(self.password_env)
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError:
                return None
        return None

    def allows(self, groups: frozenset[str]) -> bool:
        return "*" in self.groups or any(group in self.groups for group in groups)


@dataclass(frozen=True, slots=True)
class PgSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 15432
    allow_plain: bool = False
    plain_passwords: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    sample_rows: int = 20
    unparsable: UnparsableMode = UnparsableMode.POLICY
    login_timeout: float = 30.0
    login_cache: float = 60.0  # seconds a verified password is remembered (0: never)
    scram: dict[str, Verifier] = field(default_factory=dict)
    targets: dict[str, PgTarget] = field(default_factory=dict)
    # the operator's functions that run SQL given as text: name -> argument (0-based)
    sql_functions: dict[str, int] = field(default_factory=dict)

    def target_for(self, database: str) -> PgTarget | None:
        """The target a client's database name picks: by target name, else by `database`."""
        if database in self.targets:
            return self.targets[database]
        matches = [t for t in self.targets.values() if t.database == database]
        return matches[0] if len(matches) == 1 else None


def parse_pg_settings(config: GatewayConfig) -> PgSettings:
    """`[gateway] pg_listen`, the `[postgres]` table and the postgres targets; ConfigError
    naming the key when something is wrong."""
    path = config.path
    gateway = config.raw.get("gateway", {})
    listen = gateway.get("pg_listen", DEFAULT_PG_LISTEN)
    if not isinstance(listen, str) or not listen:
        raise ConfigError(path, "gateway.pg_listen", 'must be a string "host:port"')
    try:
        host, port = parse_host_port(listen, 15432)
    except ValueError as exc:
        raise ConfigError(path, "gateway.pg_listen", f'must be "host:port": {exc}') from None
    section = config.raw.get("postgres", {})
    if not isinstance(section, dict):
        raise ConfigError(path, "postgres", "must be a table ([postgres])")
    for key in section:
        if key not in _SETTINGS_KEYS:
            raise ConfigError(
                path, f"postgres.{key}", f"unknown key (known: {', '.join(sorted(_SETTINGS_KEYS))})"
            )

    def flag(key: str) -> bool:
        value = section.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(path, f"postgres.{key}", "must be true or false")
        return value

    def file(table: dict[str, Any], key: str, where: str) -> Path | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(path, f"{where}.{key}", "must be a file path")
        resolved = Path(value)
        return resolved if resolved.is_absolute() else (path.parent / resolved).resolve()

    sample_rows = section.get("sample_rows", 20)
    if isinstance(sample_rows, bool) or not isinstance(sample_rows, int) or sample_rows < 0:
        raise ConfigError(path, "postgres.sample_rows", "must be a whole number, 0 or more")
    try:
        unparsable = UnparsableMode(section.get("unparsable", "policy"))
    except ValueError:
        raise ConfigError(
            path, "postgres.unparsable", 'must be "policy" or "syntax_error"'
        ) from None
    login_timeout = section.get("login_timeout", 30)
    if isinstance(login_timeout, bool) or not isinstance(login_timeout, int | float):
        raise ConfigError(path, "postgres.login_timeout", "must be a number of seconds")
    login_cache = section.get("login_cache", 60)
    if (
        isinstance(login_cache, bool)
        or not isinstance(login_cache, int | float)
        or not 0 <= login_cache <= 3600
    ):
        raise ConfigError(
            path, "postgres.login_cache", "must be a number of seconds from 0 (off) to 3600"
        )
    scram_table = section.get("scram", {})
    if not isinstance(scram_table, dict):
        raise ConfigError(path, "postgres.scram", "must be a table of user = verifier")
    scram: dict[str, Verifier] = {}
    for user, text in scram_table.items():
        try:
            scram[user] = Verifier.parse(text if isinstance(text, str) else "")
        except ScramError:
            raise ConfigError(
                path,
                f"postgres.scram.{user}",
                "is not a SCRAM-SHA-256 verifier (make one with `python -m proxy.pg.scram`)",
            ) from None
    sql_functions: dict[str, int] = {}
    listed = section.get("sql_functions", {})
    if not isinstance(listed, dict):
        raise ConfigError(path, "postgres.sql_functions", "must be a table of name = argument")
    for name, number in listed.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ConfigError(
                path,
                f"postgres.sql_functions.{name}",
                "must be the number of the argument holding the SQL (1 for the first)",
            )
        # matched by name in any schema, as the classifier reads a call (fails closed)
        sql_functions[str(name).rsplit(".", 1)[-1].lower()] = number - 1
    cert_file, key_file = (
        file(section, "cert_file", "postgres"),
        file(section, "key_file", "postgres"),
    )
    if (cert_file is None) != (key_file is None):
        raise ConfigError(path, "postgres.cert_file", "cert_file and key_file go together")
    return PgSettings(
        listen_host=host or "0.0.0.0",
        listen_port=port,
        allow_plain=flag("allow_plain"),
        plain_passwords=flag("plain_passwords"),
        cert_file=cert_file,
        key_file=key_file,
        sample_rows=sample_rows,
        unparsable=unparsable,
        login_timeout=float(login_timeout),
        login_cache=float(login_cache),
        scram=scram,
        sql_functions=sql_functions,
        targets={
            name: _pg_target(target, path, index, file)
            for index, (name, target) in enumerate(config.targets.items())
            if target.protocol == "postgres"
        },
    )


def _pg_target(
    target: TargetConfig,
    path: Path,
    index: int,
    file: Callable[[dict[str, Any], str, str], Path | None],
) -> PgTarget:
    raw = target.raw
    where = f"targets ({target.name})"
    # Keys shared by every target (name, host, groups, jit...) belong to proxy/config.py,
    # which owns the unknown-key check; only the postgres keys are read here.
    database = raw.get("database", target.name)
    user = raw.get("user", "")
    if not isinstance(database, str) or not database:
        raise ConfigError(path, f"{where}.database", "must be a non-empty string")
    if not isinstance(user, str) or not user:
        raise ConfigError(path, f"{where}.user", "missing: the gateway's own database user")
    password_env = raw.get("password_env")
    if password_env is not None and (not isinstance(password_env, str) or not password_env):
        raise ConfigError(path, f"{where}.password_env", "must be an environment variable name")
    read_only = raw.get("read_only", False)
    if not isinstance(read_only, bool):
        raise ConfigError(path, f"{where}.read_only", "must be true or false")
    sslmode = raw.get("sslmode", "disable")
    if sslmode not in _SSLMODES:
        raise ConfigError(path, f"{where}.sslmode", f"must be one of {', '.join(_SSLMODES)}")
    ca_file = file(raw, "ca_file", where)
    if ca_file is not None and sslmode != "verify-full":
        # Only verify-full checks a certificate; a CA that checks nothing must not look like
        # protection in the config.
        raise ConfigError(
            path,
            f"{where}.ca_file",
            f'{ca_file} is only used with sslmode = "verify-full", and sslmode is "{sslmode}" '
            "(which does not check the target's certificate): set sslmode = "
            '"verify-full" to check the target against it, or remove ca_file',
        )
    return PgTarget(
        name=target.name,
        host=target.host,
        port=target.port,
        database=database,
        user=user,
        groups=target.groups,
        password_env=password_env,
        password_file=file(raw, "password_file", where),
        read_only=read_only,
        sslmode=sslmode,
        ca_file=ca_file,
    )


# ---------------------------------------------------------------------------------------------
# TLS


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """The gateway's PostgreSQL certificate and key, made (self-signed) on first start."""
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoop-tui gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName(os.uname().nodename),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    os.replace(key_path.with_suffix(".tmp"), key_path)
    private_file(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_tls_context(settings: PgSettings, data_dir: Path) -> ssl.SSLContext:
    if settings.cert_file and settings.key_file:
        cert, key = settings.cert_file, settings.key_file
    else:
        cert, key = ensure_certificate(data_dir / "pg")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _client_tls_context(target: PgTarget) -> ssl.SSLContext:
    if target.sslmode == "verify-full":
        context = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# ---------------------------------------------------------------------------------------------
# Deciding


def make_decider(
    policy: Policy, caller: Caller, target: PgTarget
) -> Callable[[sqlclass.Classified], Verdict]:
    """Classes -> verdict for one session, cached by the classifier's key (the caller and
    target never change within a session, so the verdict of a shape is fixed)."""
    cache: dict[Hashable, Verdict] = {}

    def one(statement: sqlclass.Statement) -> Verdict:
        if target.read_only and statement.classes & sqlclass.NOT_READ_ONLY:
            found = ", ".join(sorted(statement.classes & sqlclass.NOT_READ_ONLY))
            return Verdict(
                Action.DENY,
                Basis.RULE,
                f"{target.name} is a read-only target ({found})",
                rule="read-only-target",
                command=statement.text,
            )
        return decide_sql(
            policy, caller, target.name, statement.classes, statement.text, statement.tables
        )

    def decide(found: sqlclass.Classified) -> Verdict:
        key = found.key if len(found.statements) == 1 else None
        if key is not None:
            cached = cache.get(key)
            if cached is not None:
                text = found.statements[0].text
                if cached.action is Action.ALLOW or cached.command in (None, text):
                    return cached
                return dataclasses.replace(cached, command=text)
        worst: Verdict | None = None
        for statement in found.statements:
            verdict = one(statement)
            if worst is None or verdict.action.severity > worst.action.severity:
                worst = verdict
                if worst.action is Action.DENY:
                    break
        if worst is None:
            worst = decide_sql(policy, caller, target.name, frozenset(), "")
        if key is not None and len(cache) < 4096:
            cache[key] = worst
        return worst

    return decide


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
        if found[0] <= self._clock():
            del self._entries[digest]
            return None
        return found[1]

    def put(self, user: str, password: str, identity: Identity) -> None:
        if self.ttl <= 0:
            return
        now = self._clock()
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            while len(self._entries) >= self.MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
        self._entries[self._digest(user, password)] = (now + self.ttl, identity)


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
        self.server: asyncio.Server | None = None
        self.connections: set[PgConnection] = set()
        self.cancel_keys: dict[tuple[int, bytes], PgConnection] = {}
        self.logins = LoginCache(self.settings.login_cache)
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
) -> PgGateway:
    """Start the PostgreSQL listener; `await gateway.stop()` ends it. ConfigError when the
    configuration is wrong, OSError when the address cannot be bound."""
    gateway = PgGateway(config, enforcer, policy=policy, authenticator=authenticator)
    await gateway.start()
    return gateway


# ---------------------------------------------------------------------------------------------
# One client connection


class PgConnection:
    """A client connection: login, upstream login, then the relay."""

    def __init__(
        self, gateway: PgGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.gateway = gateway
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.task: asyncio.Task[None] | None = None
        self.session_id = ""
        self.identity: Identity | None = None
        self.target: PgTarget | None = None
        self.recording: Any = None
        self.session: PgSession | None = None
        self.masker: Masker | None = None  # this caller's masking rules here, once logged in
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.up_key: tuple[int, bytes] | None = None
        self.client_encoding: str | None = None  # as the target reported it at login
        self.key: tuple[int, bytes] | None = None
        self.judge_task: asyncio.Task[None] | None = None
        self._pending_upstream = b""
        self._pending_client = b""  # client bytes read during the login, past its last message
        self._relay_done: asyncio.Future[None] | None = None
        self._transports: dict[bool, asyncio.Transport] = {}  # by "is upstream"
        self._read_pauses: dict[bool, set[str]] = {False: set(), True: set()}
        self.ended = False
        self.end_reason = ""
        self._closed = asyncio.Event()

    # -- recording (the Enforcer's SessionRecord) ----------------------------------------------

    def record(self, event: EventType, *fields: object) -> bool:
        """Queue an event on the recording; False when the recording has failed."""
        if self.recording is None:
            return False
        try:
            self.recording.record(event, *fields)
        except RecordingFailed as exc:
            log.error("recording of session %s failed: %s", self.session_id, exc)
            return False
        return True

    def _recording_broke(self, exc: BaseException) -> None:
        log.error("recording of session %s failed, ending it: %s", self.session_id, exc)
        if self.session is not None:
            self.session.fatal(
                "58030", "hoop: the session recording failed, so the gateway ended the session"
            )
            self._flush()
        self.shutdown("recording failed")

    def _start_recording(self, params: dict[str, str]) -> None:
        assert self.identity is not None and self.target is not None
        try:
            self.recording = start_session_recording(
                self.gateway.config,
                self.identity,
                self.target.name,
                "postgres",
                self.client,
                self._recording_broke,
                extra={
                    "database": self.target.database,
                    "application_name": params.get("application_name", ""),
                    "read_only": self.target.read_only,
                },
            )
        except Exception as exc:
            log.error("cannot start the recording: %s", exc)
            raise LoginRefused("58030", "hoop: the gateway cannot record this session") from None
        self.session_id = self.recording.header.session_id

    # -- the life of a connection --------------------------------------------------------------

    async def run(self) -> None:
        self.gateway.connections.add(self)
        try:
            try:
                params = await asyncio.wait_for(self._login(), self.gateway.settings.login_timeout)
            except LoginRefused as exc:
                self.end_reason = f"login refused: {exc}"
                self._send_fatal(exc.sqlstate, str(exc))
                return
            except TimeoutError:
                self._send_fatal("08006", "hoop: login timed out")
                return
            except (ProtocolError, ScramError) as exc:
                self._send_fatal("08P01", f"hoop: invalid login message: {exc}")
                return
            if params is None:
                return
            await self._relay()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError) as exc:
            log.debug("connection from %s ended: %s", self.client, exc)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("PostgreSQL connection from %s failed", self.client)
            with contextlib.suppress(Exception):
                self._send_fatal("XX000", "hoop: internal gateway error")
        finally:
            await self._finish()

    def _send_fatal(self, sqlstate: str, message: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(ErrorResponse.make(sqlstate, message, severity="FATAL").encode())

    async def _read_message(self, reader: MessageReader) -> Frame:
        while True:
            item = reader.next()
            if item is not None:
                return item
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("client closed the connection during login")
            reader.feed(data)

    async def _login(self) -> dict[str, str] | None:
        """Startup, TLS, client login, recording, upstream login. The startup params, or None
        when the connection was a cancel request."""
        startup = StartupReader()
        tls_done = False
        while True:
            packet = startup.next()
            if packet is None:
                data = await self.reader.read(MAX_STARTUP_READ)
                if not data:
                    return None
                startup.feed(data)
                continue
            if isinstance(packet, SSLRequest):
                if startup.take_buffered():
                    raise ProtocolError("data after SSLRequest before the TLS handshake")
                if tls_done or self.gateway.tls is None:
                    self.writer.write(b"N")
                    continue
                self.writer.write(b"S")
                await self.writer.drain()
                await self.writer.start_tls(self.gateway.tls)
                tls_done = True
                continue
            if isinstance(packet, GSSENCRequest):
                self.writer.write(b"N")
                continue
            if isinstance(packet, CancelRequest):
                await self.gateway_cancel(packet)
                return None
            assert isinstance(packet, StartupMessage)
            leftover = startup.take_buffered()
            break
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
        settings = self.gateway.settings
        target = settings.target_for(database)
        if target is None:
            raise LoginRefused("3D000", f'hoop: no PostgreSQL target named "{database}"')
        messages = MessageReader(LOGIN_MAX_MESSAGE)
        messages.feed(leftover)
        identity = await self._authenticate(user, messages, tls_done)
        self._pending_client = messages.take_buffered()  # a client that did not wait
        if not target.allows(identity.groups):
            raise LoginRefused("42501", f"hoop: {identity.name} may not use {target.name}")
        guard = self.gateway.access_guard
        problem = guard(identity, target.name) if guard is not None else None
        if problem is not None:
            raise LoginRefused("42501", problem)
        self.identity, self.target = identity, target
        self._start_recording(params)
        await self._connect_upstream(params)
        return params

    async def _authenticate(self, user: str, messages: MessageReader, tls: bool) -> Identity:
        settings = self.gateway.settings
        auth = self.gateway.auth
        failed = LoginRefused("28P01", f'password authentication failed for user "{user}"')
        if not tls and not settings.allow_plain:
            raise LoginRefused(
                "28000",
                "hoop: the gateway requires TLS (connect with sslmode=require); "
                "plain connections are accepted only with [postgres] allow_plain = true",
            )
        verifier = settings.scram.get(user)
        if verifier is not None or not (tls or settings.plain_passwords):
            return await self._scram(user, verifier, messages)
        # A password inside TLS (or plain, where allowed): scrypt hash or LDAP bind.
        self.writer.write(Authentication(AuthCode.CLEARTEXT_PASSWORD).encode())
        password = (await self._password(messages)).password()
        remembered = self.gateway.logins.get(user, password)
        if remembered is not None:
            return remembered
        host = self.client.rpartition(":")[0]
        result = await auth.check_password(user, password, host)
        if result.identity is None:
            if result.message:
                raise LoginRefused("28000", result.message.strip())
            raise failed
        if result.identity.service_account:
            raise LoginRefused("28000", "hoop: service accounts log in with keys only")
        self.gateway.logins.put(user, password, result.identity)
        return result.identity

    async def _scram(
        self, user: str, verifier: Verifier | None, messages: MessageReader
    ) -> Identity:
        """SCRAM-SHA-256 against the user's verifier (needs no TLS). An unknown user runs
        against a fake verifier, and failures are slowed down like password failures."""
        auth = self.gateway.auth
        local = auth.users.get(user)
        failed = LoginRefused("28P01", f'password authentication failed for user "{user}"')
        key = (self.client.rpartition(":")[0], user)
        wait = auth.throttle.reserve(key)
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            server = ScramServer(verifier)
            self.writer.write(Authentication.sasl([MECHANISM]).encode())
            initial = await self._password(messages)
            mechanism, response = initial.sasl_initial()
            if mechanism != MECHANISM or response is None:
                raise LoginRefused("28000", "hoop: only SCRAM-SHA-256 is offered")
            first = server.first(response)
            self.writer.write(Authentication(AuthCode.SASL_CONTINUE, first).encode())
            final = await self._password(messages)
            try:
                last = server.final(final.data)
            except ScramError:
                log.warning("failed SCRAM login for %r from %s", user, self.client)
                raise failed from None
        except BaseException:
            auth.throttle.failed(key)
            raise
        auth.throttle.succeeded(key)
        self.writer.write(Authentication(AuthCode.SASL_FINAL, last).encode())
        if local is not None:
            return Identity(local.name, frozenset(local.groups), local.service_account, "local")
        return Identity(user, frozenset(), False, "scram")

    async def _password(self, messages: MessageReader) -> PasswordMessage:
        await self.writer.drain()
        item = await self._read_message(messages)
        message = decode_frontend(item)
        if not isinstance(message, PasswordMessage):
            raise ProtocolError("expected a password message")
        return message

    # -- upstream login ------------------------------------------------------------------------

    async def _upstream_tls(
        self, target: PgTarget, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
            raise LoginRefused(
                "08006", f"hoop: target {target.name} closed the connection"
            ) from None
        if answer == b"N" and target.sslmode == "prefer":
            log.info("target %s has no TLS; sslmode=prefer continues without", target.name)
            return
        if answer != b"S":
            raise LoginRefused("08006", f"hoop: target {target.name} does not offer TLS")
        try:
            context = _client_tls_context(target)
            await writer.start_tls(
                context,
                server_hostname=target.host if target.sslmode == "verify-full" else None,
            )
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS to target %s failed: %s", target.name, exc)
            reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
            raise LoginRefused(
                "08006",
                f"hoop: TLS to target {target.name} failed ({reason or 'handshake failed'})",
            ) from None

    async def _connect_upstream(self, params: dict[str, str]) -> None:
        target = self.target
        assert target is not None
        try:
            reader, writer = await asyncio.open_connection(
                target.host, target.port, limit=READ_SIZE
            )
        except OSError as exc:
            raise LoginRefused(
                "08006", f"hoop: cannot reach target {target.name}: {exc.strerror or exc}"
            ) from None
        self.up_reader, self.up_writer = reader, writer
        if target.sslmode != "disable":
            await self._upstream_tls(target, reader, writer)
        startup = {"user": target.user, "database": target.database}
        startup.update({k: v for k, v in params.items() if k in FORWARDED_PARAMS})
        if target.read_only:
            startup["options"] = "-c default_transaction_read_only=on"
        writer.write(StartupMessage(PROTOCOL_3_0, startup).encode())
        await writer.drain()
        messages = MessageReader()
        scram: ScramClient | None = None
        greeting: list[bytes] = []
        encoding: str | None = None  # the session's client_encoding, as the target reports it
        conforming: str | None = None  # and its standard_conforming_strings

        async def next_message() -> Any:
            while True:
                item = messages.next()
                if item is not None:
                    return decode_backend(item)
                data = await reader.read(READ_SIZE)
                if not data:
                    raise LoginRefused(
                        "08006", f"hoop: target {target.name} closed the connection at login"
                    )
                messages.feed(data)

        def need_password() -> str:
            password = target.password()
            if password is None:
                log.error("no credential for target %s (password_env/password_file)", target.name)
                raise LoginRefused(
                    "08006", f"hoop: the gateway has no credential for {target.name}"
                )
            return password

        while True:
            message = await next_message()
            if isinstance(message, Authentication):
                code = message.code
                if code == AuthCode.OK:
                    continue
                if code == AuthCode.CLEARTEXT_PASSWORD:
                    password = need_password().encode("utf-8") + b"\x00"
                    writer.write(PasswordMessage(password).encode())
                elif code == AuthCode.MD5_PASSWORD:
                    password_md5 = md5_password(target.user, need_password(), message.data[:4])
                    writer.write(PasswordMessage(password_md5).encode())
                elif code == AuthCode.SASL:
                    if MECHANISM not in message.mechanisms():
                        raise LoginRefused("08006", f"hoop: {target.name} offers no SCRAM-SHA-256")
                    scram = ScramClient(need_password())
                    writer.write(PasswordMessage.sasl_initial_of(MECHANISM, scram.first()).encode())
                elif code == AuthCode.SASL_CONTINUE and scram is not None:
                    writer.write(PasswordMessage(scram.final(message.data)).encode())
                elif code == AuthCode.SASL_FINAL and scram is not None:
                    try:
                        scram.verify(message.data)
                    except ScramError as exc:
                        raise LoginRefused("08006", f"hoop: target {target.name}: {exc}") from None
                else:
                    raise LoginRefused(
                        "08006", f"hoop: target {target.name} asks for an unsupported login"
                    )
                await writer.drain()
            elif isinstance(message, BackendKeyData):
                self.up_key = (message.pid, message.secret)
            elif isinstance(message, ParameterStatus):
                if message.name == "client_encoding":
                    encoding = message.value
                elif message.name == "standard_conforming_strings":
                    conforming = message.value
                greeting.append(message.encode())
            elif isinstance(message, ErrorResponse) and message.TYPE == Backend.ERROR_RESPONSE:
                log.warning(
                    "target %s refused the gateway's login: %s %s",
                    target.name,
                    message.sqlstate,
                    message.message,
                )
                raise LoginRefused(
                    "08006",
                    f"hoop: target {target.name} refused the gateway's login "
                    "(the gateway's log says why)",
                )
            elif isinstance(message, ReadyForQuery):
                # The client's startup parameter, PGCLIENTENCODING, the role's or database's
                # setting: whatever decided it, the reported value is the one rows come in.
                self.masker = self._masker()
                refusal = encoding_refusal(encoding, masking=self.masker is not None)
                # Off (a startup parameter, a role's or database's setting), the server would
                # read backslashes in strings differently from the gateway's parser.
                refusal = refusal or conforming_refusal(conforming)
                if refusal is not None:
                    raise LoginRefused(*refusal)
                self.client_encoding = encoding
                # The server's own PID (NOTIFY carries it, pg_terminate_backend takes it),
                # with a secret of the gateway's: the upstream's never leaves the gateway.
                self.key = self.gateway.new_cancel_key(
                    self, self.up_key[0] if self.up_key is not None else None
                )
                out = [Authentication(AuthCode.OK).encode(), *greeting]
                out.append(BackendKeyData(self.key[0], self.key[1]).encode())
                out.append(message.encode())
                self.writer.write(b"".join(out))
                await self.writer.drain()
                self._pending_upstream = messages.take_buffered()
                return
            else:  # notices during login
                greeting.append(message.encode())

    def _masker(self) -> Masker | None:
        """The masking rules that apply to this caller on this target, if any."""
        masks = self.gateway.masks
        if masks is None or self.identity is None or self.target is None:
            return None
        masker = masks.for_caller(self.identity.groups, self.target.name)
        return masker if masker.rules else None

    # -- the relay -----------------------------------------------------------------------------

    async def _relay(self) -> None:
        assert self.identity is not None and self.target is not None
        settings = self.gateway.settings
        caller = Caller(self.identity.name, self.identity.groups, self.identity.service_account)
        self.session = PgSession(
            make_decider(self.gateway.policy, caller, self.target),
            self.gateway.classifier,
            self.record,
            sample_rows=settings.sample_rows,
            unparsable=settings.unparsable,
        )
        self.session.masker = self.masker
        self.session.set_client_encoding(self.client_encoding)
        self.session.typos_are_syntax_errors = self.gateway.policy.default is Action.ALLOW
        log.info(
            "session %s: %s from %s -> %s",
            self.session_id,
            self.identity.name,
            self.client,
            self.target.name,
        )
        if self._pending_upstream:
            self.session.upstream_data(self._pending_upstream)
            await self._flush_and_drain()
        assert self.up_writer is not None and self.up_reader is not None
        self._relay_done = asyncio.get_running_loop().create_future()
        self._attach(self.writer, self.reader, upstream=False)
        self._attach(self.up_writer, self.up_reader, upstream=True)
        await self._relay_done

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
            leftover, self._pending_client = self._pending_client + leftover, b""
        # A stream whose buffer filled up paused the transport it was made with, and after
        # start_tls that is the TCP transport under TLS: resuming the TLS transport below does
        # not touch it, and the side would never be read again (issue 19: a 1 MB query sent
        # right after the login stalled). The stream resumes what it paused itself.
        resume = getattr(reader, "_maybe_resume_transport", None)
        if callable(resume):
            resume()
        if leftover:
            self._side_data(upstream, leftover)
        if reader.at_eof():
            self._side_closed(upstream)
        elif not transport.is_closing():
            transport.resume_reading()  # the stream may have paused it with a full buffer

    def _side_data(self, upstream: bool, data: bytes) -> None:
        session = self.session
        if session is None or self.ended:
            return
        try:
            if upstream:
                session.upstream_data(data)
            else:
                session.client_data(data)
            self._flush()
        except Exception:
            log.exception("PostgreSQL session %s failed", self.session_id)
            self._send_fatal("XX000", "hoop: internal gateway error")
            self.end_reason = self.end_reason or "internal gateway error"
            self._end_relay()
            return
        if session.closed:
            self._end_relay()
        elif not upstream and session.paused and session.buffered > MAX_HELD_BUFFER:
            self._pause_reading(upstream=False, reason="held")  # a held statement: stop reading
        elif session.waiting and not session.paused and session.buffered > MAX_HELD_BUFFER:
            # Waiting for the server's answer to an encoding change: the same bound (that
            # answer's bytes come through here and resume reading).
            self._pause_reading(upstream=False, reason="waiting")
        else:
            self._resume_reading(upstream=False, reason="waiting")

    def _side_closed(self, upstream: bool) -> None:
        session = self.session
        if upstream:
            if session is not None and session.upstream_fatal:
                pass  # the server's own FATAL went to the client: just close, as it did
            elif session is not None and not session.closed and not self.ended:
                assert self.target is not None
                session.fatal(
                    "08006", f"hoop: the connection to target {self.target.name} was lost"
                )
                self._flush()
            self.end_reason = self.end_reason or "target closed"
        else:
            self.end_reason = self.end_reason or "client disconnected"
        self._end_relay()

    def _end_relay(self) -> None:
        done = self._relay_done
        if done is not None and not done.done():
            done.set_result(None)

    def _pause_reading(self, *, upstream: bool, reason: str) -> None:
        """Stop reading one side for a reason (the other side is full, a statement is held)."""
        reasons = self._read_pauses[upstream]
        transport = self._transports.get(upstream)
        if not reasons and transport is not None and not transport.is_closing():
            transport.pause_reading()
        reasons.add(reason)

    def _resume_reading(self, *, upstream: bool, reason: str) -> None:
        reasons = self._read_pauses[upstream]
        if reason not in reasons:
            return
        reasons.discard(reason)
        transport = self._transports.get(upstream)
        if not reasons and transport is not None and not transport.is_closing():
            transport.resume_reading()

    def _flush(self) -> None:
        session = self.session
        if session is None:
            return
        if session.to_upstream and self.up_writer is not None:
            self.up_writer.write(bytes(session.to_upstream))
            session.to_upstream.clear()
        if session.to_client:
            self.writer.write(bytes(session.to_client))
            session.to_client.clear()
        if not session.commands:
            return
        for command in session.take_commands():
            if isinstance(command, Judge):
                self.judge_task = asyncio.ensure_future(self._judge(command))
            elif isinstance(command, End):
                self.end_reason = self.end_reason or command.reason
                self.shutdown(command.reason)

    async def _flush_and_drain(self) -> None:
        """Flow control end to end: a side that cannot take more pauses the other's reading."""
        self._flush()
        up = self.up_writer
        if up is not None and _queued(up) > DRAIN_ABOVE:
            await up.drain()
        if _queued(self.writer) > DRAIN_ABOVE:
            await self.writer.drain()

    async def _judge(self, command: Judge) -> None:
        session = self.session
        assert session is not None and self.identity is not None and self.target is not None
        verdict = command.verdict

        def notify(text: str) -> None:
            session.notice(f"hoop: {text}")
            self._flush()

        try:
            outcome: Outcome = await self.gateway.enforcer.enforce(
                self,
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
                self._flush()
            raise
        except Exception:
            log.exception("enforcing a verdict failed; refusing the statement")
            outcome = Outcome(False, "the gateway could not carry out its policy")
        finally:
            self.judge_task = None
            self._resume_reading(upstream=False, reason="held")
        if self.ended:
            return
        if outcome.allowed:
            session.judged(True, f"hoop: {outcome.message}" if outcome.message else "")
        elif verdict.action is Action.DENY:
            session.judged(False, refusal_message(verdict))
        else:
            session.judged(False, f"hoop: {outcome.message}")
        with contextlib.suppress(ConnectionError, OSError):
            await self._flush_and_drain()

    # -- cancel and shutdown -------------------------------------------------------------------

    async def gateway_cancel(self, request: CancelRequest) -> None:
        conn = self.gateway.cancel_keys.get((request.pid, request.secret))
        if conn is not None:
            await conn.cancel()

    async def cancel(self) -> None:
        """The client's Ctrl-C: withdraw a held statement, or cancel on the upstream."""
        if self.judge_task is not None:
            self.judge_task.cancel()
            return
        target, key = self.target, self.up_key
        if target is None or key is None:
            return
        # The request carries the server's own secret: it goes inside TLS whenever the
        # login did (the target's sslmode), and is not sent where TLS cannot be had.
        with contextlib.suppress(OSError, LoginRefused, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            try:
                if target.sslmode != "disable":
                    await self._upstream_tls(target, reader, writer)
                writer.write(CancelRequest(key[0], key[1]).encode())
                await writer.drain()
            finally:
                writer.close()

    def shutdown(self, reason: str, message: str = "") -> None:
        """End the connection from outside the pumps (stop, upstream lost, recording failed)."""
        if self.ended:
            return
        self.ended = True
        self.end_reason = self.end_reason or reason
        if message:
            self._send_fatal("57P01", message)
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
        if self.recording is not None:
            recording, self.recording = self.recording, None
            try:
                await asyncio.to_thread(recording.close, self.end_reason or "client disconnected")
            except Exception as exc:
                log.error("closing the recording of session %s failed: %s", self.session_id, exc)
        self.gateway.connections.discard(self)
        if self.session_id:
            log.info("session %s ended: %s", self.session_id, self.end_reason)


class RelaySide(asyncio.Protocol):
    """One side of a logged-in connection. Its bytes go straight into the sans-IO session and
    the answer leaves on the other side within the same callback: no task wake-up, no future
    and no stream buffer per message, which is a third of a Python relay's cost per statement.
    Flow control and closing are also passed to the stream protocol it replaced, so that the
    StreamWriter's `drain()` and `wait_closed()` keep working for the rest of the connection.
    """

    def __init__(
        self, connection: PgConnection, upstream: bool, replaced: asyncio.BaseProtocol
    ) -> None:
        self.connection = connection
        self.upstream = upstream
        self.replaced = replaced

    def data_received(self, data: bytes) -> None:
        self.connection._side_data(self.upstream, data)

    def eof_received(self) -> bool:
        self.connection._side_closed(self.upstream)
        return False

    def pause_writing(self) -> None:
        # This side cannot take more: stop reading the side that feeds it.
        self.replaced.pause_writing()
        self.connection._pause_reading(upstream=not self.upstream, reason="peer full")

    def resume_writing(self) -> None:
        self.replaced.resume_writing()
        self.connection._resume_reading(upstream=not self.upstream, reason="peer full")

    def connection_lost(self, exc: Exception | None) -> None:
        self.replaced.connection_lost(exc)
        self.connection._side_closed(self.upstream)


def _queued(writer: asyncio.StreamWriter) -> int:
    """Bytes waiting on a transport; 0 once it is closing (a closed TLS transport raises)."""
    if writer.is_closing():
        return 0
    try:
        return int(writer.transport.get_write_buffer_size())
    except AttributeError:
        return 0
