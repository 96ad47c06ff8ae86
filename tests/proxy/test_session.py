"""GatewaySession: one session API for SSH and PostgreSQL, on a real recording in a temp data
directory: typed events land in the file, the tap sees what was written (masked), a broken or
unopenable recording ends the session (fail closed), and a slow recorder pauses the owner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy.auth import Identity
from proxy.config import load_config
from proxy.policy import Action, Basis, Verdict
from proxy.session import GatewaySession, RecordingUnavailable, SessionRegistry
from storage.catalogue import SqliteCatalogue
from storage.reader import RecordingReader
from storage.schema import EventType

ALICE = Identity("alice", frozenset({"dev"}))
CARD = "4111 1111 1111 1111"


class Owner:
    """A protocol layer as the session sees it: what it was asked to do."""

    def __init__(self) -> None:
        self.pauses: list[bool] = []
        self.ended: list[tuple[str, str]] = []

    def pause_for_recording(self, paused: bool) -> None:
        self.pauses.append(paused)

    def end_session(self, reason: str, message: str) -> None:
        self.ended.append((reason, message))


def config_in(tmp_path: Path, masks: str = ""):
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[targets]]\nname = "appdb"\nprotocol = "postgres"\nhost = "127.0.0.1"\n'
        'port = 5432\ngroups = ["*"]\n' + masks
    )
    return load_config(path)


def new_session(tmp_path: Path, registry: SessionRegistry, owner: Owner, **kw) -> GatewaySession:
    config = config_in(tmp_path, kw.pop("masks", ""))
    return GatewaySession(registry, config, ALICE, "appdb", "postgres", "127.0.0.1:5", owner, **kw)


def read(path: Path):
    with RecordingReader.open(path) as reader:
        return reader.header, list(reader.events()), reader.end_reason


async def test_typed_events_are_recorded_and_the_session_is_listed_until_it_closes(
    tmp_path: Path,
):
    registry, owner = SessionRegistry(), Owner()
    session = new_session(tmp_path, registry, owner, extra={"database": "appdb"})
    assert registry.live() == {}  # not recorded yet: not listed
    await session.start()
    assert registry.live() == {session.id: session}
    assert session.record_sql_statement("select 1", [])
    assert session.record_verdict(0, Verdict(Action.ALLOW, Basis.RULE, "", rule="reads"))
    assert session.record_sql_result(["?column?"], 1, [["1"]], 250)
    assert session.record_sql_error("42P01", 'relation "nope" does not exist')
    row = session.describe()
    assert (row["user"], row["target"], row["protocol"]) == ("alice", "appdb", "postgres")
    path = session.recording.path
    await session.close("client disconnected")
    assert registry.live() == {} and not session.record_sql_statement("select 2", [])
    header, events, end_reason = read(path)
    assert header.protocol == "postgres" and header.extra["database"] == "appdb"
    assert [e.name for e in events] == [
        "sql_statement",
        "verdict",
        "sql_result",
        "sql_error",
        "session_end",
    ]
    assert events[2]["rows"] == 1 and events[3]["sqlstate"] == "42P01"
    assert end_reason == "client disconnected"
    row = SqliteCatalogue.in_data_dir(tmp_path / "data").get_session(header.session_id)
    assert row is not None and row.end_reason == "client disconnected"


async def test_the_tap_sees_what_the_recording_holds_masked(tmp_path: Path):
    seen: list[tuple[EventType, tuple]] = []
    registry = SessionRegistry(tap=lambda s, kind, fields: seen.append((kind, fields)))
    masks = '[[masks]]\nname = "cards"\ndetector = "credit_card"\n'
    session = new_session(tmp_path, registry, Owner(), masks=masks)
    await session.start()
    session.record_sql_statement(f"select '{CARD}'", [])
    path = session.recording.path
    await session.close("done")
    _, events, _ = read(path)
    assert CARD not in events[0]["statement"]
    assert seen == [(EventType.SQL_STATEMENT, (events[0]["statement"], []))]


async def test_a_recording_that_cannot_be_opened_refuses_the_session(tmp_path: Path):
    registry, owner = SessionRegistry(), Owner()
    session = new_session(tmp_path, registry, owner)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "recordings").write_text("not a directory")
    with pytest.raises(RecordingUnavailable):
        await session.start()
    assert not session.record_sql_statement("select 1", []) and registry.live() == {}


async def test_a_recording_that_breaks_ends_the_session_through_its_owner(tmp_path: Path):
    registry, owner = SessionRegistry(), Owner()
    session = new_session(tmp_path, registry, owner)
    await session.start()
    session.recording._fail(OSError("disk gone"))  # what the writer thread does on an error
    assert not session.record_sql_statement("select 1", [])
    await asyncio.sleep(0)
    assert owner.ended[0][0] == "recording failed"
    assert "recording failed" in owner.ended[0][1]
    await session.close("recording failed")


async def test_a_congested_recorder_pauses_the_owner_until_it_drains(tmp_path: Path):
    registry, owner = SessionRegistry(), Owner()
    session = new_session(tmp_path, registry, owner)
    await session.start()
    chunk = b"x" * (1024 * 1024)
    for _ in range(20):  # more than the high-water mark, faster than it is written
        assert session.record_output(0, chunk)
    for _ in range(200):
        if owner.pauses == [True, False]:
            break
        await asyncio.sleep(0.05)
    assert owner.pauses == [True, False]
    assert session.describe()["bytes_out"] == 20 * len(chunk)
    await session.close("done")
