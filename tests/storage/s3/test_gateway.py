"""Sessions through the real gateway with `[recordings] url = "s3://..."` on a real SeaweedFS:
what the CLI shows, verifies and replays comes from the store; a store that goes away costs
no session and no byte; a spool past its limit refuses new sessions and says why; a gateway
killed with SIGKILL loses at most the last second, uploaded at its next start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.objectstore import is_url
from storage.reader import RecordingReader
from storage.recorder import CRASH_REASON
from storage.search import SearchIndex
from storage.signing import PUBLIC_KEY_NAME, load_public_key
from storage.spool import shared_spool, spool_status
from storage.verify import verify_recording
from tests.fixtures.gateway import GatewayHarness, sessions_finished
from tests.fixtures.seaweed import SeaweedFS


def setup(harness: GatewayHarness, seaweed: SeaweedFS, **recordings: object) -> None:
    """alice, web1, and recordings under a prefix of this test's own in the module's store."""
    url = f"s3://{seaweed.bucket}/test-{uuid.uuid4().hex[:12]}"
    harness.recordings = seaweed.settings_table(url=url, **recordings)
    harness.add_user("alice")
    harness.add_target("web1")


async def drained(harness: GatewayHarness, timeout: float = 60) -> None:
    assert harness.gateway is not None
    settings = harness.gateway.config.recordings
    assert settings is not None
    spool = shared_spool(settings, harness.data_dir)
    # a session just ended may not have closed its recording yet: wait for the spool to empty
    deadline = time.monotonic() + timeout
    while list(spool.directory.glob("*.hrec")):
        assert time.monotonic() < deadline, spool.status().lines()
        await asyncio.to_thread(spool.drain, 1.0)
        await asyncio.sleep(0.05)


async def indexed_by_the_gateway(harness: GatewayHarness, session_id: str) -> None:
    """The gateway's indexing process (which gets the gateway's stores) indexed the session
    as it closed, before any `hoop-tui search` could catch it up."""
    index = SearchIndex.in_data_dir(harness.data_dir)
    try:
        deadline = time.monotonic() + 20
        while session_id not in index.indexed_sessions():
            assert time.monotonic() < deadline, "the gateway did not index the session"
            await asyncio.sleep(0.1)
    finally:
        index.close()


async def test_a_session_is_recorded_to_the_store_and_verified_and_replayed_from_it(
    harness, store_running
):
    setup(harness, store_running)
    await harness.start()
    result = await harness.ssh_direct("alice+web1", "echo hello-from-the-store")
    assert result.status == 0 and "hello-from-the-store" in result.out
    await sessions_finished(harness)
    await drained(harness)
    assert not list((harness.data_dir / "recordings").rglob("*.hrec"))  # nothing kept locally

    status, out, err = await harness.hoop("sessions", "--json")
    assert status == 0, err
    (row,) = json.loads(out)
    assert row["path"].startswith(harness.recordings["url"] + "/"), row["path"]
    assert row["recording_problem"] is None
    await indexed_by_the_gateway(harness, row["id"])
    status, out, err = await harness.hoop("verify", row["id"])
    assert status == 0, out + err
    assert f"{row['path']}: OK" in out
    status, out, err = await harness.hoop("info", row["id"])
    assert status == 0 and "complete, ended" in out, out + err
    status, out, err = await harness.hoop("export", row["id"], "--format", "text")
    assert status == 0 and "hello-from-the-store" in out, out + err
    status, out, err = await harness.hoop("screen", row["id"], "--at", "600", "--no-cache")
    assert status == 0 and "hello-from-the-store" in out, out + err
    status, out, err = await harness.hoop("search", "hello-from-the-store")
    assert status == 0 and row["id"][:8] in out, out + err
    status, out, err = await harness.hoop("play", row["id"], "--speed", "16")
    assert status == 0 and "hello-from-the-store" in out, out + err
    status, out, err = await harness.hoop("verify", "--all")
    assert status == 0 and "1 recording(s), 1 catalogue row(s), 0 problem(s)" in out, out + err
    prefix = harness.recordings["url"].split("/", 3)[3] + "/"
    assert store_running.object_keys(prefix)
    status, out, err = await harness.hoop("prune", "--older-than", "0s")
    assert status == 0 and "removed 1 session(s)" in out, out + err
    assert store_running.object_keys(prefix) == []  # every segment and the manifest


async def test_a_store_away_for_a_while_costs_no_session_and_no_byte(harness, seaweed):
    if seaweed.process is None:
        seaweed.start()
    setup(harness, seaweed, spool_limit="200KiB")
    await harness.start()
    # a session that spans the outage, and one that runs entirely inside it
    spanning = asyncio.ensure_future(
        harness.ssh_direct(
            "alice+web1", "for i in $(seq 1 40); do echo tick $i; sleep 0.2; done", timeout=60
        )
    )
    await asyncio.sleep(1.0)
    await asyncio.to_thread(seaweed.stop)
    try:
        inside = await harness.ssh_direct("alice+web1", "echo during-the-outage")
        assert inside.status == 0 and "during-the-outage" in inside.out
        result = await spanning
        assert result.status == 0 and "tick 40" in result.out
        await sessions_finished(harness)
        assert harness.gateway is not None and harness.gateway.config.recordings is not None
        status = spool_status(harness.gateway.config.recordings, harness.data_dir)
        assert status.recordings == 2 and status.failing_since is not None, status
        assert not status.over_limit

        # past the limit, a new session is refused, and the caller is told why
        bulk = await harness.ssh_direct("alice+web1", "head -c 400000 /dev/urandom | base64")
        assert bulk.status == 0 and len(bulk.stdout) > 500_000
        await sessions_finished(harness)
        refused = await harness.ssh_direct("alice+web1", "echo should-not-run")
        assert refused.status != 0 and "should-not-run" not in refused.out
        assert "recording spool holds" in refused.err and "limit" in refused.err, refused.err
        assert seaweed.endpoint not in refused.err  # the store's address stays inside
        # a recording read while the store is away: a clear error, no traceback
        status_code, shown, err = await harness.hoop("info", _session(harness, 0))
        assert status_code == 1 and "cannot read: s3://" in err and "Traceback" not in err, err
        status_code, shown, err = await harness.hoop("verify", _session(harness, 0))
        assert status_code == 1 and "FAILED: cannot read: s3://" in shown, shown + err
        status_code, shown, err = await harness.hoop("status")  # what the operator sees
        assert status_code == 0, err
        assert "store FAILING since" in shown and "OVER THE LIMIT" in shown, shown
        assert "3 recording(s) waiting, limit 200.0 KiB" in shown, shown
    finally:
        await asyncio.to_thread(seaweed.start)
    await drained(harness)
    after = await harness.ssh_direct("alice+web1", "echo after-the-outage")
    assert after.status == 0 and "after-the-outage" in after.out
    await sessions_finished(harness)
    await drained(harness)
    status, out, err = await harness.hoop("verify", "--all")
    assert status == 0, out + err
    assert "4 recording(s), 4 catalogue row(s), 0 problem(s)" in out, out
    status, out, err = await harness.hoop("export", "--format", "text", _session(harness, 0))
    assert "tick 40" in out


async def test_a_store_stopped_for_a_minute_costs_typing_sessions_nothing(harness, seaweed):
    """Issue 15: the store stopped for a whole minute under sessions that keep typing. Every
    session goes on, sessions started during the outage work, the spool drains once the store
    is back, and every recording, read from the store, verifies with all its output."""
    if seaweed.process is None:
        seaweed.start()
    setup(harness, seaweed)
    await harness.start()
    typing = "for i in $(seq 1 150); do echo tick $i; sleep 0.5; done"  # about 75 s
    spanning = [
        asyncio.ensure_future(harness.ssh_direct("alice+web1", typing, timeout=150))
        for _ in range(3)
    ]
    await asyncio.sleep(2.0)
    await asyncio.to_thread(seaweed.stop)
    away_since = time.monotonic()
    try:
        during = 0
        while time.monotonic() - away_since < 60:
            short = await harness.ssh_direct("alice+web1", f"echo during-{during}")
            assert short.status == 0 and f"during-{during}" in short.out, short.err
            during += 1
            await asyncio.sleep(8.0)
        assert harness.gateway is not None and harness.gateway.config.recordings is not None
        status = spool_status(harness.gateway.config.recordings, harness.data_dir)
        assert status.failing_since is not None and not status.over_limit, status
    finally:
        await asyncio.to_thread(seaweed.start)
    for result in await asyncio.gather(*spanning):
        assert result.status == 0 and "tick 150" in result.out, result.err
    await sessions_finished(harness)
    await drained(harness, timeout=120)
    total = 3 + during
    status, out, err = await harness.hoop("verify", "--all")
    assert status == 0, out + err
    assert f"{total} recording(s), {total} catalogue row(s), 0 problem(s)" in out, out
    rows = SqliteCatalogue.in_data_dir(harness.data_dir).find_sessions(SessionQuery())
    assert all(is_url(row.path) for row in rows)  # read from the store, not the spool
    longest = max(rows, key=lambda row: (row.ended_at_us or 0) - row.started_at_us)
    status, out, err = await harness.hoop("export", "--format", "text", longest.id)
    assert status == 0 and "tick 150" in out, err


def _session(harness: GatewayHarness, index: int) -> str:
    rows = SqliteCatalogue.in_data_dir(harness.data_dir).find_sessions(SessionQuery())
    return sorted(rows, key=lambda row: row.started_at_us)[index].id


async def listening(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.returncode is None, f"the gateway exited: {log.read_text()[-3000:]}"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, "the gateway does not listen"
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return


async def _gateway_process(config: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    log = (config.parent / "gateway.log").open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hoop_tui",
        "gateway",
        "--config",
        str(config),
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


async def test_a_gateway_killed_mid_session_ships_its_spool_at_the_next_start(
    harness, store_running
):
    """kill -9 of a gateway process while a session prints the time every 50 ms: once it
    starts again, the recording in the store verifies up to at most a second before the kill."""
    setup(harness, store_running)
    config = harness.write_config()
    from proxy.config import load_config

    loaded = load_config(config)
    status, out, err = await harness.hoop("gateway", "--known-hosts")
    assert status == 0, err
    (harness.directory / "known_hosts").write_text(out)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    listen = [line for line in config.read_text().splitlines() if line.startswith("ssh_listen")]
    port = int(listen[0].split(":")[-1].strip('"'))
    gateway = await _gateway_process(config, env)
    try:
        await listening(port, gateway, config.parent / "gateway.log")
        client = await asyncio.create_subprocess_exec(
            "ssh",
            *harness.ssh_args("alice"),
            "-p",
            str(port),
            "alice+web1@127.0.0.1",
            "while :; do date +%s.%N; sleep 0.05; done",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        assert client.stdout is not None
        first = await asyncio.wait_for(client.stdout.readline(), 30)
        assert first.strip()
        await asyncio.sleep(7.0)  # past a signed checkpoint (every 5 s) and on
        killed_at = time.time()
        gateway.send_signal(signal.SIGKILL)
        await gateway.wait()
        await asyncio.wait_for(client.communicate(), 30)
    finally:
        if gateway.returncode is None:
            gateway.kill()
            await gateway.wait()

    data_dir = loaded.data_dir
    assert loaded.recordings is not None
    spool_dir = loaded.recordings.spool_in(data_dir)
    assert len(list(spool_dir.glob("*.hrec"))) == 1  # the store has not got all of it yet

    again = await _gateway_process(config, env)
    try:
        await listening(port, again, config.parent / "gateway.log")
        deadline = time.monotonic() + 60
        while list(spool_dir.glob("*.hrec")):
            assert time.monotonic() < deadline, "the spool was not uploaded"
            await asyncio.sleep(0.2)
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.wait_for(again.wait(), 30)

    (row,) = SqliteCatalogue.in_data_dir(data_dir).find_sessions(SessionQuery())
    assert is_url(row.path) and row.end_reason == CRASH_REASON
    with RecordingReader.open(row.path) as reader:
        stamps = [
            float(line)
            for event in reader.events()
            if event.name == "output"
            for line in event["data"].split()
        ]
        started = reader.header.started_at_us / 1e6
    assert stamps and killed_at - stamps[-1] <= 1.0, f"lost {killed_at - stamps[-1]:.2f} s"
    report = verify_recording(row.path, load_public_key(data_dir / PUBLIC_KEY_NAME))
    assert report.problem is not None and "incomplete recording" in report.problem
    assert report.signed_until_us is not None and report.signed_until_us > 0
    assert killed_at - (started + report.last_good_us / 1e6) <= 1.0, report.summary()
    status, out, err = await harness.hoop("verify", row.id)  # as an auditor sees it
    assert status == 0 and f"{row.path}: ended without a close" in out, out + err


async def test_recordings_made_on_local_disk_are_pushed_to_the_store(harness, store_running):
    """A gateway that recorded to its disk, then given a store: `push-recordings` moves each
    finished recording, and every command finds it in the store afterwards."""
    harness.add_user("alice")
    harness.add_target("web1")
    await harness.start()
    result = await harness.ssh_direct("alice+web1", "echo made-on-local-disk")
    assert result.status == 0
    await sessions_finished(harness)
    (local,) = (harness.data_dir / "recordings").rglob("*.hrec")
    harness.recordings = store_running.settings_table(
        url=f"s3://{store_running.bucket}/push-{uuid.uuid4().hex[:8]}"
    )
    harness.write_config()
    status, out, err = await harness.hoop("push-recordings", "--dry-run")
    assert status == 0 and f"would push {local.stem}" in out and local.exists(), out + err
    status, out, err = await harness.hoop("push-recordings")
    assert status == 0 and "pushed 1 recording(s)" in out and "0 failed" in out, out + err
    assert not local.exists()
    status, out, err = await harness.hoop("sessions", "--json")
    (row,) = json.loads(out)
    assert row["path"].startswith(harness.recordings["url"] + "/") and not row["recording_problem"]
    status, out, err = await harness.hoop("verify", local.stem)
    assert status == 0 and f"{row['path']}: OK" in out, out + err
    status, out, err = await harness.hoop("export", local.stem, "--format", "text")
    assert "made-on-local-disk" in out
    status, out, err = await harness.hoop("push-recordings")  # nothing left to move
    assert status == 0 and "pushed 0 recording(s)" in out


async def test_a_live_session_reads_from_the_store_as_still_being_written(harness, store_running):
    """While a session runs, the store holds it up to its last signed checkpoint: another
    instance (here the CLI) reads and verifies that much, and says it is still being written."""
    setup(harness, store_running)
    await harness.start()
    live = asyncio.ensure_future(
        harness.ssh_direct(
            "alice+web1", "for i in $(seq 1 30); do echo live $i; sleep 0.7; done", timeout=90
        )
    )
    await asyncio.sleep(5.0)  # the first shipping interval
    (row,) = SqliteCatalogue.in_data_dir(harness.data_dir).find_sessions(SessionQuery())
    assert row.ended_at_us is None and is_url(row.path)
    deadline = time.monotonic() + 12
    while True:  # what the store has so far (a loaded machine ships a little late)
        status, out, err = await harness.hoop("export", row.id, "--format", "text")
        if "live 2" in out:
            break
        assert time.monotonic() < deadline, out + err
        await asyncio.sleep(0.5)
    assert not live.done()
    status, out, err = await harness.hoop("verify", row.id)
    assert status == 0 and "still being written, intact so far" in out, out + err
    result = await live
    assert result.status == 0 and "live 30" in result.out
    await sessions_finished(harness)
    await drained(harness)
    status, out, err = await harness.hoop("verify", row.id)
    assert status == 0 and f"{row.path}: OK" in out, out + err
