"""Failed logins on one instance slow the same guesses on another (within a heartbeat)."""

from __future__ import annotations

import asyncio

from proxy.auth import LoginThrottle
from proxy.fleet.throttle import FleetThrottle
from storage.pg_state import PgState, migrate


def second_wait(throttle: LoginThrottle, name: str) -> float:
    """Two attempts in a row from a fresh address: how long the second must wait."""
    throttle.reserve(("203.0.113.9", name))
    return throttle.reserve(("203.0.113.10", name))


async def test_guesses_on_a_slow_down_the_same_name_on_b(state_url: str) -> None:
    await migrate(state_url)
    a_store = await PgState.open(state_url, gateway_id="gw-a")
    b_store = await PgState.open(state_url, gateway_id="gw-b")
    try:
        a = FleetThrottle.like(LoginThrottle(), a_store)
        b = FleetThrottle.like(LoginThrottle(), b_store)
        not_pulled = FleetThrottle.like(LoginThrottle(), b_store)
        for n in range(6):  # six wrong passwords for Mallory on A, from six addresses
            key = (f"198.51.100.{n}", "Mallory")
            a.reserve(key)
            a.failed(key)
        await asyncio.gather(*a.tasks)
        await b.pull()  # B's heartbeat
        assert second_wait(b, "mallory") > 0.0  # B spaces her attempts too
        assert second_wait(not_pulled, "mallory") == 0.0  # what B did before the fleet
        assert second_wait(b, "carol") == 0.0  # nobody else is slowed
    finally:
        await a_store.close()
        await b_store.close()


def test_counts_from_elsewhere_go_through_the_throttles_public_seam() -> None:
    throttle = LoginThrottle(max_entries=2)
    throttle.raise_counts({"mallory": 6}, {"198.51.100.7": 12})
    assert second_wait(throttle, "mallory") > 0.0
    throttle.raise_counts({"mallory": 1}, {})  # a count never goes down
    assert throttle.people.entries["mallory"].failures == 6
    throttle.raise_counts({"eve": 9, "trent": 9}, {})  # full: the table's own rules stand
    assert len(throttle.people.entries) == 2


def test_the_fleet_reaches_into_no_other_modules_private_names() -> None:
    """proxy/fleet extends the gateway through public seams (ControlServer.handler,
    LoginThrottle.raise_counts), not its private attributes."""
    import ast
    from pathlib import Path

    import proxy.fleet

    found = []
    for path in sorted(Path(proxy.fleet.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith(
                "proxy.fleet"
            ):
                found += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert found == []
