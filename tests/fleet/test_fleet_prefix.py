"""Session-id prefixes across the fleet (`hoop-tui info 5e55aa`, as `sessions` shows ids): the
database matches the prefix, so a lookup reads a handful of rows, not the whole shared
catalogue; `%` and `_` in a prefix are plain characters; several matches are still an error."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.fleet.catalogue import FleetCatalogue
from storage.pg_state import PgState, migrate
from storage.schema import RecordingHeader
from tests.fleet.test_state_command import fleet_config, hoop

IDS = ["5e55aa0100000000", "5e55aa0200000000", "5e5a000300000000"] + [
    f"770000{n:010x}" for n in range(20)
]


def _fill(url: str) -> None:
    async def go() -> None:
        await migrate(url)
        store = await PgState.open(url, gateway_id="gw-b")
        try:
            for n, session_id in enumerate(IDS):
                header = RecordingHeader(
                    session_id, "alice", "web1", "ssh", 1_700_000_000_000_000 + n, "10.0.0.9:1",
                    gateway_id="gw-b",
                )  # fmt: skip
                await store.add_session(header, f"/elsewhere/{session_id}.hrec")
        finally:
            await store.close()

    asyncio.run(go())


def test_a_prefix_is_matched_by_the_database_with_wildcards_taken_literally(
    state_url: str,
) -> None:
    _fill(state_url)
    catalogue = FleetCatalogue(state_url)
    assert [row.id for row in catalogue.find_prefix("5e55aa01")] == ["5e55aa0100000000"]
    assert {row.id for row in catalogue.find_prefix("5e55")} == {
        "5e55aa0100000000",
        "5e55aa0200000000",
    }
    assert catalogue.find_prefix("5e5_") == []  # not a wildcard: no id has a '_'
    assert catalogue.find_prefix("5e%") == []
    assert len(catalogue.find_prefix("77", limit=6)) == 6  # enough to say "several"
    assert catalogue.problem is None


def test_info_by_prefix_finds_another_instances_session_and_refuses_an_ambiguous_one(
    tmp_path: Path, state_url: str
) -> None:
    _fill(state_url)
    config = fleet_config(tmp_path, state_url)
    (tmp_path / "data").mkdir()
    found = hoop("info", "5e55aa01", "--config", str(config))
    assert "/elsewhere/5e55aa0100000000.hrec" in found.stdout + found.stderr
    several = hoop("info", "5e55aa", "--config", str(config))
    assert several.returncode != 0
    assert "5e55aa: several sessions start with it" in several.stderr
    assert "5e55aa0100000000" in several.stderr and "5e55aa0200000000" in several.stderr
    many = hoop("info", "770000", "--config", str(config))
    assert "several sessions start with it" in many.stderr
