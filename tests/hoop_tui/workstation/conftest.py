"""Fixtures of the workstation tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    """No gateway configuration for the workstation to find: not given, no $HOOP_CONFIG, no
    ./gateway.toml. Recordings are shown as recorded."""
    monkeypatch.delenv("HOOP_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
