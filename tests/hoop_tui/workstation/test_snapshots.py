"""Snapshot tests of the workstation's main views (pytest-textual-snapshot): a change in what
the user sees shows up as a diff of the rendered screen."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hoop_tui.workstation.app import Workstation
from replay.player import Player
from replay.sources import open_source
from storage.catalogue import SqliteCatalogue
from storage.recorder import recording_path
from storage.writer import RecordingSummary
from tests.hoop_tui.workstation.test_replay import DATA, ReplayApp
from tests.storage.helpers import SAMPLE_EVENTS, make_header, write_recording


def _catalogue(data_dir: Path) -> None:
    catalogue = SqliteCatalogue.in_data_dir(data_dir)
    signer = Ed25519PrivateKey.generate()
    for number, (user, target) in enumerate([("alice", "web1"), ("bob", "db1")]):
        header = make_header(
            f"{number:032x}",
            user=user,
            target=target,
            started_at_us=1_764_000_000_000_000 + number * 3_600_000_000,
        )
        path = recording_path(data_dir, header)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_recording(path, SAMPLE_EVENTS, signer, header=header)
        catalogue.add_session(header, path)
        catalogue.finish_session(
            RecordingSummary(
                path,
                header,
                path.stat().st_size,
                11,
                2_500_000,
                "client closed",
                {"output": 3},
                {"deny": number},
            )
        )


def test_the_recordings_view(snap_compare, tmp_path):
    _catalogue(tmp_path)
    assert snap_compare(Workstation(tmp_path, offline=True), terminal_size=(110, 20))


def test_the_replay_view_of_vim(snap_compare, tmp_path):
    player = Player.open(open_source(DATA / "vim.cast"), cache_dir=tmp_path)
    player.seek(player.duration_us // 2)
    assert snap_compare(ReplayApp(player), terminal_size=(100, 34))
