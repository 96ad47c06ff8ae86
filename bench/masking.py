"""Benchmarks of masking (issue 7), each against the same work without masking, same run.

    python bench/masking.py [--mb 32] [--repeat 3] [--keys 300] [--pg-duration 5] [--quick]
    python bench/masking.py --parts bulk,echo --py-spy /tmp/gw.txt   # profile the gateway

Terminal goals go through the REAL gateway, as `bench/ssh.py` does: a private sshd is the
target, and the gateway (`hoop-tui gateway`, recording on) runs as a subprocess. Three gateways
run side by side with the same configuration apart from `[[masks]]`: none, the issue's example
set, all eight detectors. Runs are interleaved, so load from elsewhere hits all alike.

1. micro: the masker alone (`MaskStream.feed` in 4 KiB and 32 KiB chunks) on the terminal
   stream, and SQL DataRow decode + `ColumnPlan.mask_row` + encode against decode + encode;
2. bulk: `ssh -p GATEWAY alice+web1@127.0.0.1 'cat FILE'` with the OpenSSH client, FILE a
   generated terminal stream (listings, logs, git log with e-mail addresses, JSON logs,
   progress bars, a rare secret); MB/s with masking on as a ratio to masking off (goal >= 0.7).
   The output is checked against masking the whole file in one piece;
3. echo: interactive output through the gateway: key echoes, prompts and short lines written
   to a raw-mode `cat` on a PTY and read back, round-trip p50/p99; the latency masking adds is
   the difference to the unmasked gateway (goal: p99 under 5 ms);
4. sql: `pgbench -S` (bench/pg.py's helpers: an in-process PostgreSQL gateway, recording on)
   direct, through the gateway without masks, and with a column rule on `abalance` (the
   column `-S` selects) alone and together with all eight detectors on every value
   (goal: masked >= 0.5 of direct).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ssh import (
    CIPHER,
    Setup,
    echo_session,
    open_echo,
    percentile,
    start_gateway,
    write_client_config,
)
from proxy.pg.wire import DataRow
from storage.mask_stream import MaskStream
from storage.masking import DETECTORS, Masker, MaskPolicy
from tests.fixtures.processes import stop
from tests.fixtures.sshd import Sshd, keygen, start_sshd

CHUNK = 4096
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
RULE_SETS = {"none": [], "example": EXAMPLE_RULES, "8 detectors": ALL_RULES}
PG_COLUMN_RULE = [{"name": "balances", "column": "abalance"}]


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
            b"$2b$12$" + rnd.randbytes(22).hex().encode(),
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


# -- the real gateway ------------------------------------------------------------------------


def masks_toml(rules: list[dict[str, str]]) -> str:
    out = []
    for rule in rules:
        out.append("[[masks]]")
        out += [f'{key} = "{value}"' for key, value in rule.items()]
        out.append("")
    return "\n".join(out)


class Gateways:
    """One sshd target, and one gateway subprocess per rule set, configured alike apart from
    `[[masks]]` (each with its own data directory and port)."""

    def __init__(self, directory: Path, sets: dict[str, list[dict[str, str]]]) -> None:
        self.directory = directory
        self.sshd: Sshd = start_sshd(directory / "sshd")
        alice_public = keygen(directory / "alice_key", "alice")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.setups: dict[str, Setup] = {}
        known: list[str] = []
        try:
            for index, (label, rules) in enumerate(sets.items()):
                process, port, ca_line = start_gateway(
                    directory, f"gateway{index}", self.sshd, alice_public, masks_toml(rules)
                )
                self.processes[label] = process
                self.setups[label] = Setup(directory, self.sshd, process, port)
                known.append(ca_line)
        except BaseException:
            self.close()
            raise
        write_client_config(directory, self.sshd, known)

    def close(self) -> None:
        for process in self.processes.values():
            process.terminate()
            process.wait(10)
        stop(self.sshd.process)

    def cat(self, label: str | None, path: Path) -> tuple[float, bytes]:
        """MB/s of `cat path` over ssh (through the gateway `label`, or direct when None), from
        the first byte of output to the last (the SSH handshakes are not counted), and the
        output."""
        base = ["ssh", "-F", str(self.directory / "ssh_config")]
        if label is None:
            argv = [*base, "-p", str(self.sshd.port), f"{self.sshd.user}@127.0.0.1"]
        else:
            argv = [*base, "-p", str(self.setups[label].port), "alice+web1@127.0.0.1"]
        process = subprocess.Popen(
            [*argv, f"cat {path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        fd = process.stdout.fileno()
        first = os.read(fd, 1 << 20)
        started = time.perf_counter()
        out = bytearray(first)
        while chunk := os.read(fd, 1 << 20):
            out += chunk
        elapsed = time.perf_counter() - started
        error = process.stderr.read()
        if process.wait() != 0:
            raise RuntimeError(f"{label}: {error.decode()}")
        return (len(out) - len(first)) / elapsed / 1e6, bytes(out)


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def run_bulk(gateways: Gateways, data: bytes, repeat: int, py_spy: str | None) -> None:
    directory = gateways.directory
    path = directory / "stream.txt"
    path.write_bytes(data)
    labels = list(gateways.setups)
    expected = {label: one_shot(data, masker(RULE_SETS[label])) for label in labels}
    rates: dict[str | None, list[float]] = {label: [] for label in [None, *labels]}
    print(f"bulk exec output: ssh ... 'cat FILE', {len(data) / 1e6:.1f} MB, {CIPHER}, {load()}")
    for run in range(repeat):
        order: list[str | None] = [None, *labels]
        order = order[run % len(order) :] + order[: run % len(order)]  # rotate who goes first
        for label in order:
            rate, got = gateways.cat(label, path)
            rates[label].append(rate)
            if label is not None and got != expected[label]:
                leaked = sum(s.encode() in got for s in SECRETS) if label != "none" else 0
                want = expected[label]
                pairs = enumerate(zip(got, want, strict=False))
                at = next((i for i, (a, b) in pairs if a != b), -1)
                print(
                    f"  ! {label}: output differs from one-shot masking "
                    f"({len(got)} vs {len(want)} bytes; {leaked} sample secrets "
                    f"visible); first at byte {at}: got {got[at - 40 : at + 40]!r}, "
                    f"one-shot {want[at - 40 : at + 40]!r}"
                )
    direct = statistics.median(rates[None])
    base = statistics.median(rates["none"])
    print(f"  direct OpenSSH: {direct:.1f} MB/s  runs {[round(x, 1) for x in rates[None]]}")
    print(
        f"  gateway, no masks: {base:.1f} MB/s ({base / direct:.2f} of direct)  "
        f"runs {[round(x, 1) for x in rates['none']]}"
    )
    for label in labels[1:]:
        on = statistics.median(rates[label])
        pairs = [m / b for m, b in zip(rates[label], rates["none"], strict=True)]
        print(
            f"  gateway, masks '{label}': {on:.1f} MB/s, ratio to no masks {on / base:.2f} "
            f"(per run {min(pairs):.2f}-{max(pairs):.2f}; goal >= 0.7)  "
            f"runs {[round(x, 1) for x in rates[label]]}"
        )
    print(f"  {load()}")
    if py_spy:
        label = labels[-1]
        pid = gateways.processes[label].pid
        spy = subprocess.Popen(
            ["py-spy", "record", "--gil", "-f", "raw", "-r", "250", "-o", py_spy, "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        for _ in range(3):
            gateways.cat(label, path)
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        print(f"  py-spy profile of the '{label}' gateway (3 runs): {py_spy}")


def one_shot(data: bytes, m: Masker) -> bytes:
    text = data.decode("utf-8", "surrogateescape")
    return m.mask_text(text)[0].encode("utf-8", "surrogateescape")


def interactive_chunks(count: int, seed: int) -> list[tuple[float, bytes]]:
    """Typing: key echoes (3 in 4), prompts, short lines of output, with 10-30 ms between."""
    rnd = random.Random(seed)
    out: list[tuple[float, bytes]] = []
    typed = "ls -la /var/log && git status && psql -c 'select 1' && echo done "
    for index in range(count):
        gap = rnd.uniform(0.01, 0.03)
        roll = rnd.random()
        if roll < 0.75:
            data = typed[index % len(typed)].encode()
        elif roll < 0.85:
            data = b"\r\nalice@web1:~$ "
        else:
            data = (" ".join(rnd.choice(WORDS) for _ in range(10)) + "\r\n").encode()
        out.append((gap, data))
    return out


async def round_trips(setup: Setup, plan: list[tuple[float, bytes]]) -> list[float]:
    """ms from writing each chunk to a raw-mode `cat` to reading all of it back."""
    async with await open_echo(setup, True) as conn:
        process = await echo_session(conn)
        samples = []
        for index, (gap, data) in enumerate(plan):
            started = time.perf_counter()
            process.stdin.write(data)
            echoed = await process.stdout.readexactly(len(data))
            if index >= 20:  # warm up
                samples.append((time.perf_counter() - started) * 1000)
            assert echoed == data, (echoed, data)
            await asyncio.sleep(gap)
        process.stdin.write_eof()
        return samples


def run_echo(gateways: Gateways, count: int, seed: int, repeat: int) -> None:
    plan = interactive_chunks(count + 20, seed)
    labels = list(gateways.setups)
    samples: dict[str, list[list[float]]] = {label: [] for label in labels}
    print(f"interactive output: {count} chunks through the gateway, {load()}")
    for run in range(repeat):
        order = labels[run % len(labels) :] + labels[: run % len(labels)]
        for label in order:
            samples[label].append(asyncio.run(round_trips(gateways.setups[label], plan)))
    base = samples["none"]
    for label in labels:
        p50s = [percentile(s, 0.5) for s in samples[label]]
        p99s = [percentile(s, 0.99) for s in samples[label]]
        text = f"  {label}: p50 {_span(p50s)} ms, p99 {_span(p99s)} ms"
        if label != "none":
            added50 = [a - percentile(b, 0.5) for a, b in zip(p50s, base, strict=True)]
            added99 = [a - percentile(b, 0.99) for a, b in zip(p99s, base, strict=True)]
            text += f"; added p50 {_span(added50)} ms, p99 {_span(added99)} ms (goal < 5 ms)"
        pooled = [x for s in samples[label] for x in s]
        text += f"; all rounds p50 {percentile(pooled, 0.5):.2f} p99 {percentile(pooled, 0.99):.2f}"
        print(text)
    print(f"  {load()}")


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}..{high:.2f}"


# -- SQL through the PostgreSQL gateway ------------------------------------------------------


async def run_sql(duration: int, repeat: int, clients: int, threads: int) -> None:
    from bench import pg

    await pg.ensure_tables()
    policies = {
        "gateway, no masks": None,
        "gateway, column rule on abalance": MaskPolicy.from_config(
            PG_COLUMN_RULE, "bench", b"bench-secret"
        ),
        "gateway, abalance + 8 detectors": MaskPolicy.from_config(
            PG_COLUMN_RULE + ALL_RULES, "bench", b"bench-secret"
        ),
    }
    bench = (duration, clients, threads)
    runs: dict[str, list[pg.Run]] = {"direct": [], **{label: [] for label in policies}}
    with tempfile.TemporaryDirectory(prefix="hoop-bench-mask-pg-") as tmp:
        gateway, service, control = await pg.start_gateway(Path(tmp))
        try:
            gateway.masks = policies["gateway, column rule on abalance"]
            shown = await _psql(gateway.port, "select abalance from pgbench_accounts where aid = 1")
            assert shown == "********", f"the column rule did not apply: {shown!r}"
            print(
                f"pgbench -S -c {clients} -j {threads} -T {duration}, {repeat} rounds, "
                f"interleaved; {load()}"
            )
            labels = list(runs)
            for run in range(repeat):
                order = labels[run % len(labels) :] + labels[: run % len(labels)]
                for label in order:
                    port = pg.PG_PORT if label == "direct" else gateway.port
                    gateway.masks = policies.get(label)
                    try:
                        result = await pg.pgbench(label, port, ["-S"], *bench, pg.PG_USER)
                    except SystemExit as failed:  # tests elsewhere may drop the tables
                        print(f"  ! {str(failed).splitlines()[0]}; tables made again, run again")
                        await pg.ensure_tables()
                        result = await pg.pgbench(label, port, ["-S"], *bench, pg.PG_USER)
                    runs[label].append(result)
        finally:
            await gateway.stop()
            await service.stop()
            await control.stop()
    for label, results in runs.items():
        tps = [r.tps for r in results]
        text = f"  {label:<34} {statistics.median(tps):>8,.0f} tps  runs {[round(t) for t in tps]}"
        if label != "direct":
            of_direct = [r.tps / d.tps for r, d in zip(results, runs["direct"], strict=True)]
            text += f"; of direct {_span(of_direct)}"
            if label != "gateway, no masks":
                base = runs["gateway, no masks"]
                of_base = [r.tps / b.tps for r, b in zip(results, base, strict=True)]
                text += f", of unmasked gateway {_span(of_base)}"
                cpu = [
                    (r.cpu_s / len(r.latencies_us) - b.cpu_s / len(b.latencies_us)) * 1e6
                    for r, b in zip(results, base, strict=True)
                ]
                text += f", gateway CPU +{_span(cpu)} us/tx"
        print(text)
    print(f"  goal: masked >= 0.5 of direct; {load()}")


async def _psql(port: int, query: str) -> str:
    from bench import pg

    env = dict(os.environ, PGPASSWORD=pg.PASSWORD, PGSSLMODE="disable")
    process = await asyncio.create_subprocess_exec(
        "psql", "-h", pg.PG_HOST, "-p", str(port), "-U", pg.PG_USER, "-d", pg.DATABASE,
        "-Atc", query,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await process.communicate()
    return (out or err).decode().strip()


# -- main ------------------------------------------------------------------------------------


def run_micro(data: bytes, rows: int, seed: int) -> None:
    print(f"masker alone on the terminal stream ({len(data) / 1e6:.1f} MB):")
    for size in (CHUNK, 32768):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        for label in ("8 detectors", "example"):
            rate, acts = masker_rate(pieces, masker(RULE_SETS[label]))
            print(f"  MaskStream.feed, {size} B chunks, {label}: {rate:.1f} MB/s ({acts} acts)")
    columns, bodies = sql_rows(rows, seed)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=32.0, help="bulk stream size (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--keys", type=int, default=300, help="interactive chunks (default 300)")
    parser.add_argument("--rows", type=int, default=100_000, help="SQL micro rows (default 1e5)")
    parser.add_argument("--pg-duration", type=int, default=5, help="s per pgbench run")
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="pgbench threads (default 2)")
    parser.add_argument("--parts", default="micro,bulk,echo,sql", help="comma-separated subset")
    parser.add_argument("--py-spy", metavar="FILE", help="py-spy --gil profile, masked bulk")
    parser.add_argument("--quick", action="store_true", help="4 MB, 100 keys, 2 s, 1 round")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.mb, args.keys, args.rows, args.repeat, args.pg_duration = 4.0, 100, 20_000, 1, 2
    parts = set(args.parts.split(","))
    data = terminal_stream(int(args.mb * 1_000_000), args.seed)
    print(f"{os.cpu_count()} CPUs, {load()}")
    if "micro" in parts:
        run_micro(data, args.rows, args.seed)
    if parts & {"bulk", "echo"}:
        with tempfile.TemporaryDirectory(prefix="hoop-bench-mask-") as tmp:
            gateways = Gateways(Path(tmp), RULE_SETS)
            try:
                if "bulk" in parts:
                    run_bulk(gateways, data, args.repeat, args.py_spy)
                if "echo" in parts:
                    run_echo(gateways, args.keys, args.seed, args.repeat)
            finally:
                gateways.close()
    if "sql" in parts:
        asyncio.run(run_sql(args.pg_duration, args.repeat, args.clients, args.threads))


if __name__ == "__main__":
    main()
