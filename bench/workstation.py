"""Workstation benchmarks: start time, and memory with a large recording open in replay.

1. Start: from creating the app to the recordings table showing a catalogue of N sessions
   (`hoop-tui tui --offline`), against a bare Textual app with one DataTable of the same rows
   started the same way in the same run.
2. Memory: the process's peak RSS growth while a recording of `--mb` MB of terminal output is
   opened in the replay screen (index and keyframes built, cache off), and the time that took.

    python bench/workstation.py [--sessions 2000] [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from hoop_tui.workstation.app import Workstation
from hoop_tui.workstation.replay import PlaybackScreen
from replay.player import Player
from storage.catalogue import SessionQuery, SqliteCatalogue
from storage.encoder import FRAME_TARGET_RAW, RecordingEncoder
from storage.reader import RecordingReader
from storage.schema import EventType, RecordingHeader
from storage.writer import RecordingSummary


def catalogue(data_dir: Path, sessions: int) -> None:
    cat = SqliteCatalogue.in_data_dir(data_dir)
    for number in range(sessions):
        header = RecordingHeader(
            session_id=f"{number:032x}",
            user=f"user{number % 40}",
            target=f"host{number % 90}",
            protocol="ssh",
            started_at_us=1_764_000_000_000_000 + number * 60_000_000,
        )
        path = data_dir / f"{number}.hrec"
        cat.add_session(header, path)
        cat.finish_session(RecordingSummary(path, header, 1000, 10, 1_000_000, "client closed"))


class Baseline(App[None]):
    def __init__(self, rows: list[Any]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        yield DataTable()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("STARTED", "USER", "TARGET", "PROTOCOL", "EVENTS", "DENY", "HOLD", "END")
        for row in self.rows:
            table.add_row(
                str(row.started_at_us),
                row.user,
                row.target,
                row.protocol,
                str(row.events),
                str(row.denies),
                str(row.holds),
                row.end_reason,
            )


async def time_start(data_dir: Path) -> tuple[float, float]:
    started = time.perf_counter()
    app = Workstation(data_dir, offline=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        ours = time.perf_counter() - started
    rows = SqliteCatalogue.in_data_dir(data_dir).find_sessions(SessionQuery(limit=5000))
    started = time.perf_counter()
    async with Baseline(rows).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        base = time.perf_counter() - started
    return ours, base


def big_recording(path: Path, megabytes: int) -> None:
    signer = Ed25519PrivateKey.generate()
    header = RecordingHeader(
        "f" * 32, "alice", "web1", "ssh", 1_764_000_000_000_000, term="xterm", cols=120, rows=40
    )
    encoder = RecordingEncoder(header, signer)
    line = b"\x1b[32m-rw-r--r--\x1b[0m 1 root root %8d Nov 25 12:00 file-%06d.txt\r\n"
    written, time_us, number = 0, 0, 0
    with path.open("wb") as out:
        out.write(encoder.start())
        while written < megabytes * 1_000_000:
            chunk = b"".join(line % (number * 7 + k, number + k) for k in range(40))
            encoder.add(int(EventType.OUTPUT), time_us, (0, chunk))
            written += len(chunk)
            number += 40
            time_us += 2_000
            if encoder.pending_bytes >= FRAME_TARGET_RAW:
                out.write(encoder.flush_frame())
        out.write(encoder.finish(time_us, "bench"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def open_in_replay(path: Path) -> tuple[float, float]:
    before = peak_rss_mb()
    started = time.perf_counter()
    reader = RecordingReader.open(path)
    player = Player.open(reader)
    player.seek(player.duration_us // 2)
    app = App[None]()
    async with app.run_test(size=(120, 40)) as pilot:
        await app.push_screen(PlaybackScreen(path, "bench", player))
        await pilot.pause()
    return time.perf_counter() - started, peak_rss_mb() - before


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        catalogue(data_dir, args.sessions)
        ours, base = await time_start(data_dir)
        print(
            f"start with {args.sessions} catalogued sessions: workstation {ours * 1000:.0f} ms, "
            f"bare Textual app + table {base * 1000:.0f} ms, ratio {ours / base:.2f}x"
        )
        path = data_dir / "big.hrec"
        big_recording(path, args.mb)
        size_mb = os.path.getsize(path) / 1e6
        took, grew = await open_in_replay(path)
        print(
            f"replay of {args.mb} MB of output ({size_mb:.1f} MB file): opened and shown in "
            f"{took:.1f} s (index + keyframes, no cache), peak RSS grew {grew:.0f} MB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--mb", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
