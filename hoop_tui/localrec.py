"""Recording a local program in a pseudo-terminal, like `asciinema rec`, into a hoop_tui
recording: the demo of the main job, and a source of real terminal recordings for tests.

The user's terminal is relayed as is (raw mode, window size changes); every byte in either
direction is recorded. Without a terminal on stdin the program runs with output recorded only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import tty
from collections.abc import Iterator, Sequence

from storage.schema import EventType
from storage.writer import RecordingWriter

CHANNEL = 0
READ_SIZE = 65536


def terminal_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on `fd`, or 80x24 when it is not one."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 80, 24
    return (cols or 80), (rows or 24)


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@contextlib.contextmanager
def _raw_mode(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def record_program(
    argv: Sequence[str], writer: RecordingWriter, cols: int, rows: int, env: dict[str, str]
) -> int:
    """Run `argv` in a new PTY of `cols`x`rows`, recording into `writer`; returns its exit
    status as a shell would report it (128+N for a signal)."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    pid, master = pty.fork()
    if pid == 0:  # the child: exec the program, never return
        try:
            os.execvpe(argv[0], list(argv), env)
        except OSError as exc:
            os.write(2, f"hoop-tui rec: cannot run {argv[0]}: {exc.strerror}\r\n".encode())
        os._exit(127)
    _set_size(master, cols, rows)
    writer.record(EventType.CHANNEL_OPEN, CHANNEL, "pty", " ".join(argv))
    resized: list[bool] = []
    previous_handler = None
    if interactive:
        previous_handler = signal.signal(signal.SIGWINCH, lambda *_: resized.append(True))
    try:
        context = _raw_mode(sys.stdin.fileno()) if interactive else contextlib.nullcontext()
        with context:
            _relay(master, writer, interactive, resized)
    finally:
        if interactive:
            signal.signal(signal.SIGWINCH, previous_handler)
        os.close(master)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    exit_status = code if code >= 0 else 128 - code
    writer.record(EventType.EXIT_STATUS, CHANNEL, exit_status)
    writer.record(EventType.CHANNEL_CLOSE, CHANNEL)
    return exit_status


def _relay(master: int, writer: RecordingWriter, interactive: bool, resized: list[bool]) -> None:
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    sources = [master, stdin] if interactive else [master]
    while True:
        if resized:
            resized.clear()
            cols, rows = terminal_size(stdin)
            _set_size(master, cols, rows)
            writer.record(EventType.RESIZE, CHANNEL, cols, rows)
        try:
            ready, _, _ = select.select(sources, [], [], 0.5)
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, READ_SIZE)
            except OSError:  # EIO: the program closed its terminal
                data = b""
            if not data:
                return
            writer.record(EventType.OUTPUT, CHANNEL, data)
            _write_all(stdout, data)
        if stdin in ready:
            data = os.read(stdin, READ_SIZE)
            if not data:
                sources.remove(stdin)
                continue
            writer.record(EventType.INPUT, CHANNEL, data)
            _write_all(master, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
