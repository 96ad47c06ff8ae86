"""The fleet soak (issue 15): SSH sessions typing and PostgreSQL clients querying through HAProxy
into two gateway instances on one shared PostgreSQL state, for `--minutes`, with one instance
killed (SIGKILL) half way and started again. At the end it checks:

- every recording verifies (`hoop-tui verify --all` on each instance's data directory);
- the shared catalogue lists every session once (no session id twice, none missing of those the
  callers completed);
- the surviving instance's (gw-b's) memory (VmRSS) and open files, idle once the callers are
  gone and its files have stopped changing for 3 s, are within 10% of what they were idle
  after a warm-up cycle of the same load (`--warm-up-minutes`, gw-a killed and restarted in it
  too). The warm-up takes the survivor to the most it carries (every caller, while gw-a is
  down), so what it keeps from then on (the state pool grown to its size, the allocator's
  arenas at their high-water mark) is in the baseline, and the measured cycle shows what a
  second cycle adds: a leak. Its memory under load, at load-up and at the end, is printed too
  (not a bar: it carries gw-a's callers by the end). Callers still stuck 60 s after the stop
  are cancelled (their connections close) and counted.

Callers whose instance is killed reconnect through HAProxy (to the other instance) and go on.
The full run (200 typing sessions, 50 PostgreSQL clients, 10 minutes) is too heavy for a
2-core CI machine; run it by hand:

    python bench/soak.py --minutes 10 --ssh 200 --pg 50
    python bench/soak.py --minutes 1 --ssh 20 --pg 5 --warm-up-minutes 1   # a short look

Loopback only: the machine's PostgreSQL (a fresh state database, dropped after), a private
sshd, HAProxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import proxy  # noqa: F401  (filters asyncssh's DSA warning before asyncssh loads)


@dataclass
class Tally:
    ssh_sessions: int = 0
    ssh_lines: int = 0
    ssh_reconnects: int = 0
    pg_queries: int = 0
    pg_reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def usage(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open file descriptors) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _socket_peers(pid: int) -> dict[str, str]:
    """Socket inode -> what it is: a listener, a caller on one of the listeners, or the TCP
    port it talks to (tcp-to-5432: the state database); UNIX sockets by name."""
    rows: list[list[str]] = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            rows += [
                r.split() for r in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            ]
    port = lambda address: int(address.rsplit(":", 1)[1], 16)  # noqa: E731
    listening = {port(r[1]) for r in rows if r[3] == "0A"}
    peers: dict[str, str] = {}
    for r in rows:
        if r[3] == "0A":
            peers[r[9]] = "tcp-listen"
        elif port(r[1]) in listening:
            peers[r[9]] = "tcp-caller"
        else:
            peers[r[9]] = f"tcp-to-{port(r[2])}"
    with contextlib.suppress(OSError):
        for r in (r.split() for r in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]):
            peers.setdefault(r[6], "unix" + (f":{r[7].rsplit('/', 1)[-1]}" if len(r) > 7 else ""))
    return peers


def fd_kinds(pid: int) -> Counter[str]:
    """A process's open files by kind: SQLite files by name, sockets by peer (tcp-to-5432 is
    the state database), pipes, recordings..."""
    kinds: Counter[str] = Counter()
    peers = _socket_peers(pid)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        name = target.rsplit("/", 1)[-1]
        if ".db" in name:
            kinds[name] += 1
        elif target.startswith("socket:"):
            kinds["socket:" + peers.get(target[8:-1], "other")] += 1
        elif target.startswith(("pipe:", "anon_inode:")):
            kinds[target.split(":")[0] + ":" + target.split(":")[1].strip("[]")[:9]] += 1
        elif name.endswith(".hrec"):
            kinds["recordings"] += 1
        else:
            kinds["other"] += 1
    return kinds


async def settled(pid: int, quiet_s: float = 3.0, at_most_s: float = 60.0) -> None:
    """Wait until a process's open files stop changing for `quiet_s` (work the callers left
    behind, such as indexing the recordings that just closed, is done), at most `at_most_s`."""
    deadline = time.monotonic() + at_most_s
    last, since = fd_kinds(pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.5)
        now = fd_kinds(pid)
        if now != last:
            last, since = now, time.monotonic()


async def typist(fleet: object, stop: asyncio.Event, tally: Tally) -> None:
    import asyncssh

    from tests.fleet.harness import Fleet

    assert isinstance(fleet, Fleet)
    key = asyncssh.read_private_key(fleet.directory / "alice_key")
    known = str(fleet.directory / "known_hosts")
    first = True
    while not stop.is_set():
        try:
            async with asyncssh.connect(
                "127.0.0.1",
                fleet.port("ssh"),
                username="alice+web1",
                client_keys=[key],
                known_hosts=known,
                agent_path=None,
            ) as conn:
                if not first:
                    tally.ssh_reconnects += 1
                first = False
                process = await conn.create_process(term_type="xterm", term_size=(80, 24))
                tally.ssh_sessions += 1
                n = 0
                while not stop.is_set():
                    n += 1
                    for ch in f"echo soak {n}\r":  # typed, one key at a time
                        process.stdin.write(ch)
                        await asyncio.sleep(random.uniform(0.02, 0.08))
                    tally.ssh_lines += 1
                    await asyncio.sleep(random.uniform(0.5, 1.5))
                process.stdin.write("exit\r")
                await asyncio.wait_for(process.wait(), 10)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.5)


async def querier(fleet: object, stop: asyncio.Event, tally: Tally) -> None:
    import psycopg

    from tests.fleet.harness import Fleet

    assert isinstance(fleet, Fleet)
    dsn = (
        f"host=127.0.0.1 port={fleet.port('pg')} user=alice password=alice-pw dbname=test"
        " sslmode=require connect_timeout=10"
    )
    first = True
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                if not first:
                    tally.pg_reconnects += 1
                first = False
                while not stop.is_set():
                    await conn.execute("SELECT count(*) FROM generate_series(1, 100)")
                    tally.pg_queries += 1
                    await asyncio.sleep(random.uniform(0.2, 0.6))
        except (OSError, psycopg.Error) as exc:
            tally.errors[type(exc).__name__] += 1
            await asyncio.sleep(0.5)


async def stop_callers(tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> int:
    """Tell the callers to stop; those not done in 60 s (a client stuck in a read) are cancelled,
    which closes their connections. Returns how many had to be."""
    stop.set()
    _, stuck = await asyncio.wait(tasks, timeout=60)
    for task in stuck:
        task.cancel()
    if stuck:
        await asyncio.wait(stuck, timeout=30)
    return len(stuck)


async def cycle(fleet: object, seconds: float, ssh: int, pg: int, label: str) -> dict[str, object]:
    """One run of the load with gw-a killed half way and started again, as the survivor gw-b
    sees it: its usage once the load is up and at its end, and the restarted gw-a's."""
    from tests.fleet.harness import Fleet

    assert isinstance(fleet, Fleet)
    survivor, victim = fleet.instances["gw-b"], fleet.instances["gw-a"]
    assert survivor.process is not None
    stop, tally = asyncio.Event(), Tally()
    tasks = [asyncio.ensure_future(typist(fleet, stop, tally)) for _ in range(ssh)]
    tasks += [asyncio.ensure_future(querier(fleet, stop, tally)) for _ in range(pg)]
    up = min(30.0, seconds / 6)
    await asyncio.sleep(up)
    start_usage = usage(survivor.process.pid)
    await asyncio.sleep(seconds / 2 - up)
    print(f"{label}: killing gw-a (SIGKILL) at {seconds / 2:.0f} s", flush=True)
    fleet.kill("gw-a", signal.SIGKILL)
    await asyncio.sleep(3)
    await asyncio.to_thread(fleet.start_instance, "gw-a")
    print(f"{label}: gw-a started again", flush=True)
    await asyncio.sleep(seconds / 2 - 3)
    end_usage = usage(survivor.process.pid)
    assert victim.process is not None
    restarted_usage = usage(victim.process.pid)
    tally.errors["stuck at the end, cancelled"] += await stop_callers(tasks, stop)
    await settled(survivor.process.pid)  # sessions closed, recordings flushed and indexed
    return {
        "tally": tally,
        "start": start_usage,
        "end": end_usage,
        "restarted_end": restarted_usage,
        "idle": usage(survivor.process.pid),
        "kinds": fd_kinds(survivor.process.pid),
    }


async def soak(
    fleet: object, minutes: float, ssh: int, pg: int, warm_up_minutes: float
) -> dict[str, object]:
    """A warm-up cycle of the same load, then the measured one. The warm-up brings the
    survivor to the most it will carry (all callers, once gw-a is killed), so what it then
    keeps (the state pool grown to its size, the allocator's arenas at their high-water mark)
    is in the baseline, and the measured cycle shows only what a second cycle adds: a leak."""
    warm = await cycle(fleet, warm_up_minutes * 60, ssh, pg, "warm-up")
    run = await cycle(fleet, minutes * 60, ssh, pg, "run")
    before, after = warm["kinds"], run["kinds"]
    assert isinstance(before, Counter) and isinstance(after, Counter)
    grew = {k: after[k] - before[k] for k in before | after}
    return {
        "survivor_fds_idle_growth": {k: v for k, v in sorted(grew.items()) if v},
        "survivor_fds_idle_after": dict(sorted(after.items())),
        "tally": run["tally"],
        "warm_up_tally": warm["tally"],
        "survivor_idle_before": warm["idle"],
        "survivor_idle_after": run["idle"],
        "survivor_start": run["start"],
        "survivor_end": run["end"],
        "restarted_end": run["restarted_end"],
    }


async def catalogue(url: str) -> list[tuple[str, str | None, str]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT id, end_reason, gateway_id FROM sessions")
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


@contextlib.contextmanager
def running_fleet() -> Iterator[tuple[Any, str]]:
    """Two gateway instances behind HAProxy on a fresh state database of the machine's
    PostgreSQL and a private sshd, with known_hosts written; (fleet, state url), all stopped
    and dropped after."""
    from tests.fixtures.pgstate import fresh_database
    from tests.fixtures.processes import stop as stop_process
    from tests.fixtures.sshd import start_sshd
    from tests.fleet.harness import Fleet

    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        sshd = start_sshd(Path(tmp) / "sshd")
        fleet = Fleet(
            Path(tmp) / "fleet", sshd, url, heartbeat="1s", lost_after="5s", postgres=True
        )
        try:
            fleet.start()
            fleet.ssh_argv("alice", "ssh", "x")  # writes known_hosts
            yield fleet, url
        finally:
            fleet.stop()
            stop_process(sshd.process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--ssh", type=int, default=200, help="typing SSH sessions")
    parser.add_argument("--pg", type=int, default=50, help="PostgreSQL clients")
    parser.add_argument(
        "--warm-up-minutes", type=float, default=2.0, help="the unmeasured cycle before the run"
    )
    args = parser.parse_args()

    with running_fleet() as (fleet, url):
        started = time.monotonic()
        result = asyncio.run(soak(fleet, args.minutes, args.ssh, args.pg, args.warm_up_minutes))
        elapsed = time.monotonic() - started
        time.sleep(3)  # a last heartbeat copies the catalogue rows
        fleet.stop()
        verified = {}
        for name, instance in fleet.instances.items():
            done = fleet.hoop_sync(name, "verify", "--all", "--data-dir", str(instance.data_dir))
            verified[name] = (done.returncode, done.stdout.strip().splitlines()[-3:])
        rows = asyncio.run(catalogue(url))
    tally = result["tally"]
    assert isinstance(tally, Tally)
    ids = Counter(row[0] for row in rows)
    reasons = Counter((row[1] or "(open)").split(":")[0] for row in rows)
    s0, s1 = result["survivor_start"], result["survivor_end"]
    i0, i1 = result["survivor_idle_before"], result["survivor_idle_after"]
    assert isinstance(s0, tuple) and isinstance(s1, tuple)
    assert isinstance(i0, tuple) and isinstance(i1, tuple)
    report = {
        "minutes": round(elapsed / 60, 2),
        "ssh_callers": args.ssh,
        "pg_clients": args.pg,
        "ssh_sessions": tally.ssh_sessions,
        "ssh_lines_typed": tally.ssh_lines,
        "ssh_reconnects": tally.ssh_reconnects,
        "pg_queries": tally.pg_queries,
        "pg_reconnects": tally.pg_reconnects,
        "client_errors": dict(tally.errors),
        "catalogue_rows": len(rows),
        "catalogue_duplicates": sum(1 for n in ids.values() if n > 1),
        "end_reasons": dict(reasons),
        "verify": {k: v[0] for k, v in verified.items()},
        "verify_tail": {k: v[1] for k, v in verified.items()},
        "survivor_rss_under_load_kb": [s0[0], s1[0], f"{(s1[0] - s0[0]) / s0[0]:+.1%}"],
        "survivor_fds_under_load": [s0[1], s1[1]],
        "survivor_fds_idle": [i0[1], i1[1], f"{(i1[1] - i0[1]) / max(1, i0[1]):+.1%}"],
        "survivor_rss_idle_kb": [i0[0], i1[0], f"{(i1[0] - i0[0]) / i0[0]:+.1%}"],
        "restarted_end": result["restarted_end"],
        "survivor_fds_idle_growth": result["survivor_fds_idle_growth"],
        "survivor_fds_idle_after": result["survivor_fds_idle_after"],
    }
    print(json.dumps(report, indent=2))
    ok = (
        all(code == 0 for code in report["verify"].values())
        and report["catalogue_duplicates"] == 0
        and abs(i1[0] - i0[0]) <= 0.1 * i0[0]
        and abs(i1[1] - i0[1]) <= max(1, 0.1 * i0[1])
    )
    print("soak:", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
