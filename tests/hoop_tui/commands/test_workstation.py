"""`hoop-tui tui`: which configuration and data directory the workstation gets, and the remote
mode the gateway starts it in for `ssh -t bob@gateway console`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hoop_tui.cli import build_parser
from hoop_tui.commands.workstation import workstation_from
from hoop_tui.errors import CommandError
from proxy.holds.control import TICKET_ENV


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere.toml"
    path.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def test_config_is_passed_to_the_workstation(tmp_path, monkeypatch):
    monkeypatch.delenv(TICKET_ENV, raising=False)
    config = _config(tmp_path)
    app = workstation_from(build_parser().parse_args(["tui", "--config", str(config)]))
    assert app.config == config
    assert app.data_dir == tmp_path / "data"
    assert not app.remote


def test_a_console_ticket_means_remote_mode_and_leaves_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(TICKET_ENV, "t" * 43)
    args = build_parser().parse_args(["tui", "--data-dir", str(tmp_path)])
    app = workstation_from(args)
    assert app.remote and app.ticket == "t" * 43
    assert app.config is None  # no masks, no recordings: the gateway's disk is not bob's
    assert TICKET_ENV not in os.environ


def test_a_console_ticket_refuses_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(TICKET_ENV, "t" * 43)
    args = build_parser().parse_args(["tui", "--offline", "--data-dir", str(tmp_path)])
    with pytest.raises(CommandError, match="no --offline mode"):
        workstation_from(args)
