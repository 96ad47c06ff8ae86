from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.pgstate import fresh_database


@pytest.fixture
def state_url() -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL, for this test alone."""
    with fresh_database() as url:
        yield url
