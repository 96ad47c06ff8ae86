"""The PostgreSQL gateway behind HAProxy: the session records the client's own address and
port (from the PROXY header), over TLS too."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import psycopg
import pytest

from storage.reader import RecordingReader
from tests.fixtures.haproxy import Backend, HAProxy
from tests.proxy.pg.harness import PgHarness, pg_available


class ProxiedPgHarness(PgHarness):
    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text().replace(
            "[gateway]\n", '[gateway]\ntrusted_proxies = ["127.0.0.1"]\n', 1
        )
        path.write_text(text)
        return path


@pytest.mark.postgres  # its harness reaches the machine's PostgreSQL itself
@pytest.mark.parametrize("sslmode", ["disable", "require"])
async def test_a_client_through_haproxy_is_recorded_with_its_own_port(
    tmp_path: Path, sslmode: str
) -> None:
    if not pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    harness = ProxiedPgHarness(tmp_path / "gw")
    await harness.start()
    balancer = HAProxy(tmp_path, {"pg": [Backend("a", harness.port, "send-proxy-v2")]})
    balancer.start()
    try:
        dsn = harness.dsn(sslmode=sslmode).replace(
            f"port={harness.port}", f"port={balancer.ports['pg']}"
        )
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        fd = conn.pgconn.socket
        local = socket.socket(fileno=socket.dup(fd)).getsockname()
        cur = await conn.execute("SELECT 41 + 1")
        assert await cur.fetchone() == (42,)
        await conn.close()
        await asyncio.sleep(0.3)
    finally:
        await harness.stop()
        balancer.stop()
    (path,) = list((tmp_path / "gw" / "data").rglob("*.hrec"))
    with RecordingReader.open(path) as reader:
        client = reader.header.client
    assert client == f"127.0.0.1:{local[1]}"  # the client's port, not HAProxy's
