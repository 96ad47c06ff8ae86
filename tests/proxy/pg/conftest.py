"""Fixtures of the PostgreSQL gateway tests: a gateway per test, the machine's PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.proxy.pg.harness import PgHarness, pg_available


@pytest.fixture
async def pg(tmp_path: Path, postgres: tuple[str, int]) -> AsyncIterator[PgHarness]:
    """A gateway harness to configure, then `await pg.start()`; stopped after the test."""
    if not pg_available():
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    harness = PgHarness(tmp_path)
    yield harness
    await harness.stop()
