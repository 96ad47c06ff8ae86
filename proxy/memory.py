"""Giving memory back after a burst of sessions.

glibc's allocator keeps the heap a burst of sessions grew (their buffers, parsed statements,
recording queues) after they end, so a gateway's resident memory stays at its peak for good.
`malloc_trim(0)` hands the free part back to the system. It runs in a worker thread (ctypes
releases the GIL, so forwarding goes on), and only when a quarter of the sessions (or all of
them) ended since the last trim: a steady gateway never pays for it. Elsewhere than glibc
there is nothing to call, and nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

LOOK_EVERY_S = 5.0


def libc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none. Looked up among the symbols the
    process already has (the C library Python runs on), not with `ctypes.util.find_library`,
    which starts ldconfig to find it."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


async def give_back_forever(live_sessions: Callable[[], int]) -> None:
    """Every LOOK_EVERY_S, when a quarter of the most sessions live since the last trim have
    ended (or all of them), return the allocator's free memory to the system."""
    trim = libc_trim()
    if trim is None:
        return
    most = live_sessions()
    while True:
        await asyncio.sleep(LOOK_EVERY_S)
        now = live_sessions()
        if now < most * 0.75 or (now == 0 < most):
            await asyncio.to_thread(trim, 0)
            most = now
        most = max(most, now)
