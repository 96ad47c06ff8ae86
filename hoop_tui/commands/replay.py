"""Replay from the command line: `screen` prints the screen at a moment as text, `play` plays a
recording in this terminal like `asciinema play`. Both take hoop_tui recordings and asciicast
v2 files (told apart by their content)."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from hoop_tui.commands.common import Progress, add_config_arguments, recording_argument
from hoop_tui.errors import CommandError
from replay.asciicast import CastError
from replay.keyframes import default_cache_dir, load_cached, load_or_build
from replay.player import (
    MAX_SPEED,
    MIN_SPEED,
    Player,
    playback_schedule,
    render_until,
    source_events,
)
from replay.sources import CastSource, open_source
from storage.reader import RecordingError, RecordingReader

Source = RecordingReader | CastSource


def parse_at(text: str) -> float:
    """Seconds: `90`, `12.5`, `1:30` or `1:02:03`."""
    try:
        total = 0.0
        for part in text.strip().split(":"):
            total = total * 60 + float(part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time like 12.5 or 1:30") from None
    if total < 0:
        raise argparse.ArgumentTypeError("the time must not be negative")
    return total


def parse_speed(text: str) -> float:
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise argparse.ArgumentTypeError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
    return speed


def parse_idle(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the idle limit must be positive")
    return value


@contextlib.contextmanager
def open_any(
    path_text: str, *, until_us: int | None = None, identify: bool = True
) -> Iterator[Source]:
    path = Path(path_text)
    try:
        source = open_source(path, until_us=until_us, identify=identify)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a directory, not a recording") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (RecordingError, CastError) as exc:
        raise CommandError(f"{path}: {exc}") from None
    try:
        yield source
    finally:
        source.close()


def with_masks(source: Source, config_file: str | None) -> Any:
    """`source` seen through today's `[[masks]]` of `config_file`, every rule applying."""
    if not config_file:
        return source
    from proxy.config import ConfigError, load_config
    from replay.masking_view import load_current_masks

    try:
        masks = load_current_masks(load_config(Path(config_file)))
    except (ConfigError, OSError) as exc:
        raise CommandError(str(exc)) from None
    return masks.view(source)


def cmd_screen(args: argparse.Namespace) -> int:
    """The screen at --at from the cached keyframes when there are some, else by replaying
    only what happened up to --at (a cast is parsed no further). Today's masks may hold a
    stream's tail until later events show whether it ends a secret, so with --masks a cast
    is read whole."""
    at_us = round(args.at * 1_000_000)
    until_us = None if args.masks else at_us
    args.file = recording_argument(args.file, args)
    with open_any(args.file, until_us=until_us, identify=not args.no_cache) as opened:
        source = with_masks(opened, args.masks)
        cache_dir: Path | None = None
        if not args.no_cache:
            cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        progress = Progress("building keyframes")
        try:
            index = load_cached(source, cache_dir)
            if index is None and cache_dir is not None and reads_to_the_end(opened, at_us):
                # everything is read anyway: keep keyframes for the next screen
                index = load_or_build(source, cache_dir, progress=progress.update)
            if index is not None:
                player = Player(source, index)
                player.seek(at_us)
                lines = player.lines()
            else:
                lines = render_until(source, at_us).text_lines()
        except RecordingError as exc:
            raise CommandError(f"{args.file}: {exc}") from None
        finally:
            progress.finish()
        problem = opened.describe_problem() if isinstance(opened, RecordingReader) else None
    lines = [line.rstrip() for line in lines]
    if sys.stdout.isatty() and not args.all_rows:
        lines = _fit_terminal(lines, os.get_terminal_size(sys.stdout.fileno()).lines - 1)
    sys.stdout.write("".join(line + "\n" for line in lines))
    if problem:
        print(f"hoop-tui: warning: {args.file}: {problem}", file=sys.stderr)
    return 0


def _fit_terminal(lines: list[str], rows: int) -> list[str]:
    """What fits in this terminal: blank rows at the bottom dropped, then the last `rows` (where
    the cursor and the prompt usually are), saying on stderr what was left out."""
    while lines and not lines[-1]:
        lines = lines[:-1]
    if rows < 1 or len(lines) <= rows:
        return lines
    print(
        f"hoop-tui: showing rows {len(lines) - rows + 1}-{len(lines)} of {len(lines)} that fit "
        "this terminal; --all-rows, or a pipe, prints them all",
        file=sys.stderr,
    )
    return lines[-rows:]


def reads_to_the_end(opened: Source, at_us: int) -> bool:
    """Whether the screen at `at_us` needs the last frame (of a cast: every event)."""
    if isinstance(opened, CastSource):
        return opened.complete
    starts = opened.frame_first_us
    return not starts or starts[-1] <= at_us


# -- play --------------------------------------------------------------------------------------

PAUSE_KEYS = (" ",)
QUIT_KEYS = ("q", "\x03", "\x04")


class Keys:
    """Single keys from a terminal on stdin, without echo (Ctrl-C still interrupts)."""

    def __init__(self, fd: int) -> None:
        import termios
        import tty

        self.fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

    def wait(self, timeout: float | None) -> str | None:
        """A key pressed within `timeout` seconds (forever when None), else None."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 32)
        return data[:1].decode("latin-1") if data else "q"

    def close(self) -> None:
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


def run_playback(
    schedule: Iterable[tuple[float, bytes]],
    write: Callable[[bytes], None],
    clock: Callable[[], float],
    wait: Callable[[float | None], str | None],
) -> bool:
    """Write each chunk when it is due by `clock`; `wait(timeout)` sleeps and returns a key
    pressed meanwhile (space pauses and resumes, q quits). True when played to the end."""
    start = clock()
    for due, data in schedule:
        while True:
            remaining = due - (clock() - start)
            if remaining <= 0:
                break
            key = wait(remaining)
            if key in QUIT_KEYS:
                return False
            if key in PAUSE_KEYS:
                paused_at = clock()
                while (key := wait(None)) not in PAUSE_KEYS:
                    if key in QUIT_KEYS:
                        return False
                start += clock() - paused_at
        write(data)
    return True


def cmd_play(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    keys = Keys(sys.stdin.fileno()) if sys.stdin.isatty() else None

    def wait(timeout: float | None) -> str | None:
        if keys is not None:
            return keys.wait(timeout)
        time.sleep(timeout if timeout is not None else 3600)
        return None

    with open_any(recording_argument(args.file, args)) as source:
        schedule = playback_schedule(
            source_events(source), speed=args.speed, idle_limit_s=args.idle_limit
        )
        try:
            run_playback(schedule, write, time.monotonic, wait)
        except KeyboardInterrupt:
            pass
        finally:
            if keys is not None:
                keys.close()
            write(b"\x1b[0m")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    screen = subparsers.add_parser(
        "screen",
        help="print a recording's terminal screen at a moment, as plain text",
        description="Renders the recording (or asciicast v2 file) up to --at seconds and prints "
        "the screen, one line per row, trailing blanks removed, like `tmux capture-pane -p`. "
        "Only what happened up to --at is read (from the nearest keyframe when they are "
        "cached: by import-cast, or by a `screen` that had to read the last frame anyway).",
    )
    screen.add_argument(
        "file", help="a recording (.hrec), a session id as `sessions` shows it, or a .cast file"
    )
    screen.add_argument(
        "--masks",
        metavar="CONFIG",
        help="apply the [[masks]] of this gateway configuration (all of them) before rendering",
    )
    screen.add_argument(
        "--at", type=parse_at, default=0.0, metavar="SECONDS", help="12.5, 1:30 (default 0)"
    )
    screen.add_argument(
        "--cache-dir", metavar="DIR", help=f"keyframe cache (default {default_cache_dir()})"
    )
    screen.add_argument("--no-cache", action="store_true", help="neither read nor write a cache")
    screen.add_argument(
        "--all-rows",
        action="store_true",
        help="every row of the recorded screen, even when this terminal is smaller",
    )
    add_config_arguments(screen)
    screen.set_defaults(handler=cmd_screen)

    play = subparsers.add_parser(
        "play",
        help="play a recording in this terminal",
        description="Writes the recorded output with its timing. Space pauses, q or Ctrl-C stops.",
    )
    play.add_argument(
        "file", help="a recording (.hrec), a session id as `sessions` shows it, or a .cast file"
    )
    play.add_argument(
        "--speed", type=parse_speed, default=1.0, metavar="X", help="0.25 to 16 (default 1)"
    )
    play.add_argument(
        "--idle-limit",
        type=parse_idle,
        default=None,
        metavar="S",
        help="cap pauses longer than S seconds to S",
    )
    add_config_arguments(play)
    play.set_defaults(handler=cmd_play)
