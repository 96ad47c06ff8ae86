"""`hoop-tui screen` and `hoop-tui play` on recordings and asciicast files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hoop_tui.cli import main
from hoop_tui.commands.replay import parse_at, run_playback
from replay.asciicast import read_cast, write_cast_recording
from tests.replay.test_terminal import GLYPH_TO_ACS
from tests.storage.helpers import make_header

DATA = Path(__file__).parents[2] / "replay" / "data"


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache"


@pytest.fixture
def vim_recording(tmp_path: Path) -> Path:
    cast = read_cast(DATA / "vim.cast")
    out = tmp_path / "vim.hrec"
    header = make_header(cols=cast.header["width"], rows=cast.header["height"])
    write_cast_recording(cast, header, out, Ed25519PrivateKey.generate())
    return out


def expected(name: str, number: int) -> tuple[float, list[str]]:
    checkpoint = json.loads((DATA / f"{name}.expected.json").read_text(encoding="utf-8"))[number]
    return checkpoint["at"], checkpoint["lines"]


@pytest.mark.parametrize("number", [1, 3, 5])
def test_screen_of_a_recording_is_what_tmux_showed(
    vim_recording: Path, number: int, capsys: pytest.CaptureFixture[str], cache_home: Path
) -> None:
    at, lines = expected("vim", number)
    assert main(["screen", str(vim_recording), "--at", str(at)]) == 0
    printed = capsys.readouterr().out.translate(GLYPH_TO_ACS)
    assert printed.split("\n")[:-1] == lines
    assert len(list((cache_home / "hoop_tui" / "replay").iterdir())) == 1


def test_screen_of_a_cast_file_directly(capsys: pytest.CaptureFixture[str]) -> None:
    at, lines = expected("less", 2)
    assert main(["screen", str(DATA / "less.cast"), "--at", str(at), "--no-cache"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == lines


def test_screen_with_an_explicit_cache_dir(
    vim_recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "mine"
    assert main(["screen", str(vim_recording), "--at", "0:02", "--cache-dir", str(cache)]) == 0
    assert len(list(cache.iterdir())) == 1
    assert "class Counter" in capsys.readouterr().out


def test_screen_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["screen", str(tmp_path / "missing.hrec")]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.cast"
    bad.write_text('{"version": 1}\n')
    assert main(["screen", str(bad)]) == 1
    assert "not an asciicast v2 header" in capsys.readouterr().err
    junk = tmp_path / "junk.hrec"
    junk.write_bytes(b"not a recording")
    assert main(["screen", str(junk)]) == 1
    assert "bad magic" in capsys.readouterr().err


def test_parse_at() -> None:
    assert (parse_at("12.5"), parse_at("1:30"), parse_at("1:00:01")) == (12.5, 90.0, 3601.0)


@pytest.mark.programs
def test_play_writes_the_recorded_bytes(tmp_path: Path) -> None:
    cast = DATA / "utf8.cast"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hoop_tui.cli",
            "play",
            str(cast),
            "--speed",
            "16",
            "--idle-limit",
            "0.01",
        ],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    recorded = b"".join(data.encode() for _, code, data in read_cast(cast).events if code == "o")
    assert done.stdout == recorded + b"\x1b[0m"


def test_play_of_a_recording(
    vim_recording: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["play", str(vim_recording), "--speed", "16", "--idle-limit", "0.01"]) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b"\x1b[?1049h") and out.endswith(b"\x1b[0m")


def test_play_rejects_speeds_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["play", str(DATA / "vim.cast"), "--speed", "32"])
    assert "between 0.25 and 16" in capsys.readouterr().err


class FakeTerminal:
    """A clock that only moves when the player waits, and keys pressed at given times."""

    def __init__(self, keys: dict[float, str]) -> None:
        self.now = 0.0
        self.keys = dict(keys)
        self.written: list[tuple[float, bytes]] = []

    def clock(self) -> float:
        return self.now

    def wait(self, timeout: float | None) -> str | None:
        pending = sorted(t for t in self.keys if t >= self.now)
        if pending and (timeout is None or pending[0] <= self.now + timeout):
            self.now = pending[0]
            return self.keys.pop(pending[0])
        assert timeout is not None, "waiting forever with no key to come"
        self.now += timeout
        return None

    def write(self, data: bytes) -> None:
        self.written.append((self.now, data))


def test_run_playback_timing_pause_and_quit() -> None:
    schedule = [(0.0, b"a"), (1.0, b"b"), (2.0, b"c"), (3.0, b"d")]
    fake = FakeTerminal({1.5: " ", 4.0: " "})
    assert run_playback(schedule, fake.write, fake.clock, fake.wait)
    # paused from 1.5 to 4.0: "c" due at 2.0 is written at 4.5
    assert fake.written == [(0.0, b"a"), (1.0, b"b"), (4.5, b"c"), (5.5, b"d")]
    fake = FakeTerminal({0.5: "q"})
    assert not run_playback(schedule, fake.write, fake.clock, fake.wait)
    assert [data for _, data in fake.written] == [b"a"]
    fake = FakeTerminal({})
    assert run_playback(schedule, fake.write, fake.clock, fake.wait)
    assert [t for t, _ in fake.written] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.programs
def test_screen_applies_todays_masks_to_an_old_recording(tmp_path):
    """A rule added after the session still hides what was recorded before it."""
    import subprocess
    import sys

    from storage.schema import EventType
    from storage.signing import load_or_create_signing_key
    from tests.storage.helpers import write_recording

    data_dir = tmp_path / "data"
    recording = tmp_path / "old.hrec"
    write_recording(
        recording,
        [(EventType.OUTPUT, 10, (0, b"$ cat cards\r\ncard 4111 1111 1111 1111 on file\r\n$ "))],
        load_or_create_signing_key(data_dir),
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\ndata_dir = "{data_dir}"\n'
        '[[masks]]\nname = "cards"\ndetector = "credit_card"\nstyle = "last4"\n'
    )

    def screen(*extra: str) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "hoop_tui",
                "screen",
                str(recording),
                "--at",
                "1",
                "--no-cache",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "4111 1111 1111 1111" in screen()
    masked = screen("--masks", str(config))
    assert "4111 1111 1111 1111" not in masked and "1111 on file" in masked


@pytest.mark.programs
def test_screen_in_a_smaller_terminal_shows_what_fits_and_says_so(tmp_path: Path) -> None:
    """`screen` printed every row of a 24-row recording into a 10-row terminal, scrolling the
    top away unsaid (issue 17, item 12); a pipe still gets every row."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    at, rows = expected("vim", 1)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 10, 80, 0, 0))
    done = subprocess.run(
        [sys.executable, "-m", "hoop_tui", "screen", str(DATA / "vim.cast"), "--at", str(at),
         "--cache-dir", str(tmp_path)],
        stdout=slave, stderr=subprocess.PIPE, text=True, timeout=60,
    )  # fmt: skip
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert done.returncode == 0, done.stderr
    printed = shown.decode().replace("\r\n", "\n").split("\n")[:-1]
    kept = [row.rstrip() for row in rows]
    while kept and not kept[-1]:
        kept.pop()
    assert printed == kept[-9:]
    assert f"showing rows {len(kept) - 8}-{len(kept)} of {len(kept)}" in done.stderr
    piped = subprocess.run(
        [sys.executable, "-m", "hoop_tui", "screen", str(DATA / "vim.cast"), "--at", str(at),
         "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert piped.stdout.splitlines() == [row.rstrip() for row in rows]
