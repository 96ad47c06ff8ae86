"""SSH gateway benchmarks, each a ratio against direct OpenSSH measured in the same run.

    python3 bench/ssh.py [--size-mb 512] [--rounds 3] [--echo-count 500] [--sessions 200]

Starts a private sshd (the target) and the gateway as a separate process (`hoop-tui gateway`,
recording on, as in production), then measures with the same cipher on every leg:

1. bulk exec output: `ssh ... 'head -c N /dev/zero'` through the real OpenSSH client, direct
   to sshd, through the gateway with `alice+web1` and through it with `-J` (the inner
   connection is encrypted twice between client and gateway), in `--rounds` interleaved
   rounds, each ratio against the direct run of its own round;
2. keystroke echo: one byte written to a raw-mode `cat` on a PTY and read back, p50 and p99,
   direct and through the gateway; and typed at a strict shell (`shell_mode = "strict"`), whose
   echo comes from the gateway's own line editor;
3. N concurrent interactive sessions, direct and through the gateway, each typing a key every
   ~100 ms (`--pause`) from its own random start: echo p50/p99 over all of them; then one
   burst in which every session presses a key at the same instant; the gateway's resident
   memory per session and CPU per keystroke.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import proxy  # noqa: F401  (its import filters asyncssh's DSA warning before asyncssh loads)

# isort: split
import asyncssh

from tests.fixtures.processes import free_port, stop, wait_for_port
from tests.fixtures.sshd import Sshd, keygen, start_sshd

CIPHER = "aes128-gcm@openssh.com"


class Setup:
    def __init__(self, directory: Path, sshd: Sshd, gateway: subprocess.Popen[bytes], port: int):
        self.directory = directory
        self.sshd = sshd
        self.gateway = gateway
        self.port = port

    @property
    def ssh_config(self) -> Path:
        return self.directory / "ssh_config"


def start_gateway(
    directory: Path, name: str, sshd: Sshd, alice_public: str, extra_toml: str = ""
) -> tuple[subprocess.Popen[bytes], int, str]:
    """A `hoop-tui gateway` subprocess (recording on) with user alice and target web1 (the
    sshd), its own data directory, config and log under `directory` named by `name`; its
    process, SSH port and the @cert-authority line callers trust."""
    port = free_port()
    config = directory / f"{name}.toml"
    config.write_text(
        f"""[gateway]
data_dir = "{directory}/{name}-data"
ssh_listen = "127.0.0.1:{port}"

[[users]]
name = "alice"
authorized_keys = ["{alice_public}"]
groups = ["dev"]

[[targets]]
name = "web1"
host = "127.0.0.1"
port = {sshd.port}
user = "{sshd.user}"
key_file = "{sshd.key_file}"
host_key = "{sshd.host_key}"
groups = ["dev"]

{extra_toml}"""
    )
    hoop = [sys.executable, "-m", "hoop_tui.cli", "gateway", "--config", str(config)]
    ca_line = subprocess.run([*hoop, "--known-hosts"], capture_output=True, text=True, check=True)
    log = directory / f"{name}.log"
    with log.open("wb") as log_file:
        gateway = subprocess.Popen(hoop, stdout=log_file, stderr=log_file)
    wait_for_port(port, gateway, log)
    return gateway, port, ca_line.stdout.strip()


def write_client_config(directory: Path, sshd: Sshd, known: list[str]) -> None:
    """known_hosts (the gateways' CA lines and the sshd's key) and an ssh_config for the
    OpenSSH client: alice's key and the sshd's, the benchmark cipher, no agent."""
    known_hosts = [*known, f"[127.0.0.1]:{sshd.port} {sshd.host_key}"]
    (directory / "known_hosts").write_text("\n".join(known_hosts) + "\n")
    (directory / "ssh_config").write_text(
        f"""Host *
  UserKnownHostsFile {directory}/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  IdentitiesOnly yes
  IdentityAgent none
  BatchMode yes
  Ciphers {CIPHER}
  IdentityFile {directory}/alice_key
  IdentityFile {sshd.key_file}
  ControlMaster no
"""
    )


def start(directory: Path) -> Setup:
    sshd = start_sshd(directory / "sshd")
    alice_public = keygen(directory / "alice_key", "alice")
    strict_target = f"""[[targets]]
name = "web1s"
host = "127.0.0.1"
port = {sshd.port}
user = "{sshd.user}"
key_file = "{sshd.key_file}"
host_key = "{sshd.host_key}"
groups = ["dev"]
shell_mode = "strict"
"""
    gateway, port, ca_line = start_gateway(
        directory, "gateway", sshd, alice_public, extra_toml=strict_target
    )
    write_client_config(directory, sshd, [ca_line])
    return Setup(directory, sshd, gateway, port)


def bulk(setup: Setup, how: str, size: int) -> float:
    """MB/s of `head -c size /dev/zero` over ssh, output discarded by the client."""
    base = ["ssh", "-F", str(setup.ssh_config)]
    if how == "direct":
        argv = [*base, "-p", str(setup.sshd.port), f"{setup.sshd.user}@127.0.0.1"]
    elif how == "gateway":
        argv = [*base, "-p", str(setup.port), "alice+web1@127.0.0.1"]
    else:
        argv = [*base, "-J", f"alice@127.0.0.1:{setup.port}", "web1"]
    started = time.perf_counter()
    result = subprocess.run(
        [*argv, f"head -c {size} /dev/zero"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{how}: {result.stderr.decode()}")
    return size / elapsed / 1e6


async def open_echo(
    setup: Setup, via_gateway: bool, target: str = "web1"
) -> asyncssh.SSHClientConnection:
    if via_gateway:
        host, port, user, key = (
            "127.0.0.1",
            setup.port,
            f"alice+{target}",
            setup.directory / "alice_key",
        )
    else:
        host, port, user, key = "127.0.0.1", setup.sshd.port, setup.sshd.user, setup.sshd.key_file
    return await asyncssh.connect(
        host,
        port,
        username=user,
        client_keys=[str(key)],
        known_hosts=None,
        agent_path=None,
        config=None,
        encryption_algs=[CIPHER],
    )


async def echo_session(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[bytes]:
    process = await conn.create_process(
        "stty raw -echo; echo ready; exec cat", term_type="xterm", encoding=None
    )
    await process.stdout.readuntil(b"ready")
    await process.stdout.read(2)  # the \r\n after ready
    return process


async def keystrokes(
    process: asyncssh.SSHClientProcess[bytes], count: int, pause: float = 0.0
) -> list[float]:
    """Round trips, in ms, of one byte written and read back."""
    samples = []
    for index in range(count):
        key = bytes([97 + index % 26])
        started = time.perf_counter()
        process.stdin.write(key)
        echoed = await process.stdout.readexactly(1)
        samples.append((time.perf_counter() - started) * 1000)
        assert echoed == key, (echoed, key)
        if pause:
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def echo(setup: Setup, via_gateway: bool, count: int) -> tuple[float, float]:
    async with await open_echo(setup, via_gateway) as conn:
        process = await echo_session(conn)
        await keystrokes(process, 50)  # warm up
        samples = await keystrokes(process, count)
        process.stdin.write_eof()
        return statistics.median(samples), percentile(samples, 0.99)


async def strict_echo(setup: Setup, count: int) -> tuple[float, float]:
    """Keys typed at a strict shell's prompt: the gateway's line editor echoes each one. Every
    40 keys Ctrl-U empties the line (its redraw is read, not measured), so no line wraps."""
    async with await open_echo(setup, True, "web1s") as conn:
        process = await conn.create_process(term_type="xterm", term_size=(200, 50), encoding=None)
        await process.stdout.readuntil(b"# " if setup.sshd.user == "root" else b"$ ")
        samples: list[float] = []
        for start in range(0, count + 50, 40):
            samples += await keystrokes(process, min(40, count + 50 - start))
            process.stdin.write(b"\x15")
            await process.stdout.readuntil(b"C")  # the redraw ends placing the cursor
        process.stdin.write(b"\x04")
        samples = samples[50:]  # the warm-up
        return statistics.median(samples), percentile(samples, 0.99)


async def loop_lag(lags: list[float], every: float = 0.005) -> None:
    """How late this process's event loop wakes from a short sleep, in ms: time that every
    echo measured here also waits, whoever relays it."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(every)
        lags.append((time.perf_counter() - started - every) * 1000)


def proc_status(pid: int, key: str) -> int:
    """A number from /proc/PID/status, e.g. VmRSS (KiB) or Threads."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Typing:
    """What N sessions typing at once measured."""

    p50: float  # echo ms, steady typing
    p99: float
    burst_p50: float  # echo ms when every session pressed a key at the same instant
    burst_p99: float
    kib_per_session: float  # gateway resident memory
    cpu_per_key_us: float  # gateway CPU
    threads: int  # gateway threads


async def typist(
    process: asyncssh.SSHClientProcess[bytes], warm_up: int, count: int, pause: float
) -> list[float]:
    """One person typing: starts at a random moment within one pause (people do not press
    their keys in step), warms up, then measures `count` keys."""
    await asyncio.sleep(random.uniform(0, pause))
    await keystrokes(process, warm_up, pause=pause)
    return await keystrokes(process, count, pause=pause)


async def concurrent(
    setup: Setup, sessions: int, keys_each: int, via_gateway: bool = True, pause: float = 0.1
) -> Typing:
    """Echo p50 and p99 over `sessions` sessions typing at once, then one burst where all of
    them press a key at the same instant; the gateway's memory per session, CPU per keystroke
    and thread count."""
    before = proc_status(setup.gateway.pid, "VmRSS")
    conns: list[asyncssh.SSHClientConnection] = []
    processes = []
    for start in range(0, sessions, 20):  # sshd's MaxStartups: open in batches
        batch = await asyncio.gather(
            *(open_echo(setup, via_gateway) for _ in range(start, min(sessions, start + 20)))
        )
        conns += batch
        processes += await asyncio.gather(*(echo_session(conn) for conn in batch))
    during = proc_status(setup.gateway.pid, "VmRSS")
    threads = proc_status(setup.gateway.pid, "Threads")
    cpu_before = cpu_seconds(setup.gateway.pid)
    lags: list[float] = []
    watching = asyncio.ensure_future(loop_lag(lags))
    results = await asyncio.gather(*(typist(p, 5, keys_each, pause) for p in processes))
    watching.cancel()
    cpu_used = cpu_seconds(setup.gateway.pid) - cpu_before
    print(
        f"  load generator's own event-loop lag (its share of every echo): p50 "
        f"{percentile(lags, 0.5):.2f} ms, p99 {percentile(lags, 0.99):.2f} ms"
    )
    burst = [
        sample
        for result in await asyncio.gather(*(keystrokes(p, 1) for p in processes))
        for sample in result
    ]
    for conn in conns:
        conn.close()
    samples = [sample for result in results for sample in result]
    return Typing(
        p50=statistics.median(samples),
        p99=percentile(samples, 0.99),
        burst_p50=statistics.median(burst),
        burst_p99=percentile(burst, 0.99),
        kib_per_session=(during - before) / sessions,
        cpu_per_key_us=cpu_used / (len(samples) + 5 * sessions) * 1e6,
        threads=threads,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="bulk rounds (default 3)")
    parser.add_argument("--echo-count", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument(
        "--keys-each", type=int, default=100, help="measured keys per session (default 100)"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.1,
        help="mean seconds between one session's keystrokes (0.1: a fast typist, 10 keys/s)",
    )
    parser.add_argument(
        "--parts",
        default="bulk,echo,concurrent",
        help="comma-separated subset of bulk, echo, concurrent (default: all three)",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="hoop-bench-") as temp:
        setup = start(Path(temp))
        try:
            print(f"cipher {CIPHER}, {os.cpu_count()} CPUs")
            if "bulk" in parts:
                run_bulk(setup, args.size_mb, args.rounds)
            if "echo" in parts:
                await run_echo(setup, args.echo_count)
            if "concurrent" in parts:
                await run_concurrent(setup, args.sessions, args.keys_each, args.pause)
        finally:
            setup.gateway.terminate()
            setup.gateway.wait(10)
            stop(setup.sshd.process)


def run_bulk(setup: Setup, size_mb: int, rounds: int) -> None:
    """Direct, `alice+web1` and `-J` in turn, `rounds` times (the order rotating), so that each
    ratio compares runs made moments apart; the direct baseline alone moves by a third between
    runs on a shared 2-core machine."""
    size = size_mb * 1_000_000
    ways = ["direct", "gateway", "jump"]
    rates: dict[str, list[float]] = {way: [] for way in ways}
    for index in range(rounds):
        for way in ways[index % 3 :] + ways[: index % 3]:
            rates[way].append(bulk(setup, way, size))
    direct = rates["direct"]
    print(
        f"bulk exec output ({size_mb} MB, {rounds} rounds): direct median "
        f"{statistics.median(direct):.0f} MB/s, runs {[round(r) for r in direct]}"
    )
    for way, label in (("gateway", "alice+web1"), ("jump", "-J web1   ")):
        ratios = [r / d for r, d in zip(rates[way], direct, strict=True)]
        print(
            f"  gateway {label}, recorded: median {statistics.median(rates[way]):.0f} MB/s, "
            f"ratio median {statistics.median(ratios):.2f} (rounds "
            f"{min(ratios):.2f}-{max(ratios):.2f})"
        )


async def run_echo(setup: Setup, count: int) -> None:
    d50, d99 = await echo(setup, False, count)
    g50, g99 = await echo(setup, True, count)
    print(f"keystroke echo: direct p50 {d50:.2f} ms p99 {d99:.2f} ms")
    print(
        f"  gateway p50 {g50:.2f} ms p99 {g99:.2f} ms; "
        f"added p50 {g50 - d50:.2f} ms p99 {g99 - d99:.2f} ms"
    )
    s50, s99 = await strict_echo(setup, count)
    print(
        f"  strict shell (echo by the gateway) p50 {s50:.2f} ms p99 {s99:.2f} ms; "
        f"added p50 {s50 - d50:.2f} ms p99 {s99 - d99:.2f} ms"
    )


async def run_concurrent(setup: Setup, sessions: int, keys_each: int, pause: float) -> None:
    rate = f"a key every {pause * 1000:.0f} ms each"
    for via_gateway in (False, True):
        typing = await concurrent(setup, sessions, keys_each, via_gateway, pause)
        how = "gateway" if via_gateway else "direct"
        print(
            f"{sessions} sessions typing ({rate}), {how}: echo p50 {typing.p50:.2f} ms "
            f"p99 {typing.p99:.2f} ms; all pressing a key at once: p50 {typing.burst_p50:.1f} ms "
            f"p99 {typing.burst_p99:.1f} ms"
        )
    print(
        f"  gateway memory {typing.kib_per_session:.0f} KiB per session, "
        f"CPU {typing.cpu_per_key_us:.0f} µs per keystroke, {typing.threads} threads"
    )


if __name__ == "__main__":
    asyncio.run(main())
