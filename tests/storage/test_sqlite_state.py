"""The embedded state store (storage/sqlite_state.py) against the StateStore promises: one
transaction per change, a refused change writes nothing, ids are unique, hints follow commits,
and no SQLite call runs on the event loop's thread."""

from __future__ import annotations

import threading

import pytest

from storage.sqlite_state import SqliteState
from storage.state import (
    AuditEntry,
    DuplicateId,
    Hint,
    Hold,
    HoldStatus,
    LiveSession,
    Refused,
)


def _hold(hold_id: str = "h-1") -> Hold:
    return Hold(hold_id, "s1", "gw-1", "alice", "web1", "ls", "r", ["oncall"], 1, 10.0, 70.0)


@pytest.fixture
async def store(tmp_path):
    state = SqliteState.in_data_dir(tmp_path, gateway_id="gw-1")
    yield state
    await state.close()


async def test_a_refused_change_writes_nothing_and_a_hold_round_trips(store):
    await store.add_hold(_hold(), AuditEntry(10.0, "alice", "hold_requested", "h-1"))

    def refuse(hold: Hold) -> list[AuditEntry]:
        hold.status = HoldStatus.APPROVED
        raise Refused("no")

    with pytest.raises(Refused, match="no"):
        await store.change_hold("h-1", refuse)
    assert (await store.get_hold("h-1")) == _hold()
    assert [e.action for e in await store.audit_log()] == ["hold_requested"]
    assert await store.change_hold("h-404", refuse) is None


async def test_a_change_and_its_audit_entries_land_together(store):
    await store.add_hold(_hold(), AuditEntry(10.0, "alice", "hold_requested", "h-1"))

    def approve(hold: Hold) -> list[AuditEntry]:
        hold.status = HoldStatus.APPROVED
        return [AuditEntry(11.0, "bob", "hold_approved", hold.id, {"reason": "ok"})]

    changed = await store.change_hold("h-1", approve)
    assert changed is not None and changed.status is HoldStatus.APPROVED
    assert await store.list_holds(HoldStatus.PENDING) == []
    assert [h.id for h in await store.list_holds(HoldStatus.APPROVED)] == ["h-1"]
    assert [(e.actor, e.detail) for e in await store.audit_log(limit=1)] == [
        ("bob", {"reason": "ok"})
    ]


async def test_an_id_in_use_is_refused(store):
    await store.add_hold(_hold(), AuditEntry(10.0, "alice", "hold_requested", "h-1"))
    with pytest.raises(DuplicateId):
        await store.add_hold(_hold(), AuditEntry(10.0, "alice", "hold_requested", "h-1"))
    assert len(await store.audit_log()) == 1


async def test_hints_follow_each_commit_and_stop_when_asked(store):
    hints: list[Hint] = []
    stop = store.on_hint(hints.append)
    await store.add_hold(_hold(), AuditEntry(10.0, "alice", "hold_requested", "h-1"))
    await store.register_live(LiveSession("s1", "gw-1", "alice", "web1", "ssh", "::1", 1.0))
    stop()
    stop()  # twice is harmless
    await store.unregister_live("s1")
    assert hints == [Hint("hold", "h-1", "gw-1"), Hint("session", "s1", "gw-1")]


async def test_live_sessions_and_failed_logins(store):
    await store.register_live(LiveSession("s1", "gw-1", "alice", "web1", "ssh", "::1", 1.0))
    await store.register_live(LiveSession("s2", "gw-2", "bob", "db1", "postgres", "::1", 2.0))
    assert [s.id for s in await store.live_sessions("gw-2")] == ["s2"]
    await store.unregister_live("s2")
    assert [s.id for s in await store.live_sessions()] == ["s1"]
    counts = [await store.note_login_failure("person:carol", at, 60.0) for at in (0, 10, 100)]
    assert counts == [1, 2, 1]  # the first two were forgotten 60 s on
    await store.clear_login_failures("person:carol")
    assert await store.note_login_failure("person:carol", 101, 60.0) == 1


async def test_no_call_runs_on_the_event_loops_thread(store, monkeypatch):
    seen: set[str] = set()
    real = Hold.from_json.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Hold], data: dict) -> Hold:
        seen.add(threading.current_thread().name)
        return real(cls, data)

    await store.add_hold(_hold(), AuditEntry(10.0, "alice", "hold_requested", "h-1"))
    monkeypatch.setattr(Hold, "from_json", classmethod(spy))

    def touch(hold: Hold) -> list[AuditEntry]:
        seen.add(threading.current_thread().name)
        return []

    await store.change_hold("h-1", touch)
    assert seen and threading.main_thread().name not in seen
    assert all(name.startswith("sqlite-state.db") for name in seen)
