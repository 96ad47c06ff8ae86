"""Who is calling: local users (scrypt password hashes, public keys) and LDAP users.

The SSH server asks this module, never the config directly, so every identity source answers the
same questions: does this password prove this user, which keys may log in as this user, which
groups does the user belong to. LDAP is checked by binding as the user, so the gateway never
sees a directory password hash. When the directory is unreachable, LDAP logins fail closed with
a message that says so; local users keep working.

An identity is one person whatever they typed: LDAP's `uid` matching ignores case and
surrounding spaces, so `CAROL` and `'Carol '` bind as carol; the gateway then names the caller
by the entry's stored DN and `uid`, never by the typed spelling. Local users are matched the
same way and named as configured. Every comparison of people downstream uses that name.

Repeated failures are slowed down per person (the typed name folded as LDAP compares it) and,
separately, per client address, in tables of bounded size whose entries expire: a guessing
burst costs the gateway sleeping tasks, not CPU or memory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import asyncssh

from proxy.config import GatewayConfig, LdapConfig, UserConfig
from proxy.names import fold_name as fold_name  # where every caller found it
from proxy.oidc.client import OidcClient
from proxy.oidc.identity import OidcCaller, agent_for
from proxy.oidc.tokens import TokenRefused, looks_like_jwt

with warnings.catch_warnings():  # ldap3 imports names pyasn1 has deprecated; not ours to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions as ldap_exceptions
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import parse_dn

if TYPE_CHECKING:
    from proxy.oidc.certs import Credentials, Holder

log = logging.getLogger("hoop.auth")

# scrypt cost: 2**14 * 8 * 128 bytes = 16 MiB and about 50 ms per check on a small server.
SCRYPT_LOG_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
HASH_PREFIX = "$scrypt$"

GATEWAY_PASSWORD_PREFIX = "hoopgw_"  # proxy.oidc.certs.PASSWORD_PREFIX
EXPIRED_LOGIN = "hoop: that gateway password is unknown or has expired; run `hoop-tui login`\r\n"
LDAP_UNAVAILABLE_MESSAGE = (
    "hoop: the user directory (LDAP) is unreachable, so directory logins are refused for now; "
    "try again later or ask an administrator.\r\n"
)


def hash_password(password: str, *, log_n: int = SCRYPT_LOG_N) -> str:
    """A self-describing scrypt hash: `$scrypt$ln=14,r=8,p=1$<salt>$<hash>` (base64)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, log_n, SCRYPT_R, SCRYPT_P)
    return f"{HASH_PREFIX}ln={log_n},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded`; a malformed hash never matches."""
    try:
        _, _, params, salt_text, digest_text = encoded.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        log_n, r, p = int(values["ln"]), int(values["r"]), int(values["p"])
        salt, expected = _unb64(salt_text), _unb64(digest_text)
    except (ValueError, KeyError):
        return False
    if not 1 <= log_n <= 20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        return False
    return hmac.compare_digest(_scrypt(password, salt, log_n, r, p, len(expected)), expected)


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int, size: int = 32) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=2**log_n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=size
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller, as recorded and as policies see it.

    `name` is canonical (a local user's configured name, an LDAP entry's stored name), never
    the spelling typed at login; `dn` is the directory entry's DN for LDAP identities.
    `kind` is "person" or "agent" (an OIDC client acting for its `owner`); `expires_at` is
    when the token that proved it expires (epoch seconds), None for passwords and keys."""

    name: str
    groups: frozenset[str]
    service_account: bool = False
    source: str = "local"
    dn: str | None = None
    kind: str = "person"
    owner: str | None = None
    client_id: str | None = None
    expires_at: float | None = None
    subject: str | None = None  # OIDC: the provider's stable `sub` of the person or client

    @property
    def agent(self) -> bool:
        return self.kind == "agent"

    def describe_caller(self) -> dict[str, str]:
        """What a recording header, the live list and the queue show about who this is: a
        person or an agent, and for an agent its owner and OIDC client id."""
        shown = {"caller_kind": self.kind}
        if self.owner:
            shown["owner"] = self.owner
        if self.client_id:
            shown["client_id"] = self.client_id
        if self.subject:
            shown["subject"] = self.subject
        return shown


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """A person as the directory stores them: canonical name and DN, keys, groups."""

    name: str
    dn: str
    groups: frozenset[str]
    keys: tuple[str, ...] = ()


class DirectoryUnavailable(Exception):
    """LDAP could not be asked; the login is refused (fail closed)."""


@dataclass(slots=True)
class _Attempts:
    failures: int = 0
    pending: int = 0
    next_at: float = 0.0
    last_failure: float = 0.0


def address_key(address: str) -> str:
    """The client address as the throttle counts it: one IPv6 /64 (what one subscriber gets,
    so cycling through it is one address), an IPv4-mapped IPv6 address as its IPv4 address."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


OVERFLOW = "\x00overflow"  # the one shared entry new names fall into when a table is full


@dataclass(slots=True)
class _Table:
    """One throttle table (people, or client addresses): spacing grows with failures."""

    free_attempts: int
    base_delay: float
    max_delay: float
    forget_after: float
    max_entries: int
    entries: dict[str, _Attempts] = field(default_factory=dict)
    swept_at: float = 0.0

    def spacing(self, failures: int) -> float:
        if failures < self.free_attempts:
            return 0.0
        doublings = min(failures - self.free_attempts, 60)  # 2**1024 does not fit a float
        return float(min(self.base_delay * 2**doublings, self.max_delay))

    def stale(self, state: _Attempts, now: float) -> bool:
        return (
            state.pending == 0 and now - max(state.last_failure, state.next_at) > self.forget_after
        )

    def sweep(self, now: float) -> None:
        for key in [key for key, state in self.entries.items() if self.stale(state, now)]:
            del self.entries[key]
        self.swept_at = now

    def slot(self, key: str, now: float) -> str:
        """Where `key` is counted, keeping the table within `max_entries`: expired entries go
        first, then the one idle longest (entries are kept in order of last use, so a name
        being guessed stays). Only when every entry has an attempt waiting do new names share
        one overflow entry, throttled as one (fail closed)."""
        if key in self.entries:
            self.entries[key] = self.entries.pop(key)  # most recently used last
            return key
        full = len(self.entries) >= self.max_entries
        if now - self.swept_at > (1.0 if full else 60.0):  # a sweep at most once a second
            self.sweep(now)
        if len(self.entries) < self.max_entries:
            return key
        idle = next((k for k, v in self.entries.items() if v.pending == 0 and k != OVERFLOW), None)
        if idle is None:
            return OVERFLOW
        del self.entries[idle]
        return key

    def reserve(self, key: str, now: float) -> float:
        key = self.slot(key, now)
        state = self.entries.get(key)
        if state is None or self.stale(state, now):
            state = self.entries[key] = _Attempts()
        start = max(now, state.next_at)
        state.next_at = start + self.spacing(state.failures + state.pending)
        state.pending += 1
        return start - now

    def failed(self, key: str, now: float, *, reserved: bool = True) -> int:
        state = self.entries.setdefault(self.slot(key, now), _Attempts())
        if reserved:
            state.pending = max(0, state.pending - 1)
        state.failures += 1
        state.last_failure = now
        return state.failures

    def at_least(self, key: str, failures: int, now: float) -> None:
        """Count at least `failures` for `key` (what elsewhere saw); a full table keeps its
        own rules: a name with no entry yet is not added over them."""
        state = self.entries.get(key)
        if state is None:
            if len(self.entries) >= self.max_entries:
                return
            state = self.entries[key] = _Attempts()
        if failures > state.failures:
            state.failures = failures
            state.last_failure = max(state.last_failure, now)

    def succeeded(self, key: str, *, forget: bool, reserved: bool = True) -> None:
        found = key if key in self.entries else OVERFLOW
        state = self.entries.get(found)
        if state is not None:
            if reserved:
                state.pending = max(0, state.pending - 1)
            if forget and state.pending == 0 and found == key:
                del self.entries[key]


@dataclass(slots=True)
class LoginThrottle:
    """Spaces out attempts once they keep failing, per person and per client address.

    Keys are (client address, typed name). The name is folded (`fold_name`) so every spelling
    of one person shares one count; the address has a count of its own, so guessing many names
    from one place is slowed too. Each table holds at most `max_entries` entries, forgets an
    entry `forget_after` seconds after its last failure, and sends new names to one shared
    entry when it is full. Pure bookkeeping with an injected clock: `reserve` says how long
    to wait before checking an attempt, `failed`/`succeeded` report its outcome. Attempts
    waiting their turn count as failures-to-be, so a burst is spread out, not checked at once.

    An address a person has logged in from within `known_for` seconds does not queue behind
    the guesses waiting in that person's count: it waits the spacing the count calls for (at
    most `max_delay`) and its address's own turn. Queued guesses from elsewhere would
    otherwise lock the person out for the price of a few connections.
    """

    free_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    forget_after: float = 900.0
    address_free_attempts: int = 10
    max_entries: int = 10_000
    known_for: float = 30 * 86400.0
    max_known_per_person: int = 16
    clock: Callable[[], float] = time.monotonic
    people: _Table = field(init=False)
    addresses: _Table = field(init=False)
    # person -> address -> when they last logged in from it; oldest first, both bounded
    known: dict[str, dict[str, float]] = field(init=False, default_factory=dict)
    # attempts now in flight that skipped their person's queue, by (address, person)
    skipping: dict[tuple[str, str], int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.people = _Table(
            self.free_attempts, self.base_delay, self.max_delay, self.forget_after, self.max_entries
        )
        self.addresses = _Table(
            self.address_free_attempts,
            self.base_delay,
            self.max_delay,
            self.forget_after,
            self.max_entries,
        )

    def reserve(self, key: tuple[str, str]) -> float:
        """Seconds to wait before checking this attempt: the longer of its two queues; from
        an address the person has logged in from, the address's queue and the spacing of the
        person's count, not the guesses queued from elsewhere."""
        address, person = address_key(key[0]), fold_name(key[1])
        now = self.clock()
        by_address = self.addresses.reserve(address, now)
        seen = self.known.get(person, {}).get(address)
        if seen is not None and now - seen <= self.known_for:
            # not behind others' queued guesses, but still as slow as the person's own count
            self.skipping[(address, person)] = self.skipping.get((address, person), 0) + 1
            state = self.people.entries.get(person)
            fresh = state is not None and not self.people.stale(state, now)
            own = self.people.spacing(state.failures) if fresh and state else 0.0
            return max(own, by_address)
        return max(self.people.reserve(person, now), by_address)

    def _skipped(self, address: str, person: str) -> bool:
        """Whether the attempt now ending skipped its person's queue (so holds no place)."""
        left = self.skipping.get((address, person), 0)
        if left <= 0:
            return False
        if left == 1:
            del self.skipping[(address, person)]
        else:
            self.skipping[(address, person)] = left - 1
        return True

    def _remember(self, address: str, person: str, now: float) -> None:
        places = self.known.pop(person, {})
        places.pop(address, None)
        places[address] = now
        while len(places) > self.max_known_per_person:
            del places[next(iter(places))]
        self.known[person] = places  # most recently used last
        while len(self.known) > self.max_entries:
            del self.known[next(iter(self.known))]

    def spacing(self, failures: int) -> float:
        return self.people.spacing(failures)

    def failed(self, key: tuple[str, str]) -> int:
        """Record a failure; the person's failure count so far."""
        address, person = address_key(key[0]), fold_name(key[1])
        now = self.clock()
        self.addresses.failed(address, now)
        return self.people.failed(person, now, reserved=not self._skipped(address, person))

    def succeeded(self, key: tuple[str, str]) -> None:
        """The person proved who they are: their count starts again. The address keeps its
        count until it expires, or logging in to one's own account between guesses at other
        people's would wipe it."""
        address, person = address_key(key[0]), fold_name(key[1])
        skipped = self._skipped(address, person)
        self.people.succeeded(person, forget=True, reserved=not skipped)
        self.addresses.succeeded(address, forget=False)
        self._remember(address, person, self.clock())

    def raise_counts(self, people: dict[str, int], addresses: dict[str, int]) -> None:
        """Raise counts to what other gateways saw (a fleet shares failures: proxy/fleet/
        throttle.py): keys are folded names and `address_key`s; a count never goes down."""
        now = self.clock()
        for table, counts in ((self.people, people), (self.addresses, addresses)):
            for key, failures in counts.items():
                table.at_least(key, failures, now)

    def __len__(self) -> int:
        return len(self.people.entries) + len(self.addresses.entries)


class Directory:
    """LDAP lookups with ldap3, run in worker threads (ldap3 is blocking)."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config

    def _server(self) -> ldap3.Server:
        return ldap3.Server(
            self.config.url, connect_timeout=self.config.timeout, get_info=ldap3.NONE
        )

    def _connect(self, user: str | None, password: str | None) -> ldap3.Connection:
        """An open, bound connection; DirectoryUnavailable when the server cannot be reached."""
        conn = ldap3.Connection(
            self._server(),
            user=user,
            password=password,
            receive_timeout=max(1, math.ceil(self.config.timeout)),  # ldap3 wants whole seconds
            auto_bind=ldap3.AUTO_BIND_NONE,
            raise_exceptions=False,
        )
        try:
            conn.open()
            if self.config.start_tls:
                conn.start_tls()
        except ldap_exceptions.LDAPException as exc:
            raise DirectoryUnavailable(f"{self.config.url}: {exc}") from None
        return conn

    def check_password(self, name: str, password: str) -> DirectoryEntry | None:
        """Bind as the user; their entry on success, None when the password is wrong."""
        if not password:
            return None  # an empty password would be an anonymous bind, which always succeeds
        conn = self._connect(self.config.dn_for(name), password)
        try:
            try:
                bound = conn.bind()
            except ldap_exceptions.LDAPException as exc:
                raise DirectoryUnavailable(f"{self.config.url}: {exc}") from None
            if not bound:
                if conn.result and conn.result.get("result") == 49:  # invalidCredentials
                    return None
                if conn.result and conn.result.get("result") in (32, 34, 53):
                    return None  # no such object, bad DN, unwilling (e.g. disabled)
                raise DirectoryUnavailable(f"{self.config.url}: bind failed: {conn.result}")
            return self._entry(conn, name, with_keys=False)
        finally:
            conn.unbind()

    def lookup(self, name: str) -> DirectoryEntry | None:
        """The user's entry (sshPublicKey values, groups), or None when there is none."""
        password = os.environ.get(self.config.bind_password_env or "", None)
        conn = self._connect(self.config.bind_dn, password if self.config.bind_dn else None)
        try:
            try:
                if not conn.bind():
                    raise DirectoryUnavailable(f"{self.config.url}: lookup bind refused")
            except ldap_exceptions.LDAPException as exc:
                raise DirectoryUnavailable(f"{self.config.url}: {exc}") from None
            return self._entry(conn, name, with_keys=True)
        finally:
            conn.unbind()

    def _entry(
        self, conn: ldap3.Connection, typed: str, *, with_keys: bool
    ) -> DirectoryEntry | None:
        """The entry a typed name reaches, named as the directory stores it: the DN the server
        returns and the value of its first RDN (`uid` for `uid={user},...`). An entry whose
        stored name is not a spelling of the typed one (an alias, a rename) is refused."""
        try:
            conn.search(
                self.config.dn_for(typed),
                "(objectClass=*)",
                ldap3.BASE,
                attributes=["sshPublicKey"] if with_keys else [],
                size_limit=1,
            )
        except ldap_exceptions.LDAPException as exc:
            raise DirectoryUnavailable(f"{self.config.url}: {exc}") from None
        if not conn.entries:
            return None
        entry = conn.entries[0]
        dn = str(entry.entry_dn)
        name = _first_rdn_value(dn)
        if not name or fold_name(name) != fold_name(typed):
            log.warning("directory entry %r is not a spelling of %r; refused", dn, typed)
            return None
        keys: tuple[str, ...] = ()
        if with_keys:
            values = entry.entry_attributes_as_dict.get("sshPublicKey", [])
            keys = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)
        return DirectoryEntry(name, dn, self._groups(conn, dn), keys)

    def _groups(self, conn: ldap3.Connection, dn: str) -> frozenset[str]:
        groups: set[str] = set()
        try:
            conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["memberOf"])
            for entry in conn.entries:
                for group_dn in entry.entry_attributes_as_dict.get("memberOf", []):
                    groups.add(_first_rdn_value(str(group_dn)))
            if self.config.group_base:
                conn.search(
                    self.config.group_base,
                    f"(&(objectClass=groupOfNames)(member={escape_filter_chars(dn)}))",
                    ldap3.SUBTREE,
                    attributes=["cn"],
                )
                for entry in conn.entries:
                    groups.update(str(cn) for cn in entry.entry_attributes_as_dict.get("cn", []))
        except ldap_exceptions.LDAPException as exc:
            raise DirectoryUnavailable(f"{self.config.url}: {exc}") from None
        groups.discard("")
        return frozenset(groups)


def _first_rdn_value(dn: str) -> str:
    try:
        return str(parse_dn(dn)[0][1])
    except (ldap_exceptions.LDAPException, IndexError):
        return ""


@dataclass(frozen=True, slots=True)
class LoginResult:
    """An identity, or why not. `message` is shown to the caller (an SSH auth banner)."""

    identity: Identity | None
    message: str = ""


class Authenticator:
    """Answers the SSH server's questions about callers, from local users and LDAP."""

    def __init__(self, config: GatewayConfig, throttle: LoginThrottle | None = None) -> None:
        self.users: dict[str, UserConfig] = config.users
        folded: dict[str, list[UserConfig]] = {}
        for user in config.users.values():
            folded.setdefault(fold_name(user.name), []).append(user)
        # spellings of a local name; names that fold alike are only ever matched exactly
        self._folded = {key: found[0] for key, found in folded.items() if len(found) == 1}
        # every folded local name: a spelling of one is never sent on to the directory, whose
        # entry would otherwise be named like the local user (two people, one name)
        self._local_folds = frozenset(folded)
        self.directory = Directory(config.ldap) if config.ldap else None
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._hash_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hoop-hash")
        self._ldap_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hoop-ldap")
        self._typical_check = 0.05  # seconds a password check takes, learnt as checks happen
        self.oidc = OidcClient(config.oidc) if config.oidc is not None else None
        self.agents = config.agents
        self.credentials: Credentials | None = None
        if config.oidc is not None:  # what `hoop-tui login` issues: proxy/oidc/certs.py
            from proxy.oidc.certs import Credentials

            self.credentials = Credentials(config.data_dir)

    def close(self) -> None:
        self._hash_pool.shutdown(wait=False, cancel_futures=True)
        self._ldap_pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, pool: ThreadPoolExecutor, func: Callable[..., object], *args: object):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    def local_user(self, name: str) -> UserConfig | None:
        """The local user a typed name means: exactly, or as a spelling (`ALICE`, `alice `)."""
        return self.users.get(name) or self._folded.get(fold_name(name))

    def local_name(self, name: str) -> bool:
        """Whether a typed name is a spelling of some local user's name, even one that two
        local names share (then it matches neither): such a name is never the directory's."""
        return fold_name(name) in self._local_folds

    async def directory_person(self, name: str) -> DirectoryEntry | None:
        """A directory entry, looked up in a worker thread with a deadline, for callers that
        are not logging in (the control socket's operators). DirectoryUnavailable when the
        directory does not answer in time: the caller fails closed, the event loop never
        waits on it."""
        if self.directory is None or self.local_name(name):
            return None
        deadline = self.directory.config.timeout + 1.0
        try:
            found = await asyncio.wait_for(
                self._run(self._ldap_pool, self.directory.lookup, name), deadline
            )
        except DirectoryUnavailable:
            raise
        except Exception as exc:  # timed out, or anything unexpected: fail closed
            raise DirectoryUnavailable(f"{self.directory.config.url}: {exc!r}") from None
        assert found is None or isinstance(found, DirectoryEntry)
        return found

    async def check_password(self, name: str, password: str, client_host: str) -> LoginResult:
        key = (client_host, name)
        wait = self.throttle.reserve(key)
        try:
            if wait > 0:  # a client gone while waiting counts as a failure and frees its place
                await asyncio.sleep(wait)
            result = await self._check_password(name, password)
        except BaseException:
            self.throttle.failed(key)
            raise
        self._account(key, name, client_host, result, "password")
        return result

    async def _check_password(self, name: str, password: str) -> LoginResult:
        if self.oidc is not None and looks_like_jwt(password):
            return await self.token_login(name, password)
        if (  # an opaque token: only introspection can say what it is
            self.oidc is not None
            and self.oidc.config.introspection
            and not password.startswith(GATEWAY_PASSWORD_PREFIX)
            and any(fold_name(agent) == fold_name(name) for agent in self.agents)
        ):
            return await self.token_login(name, password)
        if self.credentials is not None and password.startswith(GATEWAY_PASSWORD_PREFIX):
            found = await self.credentials.async_by_password(name, password)
            if found is None:
                return LoginResult(None, EXPIRED_LOGIN)
            return self._issued(found)
        user = self.local_user(name)
        if user is not None and user.password_hash is not None:
            started = time.monotonic()
            ok = await self._run(self._hash_pool, verify_password, password, user.password_hash)
            self._typical_check += (time.monotonic() - started - self._typical_check) / 8
            return LoginResult(_local_identity(user) if ok else None)
        if user is not None or self.directory is None or self.local_name(name):
            # No hash to check: answer after as long as a check takes, without spending CPU
            # on it, so a flood of made-up names neither reveals them nor delays real checks.
            await asyncio.sleep(self._typical_check)
            return LoginResult(None)
        try:
            entry = await self._run(self._ldap_pool, self.directory.check_password, name, password)
        except Exception as exc:  # unreachable, or anything unexpected: fail closed
            log.error("LDAP unreachable, refusing directory login of %r: %s", name, exc)
            return LoginResult(None, LDAP_UNAVAILABLE_MESSAGE)
        if entry is None:
            return LoginResult(None)
        assert isinstance(entry, DirectoryEntry)
        return LoginResult(_ldap_identity(entry))

    async def token_login(self, name: str, token: str) -> LoginResult:
        """An agent's access token (client credentials) given as its password: verified against
        the provider's keys, issuer, audience and expiry, and mapped by `[[agents]]`."""
        assert self.oidc is not None
        try:
            caller = agent_for(await self.oidc.verify_access_token(token), self.agents)
        except TokenRefused as exc:
            log.warning("token refused for %r: %s (%s)", name, exc.reason, exc.message)
            return LoginResult(None, f"hoop: token refused: {exc.message}\r\n")
        if fold_name(name) not in (fold_name(caller.name), fold_name(caller.client_id or "")):
            log.warning("token of agent %r presented as %r; refused", caller.name, name)
            return LoginResult(
                None,
                f"hoop: token refused: it is agent {caller.name}'s; log in as {caller.name}\r\n",
            )
        return LoginResult(oidc_identity(caller))

    async def authorized_keys(
        self, name: str
    ) -> tuple[asyncssh.SSHAuthorizedKeys | None, LoginResult]:
        """The authorized keys that may log in as `name`, with the identity they would prove."""
        user = self.local_user(name)
        if user is not None:
            return _authorized(user.authorized_keys), LoginResult(_local_identity(user))
        if self.local_name(name):
            return None, LoginResult(None)
        if self.directory is None:
            return await self._issued_keys(name)
        try:
            found = await self._run(self._ldap_pool, self.directory.lookup, name)
        except Exception as exc:  # unreachable, or anything unexpected: fail closed
            log.error("LDAP unreachable, refusing directory key login of %r: %s", name, exc)
            return None, LoginResult(None, LDAP_UNAVAILABLE_MESSAGE)
        if found is None:
            return await self._issued_keys(name)
        assert isinstance(found, DirectoryEntry)
        return _authorized(found.keys), LoginResult(_ldap_identity(found))

    async def _issued_keys(
        self, name: str
    ) -> tuple[asyncssh.SSHAuthorizedKeys | None, LoginResult]:
        """A single sign-on caller with a live certificate from `hoop-tui login`."""
        if self.credentials is None:
            return None, LoginResult(None)
        issued = await self.credentials.async_authorized(name)
        if issued is None:
            return None, LoginResult(None)
        line, holder = issued
        result = self._issued(holder)
        if result.identity is None:
            return None, result
        return asyncssh.import_authorized_keys(line + "\n"), result

    def _issued(self, holder: Holder) -> LoginResult:
        """Who credentials from `hoop-tui login` stand for, judged by today's settings: an
        agent revoked, removed or given another client in `[[agents]]` since they were issued
        is refused, and a kept agent gets its current owner and groups."""
        if holder.kind != "agent":
            return LoginResult(_holder_identity(holder))
        folded = fold_name(holder.name)
        agent = next((a for a in self.agents.values() if fold_name(a.name) == folded), None)
        if agent is None or agent.revoked or agent.client_id != holder.client_id:
            why = (
                "has been revoked"
                if agent is not None and agent.revoked
                else "is no longer an agent of this gateway"
            )
            log.warning("issued credentials of %r refused: the agent %s", holder.name, why)
            return LoginResult(
                None,
                f"hoop: agent {holder.name} {why}; what hoop-tui login issued it is void\r\n",
            )
        current = replace(holder, groups=frozenset(agent.groups), owner=agent.owner)
        return LoginResult(_holder_identity(current))

    def _account(
        self, key: tuple[str, str], name: str, client_host: str, result: LoginResult, how: str
    ) -> None:
        if result.identity is not None:
            self.throttle.succeeded(key)
            return
        failures = self.throttle.failed(key)
        if failures > self.throttle.free_attempts:
            log.warning(
                "failed %s login for %r from %s (%d failures; slowing down further attempts)",
                how,
                name,
                client_host,
                failures,
            )
        else:
            log.warning("failed %s login for %r from %s", how, name, client_host)


def _local_identity(user: UserConfig) -> Identity:
    return Identity(
        user.name, frozenset(user.groups), service_account=user.service_account, source="local"
    )


def _holder_identity(holder: Holder) -> Identity:
    """Who live credentials from `hoop-tui login` stand for, until they expire."""
    return Identity(
        holder.name,
        holder.groups,
        source="oidc",
        kind=holder.kind,
        owner=holder.owner,
        client_id=holder.client_id,
        expires_at=holder.valid_before,
        subject=holder.subject,
    )


def oidc_identity(caller: OidcCaller) -> Identity:
    return Identity(
        caller.name,
        caller.groups,
        source="oidc",
        kind=caller.kind,
        owner=caller.owner,
        client_id=caller.client_id,
        expires_at=caller.expires_at,
        subject=caller.subject,
    )


def _ldap_identity(entry: DirectoryEntry) -> Identity:
    return Identity(entry.name, entry.groups, service_account=False, source="ldap", dn=entry.dn)


def _authorized(lines: tuple[str, ...] | list[str]) -> asyncssh.SSHAuthorizedKeys | None:
    """Parse key lines one by one, so one bad LDAP value does not lock out the others."""
    good = []
    for line in lines:
        try:
            asyncssh.import_authorized_keys(line)
        except (ValueError, asyncssh.KeyImportError):
            log.warning("ignoring a public key that does not parse: %.40s...", line)
            continue
        good.append(line.strip())
    return asyncssh.import_authorized_keys("\n".join(good) + "\n") if good else None
