"""SCRAM-SHA-256 both ways, and the gateway logging in to a PostgreSQL that demands SCRAM or md5
(its own cluster, made with initdb as the postgres OS user)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from proxy.pg.scram import (
    ScramClient,
    ScramError,
    ScramServer,
    Verifier,
    make_verifier,
    md5_password,
)
from tests.fixtures.processes import free_port
from tests.proxy.pg.harness import PgHarness

BIN = Path("/usr/lib/postgresql/15/bin")


def test_client_and_server_agree() -> None:
    verifier = make_verifier("s3cret", iterations=64)
    client, server = ScramClient("s3cret"), ScramServer(verifier)
    final = server.final(client.final(server.first(client.first())))
    client.verify(final)


def test_wrong_password_and_unknown_user() -> None:
    verifier = make_verifier("s3cret", iterations=64)
    client, server = ScramClient("guess"), ScramServer(verifier)
    with pytest.raises(ScramError):
        server.final(client.final(server.first(client.first())))
    client, server = ScramClient("s3cret"), ScramServer(None)
    with pytest.raises(ScramError):
        server.final(client.final(server.first(client.first())))


def test_forged_server_is_caught() -> None:
    client = ScramClient("s3cret")
    server = ScramServer(make_verifier("other", iterations=64))
    client.final(server.first(client.first()))
    with pytest.raises(ScramError):
        client.verify(b"v=" + b"A" * 44)


def test_verifier_format_and_garbage() -> None:
    verifier = make_verifier("pw", iterations=100)
    assert Verifier.parse(verifier.encode()) == verifier
    assert verifier.encode().startswith("SCRAM-SHA-256$100:")
    for bad in ("", "md5abc", "SCRAM-SHA-256$x:y$z:w", "SCRAM-SHA-256$4096:AAAA$AAAA:AAAA"):
        with pytest.raises(ScramError):
            Verifier.parse(bad)
    server = ScramServer(verifier)
    for message in (b"\xff", b"p=tls,,n=,r=x", b"n,,n=,m=x,r=x", b"n,,junk"):
        with pytest.raises(ScramError):
            ScramServer(verifier).first(message)
    server.first(b"n,,n=,r=abc")
    for message in (b"c=biws,r=abc", b"c=xx,r=abc,p=AAAA", b"c=biws,r=wrong,p=AAAA"):
        with pytest.raises(ScramError):
            server.final(message)


def test_md5_response() -> None:
    # PostgreSQL's own formula: md5(md5(password || user) || salt)
    assert md5_password("u", "p", b"salt") == b"md5c827f95590aef08f2d04ac5e8d94d9c3\x00"


# -- a cluster of our own ---------------------------------------------------------------------


class Cluster:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "su",
                "postgres",
                "-c",
                " ".join(
                    [
                        str(BIN / "pg_ctl"),
                        "-D",
                        str(self.directory / "data"),
                        "-l",
                        str(self.directory / "log"),
                        "-w",
                        *args,
                    ]
                ),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def psql(self, sql: str) -> None:
        subprocess.run(
            ["su", "postgres", "-c", f"psql -X -q -h 127.0.0.1 -p {self.port} -d postgres"],
            input=sql.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not (BIN / "initdb").exists() or shutil.which("su") is None or os.geteuid() != 0:
        pytest.skip("needs root, su and the PostgreSQL 15 server binaries")
    directory = Path(tempfile.mkdtemp(prefix="hoop-pg-"))
    os.chmod(directory, 0o755)
    shutil.chown(directory, "postgres")
    port = free_port()
    data = directory / "data"
    subprocess.run(
        [
            "su",
            "postgres",
            "-c",
            f"{BIN / 'initdb'} -D {data} -A trust -U postgres --no-sync -E UTF8",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{directory}'\nfsync = off\n"
        )
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all gw_md5 127.0.0.1/32 md5\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    server = Cluster(directory, port)
    server.ctl("start")
    server.psql(
        "set password_encryption = 'scram-sha-256';\n"
        "create role gw_scram login password 'scram-pw';\n"
        "set password_encryption = 'md5';\n"
        "create role gw_md5 login password 'md5-pw';\n"
    )
    yield server
    with contextlib.suppress(Exception):
        server.ctl("stop", "-m", "immediate")
    shutil.rmtree(directory, ignore_errors=True)


def _targets(port: int) -> list[dict[str, object]]:
    base = {"protocol": "postgres", "host": "127.0.0.1", "port": port, "groups": ["*"]}
    return [
        {
            "name": "scramdb",
            **base,
            "database": "postgres",
            "user": "gw_scram",
            "password_env": "HOOP_TEST_SCRAM_PW",
        },
        {
            "name": "md5db",
            **base,
            "database": "postgres",
            "user": "gw_md5",
            "password_env": "HOOP_TEST_MD5_PW",
        },
        {"name": "nocred", **base, "database": "postgres", "user": "gw_scram"},
    ]


async def test_upstream_scram_and_md5_logins(
    pg: PgHarness, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOP_TEST_SCRAM_PW", "scram-pw")
    monkeypatch.setenv("HOOP_TEST_MD5_PW", "md5-pw")
    pg.targets = _targets(cluster.port)
    await pg.start()
    for database, role in (("scramdb", "gw_scram"), ("md5db", "gw_md5")):
        async with await psycopg.AsyncConnection.connect(pg.dsn(database)) as conn:
            cur = await conn.execute("select current_user")
            assert await cur.fetchone() == (role,)
    with pytest.raises(psycopg.OperationalError) as caught:
        await psycopg.AsyncConnection.connect(pg.dsn("nocred"))
    assert "no credential" in str(caught.value)
    assert "scram-pw" not in str(caught.value)


async def test_upstream_restart_mid_session(
    pg: PgHarness, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOP_TEST_SCRAM_PW", "scram-pw")
    pg.targets = _targets(cluster.port)
    await pg.start()
    conn = await psycopg.AsyncConnection.connect(pg.dsn("scramdb"), autocommit=True)
    await conn.execute("select 1")
    await asyncio.to_thread(cluster.ctl, "restart", "-m", "fast")
    with pytest.raises(psycopg.OperationalError):
        await conn.execute("select 1")
    await conn.close()
    async with await psycopg.AsyncConnection.connect(pg.dsn("scramdb")) as again:
        cur = await again.execute("select 2")
        assert await cur.fetchone() == (2,)
