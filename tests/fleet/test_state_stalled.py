"""A state database that stops answering without closing anything (its processes paused, a
stalled host or network): `hoop-tui state migrate` and opening the store (gateway start,
`status`, `state copy`) give up after the [state] timeout with one line saying what to check,
instead of hanging for as long as the database stays silent."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.pg_state import PgState, migrate
from storage.state import StoreUnavailable
from tests.fixtures.pgstate import PrivateCluster, fresh_database
from tests.fleet.test_fleet_pg_paused import _signal_cluster, cluster  # noqa: F401
from tests.fleet.test_state_command import fleet_config

pytestmark = [pytest.mark.postgres]


def test_migrate_against_a_paused_database_gives_up_after_the_timeout(
    tmp_path: Path,
    cluster: PrivateCluster,  # noqa: F811
) -> None:
    with fresh_database(cluster.admin_url) as url:
        config = fleet_config(tmp_path, url, 'timeout = "1s"\n')
        _signal_cluster(cluster, signal.SIGSTOP)
        try:
            started = time.monotonic()
            try:
                run = subprocess.run(
                    [sys.executable, "-m", "hoop_tui", "state", "migrate", "--config", str(config)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            except subprocess.TimeoutExpired:
                pytest.fail("state migrate still waiting on a paused database after 60 s")
            took = time.monotonic() - started
        finally:
            _signal_cluster(cluster, signal.SIGCONT)
    assert run.returncode == 1, run.stdout
    assert took < 20, took
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "did not answer" in lines[0]
    assert "check that PostgreSQL is running and reachable from here" in lines[0]
    assert "Traceback" not in run.stderr


@contextlib.asynccontextmanager
async def stalling_relay(port: int, stall_on: bytes) -> AsyncIterator[int]:
    """A TCP relay to 127.0.0.1:`port` that goes silent (forwards nothing more, closes
    nothing) once the client sends `stall_on`: the network of a stalled database host."""
    held: list[asyncio.StreamWriter] = []
    forever = asyncio.Event()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: bool) -> None:
        while data := await reader.read(65536):
            if watch and stall_on in data:
                await forever.wait()
            writer.write(data)
            await writer.drain()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        held.extend([writer, up_writer])
        with contextlib.suppress(ConnectionError):
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()


async def test_opening_the_store_gives_up_when_the_schema_read_gets_no_answer(
    state_url: str,
) -> None:
    await migrate(state_url)
    async with stalling_relay(5432, b"to_regclass") as port:
        relayed = state_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as refused:
            try:
                await asyncio.wait_for(PgState.open(relayed, gateway_id="gw-a", timeout_s=1), 30)
            except TimeoutError:
                pytest.fail("PgState.open still reading the schema after 30 s")
        assert time.monotonic() - started < 10
    message = str(refused.value)
    assert "did not answer within 2 s" in message
    assert "check that PostgreSQL is running" in message and "\n" not in message
