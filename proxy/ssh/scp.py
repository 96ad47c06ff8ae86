"""Reading the legacy scp protocol (`scp -O`, and older clients) to record file copies (sans-IO).

`scp` over the legacy protocol is an exec request, `scp -t DEST` (the caller uploads) or
`scp -f SOURCE` (the caller downloads), followed by a simple stream from the sending side:
`C<mode> <size> <name>\\n`, then the file's bytes and a NUL; `D<mode> 0 <name>\\n` and `E\\n`
enter and leave directories; `T...\\n` carries times. The observer is fed the sending side's bytes
and reports each file as a `FileOperation` once all its bytes have passed. Anything it cannot
read makes it give up quietly (the exec command and the raw bytes are recorded anyway).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from enum import Enum

from proxy.ssh.sftp import FileOperation

MAX_LINE = 64 * 1024


class Direction(Enum):
    UPLOAD = "upload"  # scp -t: the caller sends, the target sinks
    DOWNLOAD = "download"  # scp -f: the target sends, the caller sinks


class _ScpState(Enum):
    CONTROL = "control"
    DATA = "data"
    STATUS = "status"
    BROKEN = "broken"


@dataclass(slots=True)
class ScpObserver:
    """Follows the sending side of one legacy scp transfer."""

    direction: Direction
    where: bytes
    _state: _ScpState = _ScpState.CONTROL
    _line: bytearray = field(default_factory=bytearray)
    _dirs: list[bytes] = field(default_factory=list)
    _name: bytes = b""
    _size: int = 0
    _left: int = 0

    @classmethod
    def for_command(cls, command: str) -> ScpObserver | None:
        """An observer when `command` is a legacy scp transfer (`scp ... -t|-f PATH`)."""
        try:
            words = shlex.split(command)
        except ValueError:
            return None
        if not words or words[0].rsplit("/", 1)[-1] != "scp":
            return None
        flags = [word for word in words[1:] if word.startswith("-")]
        paths = [word for word in words[1:] if not word.startswith("-")]
        letters = "".join(flag[1:] for flag in flags)
        if "t" in letters:
            direction = Direction.UPLOAD
        elif "f" in letters:
            direction = Direction.DOWNLOAD
        else:
            return None
        return cls(direction, paths[-1].encode() if paths else b"")

    @property
    def broken(self) -> bool:
        return self._state is _ScpState.BROKEN

    def feed(self, data: bytes) -> list[FileOperation]:
        """Bytes from the sending side; the files completed by them."""
        ops: list[FileOperation] = []
        view = memoryview(data)
        while view and self._state is not _ScpState.BROKEN:
            if self._state is _ScpState.DATA:
                step = min(self._left, len(view))
                self._left -= step
                view = view[step:]
                if self._left == 0:
                    self._state = _ScpState.STATUS
            elif self._state is _ScpState.STATUS:
                ok = view[0] == 0
                view = view[1:]
                ops.append(self._finished("ok" if ok else "failed"))
                self._state = _ScpState.CONTROL
            else:
                end = bytes(view[: MAX_LINE + 1]).find(b"\n")
                if end < 0:
                    self._line += view
                    if len(self._line) > MAX_LINE:
                        self._state = _ScpState.BROKEN
                    break
                self._line += view[:end]
                view = view[end + 1 :]
                line, self._line = bytes(self._line), bytearray()
                self._control(line)
        return ops

    def finish(self) -> list[FileOperation]:
        """The channel ended: a file cut off in the middle is reported with what arrived."""
        if self._state in (_ScpState.DATA, _ScpState.STATUS):
            self._state = _ScpState.BROKEN
            return [self._finished(f"incomplete: {self._size - self._left} bytes arrived")]
        return []

    def _control(self, line: bytes) -> None:
        kind, rest = line[:1], line[1:]
        if kind in (b"C", b"D"):
            parts = rest.split(b" ", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
                self._state = _ScpState.BROKEN
                return
            if kind == b"D":
                self._dirs.append(parts[2])
                return
            self._name = parts[2]
            self._size = self._left = int(parts[1])
            self._state = _ScpState.DATA if self._left else _ScpState.STATUS
        elif kind == b"E":
            if self._dirs:
                self._dirs.pop()
        elif kind != b"T":
            self._state = _ScpState.BROKEN

    def _finished(self, outcome: str) -> FileOperation:
        path = b"/".join([*self._dirs, self._name])
        op = "write" if self.direction is Direction.UPLOAD else "read"
        where = self.where.decode("utf-8", "backslashreplace")
        preposition = "into" if self.direction is Direction.UPLOAD else "from"
        return FileOperation(op, path, self._size, f"scp {preposition} {where}: {outcome}")
