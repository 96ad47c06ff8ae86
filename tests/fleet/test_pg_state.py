"""The PostgreSQL state store on the machine's PostgreSQL, a fresh database per test: the
schema comes from `migrate`, two stores stand for two gateway instances."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from storage.catalogue import SessionQuery
from storage.pg_state import RESYNC, KeyMismatch, PgState, SchemaMismatch, migrate
from storage.schema import RecordingHeader
from storage.state import (
    AuditEntry,
    Decision,
    DuplicateId,
    Hint,
    Hold,
    HoldStatus,
    LiveSession,
    Refused,
)


def a_hold(hold_id: str = "h-1", gateway: str = "gw-a") -> Hold:
    now = time.time()
    return Hold(
        id=hold_id,
        session_id="s-1",
        gateway_id=gateway,
        user="alice",
        target="web1",
        command="cat /etc/shadow",
        rule="etc",
        approvers=["ops"],
        approvals_needed=1,
        created_at=now,
        expires_at=now + 300,
    )


def decide(by: str):  # what the broker's change function does, reduced to the race
    def change(hold: Hold) -> list[AuditEntry]:
        if hold.status is not HoldStatus.PENDING:
            raise Refused(f"hold {hold.id} is already {hold.status} by {hold.decided_by}")
        hold.decisions.append(Decision(by, True, "ok", time.time()))
        hold.status = HoldStatus.APPROVED
        hold.decided_at = time.time()
        return [AuditEntry(time.time(), by, "hold_approve", hold.id)]

    return change


async def two_instances(url: str) -> tuple[PgState, PgState]:
    await migrate(url)
    return (
        await PgState.open(url, gateway_id="gw-a"),
        await PgState.open(url, gateway_id="gw-b"),
    )


async def test_a_gateway_refuses_a_database_that_was_not_migrated(state_url: str) -> None:
    with pytest.raises(SchemaMismatch, match="hoop-tui state migrate"):
        await PgState.open(state_url, gateway_id="gw-a")
    assert [m.version for m in await migrate(state_url)] == [1]
    assert await migrate(state_url) == []  # nothing left to apply
    store = await PgState.open(state_url, gateway_id="gw-a")
    await store.close()


async def test_a_hold_raised_on_a_is_hinted_and_listed_on_b(state_url: str) -> None:
    a, b = await two_instances(state_url)
    try:
        await b.listening.wait()
        seen: asyncio.Queue[Hint] = asyncio.Queue()
        b.on_hint(seen.put_nowait)
        await a.add_hold(a_hold(), AuditEntry(time.time(), "alice", "hold_requested", "h-1"))
        hint = await asyncio.wait_for(seen.get(), 1.0)
        assert (hint.kind, hint.id, hint.origin) == ("hold", "h-1", "gw-a")
        assert [h.command for h in await b.list_holds(HoldStatus.PENDING)] == ["cat /etc/shadow"]
        with pytest.raises(DuplicateId):
            await b.add_hold(a_hold(), AuditEntry(time.time(), "alice", "hold_requested", "h-1"))
    finally:
        await a.close()
        await b.close()


async def test_two_approvers_on_two_instances_at_once_one_wins(state_url: str) -> None:
    a, b = await two_instances(state_url)
    try:
        for n in range(10):
            hold_id = f"h-{n}"
            await a.add_hold(a_hold(hold_id), AuditEntry(time.time(), "alice", "x", hold_id))
            results = await asyncio.gather(
                a.change_hold(hold_id, decide("bob")),
                b.change_hold(hold_id, decide("carol")),
                return_exceptions=True,
            )
            won = [r for r in results if isinstance(r, Hold)]
            lost = [r for r in results if isinstance(r, Refused)]
            assert len(won) == 1 and len(lost) == 1, results
            winner = won[0].decisions[0].by
            assert f"already approved by {winner}" in str(lost[0])
            stored = await b.get_hold(hold_id)
            assert stored is not None and len(stored.decisions) == 1
        approvals = [e for e in await a.audit_log() if e.action == "hold_approve"]
        assert len(approvals) == 10  # the refused decision wrote nothing
    finally:
        await a.close()
        await b.close()


async def test_a_silent_instance_has_its_sessions_ended_unknown_and_holds_withdrawn(
    state_url: str,
) -> None:
    a, b = await two_instances(state_url)
    try:
        await a.heartbeat(host="hosta", starting=True)
        await b.heartbeat(host="hostb", starting=True)
        header = RecordingHeader(
            "s-1", "alice", "web1", "ssh", int(time.time() * 1e6), "10.0.0.9:5"
        )
        header.gateway_id = "gw-a"
        await a.add_session(header, "/data/s-1.hrec")
        await a.register_live(LiveSession("s-1", "gw-a", "alice", "web1", "ssh", "x", time.time()))
        await a.add_hold(a_hold(), AuditEntry(time.time(), "alice", "x", "h-1"))
        assert await b.reap(stale_after_s=5) == []  # a is fresh
        assert await b.reap(stale_after_s=5, now=time.time() + 10) == ["gw-a"]
        assert await b.reap(stale_after_s=5, now=time.time() + 10) == []  # once
        row = await b.get_session("s-1")
        assert row is not None and row.end_reason is not None
        assert row.end_reason.startswith("ended-unknown")
        assert await b.live_sessions() == []
        hold = await b.get_hold("h-1")
        assert hold is not None and hold.status is HoldStatus.WITHDRAWN
        assert "gw-a stopped" in hold.note
        states = {i.id: i.state for i in await b.instances()}
        assert states == {"gw-a": "lost", "gw-b": "up"}
        await a.heartbeat(host="hosta", starting=True)  # A comes back
        assert {i.id: i.state for i in await b.instances()}["gw-a"] == "up"
        assert len(await b.find_sessions(SessionQuery(user="alice"))) == 1
    finally:
        await a.close()
        await b.close()


async def test_an_instance_with_other_keys_is_refused(state_url: str) -> None:
    a, b = await two_instances(state_url)
    try:
        await a.check_keys({"ssh_host_key": "SHA256:aaa", "signing_key": "SHA256:sss"})
        await b.check_keys({"ssh_host_key": "SHA256:aaa", "signing_key": "SHA256:sss"})
        with pytest.raises(KeyMismatch, match=r"ssh_host_key is SHA256:bbb.*gw-a.*SHA256:aaa"):
            await b.check_keys({"ssh_host_key": "SHA256:bbb", "signing_key": "SHA256:sss"})
    finally:
        await a.close()
        await b.close()


async def test_after_losing_notifications_every_receiver_is_told_to_read_all_again(
    state_url: str,
) -> None:
    a, b = await two_instances(state_url)
    try:
        await b.listening.wait()
        seen: asyncio.Queue[Hint] = asyncio.Queue()
        b.on_hint(seen.put_nowait)
        async with await psycopg.AsyncConnection.connect(state_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
            )
        hint = await asyncio.wait_for(seen.get(), 5.0)
        assert hint.kind == RESYNC
    finally:
        await a.close()
        await b.close()
