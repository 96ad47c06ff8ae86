"""The gateway's SSH host identity: a host CA, one host key, and certificates signed on demand.

Callers trust the gateway and every target behind it with one known_hosts line,
`@cert-authority * <CA public key>`: the gateway presents its host key with a certificate for its
own names, and for each target a certificate whose principal is the target name, which is the
host name the caller's ssh checks when it reaches `web1` through `-J`. Keys live under
`data_dir/ssh/` (owner-only); certificates are short-lived and re-signed as they age.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import asyncssh

from storage.private import private_dir

CERT_LIFETIME = 7 * 86400
CERT_REFRESH_AFTER = 86400
CLOCK_SKEW_ALLOWANCE = 3600


def load_or_create_key(path: Path) -> asyncssh.SSHKey:
    """Read an Ed25519 private key, creating it (mode 0600) on first use."""
    if path.exists():
        return asyncssh.read_private_key(path)
    private_dir(path.parent)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=path.name)
    data = key.export_private_key()
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(path.with_suffix(".tmp"), path)
    return key


class HostKeys:
    """The CA, the host key, and a cache of host certificates by principal set."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = load_or_create_key(directory / "host_ca")
        self.host_key = load_or_create_key(directory / "host_key")
        self._certs: dict[tuple[str, ...], tuple[float, asyncssh.SSHCertificate]] = {}

    def known_hosts_line(self, pattern: str = "*") -> str:
        """The one line a caller adds to ~/.ssh/known_hosts to trust the gateway's hosts."""
        public = self.ca.export_public_key("openssh").decode("ascii").strip()
        return f"@cert-authority {pattern} {public}"

    def certificate(self, principals: tuple[str, ...]) -> asyncssh.SSHCertificate:
        """A host certificate for these names, re-signed once a day."""
        now = time.time()
        cached = self._certs.get(principals)
        if cached is not None and now - cached[0] < CERT_REFRESH_AFTER:
            return cached[1]
        cert = self.ca.generate_host_certificate(
            self.host_key,
            key_id="hoop:" + ",".join(principals),
            principals=list(principals),
            valid_after=int(now) - CLOCK_SKEW_ALLOWANCE,
            valid_before=int(now) + CERT_LIFETIME,
        )
        self._certs[principals] = (now, cert)
        return cert

    def server_host_keys(self, principals: tuple[str, ...]) -> list[object]:
        """What asyncssh's `server_host_keys` takes: the key with its certificate (asyncssh
        offers it both with the certificate and bare)."""
        return [(self.host_key, self.certificate(principals))]
