"""TLS for the PostgreSQL gateway: its own certificate (self-signed, made on first start unless
`[postgres] cert_file`/`key_file` name one), the context clients meet, and the context the
gateway uses toward a target as its `sslmode` says."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from proxy.pg.settings import PgSettings, PgTarget
from storage.private import private_dir, private_file


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


def client_tls_context(target: PgTarget) -> ssl.SSLContext:
    if target.sslmode == "verify-full":
        context = ssl.create_default_context(cafile=str(target.ca_file) if target.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
