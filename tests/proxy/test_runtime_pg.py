"""PostgreSQL sessions are gateway sessions like SSH's (issue 14): a real psql through a whole
gateway runtime is in the live list as a postgres session, can be watched (its statement
timeline so far, then each statement as it comes), and the approver of a held statement sees
that timeline beside the hold."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from proxy.holds.broker import Person
from proxy.pg.scram import make_verifier
from tests.fixtures.gateway import GatewayHarness, toml_table
from tests.fixtures.processes import free_port

ALICE_PW = "alice-pw"
BOB = Person("bob", frozenset({"oncall"}))
CARD = "4111 1111 1111 1111"


@pytest.fixture
async def pg_runtime(harness: GatewayHarness, postgres: tuple[str, int]) -> GatewayHarness:
    host, port = postgres
    harness.add_user("alice", password=ALICE_PW, key=False, groups=("dev",))
    harness.add_user("bob", key=False, groups=("oncall",))
    harness.targets.append(
        {
            "name": "appdb",
            "protocol": "postgres",
            "host": host,
            "port": port,
            "database": "test",
            "user": "root",
            "groups": ["dev"],
        }
    )
    harness.add_rule(
        "review-writes", sql=["write"], action="review", approvers=["oncall"], timeout="1m"
    )
    harness.masks.append({"name": "cards", "detector": "credit_card"})
    harness.gateway_settings["pg_listen"] = f"127.0.0.1:{free_port()}"
    verifier = make_verifier(ALICE_PW, iterations=256).encode()
    harness.extra_toml = toml_table("[postgres]", {"allow_plain": True}) + toml_table(
        "[postgres.scram]", {"alice": verifier}
    )
    await harness.start_runtime()
    return harness


def psql(harness: GatewayHarness, script: str) -> asyncio.Future[tuple[int, bytes, bytes]]:
    """psql as alice on `appdb` through the gateway, reading `script` from stdin."""
    assert harness.runtime is not None and harness.runtime.pg is not None
    env = dict(
        os.environ,
        PGHOST="127.0.0.1",
        PGPORT=str(harness.runtime.pg.port),
        PGUSER="alice",
        PGDATABASE="appdb",
        PGPASSWORD=ALICE_PW,
        PGSSLMODE="disable",
        PGCONNECT_TIMEOUT="10",
    )

    async def run() -> tuple[int, bytes, bytes]:
        process = await asyncio.create_subprocess_exec(
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(process.communicate(script.encode()), 60)
        return process.returncode or 0, out, err

    return asyncio.ensure_future(run())


async def until(probe, timeout: float = 20):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await probe()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_held_statement_shows_its_session_listed_watched_and_its_timeline(
    pg_runtime: GatewayHarness, tmp_path: Path
):
    from proxy.holds.control import ControlClient, socket_path

    harness = pg_runtime
    assert harness.runtime is not None
    client = psql(
        harness,
        f"select 41 + 1 as answer, '{CARD}' as card;\n"
        "create temp table held_here (x int);\n"
        "insert into held_here values (7);\n"
        "select count(*) as rows_now from held_here;\n",
    )
    tickets = harness.runtime.control.tickets
    bob = await ControlClient.connect(socket_path(harness.data_dir), ticket=tickets.issue(BOB))
    carol = await ControlClient.connect(
        socket_path(harness.data_dir), ticket=tickets.issue(Person("carol", frozenset({"qa"})))
    )
    try:
        (hold,) = await until(lambda: bob.call("holds.list"))
        assert "insert into held_here" in hold["command"]
        # the approver sees the requester's session in the live list, as a PostgreSQL one
        (listed,) = await bob.call("sessions.list")
        assert listed["id"] == hold["session_id"]
        assert (listed["user"], listed["target"], listed["protocol"]) == (
            "alice",
            "appdb",
            "postgres",
        )
        # beside the hold: the statement timeline so far, masked as recorded
        screen = await bob.call("sessions.screen", id=hold["session_id"])
        shown = "\n".join(screen["lines"])
        assert "select 41 + 1 as answer" in shown and "1 row(s)" in shown
        assert "insert into held_here values (7)" in shown
        assert f"HELD for review (review-writes): {hold['id']}" in shown
        assert CARD not in shown  # masked as the recording holds it
        # watching it: what comes after, line by line
        watched = await bob.call("sessions.watch", id=hold["session_id"])
        assert (watched["user"], watched["target"]) == ("alice", "appdb")
        await bob.call("holds.decide", id=hold["id"], approve=True, reason="fine")
        seen = b""
        events = bob.events()
        while b"rows_now" not in seen:
            message = await asyncio.wait_for(anext(events), 20)
            if message["event"] == "session.output":
                seen += message["data"]["data"]
        assert b"hold approved by bob" in seen
        # someone who may not decide the hold sees none of it
        assert await carol.call("sessions.list") == []
    finally:
        await bob.close()
        await carol.close()
    code, out, err = await client
    assert code == 0, err
    assert b"INSERT 0 1" in out and b"42" in out
    assert harness.runtime.sessions.live() == {}
