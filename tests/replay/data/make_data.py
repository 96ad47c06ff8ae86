"""Regenerate the replay golden data: real programs recorded with asciinema, and the screens
tmux shows for the same bytes.

    python tests/replay/data/make_data.py            # all scenarios
    python tests/replay/data/make_data.py vim less   # some

Each scenario runs `asciinema rec -c CMD` inside a detached tmux pane of a known size (so the
program sees a real terminal), drives it with `tmux send-keys` and `tmux resize-window`, and
keeps the `.cast`. Then, for the expected screens, a second pane in raw mode (`stty raw`) gets
the recorded output bytes written to its tty up to each checkpoint time, resized when the
recording says so; after each checkpoint an OSC title acts as a barrier (tmux has processed
every byte before it once the pane title changes) and `tmux capture-pane -p` gives the screen.
`NAME.expected.json` holds, per checkpoint, the time, the lines, the cursor, whether the
alternate screen is on, and the lines with their attributes as SGR sequences
(`capture-pane -p -e`: DEC line drawing there is SO ... SI with G1 as the line-drawing set).

Needs tmux (3.x), asciinema 2.4, vim, less and top. Outputs depend on the host (file dates,
process lists); the tests only compare our engine with tmux on the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOCKET = "hoop-replay-data"
COLS, ROWS = 80, 24
CHECKPOINTS = 6

# (seconds to wait, action): action is keys for send-keys (a list), or ("resize", cols, rows).
Step = tuple[float, list[str] | tuple[str, int, int]]


@dataclass
class Scenario:
    name: str
    command: str
    steps: list[Step] = field(default_factory=list)
    size: tuple[int, int] = (COLS, ROWS)


PYTHON_FILE = """\
#!/usr/bin/env python3
\"\"\"A small module for the replay tests: héllo, naïve café, 日本語, 한국어.\"\"\"

import sys


def greet(name: str) -> str:
    # A comment with an emoji 🎉 and a check mark ✓
    return f"hello, {name}!"


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def bump(self, by: int = 1) -> int:
        self.count += by
        return self.count


if __name__ == "__main__":
    print(greet(sys.argv[1] if len(sys.argv) > 1 else "world"))
"""

UTF8_SCRIPT = r"""
printf 'plain ASCII line\r\n'
printf 'CJK: 日本語のテキスト 中文 한국어\r\n'
printf 'emoji: 😀 🎉 👍 ok\r\n'
printf 'combining: e\xcc\x81 a\xcc\x88 n\xcc\x83 done\r\n'
printf 'wide at the edge: %061d中X\r\n' 0
printf '\033(0lqqqqqqqqk\033(B box \033)0\016x\017 in \016x\017 \033(B\r\n'
printf '\033(0mqqqqqqqqj\033(B\r\n'
printf '\033[38:2::255:100:0mtruecolor colon\033[0m \033[38;2;0;200;100mtruecolor semi\033[0m\r\n'
printf '\033[38:5:208m256 colon\033[0m \033[38;5;33m256 semi\033[0m \033[4:3mcurly\033[4:0m\r\n'
printf '\033[?4mprivate sgr ignored\033[m \033[>4;2mmodify keys\033[>4m\r\n'
sleep 0.3
printf 'split: \xe6'
sleep 0.2
printf '\x97\xa5 after split\r\n'
printf '\033[1;31mbold red\033[22;39m \033[7mreverse\033[27m \033[3mitalic\033[23m\r\n'
sleep 0.3
printf '\033[5;10H\033[Ktyped over line five\033[12;1H'
"""


def tmux(*args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["tmux", "-L", SOCKET, "-f", "/dev/null", *args],
        capture_output=True,
        text=True,
        check=check,
    )
    return result.stdout


def scenarios(work: Path) -> list[Scenario]:
    pyfile = work / "sample.py"
    pyfile.write_text(PYTHON_FILE, encoding="utf-8")
    longfile = work / "long.txt"
    longfile.write_text(
        "".join(
            f"line {n:03d}: the quick brown fox jumps over the lazy dog ✓\n" for n in range(200)
        ),
        encoding="utf-8",
    )
    tree = work / "tree"
    tree.mkdir()
    for name in ("alpha", "beta", "gamma"):
        (tree / name).mkdir()
    for name in ("notes.txt", "archive.tar.gz", "image.png", "data.json", "README"):
        (tree / name).write_text("x\n")
    script = tree / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (tree / "link").symlink_to("notes.txt")
    (tree / "broken").symlink_to("missing")
    utf8 = work / "utf8.sh"
    utf8.write_text(UTF8_SCRIPT)
    vim = f"vim -u NONE -N -i NONE -n -c 'syntax on' {pyfile}"
    return [
        Scenario(
            "ls_color",
            f"sh -c 'cd {tree} && ls --color=always -C && sleep 0.3"
            " && ls --color=always -1F && sleep 0.3'",
        ),
        Scenario("utf8", f"bash {utf8}"),
        Scenario(
            "vim",
            vim,
            [
                (1.0, ["G"]),
                (0.4, ["g", "g"]),
                (0.4, ["/", "class", "Enter"]),
                (0.4, ["o"]),
                (0.3, ["-l", "# 日本語 ✓ added"]),
                (0.3, ["Escape"]),
                (0.4, [":", "q", "!", "Enter"]),
            ],
        ),
        Scenario(
            "less",
            f"less {longfile}",
            [
                (0.8, ["Space"]),
                (0.4, ["Space"]),
                (0.4, ["b"]),
                (0.4, ["/", "-l", "line 150", "Enter"]),
                (0.5, ["q"]),
            ],
        ),
        Scenario("top", "top -d 0.5", [(1.8, ["q"])]),
        Scenario(
            "resize",
            vim,
            [
                (1.0, ["j", "j"]),
                (0.5, ("resize", 100, 30)),
                (0.8, ["G"]),
                (0.5, ("resize", 60, 16)),
                (0.8, ["g", "g"]),
                (0.5, [":", "q", "!", "Enter"]),
            ],
        ),
    ]


def record(scenario: Scenario, work: Path) -> Path:
    cast = HERE / f"{scenario.name}.cast"
    cast.unlink(missing_ok=True)
    cols, rows = scenario.size
    command = f"asciinema rec -q --overwrite -c {shlex_quote(scenario.command)} {cast}"
    tmux(
        "new-session",
        "-d",
        "-s",
        "rec",
        "-x",
        str(cols),
        "-y",
        str(rows),
        "-e",
        "TERM=xterm-256color",
        "-e",
        "LANG=C.UTF-8",
        "-e",
        "LC_ALL=C.UTF-8",
        f"cd {work} && TERM=xterm-256color {command}; sleep 30",
    )
    tmux("set-option", "-t", "rec", "window-size", "manual")
    time.sleep(0.5)
    for wait, action in scenario.steps:
        time.sleep(wait)
        if isinstance(action, tuple):
            _, new_cols, new_rows = action
            tmux("resize-window", "-t", "rec", "-x", str(new_cols), "-y", str(new_rows))
        else:
            tmux("send-keys", "-t", "rec", *action)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        current = tmux("display-message", "-p", "-t", "rec", "#{pane_current_command}")
        if cast.exists() and current.strip() == "sleep":
            break
        time.sleep(0.2)
    time.sleep(0.3)
    tmux("kill-session", "-t", "rec", check=False)
    return cast


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def load_cast(path: Path) -> tuple[dict[str, Any], list[tuple[float, str, str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header: dict[str, Any] = json.loads(lines[0])
    events: list[tuple[float, str, str]] = []
    for line in lines[1:]:
        if line.strip():
            time_s, code, data = json.loads(line)
            events.append((float(time_s), str(code), str(data)))
    return header, events


def clean_cut_points(events: list[tuple[float, str, str]], size: tuple[int, int]) -> list[int]:
    """Event numbers after which no escape sequence or character is left open."""
    sys.path.insert(0, str(HERE.parents[2]))
    from replay.terminal import Terminal

    terminal = Terminal(*size)
    points = []
    for number, (_, code, data) in enumerate(events):
        if code == "o":
            terminal.feed(data.encode("utf-8"))
        elif code == "r":
            cols, _, rows = data.partition("x")
            terminal.resize(int(cols), int(rows))
        if not terminal.stream.pending and not terminal.stream.utf8_decoder.getstate()[0]:
            points.append(number)
    return points


def expected_screens(cast: Path) -> list[dict[str, object]]:
    header, events = load_cast(cast)
    size = (int(header["width"]), int(header["height"]))
    points = clean_cut_points(events, size)
    # Checkpoints: spread over the clean cut points, always including the last event, and
    # always at a whole time (every event at that time included).
    chosen: list[int] = []
    for k in range(1, CHECKPOINTS + 1):
        index = points[min(len(points) - 1, k * len(points) // CHECKPOINTS)]
        while index + 1 < len(events) and events[index + 1][0] == events[index][0]:
            index += 1
        if index not in chosen and index in points:
            chosen.append(index)
    tmux(
        "new-session",
        "-d",
        "-s",
        "show",
        "-x",
        str(size[0]),
        "-y",
        str(size[1]),
        "stty raw -echo; exec sleep 600",
    )
    tmux("set-option", "-t", "show", "window-size", "manual")
    time.sleep(0.5)
    tty = tmux("display-message", "-p", "-t", "show", "#{pane_tty}").strip()
    out: list[dict[str, object]] = []
    fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY)
    try:
        fed = 0
        for barrier, index in enumerate(chosen):
            for _, code, data in events[fed : index + 1]:
                if code == "o":
                    os.write(fd, data.encode("utf-8"))
                elif code == "r":
                    sync(fd, f"r{barrier}-{fed}")
                    cols, _, rows = data.partition("x")
                    tmux("resize-window", "-t", "show", "-x", cols, "-y", rows)
                    time.sleep(0.2)
                fed += 1
            sync(fd, f"cp{barrier}")
            lines = tmux("capture-pane", "-p", "-t", "show").split("\n")
            styled = tmux("capture-pane", "-p", "-e", "-t", "show").split("\n")
            info = tmux(
                "display-message",
                "-p",
                "-t",
                "show",
                "#{cursor_x},#{cursor_y},#{alternate_on},#{pane_width},#{pane_height}",
            ).strip()
            x, y, alternate, width, height = (int(v) for v in info.split(","))
            lines = lines[:height]
            out.append(
                {
                    "at": events[index][0],
                    "event": index,
                    "size": [width, height],
                    "cursor": [x, y],
                    "alternate": bool(alternate),
                    "lines": [line.rstrip() for line in lines],
                    "styled": styled[:height],
                }
            )
    finally:
        os.close(fd)
        tmux("kill-session", "-t", "show", check=False)
    return out


def sync(fd: int, tag: str) -> None:
    """Wait until tmux has processed everything written so far."""
    os.write(fd, f"\x1b]2;{tag}\x07".encode())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if tmux("display-message", "-p", "-t", "show", "#{pane_title}").strip() == tag:
            return
        time.sleep(0.05)
    raise RuntimeError(f"tmux did not reach barrier {tag}")


def main(names: list[str]) -> int:
    for tool in ("tmux", "asciinema", "vim", "less", "top"):
        if shutil.which(tool) is None:
            print(f"make_data: {tool} is not installed", file=sys.stderr)
            return 1
    tmux("kill-server", check=False)
    with tempfile.TemporaryDirectory(prefix="hoop-replay-data-") as tmp:
        work = Path(tmp)
        for scenario in scenarios(work):
            if names and scenario.name not in names:
                continue
            cast = record(scenario, work)
            screens = expected_screens(cast)
            target = HERE / f"{scenario.name}.expected.json"
            target.write_text(json.dumps(screens, ensure_ascii=False, indent=1) + "\n")
            print(f"{scenario.name}: {cast.stat().st_size} bytes, {len(screens)} screens")
    tmux("kill-server", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
