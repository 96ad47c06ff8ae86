"""The PostgreSQL gateway against direct PostgreSQL, with pgbench, measured in the same run.

    python bench/pg.py               # pgbench -S and TPC-B-like, 10 s each, 8 clients, 2 threads,
                                     # 3 interleaved rounds (--rounds)
    python bench/pg.py --quick       # 3 s each, one round
    python bench/pg.py --profile     # also prints a cProfile of the gateway during -S
    python bench/pg.py --diagnose    # also -S through the gateway with recording disabled
    python bench/pg.py --quick --set-up-only   # only connection set-up (latency, logins/s)
    python bench/pg.py --sans-io 20000         # only the session code: CPU per statement,
                                               # no network (simple and extended protocol)

Runs, in interleaved rounds (the order rotating, each ratio against the direct run of its own
round), against the machine's PostgreSQL (127.0.0.1:5432, trust auth, database `test`,
pgbench tables made with `pgbench -i -s 1` if missing):

1. `pgbench -S -c 8 -j 2 -T N` (one SELECT per transaction, simple protocol) direct;
2. the same through a bare asyncio byte relay (no framing, no inspection: the floor of any
   Python proxy on this machine);
3. the same through the full gateway (framing, pglast classification with its fingerprint
   cache, policy, recording with fsync'd frames, SCRAM login);
4. TPC-B-like `pgbench -c 8 -j 2 -T N` direct and through the gateway;
5. connection set-up: psycopg `connect()` + `close()` latency (a client process of its own,
   one connection at a time) and logins per second (`pgbench -C -S`, a new connection per
   transaction), direct and through the gateway: SCRAM on a plain connection, and a
   password inside TLS checked against a production-cost scrypt hash (the first login pays
   it; `[postgres] login_cache` spares the rest). Direct uses trust authentication, so the
   ratios include the gateway's authentication as well as its two logins.

Each gateway line also shows the CPU time this process (gateway, its recording threads) spent
per transaction, from `os.times()` around the run.

Per-transaction latencies come from pgbench's `-l` logs; the latency the gateway adds is the
difference of the percentiles (p50, p99) through the gateway and direct. When pgbouncer is
installed, -S and TPC-B-like also run through it (transaction pooling) as a second baseline.

The gateway runs in this process's event loop (one core at most, like a real deployment of one
gateway process); pgbench and PostgreSQL share the two cores with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from proxy.auth import hash_password
from proxy.config import load_config
from proxy.holds.broker import ApprovalBroker
from proxy.holds.control import ControlServer, socket_path
from proxy.holds.enforcement import Enforcer
from proxy.holds.service import ApprovalService
from proxy.pg.scram import make_verifier
from proxy.pg.server import PgGateway
from proxy.session import GatewaySession
from storage.sqlite_state import SqliteState

PG_HOST, PG_PORT, DATABASE, PG_USER = "127.0.0.1", 5432, "test", "root"
PASSWORD = "bench-pw"
TLS_USER = "bench-tls"  # a gateway user with a scrypt hash (production cost), no verifier
CONNECTS = 40  # connect+close timings per way
QUIET_S = 2.0  # before each way's timings: the recordings and search index of the last are done

_CONNECT_SCRIPT = """
import sys, time, psycopg
dsn, count = sys.argv[1], int(sys.argv[2])
psycopg.connect(dsn).close()  # the first login (and any cache fill) is not counted
for _ in range(count):
    started = time.perf_counter()
    psycopg.connect(dsn).close()
    print(int((time.perf_counter() - started) * 1e6))
"""


@dataclass
class Run:
    name: str
    tps: float
    latencies_us: list[int]
    cpu_s: float = 0.0  # CPU time of this process (the gateway or relay) during the run

    def pct(self, q: float) -> float:
        if not self.latencies_us:
            return float("nan")
        ordered = sorted(self.latencies_us)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


async def pgbench(
    name: str,
    port: int,
    args: list[str],
    duration: int,
    clients: int,
    threads: int,
    user: str,
    sslmode: str = "disable",
) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="hoop-pgbench-"))
    env = dict(os.environ, PGPASSWORD=PASSWORD, PGSSLMODE=sslmode)
    argv = [
        "pgbench",
        "-h", PG_HOST,
        "-p", str(port),
        "-U", user,
        "-n",
        "-c", str(clients),
        "-j", str(threads),
        "-T", str(duration),
        "-l", "--log-prefix", str(workdir / "log"),
        *args,
        DATABASE,
    ]  # fmt: skip
    cpu_before = os.times()
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await process.communicate()
    cpu_after = os.times()
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    if process.returncode != 0:
        raise SystemExit(f"pgbench failed ({name}): {err.decode()}")
    text = out.decode()
    match = re.search(r"tps = ([\d.]+)", text)
    tps = float(match.group(1)) if match else 0.0
    latencies: list[int] = []
    for log in workdir.glob("log*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                latencies.append(int(parts[2]))
    shutil.rmtree(workdir, ignore_errors=True)
    return Run(name, tps, latencies, cpu)


class _NoRecording:
    """Diagnostic only: what the gateway costs without its recording writer."""

    filter = None
    congested = False

    def elapsed_us(self) -> int:
        return 0

    def record_at(self, *fields: object) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


def _no_recording(self: GatewaySession, header: object) -> _NoRecording:
    return _NoRecording()


async def relay_server() -> asyncio.Server:
    """A bare byte relay: the floor of any Python proxy here."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(262144):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(PG_HOST, PG_PORT)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def start_gateway(directory: Path) -> tuple[PgGateway, ApprovalService, ControlServer]:
    data = directory / "data"
    data.mkdir(parents=True)
    config_path = directory / "gateway.toml"
    config_path.write_text(
        f"""[gateway]
data_dir = "{data}"
id = "bench"
pg_listen = "127.0.0.1:0"

[postgres]
allow_plain = true

[postgres.scram]
{PG_USER} = "{make_verifier(PASSWORD, iterations=4096).encode()}"

[[users]]
name = "{TLS_USER}"
password_hash = "{hash_password(PASSWORD)}"
groups = ["bench"]

[[targets]]
name = "{DATABASE}"
protocol = "postgres"
host = "{PG_HOST}"
port = {PG_PORT}
database = "{DATABASE}"
user = "{PG_USER}"
groups = ["*"]

[[rules]]
name = "no-ddl"
sql = ["ddl", "dcl", "copy_program", "set_role", "delete_without_where"]
action = "deny"
message = "no schema changes in the benchmark"
"""
    )
    config = load_config(config_path)
    control = ControlServer(socket_path(data), lambda name: None)
    service = ApprovalService(ApprovalBroker(SqliteState.in_data_dir(data), "bench"), control)
    await control.start()
    await service.start()
    gateway = PgGateway(config, Enforcer(service))
    await gateway.start()
    return gateway, service, control


async def connect_latency(name: str, dsn: str, count: int) -> Run:
    """psycopg connect() + close(), one at a time, from a client process of its own (so the
    client's SCRAM work does not share this process's event loop with the gateway)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CONNECT_SCRIPT, dsn, str(count),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"connect timing failed ({name}): {err.decode()}")
    latencies = [int(item) for item in out.split()]
    return Run(name, 0.0, latencies)


async def connections(
    ways: dict[str, tuple[int, str, str]], duration: int, clients: int, threads: int
) -> None:
    """Connection set-up per way (name -> port, user, sslmode): connect+close latency and
    logins per second (`pgbench -C -S`)."""
    print(
        f"connection set-up: psycopg connect+close x{CONNECTS} (one at a time, two rounds "
        "of each way in turn, before any pgbench -C); "
        f"logins/s = pgbench -C -S -c {clients} -j {threads} -T {duration}"
    )
    dsns = {
        name: (
            f"host={PG_HOST} port={port} user={user} dbname={DATABASE} "
            f"password={PASSWORD} sslmode={sslmode}"
        )
        for name, (port, user, sslmode) in ways.items()
    }
    # Every way's latency before any `pgbench -C`: a burst of a thousand logins leaves work
    # behind (backends exiting, recordings closing) that would land on whichever way comes next.
    latencies: dict[str, list[int]] = {name: [] for name in ways}
    for _ in range(2):
        for name, dsn in dsns.items():
            await asyncio.sleep(QUIET_S)  # what the way before left to do is done
            run = await connect_latency(name, dsn, CONNECTS // 2)
            latencies[name].extend(run.latencies_us)
    base: tuple[Run, Run] | None = None
    for name, (port, user, sslmode) in ways.items():
        latency = Run(name, 0.0, latencies[name])
        logins = await pgbench(name, port, ["-C", "-S"], duration, clients, threads, user, sslmode)
        mean = sum(latency.latencies_us) / max(1, len(latency.latencies_us)) / 1000
        text = (
            f"  {name:<34} connect+close mean {mean:6.2f} ms  p50 {latency.pct(0.5):6.2f}  "
            f"p99 {latency.pct(0.99):6.2f}  logins/s {logins.tps:8.1f}"
        )
        if base is None:
            base = (latency, logins)
        else:
            base_mean = sum(base[0].latencies_us) / max(1, len(base[0].latencies_us)) / 1000
            text += f"  ({mean / base_mean:.2f}x direct set-up"
            text += f", {logins.tps / base[1].tps:.2f}x direct logins/s)" if base[1].tps else ")"
        print(text)
    print()


async def ensure_tables() -> None:
    check = await asyncio.create_subprocess_exec(
        "psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", DATABASE, "-Atc",
        "select count(*) from pgbench_accounts",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await check.communicate()
    if check.returncode == 0 and out.strip() == b"100000":
        return
    init = await asyncio.create_subprocess_exec(
        "pgbench", "-i", "-q", "-s", "1", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, DATABASE
    )
    await init.wait()


def line(run: Run, base: Run | None) -> str:
    ratio = f"{run.tps / base.tps:.2f}x" if base and base.tps else "1.00x"
    added = ""
    if base is not None:
        added = (
            f"  added p50 {run.pct(0.5) - base.pct(0.5):+.3f} ms"
            f"  p99 {run.pct(0.99) - base.pct(0.99):+.3f} ms"
        )
    cpu = f"  cpu {run.cpu_s * 1e6 / max(1, len(run.latencies_us)):.0f} us/tx" if run.cpu_s else ""
    return (
        f"{run.name:<28} {run.tps:>9.0f} tps  {ratio:>6}{cpu}  "
        f"p50 {run.pct(0.5):.3f} ms  p99 {run.pct(0.99):.3f} ms{added}"
    )


async def start_pgbouncer(directory: Path) -> tuple[asyncio.subprocess.Process, int] | None:
    """pgbouncer in transaction mode in front of the same PostgreSQL, on a free port; None
    when it is not installed. It refuses to run as root, so it runs as `postgres` then."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if binary is None:
        return None
    import socket

    with socket.socket() as sock:
        sock.bind((PG_HOST, 0))
        port = int(sock.getsockname()[1])
    users = directory / "userlist.txt"
    users.write_text(f'"{PG_USER}" ""\n')
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
{DATABASE} = host={PG_HOST} port={PG_PORT} dbname={DATABASE}
[pgbouncer]
listen_addr = {PG_HOST}
listen_port = {port}
auth_type = trust
auth_file = {users}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
unix_socket_dir =
logfile = {directory}/pgbouncer.log
"""
    )
    for path in (users, ini):
        os.chmod(path, 0o644)
    argv = [binary, str(ini)]
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")  # its log goes here, written as postgres
        argv = [binary, "-u", "postgres", str(ini)]
    return await _spawn(argv, port), port


async def _spawn(argv: list[str], port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection(PG_HOST, port)
            writer.close()
            return process
        except OSError:
            await asyncio.sleep(0.05)
    process.terminate()
    raise SystemExit("pgbouncer did not start (see its log)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per pgbench run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s runs")
    parser.add_argument("--profile", action="store_true", help="profile the gateway during -S")
    parser.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval (seconds)"
    )
    parser.add_argument("--skip-tpcb", action="store_true", help="only pgbench -S")
    parser.add_argument(
        "--set-up-only", action="store_true", help="only connection set-up (latency, logins/s)"
    )
    parser.add_argument(
        "--sans-io", type=int, default=0, metavar="N", help="only the session code, N statements"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of each comparison (default 3)"
    )
    parser.add_argument(
        "--asyncio-loop",
        action="store_true",
        help="run everything on asyncio's own loop instead of uvloop (which the gateway uses)",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also run -S through the gateway with recording replaced by a no-op (diagnostic)",
    )
    args = parser.parse_args()
    if args.sans_io:
        sans_io(args.sans_io)
        return
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    duration = 3 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    bench = (duration, args.clients, args.threads)
    await ensure_tables()
    with tempfile.TemporaryDirectory(prefix="hoop-bench-pg-") as tmp:
        gateway, service, control = await start_gateway(Path(tmp))
        relay = await relay_server()
        relay_port = relay.sockets[0].getsockname()[1]
        bouncer_dir = Path(tempfile.mkdtemp(prefix="hoop-pgbouncer-"))
        os.chmod(bouncer_dir, 0o755)
        bouncer = await start_pgbouncer(bouncer_dir)
        try:
            ways = {"direct": PG_PORT, "bare byte relay": relay_port, "gateway": gateway.port}
            if bouncer is not None:
                ways["pgbouncer"] = bouncer[1]
            if args.set_up_only:
                await connections(set_up_ways(gateway, bouncer), *bench)
                return
            print(
                f"pgbench -S -c {args.clients} -j {args.threads} -T {duration} (simple protocol), "
                f"{rounds} interleaved round(s)"
            )
            profiler = cProfile.Profile() if args.profile else None
            select = await interleaved(ways, ["-S"], bench, rounds, profiler)
            report(select)
            print(
                f"gateway / bare relay: {ratio_span(select['gateway'], select['bare byte relay'])}"
            )
            if args.diagnose:
                real = GatewaySession._open_recording
                GatewaySession._open_recording = _no_recording  # type: ignore[assignment]
                try:
                    unrecorded = await pgbench(
                        "gateway, no recording", gateway.port, ["-S"], *bench, PG_USER
                    )
                finally:
                    GatewaySession._open_recording = real  # type: ignore[method-assign]
                print(line(unrecorded, select["direct"][-1]))
            print(f"classifier: {gateway.classifier.hits} hits, {gateway.classifier.misses} misses")
            print()
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            await connections(set_up_ways(gateway, bouncer), *bench)
            if args.skip_tpcb:
                return
            print(f"pgbench (TPC-B-like) -c {args.clients} -j {args.threads} -T {duration}")
            del ways["bare byte relay"]
            tpcb = await interleaved(ways, [], bench, rounds, None)
            report(tpcb)
            if bouncer is None:
                print("\npgbouncer: not installed here (apt-get install pgbouncer), not measured")
            else:
                print(
                    f"\ngateway / pgbouncer (transaction pooling): "
                    f"-S {ratio_span(select['gateway'], select['pgbouncer'])}, "
                    f"TPC-B {ratio_span(tpcb['gateway'], tpcb['pgbouncer'])}"
                )
        finally:
            if bouncer is not None:
                bouncer[0].terminate()
                await bouncer[0].wait()
            shutil.rmtree(bouncer_dir, ignore_errors=True)
            relay.close()
            await gateway.stop()
            await service.stop()
            await control.stop()


def sans_io(count: int) -> None:
    """The sans-IO session alone: pgbench -S's SELECT as a simple Query and as a
    Parse/Bind/Describe/Execute/Sync batch, each answered by a one-row result, fed `count`
    times; the best of three runs of CPU time per statement."""
    import time

    from proxy.pg import wire
    from proxy.pg.classify import Classifier
    from proxy.pg.server import PgTarget, make_decider
    from proxy.pg.session import PgSession
    from proxy.policy import Caller, parse_policy

    policy = parse_policy({"rules": [{"name": "no-ddl", "sql": ["ddl"], "action": "deny"}]}, "-")
    decide = make_decider(policy, Caller("bench", frozenset()), PgTarget("db", "", 0, "db", "", ()))
    session = PgSession(decide, Classifier(), lambda event, *fields: True)
    select = "SELECT abalance FROM pgbench_accounts WHERE aid = "
    row = (wire.RowDescription((wire.Column("abalance"),)), wire.DataRow((b"1",)))
    done = (wire.CommandComplete("SELECT 1"), wire.ReadyForQuery("I"))
    simple_reply = b"".join(m.encode() for m in (*row, *done))
    batch = b"".join(
        m.encode()
        for m in (
            wire.Parse("", select + "$1"),
            wire.Bind("", "", (), (b"5",)),
            wire.Describe("P", ""),
            wire.Execute(""),
            wire.Sync(),
        )
    )
    batch_reply = b"".join(
        m.encode() for m in (wire.ParseComplete(), wire.BindComplete(), *row, *done)
    )
    queries = [wire.Query(f"{select}{i % 100000};").encode() for i in range(count)]
    best = {"simple": float("inf"), "extended": float("inf")}
    for _ in range(3):
        started = time.process_time()
        for query in queries:
            session.client_data(query)
            session.upstream_data(simple_reply)
        best["simple"] = min(best["simple"], time.process_time() - started)
        started = time.process_time()
        for _ in range(count):
            session.client_data(batch)
            session.upstream_data(batch_reply)
        best["extended"] = min(best["extended"], time.process_time() - started)
        session.to_upstream.clear()
        session.to_client.clear()
    print(", ".join(f"{k} {v / count * 1e6:.1f} us per statement" for k, v in best.items()))


def set_up_ways(
    gateway: PgGateway, bouncer: tuple[asyncio.subprocess.Process, int] | None
) -> dict[str, tuple[int, str, str]]:
    ways = {
        "direct (trust)": (PG_PORT, PG_USER, "disable"),
        "gateway, SCRAM, plain": (gateway.port, PG_USER, "disable"),
        "gateway, password in TLS (scrypt)": (gateway.port, TLS_USER, "require"),
    }
    if bouncer is not None:
        ways["pgbouncer"] = (bouncer[1], PG_USER, "disable")
    return ways


async def interleaved(
    ways: dict[str, int],
    args: list[str],
    bench: tuple[int, int, int],
    rounds: int,
    profiler: cProfile.Profile | None,
) -> dict[str, list[Run]]:
    """Each way (name -> port) once per round, the order rotating, so that every ratio compares
    runs made moments apart; the profiler, if any, watches the gateway's first run."""
    names = list(ways)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            watched = profiler is not None and name == "gateway" and not runs[name]
            if watched and profiler is not None:
                profiler.enable()
            runs[name].append(await pgbench(name, ways[name], args, *bench, PG_USER))
            if watched and profiler is not None:
                profiler.disable()
    return runs


def report(runs: dict[str, list[Run]]) -> None:
    """Per way, its run of median TPS against direct's median run; with several rounds, the
    range of its per-round ratio to direct as well."""
    direct = runs["direct"]
    for name, own in runs.items():
        median = sorted(own, key=lambda run: run.tps)[len(own) // 2]
        text = line(
            median,
            None if name == "direct" else sorted(direct, key=lambda r: r.tps)[len(direct) // 2],
        )
        if name != "direct" and len(own) > 1:
            text += f"  (per round {ratio_span(own, direct)})"
        print(text)


def ratio_span(runs: list[Run], bases: list[Run]) -> str:
    """The median of the per-round TPS ratios, with their range when there are several."""
    ratios = sorted(run.tps / base.tps for run, base in zip(runs, bases, strict=True) if base.tps)
    if not ratios:
        return "n/a"
    median = ratios[len(ratios) // 2]
    if len(ratios) == 1:
        return f"{median:.2f}x"
    return f"{median:.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


if __name__ == "__main__":
    if "--asyncio-loop" in sys.argv:
        asyncio.run(main())
    else:
        from hoop_tui.commands.gateway import run_event_loop

        run_event_loop(main())  # uvloop, as `hoop-tui gateway` runs
