"""Benchmarks of the replay engine, printed with ratios against a baseline run beside them.

    python bench/replay_engine.py          # full run: 100 MB of terminal output, about 2 min
    python bench/replay_engine.py --quick  # smoke run: 8 MB, under 20 s
    python bench/replay_engine.py --quick --streams-only  # the three streams, 1 MB each

1. throughput: the same bytes (a seeded mix of coloured listings, full-screen redraws in the
   alternate screen, progress bars redrawn with CR, typing, CJK and emoji, cut into PTY-read
   sized chunks that split characters and escape sequences) fed to our `Terminal` and to stock
   pyte (`pyte.Screen` + `pyte.ByteStream`), in MB/s; the ratio is ours / pyte.
2. first open: a recording holding that output, written by `RecordingEncoder` with the writer's
   framing (a frame per second of events or 512 KiB), opened with `Player.open`: one pass that
   builds the event index and keyframes and writes the cache; then a second open that loads
   the cache.
3. seek: random times, each `Player.seek` + rendering the screen's text, from a player that
   has just sought elsewhere and from a fresh player; median, p95 and max against the goal of
   100 ms. The baseline is replaying from the start to the same point (measured on a few
   points only, it is slow).

4. streams: three kinds of output fed alone, in 4 KiB chunks (a `seq` scroll burst, a
   full-screen program redrawing in the alternate screen, colour-heavy `ls --color`-like
   lines), in MB/s for our `Terminal`, for it with the fast path off (token by token), for
   stock pyte, and for tmux fed the same bytes (a detached tmux server of its own, `cat` of the
   bytes into its pane; the time until `cat` is done, less the time of an empty file).

Timings are wall-clock on a shared machine: look at medians and ratios, not single figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay.keyframes import KEYFRAME_BYTES
from replay.player import Player
from replay.terminal import DEC_GRAPHICS, Terminal
from storage.encoder import FRAME_TARGET_RAW, RecordingEncoder
from storage.reader import RecordingReader
from storage.schema import EventType, RecordingHeader

MB = 1024 * 1024
GOAL_SEEK_MS = 100.0
COLS, ROWS = 120, 40
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "release",
    "deploy",
    "config",
    "server",
    "backup",
    "index",
    "cache",
]
UNICODE = ["日本語のテキスト", "中文字符", "한국어", "😀 🎉 👍", "café naïve", "e\u0301 a\u0308"]


def segments(rng: random.Random) -> Iterator[bytes]:
    """Endless realistic terminal output, one burst at a time."""
    number = 0
    while True:
        number += 1
        kind = rng.random()
        if kind < 0.35:  # a coloured long listing
            lines = []
            for _ in range(rng.randint(20, 120)):
                colour = rng.choice(["01;34", "01;32", "00", "01;36", "38;5;208", "38;2;10;200;90"])
                name = f"{rng.choice(WORDS)}-{rng.randint(0, 99999)}.txt"
                size = rng.randint(0, 10**7)
                lines.append(
                    f"-rw-r--r-- 1 alice staff {size:>9} Nov 25 12:{number % 60:02d}"
                    f" \x1b[{colour}m{name}\x1b[0m\r\n"
                )
            yield "".join(lines).encode()
        elif kind < 0.55:  # a full-screen program: alt screen, a redraw per key
            parts = ["\x1b[?1049h\x1b[22;0;0t\x1b[>4;2m\x1b[?1h\x1b=\x1b[H\x1b[2J"]
            for _ in range(rng.randint(3, 10)):
                parts.append("\x1b[?25l\x1b[H")
                for row in range(1, ROWS):
                    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
                    index = rng.randint(16, 231)
                    parts.append(f"\x1b[{row};1H\x1b[38;5;{index}m{row:4d} \x1b[0m{text}\x1b[K")
                parts.append(f"\x1b[{ROWS};1H\x1b[7m-- INSERT --\x1b[27m\x1b[?25h")
            parts.append("\x1b[?1l\x1b>\x1b[>4m\x1b[?1049l")
            yield "".join(parts).encode()
        elif kind < 0.7:  # a progress bar redrawn with CR
            width = 50
            yield (
                "".join(
                    f"\r[{'#' * (i * width // 100)}{'.' * (width - i * width // 100)}] {i:3d}%"
                    for i in range(0, 101, rng.choice([1, 2, 5]))
                ).encode()
                + b"\r\n"
            )
        elif kind < 0.85:  # typing at a prompt: one small chunk per key
            yield b"\x1b[01;32malice@web1\x1b[00m:\x1b[01;34m~\x1b[00m$ "
            for char in f"grep -r {rng.choice(WORDS)} /etc\r\n":
                yield char.encode()
        else:  # UTF-8 text with wide and combining characters
            yield "".join(
                f"{rng.choice(UNICODE)} {rng.choice(WORDS)} {rng.choice(UNICODE)}\r\n"
                for _ in range(rng.randint(5, 40))
            ).encode()


def chunked_stream(total: int, seed: int = 1) -> Iterator[tuple[int, bytes]]:
    """(time in µs, chunk) cut like PTY reads, with bursts and quiet gaps."""
    rng = random.Random(seed)
    made = 0
    time_us = 0
    for segment in segments(rng):
        pos = 0
        while pos < len(segment):
            size = rng.choice([1, 16, 64, 512, 1024, 4096, 4096])
            chunk = segment[pos : pos + size]
            pos += len(chunk)
            yield time_us, chunk
            made += len(chunk)
            time_us += rng.randint(50, 2000)
            if made >= total:
                return
        time_us += rng.choice([10_000, 200_000, 1_000_000, 5_000_000])


def fidelity() -> tuple[int, int, int, int]:
    """Screens of the golden data (real programs, expected screens from tmux) that our
    terminal and stock pyte get right: (ours, pyte, pyte raised, total)."""
    data = Path(__file__).resolve().parents[1] / "tests" / "replay" / "data"
    acs = str.maketrans({glyph: chr(code) for code, glyph in DEC_GRAPHICS.items() if code != 0x5F})
    ours = stock = raised = total = 0
    for expected in sorted(data.glob("*.expected.json")):
        lines = (data / expected.name.replace(".expected.json", ".cast")).read_text().splitlines()
        header = json.loads(lines[0])
        events = [json.loads(line) for line in lines[1:] if line.strip()]
        for checkpoint in json.loads(expected.read_text(encoding="utf-8")):
            total += 1
            terminal = Terminal(header["width"], header["height"])
            screen = pyte.Screen(header["width"], header["height"])
            stream = pyte.ByteStream(screen)
            broken = False
            for time_s, code, text in events:
                if time_s > checkpoint["at"]:
                    break
                cols, _, rows = text.partition("x")
                if code == "o":
                    terminal.feed(text.encode())
                elif code == "r":
                    terminal.resize(int(cols), int(rows))
                if broken:
                    continue
                try:
                    if code == "o":
                        stream.feed(text.encode())
                    elif code == "r":
                        screen.resize(int(rows), int(cols))
                except Exception:
                    broken = True
            want = checkpoint["lines"]
            ours += [line.translate(acs).rstrip() for line in terminal.text_lines()] == want
            if broken:
                raised += 1
            else:
                stock += [line.translate(acs).rstrip() for line in screen.display] == want
    return ours, stock, raised, total


def throughput(chunks: list[bytes]) -> tuple[float, float]:
    total = sum(map(len, chunks)) / MB
    terminal = Terminal(COLS, ROWS)
    start = time.perf_counter()
    for chunk in chunks:
        terminal.feed(chunk)
    ours = total / (time.perf_counter() - start)
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    start = time.perf_counter()
    for chunk in chunks:
        stream.feed(chunk)
    stock = total / (time.perf_counter() - start)
    return ours, stock


def stream_scroll(size: int) -> bytes:
    """`seq 1 N` as a PTY shows it."""
    out = bytearray()
    number = 0
    while len(out) < size:
        number += 1
        out += b"%d\r\n" % number
    return bytes(out)


def stream_fullscreen(size: int, seed: int = 4) -> bytes:
    """A full-screen program: every row redrawn at its place, coloured, lines erased."""
    rng = random.Random(seed)
    out = bytearray(b"\x1b[?1049h\x1b[H\x1b[2J")
    while len(out) < size:
        parts = ["\x1b[?25l"]
        for row in range(1, ROWS):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 16)))
            parts.append(
                f"\x1b[{row};1H\x1b[38;5;{rng.randint(16, 231)}m{row:4d} \x1b[0m{text}\x1b[K"
            )
        parts.append(f"\x1b[{ROWS};1H\x1b[7m-- INSERT --\x1b[27m\x1b[?25h")
        out += "".join(parts).encode()
    return bytes(out)


def stream_colour(size: int, seed: int = 5) -> bytes:
    """Colour-heavy output that scrolls: `ls -l --color` and coloured log lines."""
    rng = random.Random(seed)
    colours = ["01;34", "01;32", "00", "01;36", "38;5;208", "38;2;10;200;90", "1;31", "33"]
    out = bytearray()
    while len(out) < size:
        colour = rng.choice(colours)
        name = f"{rng.choice(WORDS)}-{rng.randint(0, 99999)}.txt"
        level = rng.choice(["\x1b[32mINFO\x1b[0m", "\x1b[33mWARN\x1b[0m", "\x1b[1;31mERR\x1b[0m"])
        out += (
            f"-rw-r--r-- 1 alice staff {rng.randint(0, 10**7):>9} Nov 25 12:00 "
            f"\x1b[{colour}m{name}\x1b[0m {level} \x1b[2m{rng.choice(WORDS)}\x1b[0m\r\n"
        ).encode()
    return bytes(out)


def chunks_of(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def ours_mbps(chunks: list[bytes], *, fast: bool = True) -> float:
    terminal = Terminal(COLS, ROWS)
    terminal.stream.fast = fast
    start = time.perf_counter()
    for chunk in chunks:
        terminal.feed(chunk)
    return sum(map(len, chunks)) / MB / (time.perf_counter() - start)


def pyte_mbps(chunks: list[bytes]) -> float:
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    start = time.perf_counter()
    for chunk in chunks:
        stream.feed(chunk)
    return sum(map(len, chunks)) / MB / (time.perf_counter() - start)


def tmux_seconds(path: Path, tmp: Path) -> float:
    """Seconds for a detached tmux of our own (120x40) to take `path` through `cat`."""
    tag = f"{os.getpid()}-{time.monotonic_ns()}"  # a fresh server each time
    socket, signal = f"hoop-bench-{tag}", f"done-{tag}"
    script = tmp / "feed.sh"
    script.write_text(
        f"stty raw -echo; cat '{path}'; tmux -L {socket} wait-for -S {signal}; sleep 60\n"
    )
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    start = time.perf_counter()
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", str(COLS), "-y", str(ROWS), f"sh {script}"],
        check=True,
    )
    try:
        subprocess.run([*tmux, "wait-for", signal], check=True, timeout=600)
        return time.perf_counter() - start
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)


def streams(size: int, tmp: Path) -> None:
    has_tmux = shutil.which("tmux") is not None
    empty = tmp / "empty"
    empty.write_bytes(b"")
    tmux_base = min(tmux_seconds(empty, tmp) for _ in range(3)) if has_tmux else 0.0
    print(f"streams, {size / MB:.0f} MB each in 4 KiB chunks (MB/s, higher is better):")
    print(
        f"  {'stream':<12} {'ours':>7} {'no fast':>8} {'pyte':>7} {'tmux':>7}  ours/pyte tmux/ours"
    )
    for name, make in (
        ("scroll", stream_scroll),
        ("fullscreen", stream_fullscreen),
        ("colour", stream_colour),
    ):
        data = make(size)
        chunks = chunks_of(data)
        ours = max(ours_mbps(chunks) for _ in range(2))
        slow = ours_mbps(chunks, fast=False)
        stock = pyte_mbps(chunks)
        tmux = 0.0
        if has_tmux:
            path = tmp / f"{name}.bytes"
            path.write_bytes(data)
            took = min(tmux_seconds(path, tmp) for _ in range(2)) - tmux_base
            tmux = len(data) / MB / max(took, 1e-3)
        print(
            f"  {name:<12} {ours:7.2f} {slow:8.2f} {stock:7.2f} {tmux:7.2f}  "
            f"{ours / stock:8.1f}x {tmux / ours if has_tmux else 0:8.1f}x"
        )


def write_recording(path: Path, total: int) -> int:
    header = RecordingHeader(
        session_id="b" * 32,
        user="bench",
        target="web1",
        protocol="ssh",
        started_at_us=1_700_000_000_000_000,
        cols=COLS,
        rows=ROWS,
        term="xterm-256color",
    )
    encoder = RecordingEncoder(header, Ed25519PrivateKey.generate())
    frame_started = 0
    last = 0
    with path.open("wb") as out:
        out.write(encoder.start())
        for number, (time_us, chunk) in enumerate(chunked_stream(total)):
            if encoder.pending_count == 0:
                frame_started = time_us
            encoder.add(int(EventType.OUTPUT), time_us, (0, chunk))
            if number % 5000 == 0:
                encoder.add(int(EventType.COMMAND), time_us, (0, "shell", f"cmd {number}"))
            if encoder.pending_bytes >= FRAME_TARGET_RAW or time_us - frame_started >= 1_000_000:
                out.write(encoder.flush_frame())
            last = time_us
        out.write(encoder.finish(last, "bench"))
    return path.stat().st_size


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 MB instead of 100 MB")
    parser.add_argument("--seeks", type=int, default=200)
    parser.add_argument(
        "--streams-only", action="store_true", help="only the three streams against pyte and tmux"
    )
    args = parser.parse_args()
    if args.streams_only:
        with tempfile.TemporaryDirectory(prefix="hoop-bench-streams-") as tmp:
            streams((1 if args.quick else 4) * MB, Path(tmp))
        return 0
    total = (8 if args.quick else 100) * MB
    sample = (2 if args.quick else 8) * MB

    print(f"replay benchmark: {total // MB} MB of output, a {COLS}x{ROWS} terminal")
    right, stock_right, stock_raised, screens = fidelity()
    print(
        f"fidelity on the golden screens (tmux): ours {right}/{screens}, stock pyte "
        f"{stock_right}/{screens} ({stock_raised} raised an exception)"
    )
    chunks = [chunk for _, chunk in chunked_stream(sample, seed=2)]
    ours, stock = throughput(chunks)
    print(
        f"throughput on {sample // MB} MB: ours {ours:.2f} MB/s, stock pyte {stock:.2f} MB/s, "
        f"ratio {ours / stock:.1f}x"
    )

    with tempfile.TemporaryDirectory(prefix="hoop-bench-replay-") as tmp:
        streams((1 if args.quick else 4) * MB, Path(tmp))
        path = Path(tmp) / "big.hrec"
        start = time.perf_counter()
        size = write_recording(path, total)
        print(
            f"recording: {size / MB:.1f} MB on disk, written in {time.perf_counter() - start:.1f} s"
        )
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        player = Player.open(RecordingReader.open(path), cache_dir=cache)
        build_s = time.perf_counter() - start
        index = player.index
        cache_size = sum(p.stat().st_size for p in cache.iterdir())
        print(
            f"first open: {build_s:.1f} s ({total / MB / build_s:.2f} MB/s), "
            f"{index.event_count} events, {len(index.keyframes)} keyframes every "
            f"{KEYFRAME_BYTES // 1024} KiB, cache {cache_size / MB:.2f} MB"
        )
        start = time.perf_counter()
        player = Player.open(RecordingReader.open(path), cache_dir=cache)
        print(f"second open (cache): {(time.perf_counter() - start) * 1000:.0f} ms")

        rng = random.Random(3)
        times = [rng.randint(0, player.duration_us) for _ in range(args.seeks)]
        warm = []
        for time_us in times:
            start = time.perf_counter()
            player.seek(time_us)
            player.lines()
            warm.append((time.perf_counter() - start) * 1000)
        cold = []
        reader = RecordingReader.open(path)
        for time_us in times[: max(10, args.seeks // 10)]:
            fresh = Player(reader, index)
            start = time.perf_counter()
            fresh.seek(time_us)
            fresh.lines()
            cold.append((time.perf_counter() - start) * 1000)
        median = statistics.median(warm)
        print(
            f"seek + render, {len(warm)} random times: median {median:.1f} ms, "
            f"p95 {percentile(warm, 0.95):.1f} ms, max {max(warm):.1f} ms "
            f"(goal {GOAL_SEEK_MS:.0f} ms: {'met' if max(warm) < GOAL_SEEK_MS else 'MISSED'})"
        )
        print(
            f"seek + render from a fresh player, {len(cold)} times: median "
            f"{statistics.median(cold):.1f} ms, max {max(cold):.1f} ms"
        )
        baseline = []
        for time_us in times[:3]:
            fresh = Player(reader, index)
            fresh.index = type(index)(
                index.session_id,
                index.source_size,
                index.channel,
                index.size,
                index.times,
                index.types,
                index.frame_starts,
                index.screen_events,
                index.markers,
                index.keyframes[:1],
                index.output_bytes,
            )
            fresh._keyframe_positions = [0]
            start = time.perf_counter()
            fresh.seek(time_us)
            fresh.lines()
            baseline.append((time.perf_counter() - start) * 1000)
        print(
            f"baseline, replay from the start (3 times): median "
            f"{statistics.median(baseline):.0f} ms; keyframes are "
            f"{statistics.median(baseline) / median:.0f}x faster"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
