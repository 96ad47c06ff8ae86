"""kill -9 of the instance carrying a typing session: the caller reconnects through HAProxy to
the other instance at once; the other instance marks the lost session ended-unknown; the
killed instance starts again and closes the recording of that session (recovered)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import psycopg
import pytest

from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, state_url: str) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path / "fleet", sshd, state_url, balance="first")
    fleet.start()
    fleet.ssh_argv("alice", "ssh", "x")  # known_hosts
    yield fleet
    fleet.stop()


async def typing_session(fleet: Fleet) -> tuple[asyncssh.SSHClientConnection, object]:
    conn = await asyncssh.connect(
        "127.0.0.1",
        fleet.port("ssh"),
        username="alice+web1",
        client_keys=[asyncssh.read_private_key(fleet.directory / "alice_key")],
        known_hosts=str(fleet.directory / "known_hosts"),
        agent_path=None,
    )
    process = await conn.create_process(term_type="xterm", term_size=(80, 24))
    return conn, process


async def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(sql)
        return list(await cur.fetchall())


async def test_kill_9_mid_typing_reconnects_to_b_at_once(fleet: Fleet) -> None:
    conn, process = await typing_session(fleet)
    for n in range(5):  # typing, one key at a time
        for ch in f"echo line{n}\r":
            process.stdin.write(ch)  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
    deadline = time.monotonic() + 15
    while not await rows(fleet.state_url, "SELECT id FROM live_sessions WHERE gateway_id = 'gw-a'"):
        assert time.monotonic() < deadline, "the session never showed as live on gw-a"
        await asyncio.sleep(0.1)
    (lost_id,) = (await rows(fleet.state_url, "SELECT id FROM live_sessions"))[0]

    fleet.kill("gw-a", signal.SIGKILL)
    killed_at = time.monotonic()
    conn.close()
    conn2, process2 = await typing_session(fleet)  # HAProxy: A refuses, B takes it
    reconnected_after = time.monotonic() - killed_at
    process2.stdin.write("echo after-failover\r")  # type: ignore[attr-defined]
    seen = b""
    while b"after-failover\r\n" not in seen.replace(b"echo after-failover", b""):
        seen += (await asyncio.wait_for(process2.stdout.read(4096), 15)).encode()  # type: ignore[attr-defined]
    conn2.close()
    assert reconnected_after < 3.0, reconnected_after

    # B notices A is silent: A's session is ended-unknown in the shared catalogue
    deadline = time.monotonic() + 15
    while True:
        found = await rows(
            fleet.state_url, f"SELECT end_reason FROM sessions WHERE id = '{lost_id}'"
        )
        if found and found[0][0] and str(found[0][0]).startswith("ended-unknown"):
            break
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)
    live = await rows(fleet.state_url, "SELECT gateway_id FROM live_sessions")
    assert ("gw-a",) not in live

    # A starts again: it recovers the session it carried and says so in the shared catalogue
    await asyncio.to_thread(fleet.start_instance, "gw-a")
    deadline = time.monotonic() + 15
    while True:
        found = await rows(
            fleet.state_url, f"SELECT end_reason FROM sessions WHERE id = '{lost_id}'"
        )
        if found and "recovered" in str(found[0][0]):
            break
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)
    states = dict(await rows(fleet.state_url, "SELECT id, state FROM instances"))
    assert states == {"gw-a": "up", "gw-b": "up"}


async def test_kill_9_mid_bulk_transfer_the_retry_goes_to_b(fleet: Fleet) -> None:
    size = 400 * 1024 * 1024
    download = await fleet.ssh("alice", f"head -c {size} /dev/zero")  # HAProxy: A first
    assert download.stdout is not None
    received = 0
    while received < 4 * 1024 * 1024:  # the transfer is well under way
        chunk = await asyncio.wait_for(download.stdout.read(1 << 20), 30)
        assert chunk, "the transfer ended early"
        received += len(chunk)
    fleet.kill("gw-a", signal.SIGKILL)
    killed_at = time.monotonic()
    while await asyncio.wait_for(download.stdout.read(1 << 20), 30):
        pass  # what was in flight
    await download.wait()
    assert download.returncode != 0  # cut, not completed

    retry = await fleet.ssh("alice", "head -c 8388608 /dev/zero | wc -c")  # on B
    out, err = await asyncio.wait_for(retry.communicate(), 60)
    assert retry.returncode == 0, err
    assert out.strip() == b"8388608"
    assert time.monotonic() - killed_at < 15
