"""Memory a burst of sessions grew goes back to the system once they end (proxy/memory.py)."""

from __future__ import annotations

import asyncio

import pytest

from proxy import memory


def test_glibc_trim_is_found_and_runs() -> None:
    trim = memory.libc_trim()
    assert trim is not None  # the CI machine is Debian: glibc
    assert trim(0) in (0, 1)


async def test_trims_once_sessions_end_and_not_while_they_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = memory.libc_trim()
    assert real is not None
    trims: list[int] = []

    def counted(pad: int) -> int:
        trims.append(pad)
        return real(pad)

    monkeypatch.setattr(memory, "libc_trim", lambda: counted)
    monkeypatch.setattr(memory, "LOOK_EVERY_S", 0.01)
    live = [100]
    task = asyncio.ensure_future(memory.give_back_forever(lambda: live[0]))
    try:
        await asyncio.sleep(0.1)
        assert trims == []  # a steady gateway never pays for it
        live[0] = 90
        await asyncio.sleep(0.1)
        assert trims == []  # a tenth ended: not yet
        live[0] = 50
        await asyncio.sleep(0.1)
        assert len(trims) == 1
        live[0] = 0
        await asyncio.sleep(0.1)
        assert len(trims) == 2
        await asyncio.sleep(0.1)
        assert len(trims) == 2  # nothing more to give back
    finally:
        task.cancel()
