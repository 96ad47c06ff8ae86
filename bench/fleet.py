"""Fleet benchmarks (issue 15), each against a baseline measured in the same run.

1. A hold raised on instance A to listed on instance B: A commits the hold to PostgreSQL, B
   hears the NOTIFY on its LISTEN connection and reads the pending holds; p50 and p99 over
   `--holds` holds. Baseline: the embedded SQLite store, raised and listed by one instance.
2. Sessions per second across two gateway instances behind HAProxy against one instance behind
   the same HAProxy: `--clients` concurrent asyncssh callers each run `true` on the target, over
   and over, for `--seconds`. On a machine with few cores the two instances share them, so the
   ratio says what the balancer and the shared state cost more than what a second host gains.
3. If bench/fleet_storage.py is present (recordings to S3 against local disk, seeks), it runs
   too.

    python bench/fleet.py [--holds 300] [--seconds 10] [--clients 8] [--skip-sessions]
                          [--storage "ARGS for fleet_storage.py" | --storage skip]

Needs the machine's PostgreSQL on 127.0.0.1:5432 (a fresh database per run, dropped after),
sshd and HAProxy. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import proxy  # noqa: F401  (filters asyncssh's DSA warning before asyncssh loads)
from storage.pg_state import PgState, migrate
from storage.sqlite_state import SqliteState
from storage.state import AuditEntry, Hint, Hold, HoldStatus
from tests.fixtures.pgstate import fresh_database


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def a_hold(hold_id: str, gateway: str) -> Hold:
    now = time.time()
    return Hold(hold_id, "s", gateway, "alice", "web1", "id", "r", ["ops"], 1, now, now + 600)


async def hold_latency_pg(url: str, count: int) -> list[float]:
    await migrate(url)
    a = await PgState.open(url, gateway_id="gw-a")
    b = await PgState.open(url, gateway_id="gw-b")
    try:
        await b.listening.wait()
        heard: dict[str, asyncio.Event] = {}

        def hint(h: Hint) -> None:
            if h.kind == "hold" and h.id in heard:
                heard[h.id].set()

        b.on_hint(hint)
        times = []
        for n in range(count):
            hold_id = f"h-{n:06x}"
            heard[hold_id] = asyncio.Event()
            start = time.perf_counter()
            await a.add_hold(a_hold(hold_id, "gw-a"), AuditEntry(time.time(), "a", "x", hold_id))
            await heard[hold_id].wait()
            listed = await b.get_hold(hold_id)  # what B's holds list shows, read again
            assert listed is not None and listed.status is HoldStatus.PENDING
            times.append(time.perf_counter() - start)
        return times
    finally:
        await a.close()
        await b.close()


async def hold_latency_sqlite(directory: Path, count: int) -> list[float]:
    store = SqliteState.in_data_dir(directory, gateway_id="gw-a")
    try:
        times = []
        for n in range(count):
            hold_id = f"h-{n:06x}"
            start = time.perf_counter()
            await store.add_hold(
                a_hold(hold_id, "gw-a"), AuditEntry(time.time(), "a", "x", hold_id)
            )
            listed = await store.get_hold(hold_id)
            assert listed is not None
            times.append(time.perf_counter() - start)
        return times
    finally:
        await store.close()


def report_holds(count: int) -> None:
    with fresh_database() as url:
        pg = asyncio.run(hold_latency_pg(url, count))
    with tempfile.TemporaryDirectory() as tmp:
        lite = asyncio.run(hold_latency_sqlite(Path(tmp), count))
    print(f"hold raised on A -> listed on B (PostgreSQL, NOTIFY), {count} holds:")
    print(
        f"  p50 {statistics.median(pg) * 1e3:.2f} ms   p99 {percentile(pg, 0.99) * 1e3:.2f} ms"
        f"   max {max(pg) * 1e3:.2f} ms"
    )
    print("baseline: raised and read back on one embedded instance (SQLite):")
    print(
        f"  p50 {statistics.median(lite) * 1e3:.2f} ms   p99 {percentile(lite, 0.99) * 1e3:.2f} ms"
    )
    print(
        f"  ratio p50 {statistics.median(pg) / statistics.median(lite):.1f}x,"
        f" p99 {percentile(pg, 0.99) / percentile(lite, 0.99):.1f}x"
    )


async def sessions_per_second(fleet: object, frontend: str, seconds: float, clients: int) -> float:
    import asyncssh

    from tests.fleet.harness import Fleet

    assert isinstance(fleet, Fleet)
    key = asyncssh.read_private_key(fleet.directory / "alice_key")
    known = fleet.directory / "known_hosts"
    if not known.exists():
        line = fleet.hoop_sync(next(iter(fleet.instances)), "gateway", "--known-hosts").stdout
        known.write_text(line.strip() + "\n")
    done = 0
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            async with asyncssh.connect(
                "127.0.0.1",
                fleet.port(frontend),
                username="alice+web1",
                client_keys=[key],
                known_hosts=str(known),
                agent_path=None,
            ) as conn:
                result = await conn.run("true", check=False)
                if result.exit_status == 0:
                    done += 1

    start = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return done / (time.monotonic() - start)


def report_sessions(seconds: float, clients: int) -> None:
    from tests.fixtures.processes import stop
    from tests.fixtures.sshd import start_sshd
    from tests.fleet.harness import Fleet

    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        sshd = start_sshd(Path(tmp) / "sshd")
        fleet = Fleet(Path(tmp) / "fleet", sshd, url, heartbeat="1s", lost_after="5s")
        try:
            fleet.start()
            asyncio.run(sessions_per_second(fleet, "ssh", 2, clients))  # warm up both
            one = asyncio.run(sessions_per_second(fleet, "ssh_gw-a", seconds, clients))
            two = asyncio.run(sessions_per_second(fleet, "ssh", seconds, clients))
        finally:
            fleet.stop()
            stop(sshd.process)
    print(f"SSH sessions per second through HAProxy, {clients} concurrent callers, {seconds:g} s:")
    print(f"  one instance  {one:7.1f}/s")
    print(f"  two instances {two:7.1f}/s   ratio {two / one:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holds", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip-sessions", action="store_true")
    parser.add_argument(
        "--storage",
        default="",
        metavar="ARGS",
        help='arguments for bench/fleet_storage.py ("--size-mb 16 --rounds 1"), or "skip"',
    )
    args = parser.parse_args()
    report_holds(args.holds)
    if not args.skip_sessions:
        report_sessions(args.seconds, args.clients)
    storage_bench = Path(__file__).with_name("fleet_storage.py")
    if storage_bench.exists() and args.storage != "skip":
        print(flush=True)
        return subprocess.call([sys.executable, str(storage_bench), *shlex.split(args.storage)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
