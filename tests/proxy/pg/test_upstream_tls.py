"""TLS from the gateway to the target (`sslmode` of a postgres target), against a cluster made
with initdb, `ssl = on` and a certificate signed by a CA made in the test."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fixtures.processes import free_port
from tests.proxy.pg.harness import PG_PORT, PgHarness
from tests.proxy.pg.test_scram import BIN, Cluster

SSL_IN_USE = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca_and_server_cert(directory: Path, host_names: list[str]) -> Path:
    """A CA, and a server certificate it signs for `host_names` (DNS names only):
    `ca.crt`, `server.crt`, `server.key` in `directory`. Returns the CA file."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("hoop test CA"))
        .issuer_name(_name("hoop test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in host_names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host_names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(_pem_key(key))
    return directory / "ca.crt"


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[tuple[Cluster, Path]]:
    if not (BIN / "initdb").exists() or shutil.which("su") is None or os.geteuid() != 0:
        pytest.skip("needs root, su and the PostgreSQL 15 server binaries")
    directory = Path(tempfile.mkdtemp(prefix="hoop-pg-tls-"))
    os.chmod(directory, 0o755)
    shutil.chown(directory, "postgres")
    data = directory / "data"
    subprocess.run(
        ["su", "postgres", "-c", f"{BIN / 'initdb'} -D {data} -A trust -U root --no-sync -E UTF8"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    ca_file = make_ca_and_server_cert(data, ["localhost"])
    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.chown(data / name, "postgres")
    os.chmod(data / "server.key", 0o600)
    port = free_port()
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{directory}'\nfsync = off\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        )
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    cluster = Cluster(directory, port)
    cluster.ctl("start")
    outside = Path(tempfile.mkdtemp(prefix="hoop-ca-"))
    shutil.copy(ca_file, outside / "ca.crt")
    wrong = make_ca_and_server_cert(Path(tempfile.mkdtemp(prefix="hoop-wrong-ca-")), ["x"])
    shutil.copy(wrong, outside / "wrong-ca.crt")
    yield cluster, outside
    with contextlib.suppress(Exception):
        cluster.ctl("stop", "-m", "immediate")
    shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(outside, ignore_errors=True)


def _target(name: str, port: int, host: str = "127.0.0.1", **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "protocol": "postgres",
        "host": host,
        "port": port,
        "database": "postgres",
        "user": "root",
        "groups": ["*"],
        **extra,
    }


async def _ssl_in_use(pg: PgHarness, database: str) -> bool:
    async with await psycopg.AsyncConnection.connect(pg.dsn(database)) as conn:
        cur = await conn.execute(SSL_IN_USE)
        row = await cur.fetchone()
        assert row is not None
        return bool(row[0])


async def test_sslmodes_against_a_tls_target(
    pg: PgHarness, tls_cluster: tuple[Cluster, Path]
) -> None:
    cluster, certs = tls_cluster
    port = cluster.port
    pg.targets = [
        _target("plain", port, sslmode="disable"),
        _target("prefer", port, sslmode="prefer"),
        _target("require", port, sslmode="require"),
        _target(
            "verified", port, host="localhost", sslmode="verify-full", ca_file=str(certs / "ca.crt")
        ),
        _target(
            "wrong-ca",
            port,
            host="localhost",
            sslmode="verify-full",
            ca_file=str(certs / "wrong-ca.crt"),
        ),
        _target(
            "wrong-name",
            port,
            host="127.0.0.1",  # the certificate names only localhost
            sslmode="verify-full",
            ca_file=str(certs / "ca.crt"),
        ),
        _target("no-tls-here", PG_PORT, sslmode="prefer", database="test"),
        _target("no-tls-required", PG_PORT, sslmode="require", database="test"),
    ]
    await pg.start()
    assert not await _ssl_in_use(pg, "plain")
    assert await _ssl_in_use(pg, "prefer")
    assert await _ssl_in_use(pg, "require")
    assert await _ssl_in_use(pg, "verified")
    for refused in ("wrong-ca", "wrong-name"):
        with pytest.raises(psycopg.OperationalError) as caught:
            await _ssl_in_use(pg, refused)
        assert f"TLS to target {refused} failed" in str(caught.value)
    # The machine's own PostgreSQL has no TLS: prefer goes on without, require refuses.
    async with await psycopg.AsyncConnection.connect(pg.dsn("no-tls-here")) as conn:
        cur = await conn.execute("select 1")
        assert await cur.fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError) as caught:
        await psycopg.AsyncConnection.connect(pg.dsn("no-tls-required"))
    assert "does not offer TLS" in str(caught.value)
