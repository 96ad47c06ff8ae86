"""Leak or high-water mark? The same load, round after round, through two gateway instances
(issue 15).

The soak compares a gateway's memory before and after ten minutes of load, and a long-lived
Python process rarely comes back to where it started: pymalloc gives an arena back to the
system only when every object in it is gone, so memory that held many sessions at once stays
partly mapped after they end. That alone is a high-water mark, not a leak. This bench tells the
two apart: it runs the same load (`--ssh` typing sessions, `--pg` PostgreSQL clients, for
`--seconds`) `--rounds` times, and samples each instance's memory (VmRSS) and open files idle
after each round. A leak grows with every round; a high-water mark grows in the first round or
two and then stays flat.

    python bench/memory_rounds.py                     # 5 rounds of 100 SSH + 25 PostgreSQL, 60 s
    python bench/memory_rounds.py --rounds 3 --ssh 20 --pg 5 --seconds 20   # a short look
    PYTHONMALLOC=malloc python bench/memory_rounds.py # the same with glibc's allocator only

Loopback only: the machine's PostgreSQL (a fresh state database, dropped after), a private
sshd, HAProxy.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import proxy  # noqa: F401  (filters asyncssh's DSA warning before asyncssh loads)
from bench.soak import Tally, fd_kinds, querier, running_fleet, settled, typist, usage


async def rounds(fleet: object, count: int, seconds: float, ssh: int, pg: int) -> list[dict]:
    from tests.fleet.harness import Fleet

    assert isinstance(fleet, Fleet)
    samples: list[dict] = []

    def sample(label: str, tally: Tally | None) -> None:
        row: dict[str, object] = {"after": label}
        for name, instance in fleet.instances.items():
            assert instance.process is not None
            rss, fds = usage(instance.process.pid)
            kinds = dict(sorted(fd_kinds(instance.process.pid).items()))
            row[name] = {"rss_mb": round(rss / 1024, 1), "fds": fds, "fd_kinds": kinds}
        if tally is not None:
            row["ssh_sessions"] = tally.ssh_sessions
            row["pg_queries"] = tally.pg_queries
            row["client_errors"] = dict(tally.errors)
        samples.append(row)
        print(json.dumps(row), flush=True)

    sample("start", None)
    for number in range(1, count + 1):
        stop, tally = asyncio.Event(), Tally()
        tasks = [asyncio.ensure_future(typist(fleet, stop, tally)) for _ in range(ssh)]
        tasks += [asyncio.ensure_future(querier(fleet, stop, tally)) for _ in range(pg)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait(tasks, timeout=60)
        for instance in fleet.instances.values():  # sessions closed, recordings indexed
            assert instance.process is not None
            await settled(instance.process.pid)
        sample(f"round {number}", tally)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0, help="load per round")
    parser.add_argument("--ssh", type=int, default=100, help="typing SSH sessions")
    parser.add_argument("--pg", type=int, default=25, help="PostgreSQL clients")
    args = parser.parse_args()

    with running_fleet() as (fleet, _):
        samples = asyncio.run(rounds(fleet, args.rounds, args.seconds, args.ssh, args.pg))
    print("idle memory after each round, MB (growth over the round before):")
    for name in fleet.instances:
        figures = [row[name]["rss_mb"] for row in samples]
        steps = [f"{b:.1f} ({b - a:+.1f})" for a, b in itertools.pairwise(figures)]
        print(f"  {name}: start {figures[0]:.1f}, then " + ", ".join(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
