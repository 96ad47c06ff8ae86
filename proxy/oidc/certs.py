"""Short-lived credentials for single sign-on callers, issued by `hoop-tui login`.

After a device-flow sign-in (a person) or a pasted client-credentials token (an agent), the
gateway signs the caller's SSH public key with its *user* CA (`data_dir/ssh/user_ca`, never
the host CA) for the token's remaining lifetime, principal = the caller's name, and makes a
random gateway password for PostgreSQL, valid as long. Plain `ssh` then logs in with the
certificate and `psql` with the password, without signing in again until the token's expiry.

What was issued is kept in `data_dir/oidc/issued.json` (owner-only): per caller, who they are
(groups, person or agent, owner, client id), and each live issue: until when, the
certificate's serial and the password's SHA-256 (it is random, so a fast hash is enough; the
password itself is never stored). A certificate carries its serial as a second principal
(`hoop-serial-N`) and only the serials its entry lists are accepted; a login with a
certificate or the password takes the caller's identity from there. Deleting a caller's entry
revokes all of them at once, for good. Reads and writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from proxy.names import fold_name
from proxy.ssh.hostkeys import load_or_create_key
from storage.private import private_dir


class CertSubject(Protocol):
    """What is issued to: proxy.auth.Identity (not imported: proxy.auth imports this)."""

    @property
    def name(self) -> str: ...
    @property
    def groups(self) -> frozenset[str]: ...
    @property
    def source(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def expires_at(self) -> float | None: ...
    @property
    def subject(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds live credentials, as the record says: proxy.auth makes an Identity of it."""

    name: str
    groups: frozenset[str]
    kind: str
    owner: str | None
    client_id: str | None
    valid_before: float
    subject: str | None = None


PASSWORD_PREFIX = "hoopgw_"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")  # fits a principal and a key option
LOGIN_COMMAND = "hoop-login"
MIN_LIFETIME = 30.0  # a token about to expire gets no certificate


@dataclass(frozen=True, slots=True)
class Issued:
    certificate: str  # OpenSSH `...-cert.pub` text
    password: str
    valid_before: float


class IssueRefused(Exception):
    pass


def serial_principal(serial: int) -> str:
    """The certificate's second principal: which issue it is (see `Credentials.authorized`)."""
    return f"hoop-serial-{serial}"


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _live(issued: Any, now: float) -> list[dict[str, Any]]:
    """The issues of an entry still valid at `now` (certificate serial, password digest)."""
    if not isinstance(issued, list):
        return []
    return [i for i in issued if isinstance(i, dict) and float(i.get("until", 0)) > now]


class Credentials:
    """The user CA and the record of what it issued."""

    def __init__(self, data_dir: Path) -> None:
        self.ca_path = data_dir / "ssh" / "user_ca"
        self.path = data_dir / "oidc" / "issued.json"
        self._ca: asyncssh.SSHKey | None = None

    @property
    def ca(self) -> asyncssh.SSHKey:
        if self._ca is None:
            self._ca = load_or_create_key(self.ca_path)
        return self._ca

    # -- the record ----------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        private_dir(self.path.parent)
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file)
        os.replace(temporary, self.path)

    def _entry(self, name: str, now: float) -> dict[str, Any] | None:
        entry = self._read().get(fold_name(name))
        if not isinstance(entry, dict) or float(entry.get("valid_before", 0)) <= now:
            return None
        return entry

    # -- issuing -------------------------------------------------------------------------------

    def issue(self, identity: CertSubject, public_key: str, now: float) -> Issued:
        if identity.source != "oidc" or identity.expires_at is None:
            raise IssueRefused(
                "hoop-tui login is for single sign-on callers (OIDC people and agents)"
            )
        if not SAFE_NAME.match(identity.name):
            raise IssueRefused(f"the name {identity.name!r} cannot be a certificate principal")
        valid_before = identity.expires_at
        if valid_before - now < MIN_LIFETIME:
            raise IssueRefused("the token expires too soon; sign in again")
        try:
            key = asyncssh.import_public_key(public_key)
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise IssueRefused(f"not an SSH public key: {exc}") from None
        serial = secrets.randbits(63)
        cert = self.ca.generate_user_certificate(
            key,
            f"hoop:{identity.kind}:{identity.name}:{serial}",
            version=1,
            serial=serial,
            principals=[identity.name, serial_principal(serial)],
            valid_after=int(now) - 60,
            valid_before=int(valid_before),
            permit_x11_forwarding=False,
        )
        password = PASSWORD_PREFIX + secrets.token_urlsafe(32)
        data = {k: v for k, v in self._read().items() if float(v.get("valid_before", 0)) > now}
        before = data.get(fold_name(identity.name), {})
        # Every live issue stays usable (parallel runners of one agent each log in); deleting
        # the entry voids them all, and a later sign-in does not bring them back.
        live = _live(before.get("issued"), now)
        live.append({"serial": serial, "password_sha256": _sha256(password), "until": valid_before})
        data[fold_name(identity.name)] = {
            "name": identity.name,
            "groups": sorted(identity.groups),
            "kind": identity.kind,
            "owner": identity.owner,
            "client_id": identity.client_id,
            "subject": identity.subject,
            "valid_before": max(float(i["until"]) for i in live),
            "issued": live,
            "issued_at": now,
        }
        self._write(data)
        text = cert.export_certificate("openssh").decode("ascii")
        return Issued(text, password, valid_before)

    # -- logging in with what was issued -------------------------------------------------------

    def _holder(self, entry: dict[str, Any]) -> Holder:
        return Holder(
            str(entry["name"]),
            frozenset(str(g) for g in entry.get("groups", [])),
            str(entry.get("kind", "person")),
            entry.get("owner"),
            entry.get("client_id"),
            float(entry["valid_before"]),
            entry.get("subject"),
        )

    def authorized(self, name: str, now: float) -> tuple[str, Holder] | None:
        """For a caller with live credentials: the authorized_keys line that accepts their
        certificates (our user CA, their name as the only principal), and who they are."""
        entry = self._entry(name, now)
        if entry is None or not SAFE_NAME.match(str(entry["name"])):
            return None
        serials = [serial_principal(int(i["serial"])) for i in _live(entry.get("issued"), now)]
        if not serials:
            return None
        public = self.ca.export_public_key("openssh").decode("ascii").strip()
        # Only the certificates this entry lists: one issued before the entry was deleted
        # (revoked) names a serial no live entry has.
        line = f'cert-authority,principals="{",".join(serials)}" {public}'
        return line, self._holder(entry)

    def by_password(self, name: str, password: str, now: float) -> Holder | None:
        entry = self._entry(name, now)
        if entry is None:
            return None
        digest = _sha256(password)
        found = [
            i
            for i in _live(entry.get("issued"), now)
            if hmac.compare_digest(digest, str(i.get("password_sha256", "")))
        ]
        return self._holder(entry) if found else None

    async def async_authorized(self, name: str) -> tuple[str, Holder] | None:
        return await asyncio.to_thread(self.authorized, name, time.time())

    async def async_by_password(self, name: str, password: str) -> Holder | None:
        return await asyncio.to_thread(self.by_password, name, password, time.time())

    async def async_issue(self, identity: CertSubject, public_key: str) -> Issued:
        return await asyncio.to_thread(self.issue, identity, public_key, time.time())
