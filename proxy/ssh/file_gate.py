"""Judging an SFTP channel's file operations before the target sees them (the asyncio side).

`SftpGate` (proxy/ssh/sftp.py) cuts the caller's stream into packets; here each packet that
touches a file waits for its verdict, in order, while the rest flow through: an allowed request
goes on to the target, a refused one never reaches it and the caller gets an
SSH_FX_PERMISSION_DENIED status carrying the reason, sent between two of the target's replies.
A held request holds everything behind it (SFTP replies may come in any order, but requests
must reach the target in the order they were sent). When the caller is gone, a request still
waiting is withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.ssh.sftp import FileRequest, SftpGate

MAX_QUEUED_BYTES = 1024 * 1024  # beyond this, stop reading the caller until the queue drains

Check = Callable[[FileRequest, Callable[[str], None]], Awaitable[str | None]]


class SftpFileGate:
    """One SFTP channel's queue of requests waiting for their verdicts."""

    def __init__(
        self,
        check: Check,
        *,
        to_target: Callable[[bytes], None],
        to_caller: Callable[[bytes], None],
        notify: Callable[[str], None],
        pause: Callable[[bool], None],
        fail: Callable[[str], None],
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
    ) -> None:
        self.gate = SftpGate()
        self._check = check
        self._to_target = to_target
        self._to_caller = to_caller
        self._notify = notify
        self._pause = pause
        self._fail = fail
        self._spawn = spawn
        self._queue: deque[bytes | FileRequest] = deque()
        self._queued_bytes = 0
        self._paused = False
        self._refusals: list[bytes] = []
        self._worker: asyncio.Task[Any] | None = None

    def client_data(self, data: bytes) -> None:
        """The caller's bytes: forwarded at once unless a request before them is waiting."""
        items = self.gate.client_data(data)
        if self.gate.broken:
            self._queue.clear()
            self._fail(f"hoop: {self.gate.broken}; the SFTP session is ended")
            return
        idle = self._worker is None or self._worker.done()
        for item in items:
            if isinstance(item, bytes) and idle and not self._queue:
                self._to_target(item)
            else:
                self._queue.append(item)
                self._queued_bytes += len(item) if isinstance(item, bytes) else len(item.packet)
        if self._queue and (self._worker is None or self._worker.done()):
            self._worker = self._spawn(self._drain())
        if self._queued_bytes > MAX_QUEUED_BYTES and not self._paused:
            self._paused = True
            self._pause(True)

    def target_data(self, data: bytes) -> None:
        """The target's bytes, after they were forwarded: a refusal may follow a whole reply."""
        self.gate.target_data(data)
        if self._refusals and self.gate.at_boundary:
            refusals, self._refusals = self._refusals, []
            for packet in refusals:
                self._to_caller(packet)

    def close(self, reason: str) -> None:
        """The channel is gone: a request still waiting for its verdict is withdrawn."""
        self._queue.clear()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel(reason)

    async def _drain(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, bytes):
                self._queued_bytes -= len(item)
                self._to_target(item)
                continue
            self._queued_bytes -= len(item.packet)
            reason = await self._check(item, self._notify)
            if reason is None:
                self._to_target(item.packet)
                continue
            self._notify(f"hoop: {reason}")
            refusal = item.refusal(reason)
            if self.gate.at_boundary:
                self._to_caller(refusal)
            else:
                self._refusals.append(refusal)
        if self._paused:
            self._paused = False
            with contextlib.suppress(Exception):
                self._pause(False)
