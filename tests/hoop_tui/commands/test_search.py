"""`hoop-tui search`: sessions found by what happened in them, through a real gateway and real
OpenSSH (issue 17: search across recordings)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from storage.search import SearchIndex
from tests.fixtures.gateway import GatewayHarness

pytestmark = pytest.mark.timeout(120)


async def indexed(harness: GatewayHarness, count: int, timeout: float = 15) -> None:
    index = SearchIndex.in_data_dir(harness.directory / "data")
    deadline = time.monotonic() + timeout
    while len(index.indexed_sessions()) < count:
        assert time.monotonic() < deadline, "the closed sessions were not indexed"
        await asyncio.sleep(0.1)


def alice_on_web1(harness: GatewayHarness) -> None:
    harness.add_user("alice", groups=("dev",))
    harness.add_target("web1")


async def test_a_session_is_found_by_its_output_and_its_command(harness: GatewayHarness):
    alice_on_web1(harness)
    harness.add_rule("no-recursive-delete", shell="rm -rf *", action="deny", message="no")
    harness.masks.append({"name": "cards", "detector": "credit_card"})
    await harness.start_runtime()
    shown = await harness.ssh_jump(
        "alice", "web1", "printf 'quartz-%s\\n' 42; echo 4111111111111111"
    )
    assert "quartz-42" in shown.out
    denied = await harness.ssh_jump("alice", "web1", "rm -rf /tmp/hoop-search-never")
    assert denied.status == 126
    await indexed(harness, 2)  # indexed as each recording closed

    code, out, err = await harness.hoop("search", "quartz-42")
    assert code == 0, err
    (line,) = out.splitlines()
    assert "alice@web1" in line and "[quartz" in line and "output" in line

    code, out, _ = await harness.hoop("search", "rm -rf /tmp/hoop-search-never", "--json")
    hits = json.loads(out)
    assert "exec" in {hit["kind"] for hit in hits}
    assert all(hit["path"].endswith(".hrec") for hit in hits)
    code, out, _ = await harness.hoop("search", "deny by rule no-recursive-delete", "--json")
    assert "verdict" in {hit["kind"] for hit in json.loads(out)}

    code, out, _ = await harness.hoop("search", "4111111111111111")
    assert code == 1 and out == ""  # masked in the recording, so masked in the index

    code, _, err = await harness.hoop("search", "quartz-42", "--user", "bob")
    assert code == 1 and "nothing matches" in err


async def test_sessions_closed_while_nothing_indexed_are_caught_up(harness: GatewayHarness):
    alice_on_web1(harness)
    await harness.start_runtime()
    await harness.ssh_jump("alice", "web1", "echo obsidian-catchup")
    await indexed(harness, 1)
    SearchIndex.in_data_dir(harness.directory / "data").forget(
        next(iter(SearchIndex.in_data_dir(harness.directory / "data").indexed_sessions()))
    )
    code, out, err = await harness.hoop("search", "obsidian-catchup")
    assert code == 0, err
    assert "obsidian" in out
