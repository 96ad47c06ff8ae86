"""Benchmarks of the recording store, each printed as a ratio against a baseline run beside it.

    python bench/recording.py            # full run (32 MB stream, 1 GB seek file): a few minutes
    python bench/recording.py --quick    # smoke run, under 20 s

1. write: a seeded, realistic terminal stream (`ls -laR`-like listings, SGR colours, cursor
   moves, full-screen redraws, a progress bar redrawn with CR, echoed typing) cut into PTY-read
   sized chunks, pushed through the whole RecordingWriter from this thread as fast as possible,
   against plain streaming zstd level 3 on the same chunks. Also the time this thread spent
   inside record() (what the event loop pays) and the deepest the writer's queue got.
2. size: the same events with their realistic times, as asciicast v2 + gzip -6 (lines written
   exactly as asciinema 2 writes them), against our file. Our file is made by the encoder with
   the writer's framing rules driven by the event times (a frame is closed 1 s after its first
   event, at 512 KiB, checkpoints every 5 s), because the real writer closes frames by wall
   clock and, fed at full speed, would only ever write full 512 KiB frames.
   Fed at full speed, the producer outruns the writer several times over, so the writer's
   queue (16384 events) fills up: the default stream (~15k chunks) fits, a longer one makes the
   writer fail closed, as designed. The second writer line, whose producer waits while 4096
   events are queued (as a paused channel would), gives the sustained rate for any length.
3. seek: a ~1 GB recording of poorly compressible terminal text with a realistic timeline
   (quiet seconds, each its own frame, and bursts of full frames), then RecordingReader.open +
   locate the event at random times, warm and with the file dropped from the page cache; then
   the same with the trailer and footer cut off, so the reader rebuilds its index by scanning.

Timings are wall-clock on a shared machine: look at medians and ratios, not single figures.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import contextlib
import cProfile
import gzip
import io
import json
import math
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage.encoder import FRAME_TARGET_RAW, RecordingEncoder
from storage.reader import RecordingReader
from storage.schema import FOOTER, EventType, RecordingHeader
from storage.writer import (
    CHECKPOINT_INTERVAL_S,
    DEFAULT_MAX_PENDING,
    FRAME_INTERVAL_S,
    RecordingFailed,
    RecordingWriter,
)

MB = 1024 * 1024
OUTPUT = EventType.OUTPUT
GOAL_WRITE_MBS = 150.0
GOAL_SIZE_RATIO = 0.8
GOAL_SEEK_MS = 20.0

Chunk = tuple[int, bytes]  # (time in microseconds since the session start, data)


_last_progress = 0.0


def progress(message: str) -> None:
    """One status line on stderr, redrawn in place on a terminal (a few lines a minute when
    stderr is a file)."""
    global _last_progress
    now = time.monotonic()
    tty = sys.stderr.isatty()
    if now - _last_progress < (0.2 if tty else 10.0):
        return
    _last_progress = now
    sys.stderr.write(f"\r\x1b[K{message}" if tty else f"{message}\n")
    sys.stderr.flush()


def progress_done() -> None:
    global _last_progress
    _last_progress = 0.0
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


# -- 1. a realistic terminal stream ------------------------------------------------------------

WORDS = tuple(
    " ".join(
        (
            "src lib bin etc usr share local include doc man cache log tmp var opt node_modules",
            "build dist test tests fixtures vendor config assets static images fonts locale",
            "python3 site packages core utils helpers models views handlers api client server",
            "proto schema migrations kernel drivers net fs crypto sound firmware scripts tools",
            "debian systemd network profile",
        )
    ).split()
)
EXTS = (".py", ".c", ".h", ".js", ".json", ".md", ".txt", ".so", ".o", ".log", ".gz", ".yml", "")
USERS = ("root", "alice", "bob", "www-data", "postgres", "deploy")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
PERMS_FILE = ("-rw-r--r--", "-rw-rw-r--", "-rwxr-xr-x", "-rw-------", "-r--r--r--")
PERMS_DIR = ("drwxr-xr-x", "drwxrwxr-x", "drwx------")
LEVELS = (
    ("\x1b[32mINFO\x1b[0m ", 70),
    ("\x1b[33mWARN\x1b[0m ", 15),
    ("\x1b[1;31mERROR\x1b[0m", 5),
    ("\x1b[2mDEBUG\x1b[0m", 10),
)
PROMPT = (
    "\x1b]0;alice@web-01: ~/{cwd}\x07\x1b[01;32malice@web-01\x1b[00m:\x1b[01;34m~/{cwd}\x1b[00m$ "
)
COMMANDS = (
    "ls -laR /usr/share",
    "ls -la --color=auto",
    "tail -n 2000 /var/log/app/server.log",
    "make -j4",
    "top",
    "curl -O https://mirror.example.org/pool/pkg.tar.gz",
    "pytest -q tests",
    "git log --stat --color",
)


class StreamGenerator:
    """Deterministic terminal output for one session: text pieces and how they are read."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def _name(self) -> str:
        rng = self.rng
        name = rng.choice(WORDS)
        if rng.random() < 0.5:
            name += ("_", "-", ".")[rng.randrange(3)] + rng.choice(WORDS)
        if rng.random() < 0.3:
            name += str(rng.randrange(100))
        return name

    def _date(self) -> str:
        rng = self.rng
        if rng.random() < 0.7:
            return f"{rng.choice(MONTHS)} {rng.randint(1, 28):2d} {rng.randint(0, 23):02d}:" + (
                f"{rng.randint(0, 59):02d}"
            )
        return f"{rng.choice(MONTHS)} {rng.randint(1, 28):2d}  {rng.randint(2015, 2025)}"

    def listing(self, target: int, colour: bool) -> str:
        """`ls -laR` output: directory headers, totals, long-format lines."""
        rng = self.rng
        out: list[str] = []
        size = 0
        path = ["."]
        while size < target:
            if len(path) > 1 and rng.random() < 0.3:
                path.pop()
            path.append(self._name())
            lines = [f"{'/'.join(path)}:\n", f"total {rng.randint(0, 4000)}\n"]
            owner = rng.choice(USERS)
            for _ in range(rng.randint(2, 40)):
                is_dir = rng.random() < 0.2
                name = self._name() + ("" if is_dir else rng.choice(EXTS))
                perms = rng.choice(PERMS_DIR if is_dir else PERMS_FILE)
                nbytes = 4096 if is_dir else int(rng.lognormvariate(8, 2.5))
                if colour and is_dir:
                    name = f"\x1b[01;34m{name}\x1b[0m"
                elif colour and perms[3] == "x":
                    name = f"\x1b[01;32m{name}\x1b[0m"
                elif colour and rng.random() < 0.05:
                    name = f"\x1b[01;36m{name}\x1b[0m -> ../{self._name()}"
                lines.append(
                    f"{perms} {rng.randint(1, 12):2d} {owner:<8} {owner:<8} {nbytes:>9} "
                    f"{self._date()} {name}\n"
                )
            lines.append("\n")
            piece = "".join(lines)
            out.append(piece)
            size += len(piece)
        return "".join(out)

    def log(self, target: int) -> str:
        """Application / build log lines with coloured levels and highlights."""
        rng = self.rng
        out: list[str] = []
        size = 0
        levels = [level for level, _ in LEVELS]
        weights = [weight for _, weight in LEVELS]
        seconds = rng.randrange(86400)
        while size < target:
            seconds += rng.randrange(3)
            h, m, s = seconds // 3600 % 24, seconds // 60 % 60, seconds % 60
            level = rng.choices(levels, weights)[0]
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
            line = (
                f"\x1b[2m2025-11-{rng.randint(1, 28):02d} {h:02d}:{m:02d}:{s:02d}."
                f"{rng.randrange(1000):03d}\x1b[0m {level} \x1b[36m{self._name()}\x1b[0m: "
                f"{words} id=\x1b[1m{rng.getrandbits(48):012x}\x1b[0m "
                f"took={rng.random() * 900:.1f}ms\n"
            )
            if rng.random() < 0.05:
                line = f"\x1b[1m\x1b[32m   Compiling\x1b[0m {self._name()} v0.{rng.randrange(30)}"
                line += f".{rng.randrange(10)} (/home/alice/src/{self._name()})\n"
            out.append(line)
            size += len(line)
        return "".join(out)

    def screen(self, cols: int = 120, rows: int = 40) -> str:
        """One full-screen redraw of a `top`-like TUI: cursor moves, 256- and true-colour SGR."""
        rng = self.rng
        parts = ["\x1b[?25l\x1b[H"]
        load = " ".join(f"{rng.random() * 4:.2f}" for _ in range(3))
        parts.append(f"\x1b[1;1H\x1b[1mtop - {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}")
        parts.append(f" up 12 days, load average: {load}\x1b[0m\x1b[K")
        for row in range(2, 6):
            bar = rng.randint(0, 40)
            parts.append(
                f"\x1b[{row};1H\x1b[38;5;{rng.randrange(256)}m{row - 2:>3}\x1b[0m["
                f"\x1b[38;2;{rng.randrange(256)};{rng.randrange(256)};80m{'|' * bar}"
                f"\x1b[0m{' ' * (40 - bar)}{rng.random() * 100:5.1f}%]\x1b[K"
            )
        parts.append("\x1b[7;1H\x1b[30;46m  PID USER      PR  NI    VIRT    RES  %CPU COMMAND")
        parts.append(" " * (cols - 52) + "\x1b[0m")
        for row in range(8, rows):
            pid = rng.randint(1, 99999)
            user = rng.choice(USERS)
            cpu = rng.random() * 100
            colour = "\x1b[1;31m" if cpu > 80 else "\x1b[0m"
            parts.append(
                f"\x1b[{row};1H{colour}{pid:>5} {user:<9} 20   0 {rng.randint(1, 9999999):>7} "
                f"{rng.randint(1, 999999):>6} {cpu:5.1f} {self._name()}\x1b[0m\x1b[K"
            )
        parts.append(f"\x1b[{rows};1H\x1b[?25h")
        return "".join(parts)

    def progress_frames(self, steps: int) -> Iterator[str]:
        """A download progress bar redrawn in place with CR (and UTF-8 block characters)."""
        rng = self.rng
        total = rng.randint(20, 900)
        for i in range(steps + 1):
            done = i / steps
            filled = int(done * 30)
            yield (
                f"\r\x1b[K{done * 100:5.1f}% \x1b[32m{'█' * filled}\x1b[2m{'░' * (30 - filled)}"
                f"\x1b[0m {done * total:6.1f}/{total} MB {rng.random() * 40:5.1f} MB/s "
                f"eta 0:{rng.randint(0, 59):02d}"
            )
        yield "\n"


class ChunkTimer:
    """Cuts text into PTY-read-sized chunks and gives them realistic times."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now_us = 0
        self.chunks: list[Chunk] = []
        self.total = 0

    def emit(self, data: bytes) -> None:
        self.chunks.append((self.now_us, data))
        self.total += len(data)

    def wait(self, seconds: float) -> None:
        self.now_us += max(1, int(seconds * 1_000_000))

    def burst(self, data: bytes) -> None:
        """Output as fast as the program writes it: many full 4 KiB reads, sub-ms gaps."""
        rng = self.rng
        pos = 0
        while pos < len(data):
            if rng.random() < 0.5:
                size = 4096
            else:
                size = int(math.exp(rng.uniform(math.log(64), math.log(4096))))
            self.emit(data[pos : pos + size])
            pos += size
            self.wait(rng.uniform(0.00002, 0.0008))
            if rng.random() < 0.01:  # the program blocks on disk or the network a moment
                self.wait(rng.uniform(0.01, 0.3))


def generate_stream(total_bytes: int, seed: int) -> list[Chunk]:
    """A deterministic terminal session of about `total_bytes` of output."""
    gen = StreamGenerator(seed)
    rng = gen.rng
    timer = ChunkTimer(random.Random(seed + 1))
    cwd = "src"
    while timer.total < total_bytes:
        remaining = total_bytes - timer.total
        timer.emit(PROMPT.format(cwd=cwd).encode())
        command = rng.choice(COMMANDS)
        timer.wait(rng.uniform(0.3, 4.0))  # thinking
        for char in command:  # the shell echoes each key
            timer.emit(char.encode())
            timer.wait(rng.uniform(0.04, 0.25))
        timer.emit(b"\r\n")
        timer.wait(rng.uniform(0.005, 0.05))
        if command.startswith("ls -laR"):
            timer.burst(gen.listing(min(remaining, rng.randint(1, 6) * MB), colour=True).encode())
        elif command.startswith("ls"):
            timer.burst(gen.listing(min(remaining, rng.randint(2, 60) * 1024), True).encode())
        elif command.startswith(("tail", "make", "pytest", "git")):
            timer.burst(gen.log(min(remaining, rng.randint(64, 3 * 1024) * 1024)).encode())
        elif command == "top":
            timer.emit(b"\x1b[?1049h\x1b[H\x1b[2J")
            for _ in range(rng.randint(5, 60)):
                timer.burst(gen.screen().encode())
                timer.wait(rng.uniform(0.9, 3.0))  # top redraws every few seconds
            timer.emit(b"\x1b[?1049l")
        else:
            for frame in gen.progress_frames(rng.randint(50, 600)):
                timer.emit(frame.encode())
                timer.wait(rng.uniform(0.05, 0.2))  # progress bars redraw ~10 times a second
    return timer.chunks


# -- 2. write throughput ----------------------------------------------------------------------


def new_header(session_id: str) -> RecordingHeader:
    return RecordingHeader(
        session_id=session_id,
        user="alice",
        target="web-01",
        protocol="ssh",
        started_at_us=1_764_028_800_000_000,
        client="203.0.113.7:51234",
        term="xterm-256color",
        cols=120,
        rows=40,
        gateway_id="bench",
    )


@dataclass
class WriteRun:
    seconds: float
    inside_record_s: float
    record_p99_us: float
    record_max_us: float
    max_queue: int
    size: int
    failed: str | None


def zstd_baseline(chunks: list[bytes]) -> tuple[float, int]:
    """Plain streaming zstd level 3 over the same chunks, in memory."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    out = 0
    start = time.perf_counter()
    for chunk in chunks:
        out += len(compressor.compress(chunk))
    out += len(compressor.flush())
    return time.perf_counter() - start, out


def writer_run(
    chunks: list[bytes], path: Path, key: Ed25519PrivateKey, run: int, high_water: int = 0
) -> WriteRun:
    """Push every chunk through RecordingWriter.record() as fast as possible, then close().

    With `high_water`, the producer backs off (sleeps, as a paused channel would) whenever that
    many events are queued, until the writer has drained half of them: a sustained rate for
    streams longer than the queue. The sleeps count in `seconds`, not in the record() time."""
    failures: list[BaseException] = []
    writer = RecordingWriter(path, new_header(f"{run:032x}"), key, on_failure=failures.append)
    queue = writer._queue  # read-only peek at the bounded queue's depth
    record = writer.record
    clock = time.perf_counter_ns
    spent = array("q")
    max_queue = 0
    failed: str | None = None
    summary = None
    start = clock()
    try:
        for chunk in chunks:
            before = clock()
            record(OUTPUT, 0, chunk)
            spent.append(clock() - before)
            depth = len(queue)
            if depth > max_queue:
                max_queue = depth
            if high_water and depth >= high_water:
                while len(queue) > high_water // 2:
                    time.sleep(0.0002)
        summary = writer.close("bench")
    except RecordingFailed as exc:
        failed = str(exc)
        with contextlib.suppress(RecordingFailed):
            writer.close("bench")  # let the thread finish
    seconds = (clock() - start) / 1e9
    if failures and failed is None:
        failed = str(failures[0])
    if summary is not None and summary.event_count != len(chunks) + 1:
        failed = f"{summary.event_count} events recorded, {len(chunks) + 1} expected"
    ordered = sorted(spent)
    return WriteRun(
        seconds=seconds,
        inside_record_s=sum(spent) / 1e9,
        record_p99_us=ordered[int(len(ordered) * 0.99)] / 1000 if ordered else 0.0,
        record_max_us=ordered[-1] / 1000 if ordered else 0.0,
        max_queue=max_queue,
        size=path.stat().st_size,
        failed=failed,
    )


def check_file(path: Path, chunks: list[bytes]) -> str | None:
    """Read a written recording back: complete, every byte there, in order."""
    with RecordingReader.open(path) as reader:
        if not reader.complete:
            return f"incomplete: {reader.describe_problem()}"
        data = [e["data"] for e in reader.events() if e.type is OUTPUT]
    if data != chunks:
        return "the recorded output differs from what was recorded"
    return None


# -- 3. size against asciicast v2 + gzip -6 --------------------------------------------------


def asciicast_bytes(chunks: list[Chunk]) -> bytes:
    """The session as asciinema 2.x writes it: header line, then [time, "o", text] lines."""
    dumps = json.JSONEncoder(ensure_ascii=False, indent=None, separators=(", ", ": ")).encode
    decoder = codecs.getincrementaldecoder("UTF-8")("replace")
    header = {"version": 2, "width": 120, "height": 40, "timestamp": 1764028800}
    header["env"] = {"SHELL": "/bin/bash", "TERM": "xterm-256color"}
    lines = [dumps(header)]
    for time_us, data in chunks:
        lines.append(dumps([round(time_us / 1_000_000, 6), "o", decoder.decode(data)]))
    return ("\n".join(lines) + "\n").encode("utf-8")


def encode_like_writer(
    encoder: RecordingEncoder, events: Iterable[Chunk], out: BinaryIO, end_us: int | None = None
) -> None:
    """Feed timed output events to `encoder` with the writer's rules applied to the event times:
    a frame closes 1 s after its first event or at 512 KiB raw, a checkpoint follows at most
    every 5 s while frames are written."""
    frame_interval_us = int(FRAME_INTERVAL_S * 1_000_000)
    checkpoint_interval_us = int(CHECKPOINT_INTERVAL_S * 1_000_000)
    out.write(encoder.start())
    frame_start: int | None = None
    last_checkpoint = 0
    last_us = 0
    for time_us, data in events:
        if frame_start is not None and time_us - frame_start >= frame_interval_us:
            out.write(encoder.flush_frame())
            frame_start = None
        if time_us - last_checkpoint >= checkpoint_interval_us:
            if encoder.frames_since_checkpoint > 0:
                out.write(encoder.checkpoint())
            last_checkpoint = time_us
        encoder.add(OUTPUT, time_us, (0, data))
        last_us = time_us
        if frame_start is None:
            frame_start = time_us
        if encoder.pending_bytes >= FRAME_TARGET_RAW:
            out.write(encoder.flush_frame())
            frame_start = None
    out.write(encoder.finish(last_us if end_us is None else end_us, "bench"))


# -- 4. open + seek in a large recording ------------------------------------------------------


def seek_events(target_bytes: int, seed: int) -> Iterator[Chunk]:
    """Poorly compressible terminal text (base64 lines, some colour) on a long timeline: mostly
    quiet seconds of a few KB, now and then a burst of megabytes. Endless; the caller stops."""
    rng = random.Random(seed)
    pool = base64.encodebytes(rng.randbytes(min(24 * MB, max(MB, target_bytes // 8))))
    pool_len = len(pool) - 4096
    now_s = 0

    def piece(size: int) -> bytes:
        start = rng.randrange(pool_len)
        data = pool[start : start + size]
        if rng.random() < 0.2:
            data = b"\x1b[3%dm" % rng.randrange(8) + data + b"\x1b[0m"
        return data

    while True:
        if rng.random() < 0.01:  # a burst: 2 to 8 MB within a second
            size = rng.randint(2 * MB, 8 * MB)
            count = size // 2048
            for i in range(count):
                time_us = now_s * 1_000_000 + i * 1_000_000 // count
                yield time_us, piece(rng.choice((4096, rng.randint(64, 4096))))
        elif rng.random() < 0.8:  # an ordinary second: a few reads
            times = sorted(rng.randrange(1_000_000) for _ in range(rng.randint(1, 12)))
            for offset in times:
                yield now_s * 1_000_000 + offset, piece(rng.randint(64, 4096))
        now_s += 1  # (and one second in five is idle)


def build_seek_file(
    path: Path, target_bytes: int, key: Ed25519PrivateKey, seed: int
) -> tuple[int, int]:
    """Write a complete recording of about `target_bytes` on disk; returns its end time (µs)
    and the terminal output it holds (bytes)."""
    encoder = RecordingEncoder(new_header(f"{seed:032x}"), key)
    raw = 0
    with path.open("wb", buffering=1024 * 1024) as out:
        last_report = 0

        def events() -> Iterator[Chunk]:
            nonlocal last_report, raw
            for event in seek_events(target_bytes, seed):
                if encoder.offset >= target_bytes:
                    return
                raw += len(event[1])
                if encoder.offset - last_report >= 32 * MB:
                    last_report = encoder.offset
                    progress(f"seek file: {encoder.offset // MB} / {target_bytes // MB} MB written")
                yield event

        encode_like_writer(encoder, events(), out)
        out.flush()
        os.fsync(out.fileno())
    progress_done()
    return encoder.totals.last_us, raw


def drop_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (this file only), for a cold read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@dataclass
class SeekSample:
    open_ms: float
    locate_ms: float

    @property
    def total_ms(self) -> float:
        return self.open_ms + self.locate_ms


def open_and_locate(path: Path, time_us: int, complete: bool) -> SeekSample:
    """Open the file and find the event shown at `time_us` (the last one at or before it)."""
    start = time.perf_counter()
    reader = RecordingReader.open(path)
    opened = time.perf_counter()
    try:
        if reader.complete != complete:
            raise SystemExit(f"{path}: expected complete={complete}, {reader.describe_problem()}")
        frame = reader.read_frame(reader.frame_index_at(time_us))
        times = [event.time_us for event in frame]
        event = frame[max(0, bisect_right(times, time_us) - 1)]
        if event.time_us > time_us and reader.frame_index_at(time_us) > 0:
            raise SystemExit(f"located an event at {event.time_us} for {time_us}")
    finally:
        reader.close()
    done = time.perf_counter()
    return SeekSample((opened - start) * 1000, (done - opened) * 1000)


def seek_series(
    path: Path, end_us: int, count: int, cold: bool, complete: bool, label: str, seed: int
) -> list[SeekSample]:
    rng = random.Random(seed)
    samples = []
    if not cold:  # an untimed pass, so that "warm" means the block heads are in the page cache
        open_and_locate(path, end_us, complete)
    for i in range(count):
        if cold:
            drop_cache(path)
        samples.append(open_and_locate(path, rng.randrange(end_us + 1), complete))
        progress(f"{label}: {i + 1}/{count}")
    progress_done()
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


# -- reporting --------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "goal met" if met else "GOAL MISSED"


def seek_line(label: str, samples: list[SeekSample]) -> str:
    total = [s.total_ms for s in samples]
    return (
        f"  {label:<34} open+locate median {statistics.median(total):7.2f} ms, "
        f"p99 {percentile(total, 0.99):7.2f} ms  (open median "
        f"{statistics.median(s.open_ms for s in samples):.2f} ms, locate median "
        f"{statistics.median(s.locate_ms for s in samples):.2f} ms; n={len(samples)})"
    )


def profile_encoder(stream: list[Chunk], key: Ed25519PrivateKey, top: int) -> None:
    """What the writer thread's Python work costs per event: the encoder loop under cProfile."""
    encoder = RecordingEncoder(new_header("f" * 32), key)
    profiler = cProfile.Profile()
    profiler.enable()
    sink = io.BytesIO()
    sink.write(encoder.start())
    for time_us, data in stream:
        encoder.add(OUTPUT, time_us, (0, data))
        if encoder.pending_security or encoder.pending_bytes >= FRAME_TARGET_RAW:
            sink.write(encoder.flush_frame())
    sink.write(encoder.finish(stream[-1][0], "bench"))
    profiler.disable()
    print(f"\nprofile: encoder loop as the writer thread runs it ({len(stream)} events)")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def profile_scan(path: Path, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    with RecordingReader.open(path):
        pass
    profiler.disable()
    print("\nprofile: RecordingReader.open of the seek file without its trailer")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def write_report(
    label: str,
    runs: list[WriteRun],
    payload: int,
    calls: int,
    base_mbs: float,
    details: bool = True,
) -> bool:
    """Print one writer line (and the record() cost); True when a run failed."""
    failed = [r.failed for r in runs if r.failed]
    good = [r for r in runs if not r.failed]
    if good:
        mbs = payload / MB / statistics.median(r.seconds for r in good)
        print(
            f"  {label:<35} {mbs:7.1f} MB/s   ratio {mbs / base_mbs:.2f}x of zstd-3   "
            f"(goal >= {GOAL_WRITE_MBS:.0f} MB/s: {verdict(mbs >= GOAL_WRITE_MBS)})"
        )
    if failed:
        print(f"  {label:<35} {len(failed)} of {len(runs)} runs FAILED: {failed[0]}")
    if details and good:
        inside = statistics.median(r.inside_record_s for r in good)
        seconds = statistics.median(r.seconds for r in good)
        p99 = statistics.median(r.record_p99_us for r in good)
        worst = max(r.record_max_us for r in good) / 1000
        print(
            f"  caller thread inside record(): {inside * 1000:.1f} ms in total "
            f"({inside / calls * 1e6:.2f} us per call, p99 {p99:.1f} us, worst {worst:.1f} ms), "
            f"{inside / seconds * 100:.0f}% of the run"
        )
    if details:
        print(
            f"  queue: deepest {max(r.max_queue for r in runs)} of {DEFAULT_MAX_PENDING}; "
            + (
                "writer failures: none (run 1 read back complete and identical)"
                if not failed
                else "the writer FAILED (fail-closed)"
            )
        )
    return bool(failed)


def level_sweep(stream: list[Chunk], key: Ed25519PrivateKey, cast_gz: int, tmp: Path) -> None:
    """Not a goal: what other zstd levels would give with the same framing (encoder only)."""
    print("  other zstd levels, same framing (RecordingEncoder(level=N), single thread):")
    for level in (3, 5, 6, 9, 19):
        progress(f"size: zstd level {level}")
        encoder = RecordingEncoder(new_header("d" * 32), key, level=level)
        path = tmp / f"level-{level}.hrec"
        start = time.perf_counter()
        with path.open("wb") as out:
            encode_like_writer(encoder, stream, out)
        seconds = time.perf_counter() - start
        size = path.stat().st_size
        path.unlink()
        progress_done()
        print(
            f"    level {level:>2}: {size / cast_gz:.3f}x of asciicast+gzip, encoder "
            f"{sum(len(d) for _, d in stream) / MB / seconds:6.1f} MB/s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Recording store benchmarks: write throughput, size and seek, each against "
        "a baseline measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (<20 s)")
    parser.add_argument("--mb", type=float, help="size of the terminal stream in MB (default 32)")
    parser.add_argument(
        "--repeats", type=int, help="write runs (and baselines); medians are reported (default 5)"
    )
    parser.add_argument(
        "--seek-gb", type=float, help="size of the seek recording on disk in GB (default 1.0)"
    )
    parser.add_argument("--seeks", type=int, help="random timestamps to locate (default 200)")
    parser.add_argument(
        "--scan-seeks", type=int, help="timestamps to locate without the trailer (default 30)"
    )
    parser.add_argument("--seed", type=int, default=2, help="seed of every generator")
    parser.add_argument("--skip-seek", action="store_true", help="skip the seek benchmark")
    parser.add_argument(
        "--profile", action="store_true", help="also print cProfile top entries of the hot paths"
    )
    parser.add_argument("--tmp", type=Path, help="directory for the temporary files")
    args = parser.parse_args(argv)
    quick = args.quick
    mb = args.mb if args.mb is not None else (8.0 if quick else 32.0)
    repeats = args.repeats if args.repeats is not None else (2 if quick else 5)
    seek_gb = args.seek_gb if args.seek_gb is not None else (0.1 if quick else 1.0)
    seeks = args.seeks if args.seeks is not None else (40 if quick else 200)
    scan_seeks = args.scan_seeks if args.scan_seeks is not None else (5 if quick else 30)

    key = Ed25519PrivateKey.generate()
    print(
        f"hoop_tui recording benchmarks  (python {sys.version.split()[0]}, "
        f"zstandard {zstandard.__version__}, {os.cpu_count()} cpus, seed {args.seed})"
    )

    progress(f"generating a {mb:g} MB terminal stream")
    started = time.perf_counter()
    stream = generate_stream(int(mb * MB), args.seed)
    progress_done()
    chunks = [data for _, data in stream]
    payload = sum(map(len, chunks))
    sizes = sorted(map(len, chunks))
    print(
        f"\nstream: {payload / MB:.1f} MB in {len(chunks)} chunks (median "
        f"{statistics.median(sizes):.0f} B, mean {payload / len(chunks):.0f} B, "
        f"{sum(s >= 4096 for s in sizes) * 100 // len(sizes)}% full 4 KiB reads), "
        f"{stream[-1][0] / 1e6 / 60:.1f} min of session time; generated in "
        f"{time.perf_counter() - started:.1f} s"
    )

    with tempfile.TemporaryDirectory(prefix="hoop-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        # -- write throughput
        base_s: list[float] = []
        runs: list[WriteRun] = []
        paced: list[WriteRun] = []
        for run in range(repeats):
            progress(f"write: run {run + 1}/{repeats}")
            seconds, _ = zstd_baseline(chunks)
            base_s.append(seconds)
            path = tmp / f"write-{run}.hrec"
            runs.append(writer_run(chunks, path, key, run))
            if run == 0 and runs[0].failed is None:
                runs[0].failed = check_file(path, chunks)
            path.unlink()
            path = tmp / f"paced-{run}.hrec"
            paced.append(writer_run(chunks, path, key, run, high_water=DEFAULT_MAX_PENDING // 4))
            path.unlink()
        progress_done()
        base_mbs = payload / MB / statistics.median(base_s)
        print(f"\n1. write throughput ({repeats} runs each, medians)")
        print(f"  zstd level 3, streaming, in memory  {base_mbs:7.1f} MB/s")
        failed = write_report(
            "RecordingWriter record()..close()", runs, payload, len(chunks), base_mbs
        )
        write_report(
            f"same, producer waits at {DEFAULT_MAX_PENDING // 4} queued",
            paced,
            payload,
            len(chunks),
            base_mbs,
            details=False,
        )
        print(
            "  per run (s, writer at full speed / zstd): "
            + ", ".join(f"{r.seconds:.3f}/{b:.3f}" for r, b in zip(runs, base_s, strict=True))
        )
        if args.profile:
            profile_encoder(stream, key, 18)

        # -- size
        progress("size: encoding with the event times")
        ours_path = tmp / "size.hrec"
        encoder = RecordingEncoder(new_header("e" * 32), key)
        with ours_path.open("wb") as out:
            encode_like_writer(encoder, stream, out)
        ours = ours_path.stat().st_size
        frames = encoder.totals.frame_count
        problem = check_file(ours_path, chunks)
        progress("size: asciicast + gzip -6")
        cast = asciicast_bytes(stream)
        cast_gz = len(gzip.compress(cast, compresslevel=6, mtime=0))
        full_frames = next((r.size for r in runs if not r.failed), 0)
        progress_done()
        ratio = ours / cast_gz
        print("\n2. size against asciicast v2 + gzip -6 (same events, same times)")
        print(f"  asciicast v2               {len(cast) / MB:8.2f} MB")
        print(f"  asciicast v2 + gzip -6     {cast_gz / MB:8.2f} MB")
        print(
            f"  ours, writer's framing     {ours / MB:8.2f} MB in {frames} frames   ratio "
            f"{ratio:.3f}x   (goal <= {GOAL_SIZE_RATIO}x: {verdict(ratio <= GOAL_SIZE_RATIO)})"
            + (f"  READ-BACK PROBLEM: {problem}" if problem else "")
        )
        if full_frames:
            print(
                f"  ours, full 512 KiB frames  {full_frames / MB:8.2f} MB   ratio "
                f"{full_frames / cast_gz:.3f}x   (a file of the write runs: fed at full speed)"
            )
        ours_path.unlink()
        if not quick:
            level_sweep(stream, key, cast_gz, tmp)

        if args.skip_seek:
            return 1 if failed or problem else 0

        # -- seek
        seek_path = tmp / "seek.hrec"
        started = time.perf_counter()
        end_us, seek_raw = build_seek_file(seek_path, int(seek_gb * 1024 * MB), key, args.seed)
        with RecordingReader.open(seek_path) as reader:
            seek_frames = reader.frame_count
        on_disk = seek_path.stat().st_size
        print(
            f"\n3. open + locate in a {on_disk / MB / 1024:.2f} GB recording "
            f"({on_disk} bytes holding {seek_raw / MB:.0f} MB of output, {seek_frames} frames, "
            f"{end_us / 3.6e9:.1f} h of session time; "
            f"built in {time.perf_counter() - started:.0f} s)"
        )
        warm = seek_series(seek_path, end_us, seeks, False, True, "seek warm", args.seed)
        cold = seek_series(seek_path, end_us, seeks, True, True, "seek cold", args.seed + 1)
        median_warm = statistics.median(s.total_ms for s in warm)
        p99_warm = percentile([s.total_ms for s in warm], 0.99)
        print(seek_line("complete file, page cache warm", warm))
        print(seek_line("complete file, file evicted (cold)", cold))
        print(
            f"  goal < {GOAL_SEEK_MS:.0f} ms (warm p99): {verdict(p99_warm < GOAL_SEEK_MS)}; "
            f"cold p99: {verdict(percentile([s.total_ms for s in cold], 0.99) < GOAL_SEEK_MS)}"
        )
        with seek_path.open("r+b") as handle:
            handle.seek(on_disk - FOOTER.size)
            trailer_offset, _ = FOOTER.unpack(handle.read(FOOTER.size))
            handle.truncate(trailer_offset)  # as a crash leaves it: no trailer, no footer
        scan_warm = seek_series(seek_path, end_us, scan_seeks, False, False, "scan warm", 7)
        scan_cold = seek_series(seek_path, end_us, scan_seeks, True, False, "scan cold", 8)
        print(seek_line("no trailer (index rebuilt), warm", scan_warm))
        print(seek_line("no trailer (index rebuilt), cold", scan_cold))
        scan_median = statistics.median(s.total_ms for s in scan_warm)
        print(
            f"  rebuilding the index costs {scan_median / median_warm:.0f}x the trailer path "
            "(warm medians)"
        )
        if args.profile:
            profile_scan(seek_path, 12)
    return 1 if failed or problem else 0


if __name__ == "__main__":
    sys.exit(main())
