"""Recordings in object storage (issue 15), each figure a ratio against local disk in the same run.

    python3 bench/fleet_storage.py [--size-mb 64] [--rounds 3] [--seek-mb 100] [--seeks 50]

Starts a private sshd (the target), SeaweedFS (`weed server`, the S3 store) and two
`hoop-tui gateway` processes that differ only in where they record: one on local disk, one
with `[recordings] url = "s3://..."` (local spool, then the store). Then:

1. the same transfer through each: `cat` of a file of random bytes (random, so the recording
   is as large as the transfer and the upload carries all of it), in `--rounds` alternating
   rounds; for each, the transfer's rate as the client sees it, and the rate until the
   recording is complete where it belongs (local: closed on disk; S3: every segment and the
   manifest in the store, the spool empty);
2. seeking in a `--seek-mb` recording (1 s of 100 KB output per frame) read from the store
   with ranged GETs: for `--seeks` random seconds, opening the recording (footer, trailer
   index) and decoding the frame that holds that second, p50 and p99, with a fresh reader
   each time (cold) and with one reader kept open (warm), against the same bytes on local
   disk, and the bytes fetched per seek.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ssh import start_gateway, write_client_config
from tests.fixtures.processes import stop
from tests.fixtures.seaweed import SeaweedFS
from tests.fixtures.sshd import keygen, start_sshd


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def transfer(directory: Path, port: int, source: Path) -> float:
    """Seconds for `cat source` through a gateway, output discarded by the client."""
    argv = ["ssh", "-F", str(directory / "ssh_config"), "-p", str(port), "alice+web1@127.0.0.1"]
    started = time.perf_counter()
    result = subprocess.run(
        [*argv, f"cat {source}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode())
    return time.perf_counter() - started


def wait_until(check, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)


def spool_empty(spool: Path) -> bool:
    return not any(spool.glob("*.hrec"))


def run_transfers(directory: Path, size_mb: int, rounds: int, seaweed: SeaweedFS) -> None:
    sshd = start_sshd(directory / "sshd")
    gateways = []
    try:
        alice = keygen(directory / "alice_key", "alice")
        table = seaweed.settings_table(url=f"s3://{seaweed.bucket}/bench")
        s3_toml = "[recordings]\n" + "".join(f'{k} = "{v}"\n' for k, v in table.items())
        local, local_port, local_ca = start_gateway(directory, "local", sshd, alice)
        gateways.append(local)
        s3, s3_port, s3_ca = start_gateway(directory, "s3", sshd, alice, extra_toml=s3_toml)
        gateways.append(s3)
        write_client_config(directory, sshd, [local_ca, s3_ca])
        source = directory / "random.bin"
        with source.open("wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(1_000_000))
        size = size_mb * 1_000_000
        local_dir, spool = directory / "local-data", directory / "s3-data" / "spool"
        results: dict[str, list[tuple[float, float]]] = {"local": [], "s3": []}
        for index in range(rounds):
            order = ["local", "s3"] if index % 2 == 0 else ["s3", "local"]
            for how in order:
                started = time.perf_counter()
                if how == "local":
                    before = _ended(local_dir)
                    seconds = transfer(directory, local_port, source)
                    wait_until(lambda before=before: _ended(local_dir) > before)
                else:
                    seconds = transfer(directory, s3_port, source)
                    wait_until(lambda: spool_empty(spool))
                stored = time.perf_counter() - started
                results[how].append((size / seconds / 1e6, size / stored / 1e6))
        print(f"recording throughput, {size_mb} MB of random bytes, {rounds} rounds:")
        for how in ("local", "s3"):
            seen = [r[0] for r in results[how]]
            kept = [r[1] for r in results[how]]
            print(
                f"  {how:<5}: transfer median {statistics.median(seen):.0f} MB/s "
                f"{[round(r) for r in seen]}, recorded where it belongs median "
                f"{statistics.median(kept):.0f} MB/s {[round(r) for r in kept]}"
            )
        ratios_seen = [s[0] / lo[0] for s, lo in zip(results["s3"], results["local"], strict=True)]
        ratios_kept = [s[1] / lo[1] for s, lo in zip(results["s3"], results["local"], strict=True)]
        print(
            f"  S3/local ratio: transfer median {statistics.median(ratios_seen):.2f} "
            f"({min(ratios_seen):.2f}-{max(ratios_seen):.2f}), recorded where it belongs "
            f"median {statistics.median(ratios_kept):.2f} "
            f"({min(ratios_kept):.2f}-{max(ratios_kept):.2f})"
        )
    finally:
        for gateway in gateways:
            gateway.terminate()
            gateway.wait(30)
        stop(sshd.process)


def _ended(data_dir: Path) -> int:
    from storage.catalogue import SessionQuery, SqliteCatalogue

    if not (data_dir / "catalogue.db").exists():
        return 0
    rows = SqliteCatalogue.in_data_dir(data_dir).find_sessions(SessionQuery())
    return sum(1 for row in rows if row.ended_at_us is not None)


def run_seeks(directory: Path, seek_mb: int, seeks: int, seaweed: SeaweedFS) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from storage.objectstore import S3Blob, parse_settings, remember
    from storage.reader import RecordingReader
    from storage.recorder import new_session_id
    from storage.schema import EventType, RecordingHeader
    from storage.spool import Spool
    from storage.writer import RecordingWriter

    settings = parse_settings(
        seaweed.settings_table(url=f"s3://{seaweed.bucket}/bench-seek"), directory
    )
    assert settings is not None
    remember(settings)
    spool = Spool(settings, directory / "seek")
    header = RecordingHeader(
        session_id=new_session_id(),
        user="alice",
        target="web1",
        protocol="ssh",
        started_at_us=time.time_ns() // 1000,
    )
    url = settings.location_of(header.session_id, header.started_at_us)
    path = spool.begin(header.session_id, url)
    sid = header.session_id
    writer = RecordingWriter(
        path,
        header,
        Ed25519PrivateKey.generate(),
        fsync=False,
        on_segment=lambda end, final: spool.segment_ready(sid, end, final),
    )
    seconds = seek_mb * 10  # 100 KB a second
    for second in range(seconds):
        data = b"%d|" % second + os.urandom(100_000)
        writer.record_at(second * 1_000_000, EventType.OUTPUT, 0, data)
        while writer.backlog_bytes > 32 * 1024 * 1024:  # the queue is bounded
            time.sleep(0.01)
    writer.close("bench")
    if not spool.drain(300):
        raise RuntimeError("the seek recording did not reach the store")
    spool.stop()
    local = directory / "seek-local.hrec"
    blob = S3Blob(url)
    with local.open("wb") as out:
        for start in range(0, blob.size, 8 * 1024 * 1024):
            out.write(blob.read_at(start, 8 * 1024 * 1024))
    size = blob.size
    rng = random.Random(15)
    moments = [rng.randrange(seconds) * 1_000_000 + 500_000 for _ in range(seeks)]

    def seek(reader: RecordingReader, at_us: int) -> None:
        events = reader.read_frame(reader.frame_index_at(at_us))
        expected = b"%d|" % (at_us // 1_000_000)
        if not any(e["data"].startswith(expected) for e in events):
            raise RuntimeError(f"seek to {at_us} found the wrong frame")

    results: dict[str, list[float]] = {}
    fetched: list[int] = []
    for where, location in (("local", str(local)), ("s3", url)):
        cold, warm = [], []
        for at_us in moments:
            started = time.perf_counter()
            with RecordingReader.open(location) as reader:
                seek(reader, at_us)
                if where == "s3":
                    fetched.append(getattr(reader.blob, "fetched_bytes", 0))
            cold.append((time.perf_counter() - started) * 1000)
        with RecordingReader.open(location) as reader:
            for at_us in moments:
                started = time.perf_counter()
                seek(reader, at_us)
                warm.append((time.perf_counter() - started) * 1000)
        results[f"{where} cold"], results[f"{where} warm"] = cold, warm
    print(
        f"seek to a random second of a {size / 1e6:.0f} MB recording ({seconds} s, "
        f"{seeks} seeks): open + decode the frame holding it"
    )
    for name, samples in results.items():
        print(
            f"  {name:<10} p50 {statistics.median(samples):6.1f} ms  "
            f"p99 {percentile(samples, 0.99):6.1f} ms"
        )
    for kind in ("cold", "warm"):
        s3, lo = results[f"s3 {kind}"], results[f"local {kind}"]
        print(f"  S3/local {kind}: p50 ratio {statistics.median(s3) / statistics.median(lo):.1f}")
    print(
        f"  fetched from the store per cold seek: median {statistics.median(fetched) / 1e3:.0f} "
        f"KB of {size / 1e6:.0f} MB ({statistics.median(fetched) / size:.2%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seek-mb", type=int, default=100)
    parser.add_argument("--seeks", type=int, default=50)
    parser.add_argument("--parts", default="transfer,seek")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="hoop-bench-s3-") as temp:
        directory = Path(temp)
        seaweed = SeaweedFS(directory / "seaweed")
        os.environ.update(seaweed.env())
        seaweed.start()
        try:
            print(f"SeaweedFS on loopback, {os.cpu_count()} CPUs")
            if "transfer" in parts:
                run_transfers(directory, args.size_mb, args.rounds, seaweed)
            if "seek" in parts:
                run_seeks(directory, args.seek_mb, args.seeks, seaweed)
        finally:
            seaweed.stop()


if __name__ == "__main__":
    main()
