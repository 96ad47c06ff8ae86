"""A real interactive bash in a pseudo-terminal, driven the way the gateway drives a target.

Input goes through the line detector first; its Forward events reach bash, and an Enter is
never forwarded: the test reads the verdict instead, so nothing the suite types ever runs.
The output bash's readline really produces (echo, redraws, reverse-search, completion) is fed
back to the detector, so these tests check the screen reading against the real thing.
"""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proxy.line_detector import CommandLine, Enter, Forward, LineDetector, Paste
from tests.fixtures.waiting import readable

PROMPT = "alice@web1:~$ "
QUIET_SECONDS = 0.06
READ_LIMIT_SECONDS = 3.0
WAIT = b""  # a packet that means: the user pauses, output may arrive meanwhile
WAIT_SECONDS = 1.5


@dataclass
class Held:
    """What the gateway would hold: a line at Enter, or a paste."""

    line: CommandLine | None = None
    paste: Paste | None = None
    rest_paste: str | None = None


@dataclass
class BashSession:
    home: Path
    columns: int = 80
    history: Sequence[str] = ()
    executables: Sequence[str] = ()
    pid: int = 0
    fd: int = -1
    detector: LineDetector = field(default_factory=LineDetector)
    output: bytearray = field(default_factory=bytearray)

    def start(self) -> None:
        (self.home / "history").write_text("".join(entry + "\n" for entry in self.history))
        bin_dir = self.home / "bin"
        bin_dir.mkdir(exist_ok=True)
        for name in self.executables:
            path = bin_dir / name
            path.write_text("#!/bin/sh\nexit 0\n")
            path.chmod(0o755)
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "TERM": "xterm",
            "PS1": PROMPT,
            "HISTFILE": str(self.home / "history"),
            "HOME": str(self.home),
            "INPUTRC": "/dev/null",
            "LANG": "C.UTF-8",
        }
        self.detector = LineDetector(self.columns)
        pid, fd = pty.fork()
        if pid == 0:  # the child: become bash
            os.chdir(self.home)
            os.execve("/bin/bash", ["bash", "--norc", "--noprofile", "-i"], env)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, self.columns, 0, 0))
        self.pump(until=PROMPT.encode())

    def stop(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            self.pid = 0

    def pump(self, until: bytes | None = None, linger: float = 0.0) -> bytes:
        """Read output until it has been quiet for a moment (and at least `linger` seconds
        have passed), feeding the detector with the time each packet arrived."""
        received = bytearray()
        started = time.monotonic()
        deadline = started + max(READ_LIMIT_SECONDS, linger)
        while time.monotonic() < deadline:
            if not readable(self.fd, QUIET_SECONDS):
                lingered = time.monotonic() - started >= linger
                if lingered and (received or linger) and (until is None or until in received):
                    break
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
            self.detector.feed_output(chunk, now=time.monotonic())
        self.output += received
        return bytes(received)

    def type(self, packets: Sequence[bytes]) -> Held | None:
        """Send packets as the user's client would; stop at the first thing to hold."""
        for packet in packets:
            held = self._send(packet)
            if held is not None:
                return held
        return None

    def run_enter(self) -> None:
        """Forward a held Enter for real (for setup lines such as `stty -echo`)."""
        os.write(self.fd, b"\r")
        self.detector.line_finished()
        self.pump()

    def _send(self, packet: bytes) -> Held | None:
        if packet == WAIT:
            self.pump(linger=WAIT_SECONDS)
            return None
        for event in self.detector.feed_input(packet):
            if isinstance(event, Forward):
                os.write(self.fd, event.data)
                self.pump()
            elif isinstance(event, Paste):
                return Held(paste=event)
            elif isinstance(event, Enter):
                line = event.line
                if not line.certain:  # as the SSH path does: let the echo arrive, read again
                    self.pump()
                    line = self.detector.current_line(settled=True)
                return Held(line=line, rest_paste=event.paste)
        return None
