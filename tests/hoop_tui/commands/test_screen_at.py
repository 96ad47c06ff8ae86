"""`hoop-tui screen` reads only what happened up to --at, keyframes are kept for imported
recordings and casts, and a masked screen still sees the whole stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.programs


def hoop(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "hoop_tui", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def write_cast(path: Path, events: list[tuple[float, str]], tail: str = "") -> Path:
    lines = [json.dumps({"version": 2, "width": 30, "height": 5})]
    lines += [json.dumps([time_s, "o", data]) for time_s, data in events]
    path.write_text("\n".join(lines) + "\n" + tail)
    return path


def burst(count: int) -> list[tuple[float, str]]:
    data = "".join(f"{n}\r\n" for n in range(1, count + 1))
    chunks = [data[k : k + 4096] for k in range(0, len(data), 4096)]
    events = [(0.1, "$ seq\r\n")]
    events += [(1.3 + i / len(chunks), chunk) for i, chunk in enumerate(chunks)]
    return [*events, (2.5, "$ ")]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "xdg-cache"


def test_screen_of_a_cast_reads_nothing_after_the_time(tmp_path: Path, cache: Path) -> None:
    """What follows --at is not even parsed: a damaged line after it does not matter, one
    before it still does."""
    cast = write_cast(tmp_path / "s.cast", burst(2000), tail="[oops\n")
    result = hoop(cache, "screen", str(cast), "--at", "1.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "$ seq"
    assert not (cache / "hoop_tui" / "replay").exists()  # nothing built for a screen before T
    late = hoop(cache, "screen", str(cast), "--at", "9")
    assert late.returncode == 1
    assert "not JSON" in late.stderr


def test_screen_past_the_end_keeps_keyframes_and_they_agree(tmp_path: Path, cache: Path) -> None:
    cast = write_cast(tmp_path / "b.cast", burst(3000))
    times = ["0.2", "1.31", "1.7", "2.2", "3"]
    cold = [hoop(cache, "screen", str(cast), "--at", at, "--no-cache").stdout for at in times]
    assert cold[-1].splitlines()[-2:] == ["3000", "$"]
    assert not (cache / "hoop_tui" / "replay").exists()
    assert hoop(cache, "screen", str(cast), "--at", "99").returncode == 0
    assert len(list((cache / "hoop_tui" / "replay").iterdir())) == 1
    warm = [hoop(cache, "screen", str(cast), "--at", at).stdout for at in times]
    assert warm == cold


def test_import_cast_keeps_keyframes_of_the_new_recording(tmp_path: Path, cache: Path) -> None:
    cast = write_cast(tmp_path / "b.cast", burst(3000))
    out = tmp_path / "imported.hrec"
    result = hoop(
        cache, "import-cast", "-o", str(out), "--data-dir", str(tmp_path / "d"), str(cast)
    )
    assert result.returncode == 0, result.stderr
    kept = list((cache / "hoop_tui" / "replay").iterdir())
    assert len(kept) == 1 and kept[0].name.endswith(f"-{out.stat().st_size}.kf")
    screen = hoop(cache, "screen", str(out), "--at", "2")
    assert screen.returncode == 0, screen.stderr
    assert screen.stdout == hoop(cache, "screen", str(cast), "--at", "2", "--no-cache").stdout
    assert len(list((cache / "hoop_tui" / "replay").iterdir())) == 1


def test_a_masked_screen_of_a_cast_sees_a_secret_split_at_the_time(
    tmp_path: Path, cache: Path
) -> None:
    """A card number cut across two events 1.5 ms apart (the gateway's masks wait 2 ms for
    more), with --at between them: the masks hold the first part back until the second
    shows it is a card, so the screen must not show it. Reading the cast only up to --at
    would release that part unmasked."""
    cast = write_cast(
        tmp_path / "c.cast",
        [(0.5, "$ cat cards\r\ncard 4111 1111"), (0.5015, " 1111 1111 on file\r\n$ ")],
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[masks]]\nname = "cards"\ndetector = "credit_card"\nstyle = "last4"\n'
    )
    plain = hoop(cache, "screen", str(cast), "--at", "0.501")
    assert "card 4111 1111" in plain.stdout
    for at in ("0.501", "2"):
        masked = hoop(cache, "screen", str(cast), "--at", at, "--masks", str(config))
        assert masked.returncode == 0, masked.stderr
        assert "4111" not in masked.stdout
