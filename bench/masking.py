"""Benchmarks of masking (issue 7), each against the same work without masking, same run.

    python bench/masking.py [--mb 16] [--keys 300] [--rows 100000] [--quick] [--seed 7]

1. Terminal bulk output through an SSH channel: an asyncssh server on loopback writes a
   terminal stream (listings, logs, git log, JSON logs, progress bars, a rare secret) in
   4 KiB reads, as a PTY gives them, to an asyncssh client that reads it all. Masking on runs
   every chunk through `MaskStream` (all eight detectors) before `write`; masking off writes
   the chunk as it is. Same cipher, same data; the ratio is on/off. This is one leg of the
   gateway (the gateway also decrypts the target leg and records), so the gateway's own ratio
   would be higher. The masker's own rate on the same data is printed too.
2. Interactive latency: an asyncio loop reads small chunks (key echoes, prompts, short lines)
   from a pipe written at typing speed and forwards them through `MaskStream`, flushing after
   `QUIET_FLUSH_S` of quiet, as the SSH bridge would; the added latency is the time from a
   chunk's arrival to its last byte being forwarded. p50 and p99, against the same loop
   forwarding at once.
3. SQL values: DataRow decode, mask (`ColumnPlan.mask_row`) and encode of a synthetic result
   (id, name, email, password, card, note), against decode and encode alone, rows per second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncssh

from proxy.mask_stream import QUIET_FLUSH_S, MaskStream
from proxy.masking import DETECTORS, Masker, MaskPolicy
from proxy.pg.wire import DataRow
from tests.fixtures.processes import stop
from tests.fixtures.sshd import Sshd, start_sshd

CHUNK = 4096
CIPHER = "aes128-gcm@openssh.com"
ALL_RULES = [{"name": name, "detector": name} for name in DETECTORS]
# the example plus what an operator would add for shells
EXAMPLE_RULES = [
    {"name": "cards", "detector": "credit_card", "style": "last4"},
    {"name": "assignments", "detector": "password_assignment"},
    {"name": "keys", "detector": "pem_private_key"},
    {"name": "aws", "detector": "aws_access_key"},
]
SQL_RULES = [
    {"name": "passwords", "column": "password"},
    {"name": "cards", "detector": "credit_card", "style": "last4"},
    {"name": "mail", "detector": "email"},
]


def masker(rules: list[dict[str, str]]) -> Masker:
    return MaskPolicy.from_config(rules, "bench", b"bench-secret").for_caller(["dev"], "web1")


# -- data ------------------------------------------------------------------------------------

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
WORDS = [
    "request",
    "done",
    "cache",
    "miss",
    "retry",
    "upstream",
    "worker",
    "queue",
    "job",
    "item",
    "sync",
    "index",
    "build",
]
SECRETS = [
    "4111 1111 1111 1111",
    "alice.smith@example.com",
    "DE89370400440532013000",
    "123-45-6789",
    "AKIAIOSFODNN7EXAMPLE",
    "password=hunter2",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]


def terminal_stream(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    out: list[str] = []
    total = 0

    def ls_line() -> str:
        name = rnd.choice(WORDS) + rnd.choice(["", ".py", ".log", ".txt", "_test.go"])
        colour = rnd.choice(["", "\x1b[01;34m", "\x1b[01;32m"])
        reset = "\x1b[0m" if colour else ""
        return (
            f"-rw-r--r-- 1 {rnd.choice(NAMES)} staff {rnd.randint(10, 999999):>8} "
            f"Nov {rnd.randint(1, 30):>2} {rnd.randint(0, 23):02}:{rnd.randint(0, 59):02} "
            f"{colour}{name}{reset}\r\n"
        )

    def log_line() -> str:
        return (
            f"2026-11-25T{rnd.randint(0, 23):02}:{rnd.randint(0, 59):02}:"
            f"{rnd.randint(0, 59):02}.{rnd.randint(0, 999):03}Z \x1b[32mINFO\x1b[0m "
            f"[worker-{rnd.randint(1, 8)}] GET /api/v1/items/{rnd.getrandbits(128):032x} "
            f"{rnd.choice([200, 200, 200, 404, 500])} {rnd.randint(1, 900)}ms "
            f"ip=10.0.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}\r\n"
        )

    def git_line() -> str:
        name = rnd.choice(NAMES)
        return (
            f"\x1b[33mcommit {rnd.getrandbits(160):040x}\x1b[0m\r\n"
            f"Author: {name.title()} <{name}@example.org>\r\n"
            f"Date:   Wed Nov 25 {rnd.randint(0, 23):02}:00:00 2026 +0000\r\n\r\n"
            f"    {' '.join(rnd.choice(WORDS) for _ in range(6))}\r\n\r\n"
        )

    def json_line() -> str:
        return (
            f'{{"ts":{rnd.randint(1700000000, 1800000000)},"level":"info",'
            f'"msg":"{rnd.choice(WORDS)} {rnd.choice(WORDS)}","user_id":{rnd.randint(1, 99999)},'
            f'"duration_ms":{rnd.random() * 100:.3f}}}\r\n'
        )

    def progress() -> str:
        return (
            "".join(f"\r\x1b[K{p:3d}% [{'#' * (p // 5):<20}]" for p in range(0, 101, 10)) + "\r\n"
        )

    makers = [ls_line] * 4 + [log_line] * 4 + [git_line, json_line, json_line, progress]
    while total < size:
        secret = rnd.random() < 0.002
        line = f"note: {rnd.choice(SECRETS)}\r\n" if secret else rnd.choice(makers)()
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def chunks_of(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


# -- 1. bulk ---------------------------------------------------------------------------------


def masker_rate(chunks: list[bytes], m: Masker) -> tuple[float, int]:
    stream = MaskStream(m)
    acts = 0
    started = time.perf_counter()
    for chunk in chunks:
        acts += len(stream.feed(chunk)[1])
    acts += len(stream.flush(final=True)[1])
    elapsed = time.perf_counter() - started
    return sum(map(len, chunks)) / elapsed / 1e6, acts


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # the benchmark's caller logs in without credentials


async def relay_bulk(sshd: Sshd, path: Path, size: int, mask: Masker | None) -> float:
    """A real `ssh` client runs `bulk` on our relay, which runs `cat FILE` on a real sshd and
    forwards its output (masked or not): the gateway's data path, without recording."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    target_key = asyncssh.read_private_key(str(sshd.key_file))
    target = await asyncssh.connect(
        "127.0.0.1",
        sshd.port,
        username=sshd.user,
        client_keys=[target_key],
        known_hosts=None,
        encryption_algs=[CIPHER],
    )

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        stream = MaskStream(mask) if mask is not None else None
        upstream = await target.create_process(f"cat {path}", encoding=None)
        while True:
            chunk = await upstream.stdout.read(65536)
            if not chunk:
                break
            data = stream.feed(chunk)[0] if stream is not None else chunk
            if data:
                process.stdout.write(data)
                await process.stdout.drain()
        if stream is not None:
            process.stdout.write(stream.flush(final=True)[0])
        process.exit(0)

    server = await asyncssh.create_server(
        _Server,
        "127.0.0.1",
        0,
        server_host_keys=[key],
        process_factory=handle,
        encoding=None,
        encryption_algs=[CIPHER],
    )
    port = server.sockets[0].getsockname()[1]
    command = [
        "ssh", "-F", "/dev/null", "-T", "-p", str(port), "-c", CIPHER,
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "bench@127.0.0.1", "bulk",
    ]  # fmt: skip
    try:
        started = time.perf_counter()
        client = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        received = 0
        assert client.stdout is not None
        while chunk := await client.stdout.read(1 << 20):
            received += len(chunk)
        await client.wait()
        elapsed = time.perf_counter() - started
    finally:
        server.close()
        await server.wait_closed()
        target.close()
    assert received == size, (received, size, await client.stderr.read() if client.stderr else b"")
    return size / elapsed / 1e6


# -- 2. interactive latency ------------------------------------------------------------------


def interactive_chunks(count: int, seed: int) -> list[tuple[float, bytes]]:
    rnd = random.Random(seed)
    out: list[tuple[float, bytes]] = []
    typed = "ls -la /var/log && git status && psql -c 'select 1' && echo done "
    for index in range(count):
        gap = rnd.uniform(0.02, 0.06)
        roll = rnd.random()
        if roll < 0.75:
            data = typed[index % len(typed)].encode()
        elif roll < 0.85:
            data = b"\r\nalice@web1:~$ "
        else:
            data = (" ".join(rnd.choice(WORDS) for _ in range(10)) + "\r\n").encode()
        out.append((gap, data))
    return out


async def interactive(plan: list[tuple[float, bytes]], mask: Masker | None) -> list[float]:
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    stream = MaskStream(mask) if mask is not None else None
    arrivals: list[float] = []  # arrival time of each chunk, in order
    owed: list[int] = []  # bytes of each chunk still to forward
    latencies: list[float] = []
    timer: asyncio.TimerHandle | None = None
    done = asyncio.Event()
    expected = len(plan)

    def forwarded(size: int) -> None:
        now = time.perf_counter()
        while size and owed:
            take = min(size, owed[0])
            owed[0] -= take
            size -= take
            if owed[0] == 0:
                owed.pop(0)
                latencies.append(now - arrivals[len(latencies)])
        if len(latencies) == expected:
            done.set()

    def quiet() -> None:
        nonlocal timer
        timer = None
        assert stream is not None
        forwarded(len(stream.flush()[0]))

    def readable() -> None:
        nonlocal timer
        data = os.read(read_fd, 65536)
        if stream is None:
            forwarded(len(data))
            return
        out = stream.feed(data)[0]
        forwarded(len(out))
        if timer is not None:
            timer.cancel()
        timer = loop.call_later(QUIET_FLUSH_S, quiet) if stream.held else None

    loop.add_reader(read_fd, readable)
    try:
        for gap, data in plan:
            await asyncio.sleep(gap)
            arrivals.append(time.perf_counter())
            owed.append(len(data))
            os.write(write_fd, data)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        loop.remove_reader(read_fd)
        os.close(read_fd)
        os.close(write_fd)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- 3. SQL ----------------------------------------------------------------------------------


def sql_rows(count: int, seed: int) -> tuple[list[str], list[bytes]]:
    rnd = random.Random(seed)
    columns = ["id", "name", "email", "password", "card", "note"]
    bodies = []
    for index in range(count):
        name = rnd.choice(NAMES)
        values: tuple[bytes | None, ...] = (
            str(index).encode(),
            name.title().encode(),
            f"{name}{index}@example.com".encode(),
            b"$2b$12$" + os.urandom(22).hex().encode(),
            b"4111111111111111" if index % 10 == 0 else b"5105105105105100",
            None if index % 3 else " ".join(rnd.choice(WORDS) for _ in range(5)).encode(),
        )
        bodies.append(DataRow(values).body())
    return columns, bodies


def sql_rate(
    columns: list[str], bodies: list[bytes], m: Masker | None, record: bool = True
) -> float:
    plan = m.plan(columns, record=record) if m is not None else None
    started = time.perf_counter()
    for body in bodies:
        values = DataRow.decode(body).values
        if plan is not None:
            masked, _ = plan.mask_row(values)
            values = tuple(v if v is None or isinstance(v, bytes) else v.encode() for v in masked)
        DataRow(values).body()
    return len(bodies) / (time.perf_counter() - started)


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=16.0, help="bulk stream size (default 16)")
    parser.add_argument("--keys", type=int, default=300, help="interactive chunks (default 300)")
    parser.add_argument("--rows", type=int, default=100_000, help="SQL rows (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="bulk runs, median (default 3)")
    parser.add_argument("--quick", action="store_true", help="4 MB, 100 keys, 20000 rows, 1 run")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.mb, args.keys, args.rows, args.repeat = 4.0, 100, 20_000, 1

    data = terminal_stream(int(args.mb * 1_000_000), args.seed)
    chunks = chunks_of(data)
    full = masker(ALL_RULES)
    print(f"terminal stream: {len(data) / 1e6:.1f} MB in {len(chunks)} chunks of {CHUNK} B")
    for size in (CHUNK, 32768):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        for label, rules in (("8 detectors", ALL_RULES), ("issue example", EXAMPLE_RULES)):
            rate, acts = masker_rate(pieces, masker(rules))
            print(f"  MaskStream alone, {size} B chunks, {label}: {rate:.1f} MB/s ({acts} acts)")

    with tempfile.TemporaryDirectory() as tmp:
        sshd = start_sshd(Path(tmp) / "sshd")
        path = Path(tmp) / "stream.bin"
        path.write_bytes(data)
        try:
            for label, rules in (("8 detectors", ALL_RULES), ("issue example", EXAMPLE_RULES)):
                offs, ons = [], []
                for _ in range(args.repeat):
                    offs.append(asyncio.run(relay_bulk(sshd, path, len(data), None)))
                    ons.append(asyncio.run(relay_bulk(sshd, path, len(data), masker(rules))))
                off, on = statistics.median(offs), statistics.median(ons)
                print(
                    f"  bulk exec output, sshd -> relay -> ssh ({CIPHER}), {label}: off "
                    f"{off:.1f} MB/s, on {on:.1f} MB/s, ratio {on / off:.2f} (goal >= 0.7; "
                    f"runs off {[round(x, 1) for x in offs]}, on {[round(x, 1) for x in ons]})"
                )
        finally:
            stop(sshd.process)

    plan = interactive_chunks(args.keys, args.seed)
    base = asyncio.run(interactive(plan, None))
    masked = asyncio.run(interactive(plan, full))
    added = [m - b for m, b in zip(masked, base, strict=True)]
    ms = 1000.0
    print(
        f"interactive ({len(plan)} chunks, quiet flush {QUIET_FLUSH_S * ms:.0f} ms): direct p50 "
        f"{percentile(base, 0.5) * ms:.2f} ms p99 {percentile(base, 0.99) * ms:.2f} ms; masked "
        f"p50 {percentile(masked, 0.5) * ms:.2f} ms p99 {percentile(masked, 0.99) * ms:.2f} ms; "
        f"added p50 {percentile(added, 0.5) * ms:.2f} ms p99 {percentile(added, 0.99) * ms:.2f} ms"
        " (goal < 5 ms)"
    )

    columns, bodies = sql_rows(args.rows, args.seed)
    plain = sql_rate(columns, bodies, None)
    print(f"SQL rows ({len(bodies)} x {len(columns)} columns), decode+encode: {plain:,.0f} rows/s")
    for label, rules in (
        ("password column only", SQL_RULES[:1]),
        ("password column + card/email detectors", SQL_RULES),
    ):
        for record in (True, False):
            rate = sql_rate(columns, bodies, masker(rules), record)
            acts = "an act per value" if record else "no acts"
            print(f"  + {label}, {acts}: {rate:,.0f} rows/s ({rate / plain:.2f})")


if __name__ == "__main__":
    main()
