from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.pgstate import fresh_database


@pytest.fixture
def state_url(postgres: tuple[str, int]) -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL, for this test alone (skipped, and
    marked `postgres`, like every test that needs that server)."""
    with fresh_database() as url:
        yield url
