"""Two instances as fleet members on one PostgreSQL: each registers with a heartbeat and copies
its live sessions and catalogue rows into the shared store; when one stops heart-beating the
other ends its sessions (ended-unknown) and withdraws its holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxy.fleet.member import FleetMember
from proxy.fleet.settings import StateSettings
from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.pg_state import PgState, migrate
from storage.schema import RecordingHeader
from storage.state import AuditEntry, Hold, HoldStatus, LiveSession

FAST = StateSettings(url="", heartbeat_s=0.1, lost_after_s=0.5)


async def eventually(check, timeout: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout, "not within the time allowed"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_crashed_instance_is_noticed_and_its_work_ended(
    state_url: str, tmp_path: Path
) -> None:
    await migrate(state_url)
    a = await PgState.open(state_url, gateway_id="gw-a")
    b = await PgState.open(state_url, gateway_id="gw-b")
    data_a = tmp_path / "a"
    header = RecordingHeader("5e55a001", "alice", "web1", "ssh", int(time.time() * 1e6), "x:1")
    header.gateway_id = "gw-a"
    SqliteCatalogue.in_data_dir(data_a).add_session(header, data_a / "r.hrec")
    member_a = FleetMember(a, FAST, data_dir=data_a)
    member_a.live = lambda: [
        LiveSession("5e55a001", "gw-a", "alice", "web1", "ssh", "x:1", time.time())
    ]
    member_b = FleetMember(b, FAST, data_dir=tmp_path / "b")
    try:
        await member_a.start()
        await member_b.start()
        now = time.time()
        hold = Hold(
            "h-1", "5e55a001", "gw-a", "alice", "web1", "id", "r", ["ops"], 1, now, now + 60
        )
        await a.add_hold(hold, AuditEntry(now, "alice", "hold_requested", "h-1"))

        async def b_sees_it() -> bool:
            rows = await b.find_sessions(SessionQuery(user="alice"))
            return bool(rows) and [s.id for s in await b.live_sessions()] == ["5e55a001"]

        await eventually(b_sees_it, 2.0)
        assert member_a._task is not None
        member_a._task.cancel()  # A dies: no more heartbeats, no clean stop

        async def ended_unknown() -> bool:
            row = await b.get_session("5e55a001")
            return row is not None and (row.end_reason or "").startswith("ended-unknown")

        await eventually(ended_unknown, 3.0)
        assert await b.live_sessions() == []
        withdrawn = await b.get_hold("h-1")
        assert withdrawn is not None and withdrawn.status is HoldStatus.WITHDRAWN
        assert member_b.reaped == ["gw-a"]
    finally:
        await member_b.stop()
        await a.close()
        await b.close()
