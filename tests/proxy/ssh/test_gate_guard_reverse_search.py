"""Class 4 of issue 12: the reverse-search row spoofed. A history entry holding the text of a
search prompt, found with Ctrl-R, made the row read as a harmless command."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.gateway import GatewayHarness
from tests.proxy.ssh.guard import Agent, canary, start_guard


async def search_and_run(harness: GatewayHarness, tmp_path: Path, entry: str, search: str) -> Agent:
    (tmp_path / "history").write_text(entry + "\n")
    agent = await Agent.start(harness, tmp_path)
    agent.send(b"\x12")
    await agent.quiet(0.5)
    agent.send(search.encode())
    await agent.quiet(0.5)
    await agent.run(b"\r", "done-1")
    return agent


async def test_a_search_string_that_looks_like_the_end_of_the_search_prompt(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await search_and_run(harness, tmp_path, "rm x-canary #Q': true #", "Q': true #")
    try:
        assert target.exists(), bytes(agent.seen)
        assert b"[hoop]" in agent.seen
    finally:
        await agent.close()


async def test_a_search_string_and_its_enter_in_one_write(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    (tmp_path / "history").write_text("rm x-canary #Q': true #\n")
    agent = await Agent.start(harness, tmp_path)
    try:
        await agent.run(b"\x12Q': true #\r", "done-1")
        assert target.exists(), bytes(agent.seen)
    finally:
        await agent.close()


async def test_an_ordinary_reverse_search_still_runs_what_it_found(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    agent = await search_and_run(harness, tmp_path, "touch found-by-search", "found-by")
    try:
        assert (tmp_path / "found-by-search").exists(), bytes(agent.seen)
        assert b"[hoop]" not in agent.seen
    finally:
        await agent.close()


async def test_a_denied_line_found_by_search_is_denied(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    await start_guard(harness)
    target = canary(tmp_path)
    agent = await search_and_run(harness, tmp_path, "rm x-canary", "x-can")
    try:
        assert target.exists(), bytes(agent.seen)
        assert b"[hoop] denied" in agent.seen
    finally:
        await agent.close()


async def test_a_search_string_with_the_separator_and_no_space(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """`[^']*': ?` took the first quote for the end of the search text: with no space after
    the colon the found line was read inside a quoted word that no `rm -rf` rule matches."""
    await start_guard(harness)
    (tmp_path / "keep").mkdir()
    agent = await search_and_run(harness, tmp_path, "rm -rf keep #Q':true#", "Q':true#")
    try:
        assert (tmp_path / "keep").is_dir(), bytes(agent.seen)
    finally:
        await agent.close()
