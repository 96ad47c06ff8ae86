"""What several commands share: finding the data directory, and a progress bar on stderr."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from hoop_tui.errors import CommandError
from proxy.config import ConfigError, load_config, resolve_config_path
from storage.catalogue import CATALOGUE_NAME, SessionQuery, SqliteCatalogue

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """'90d', '12h', '10m', '30s', '1w' (or a sum like '1h30m') -> seconds."""
    parts = re.findall(r"(\d+)([smhdw])", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"{text!r} is not a duration like 90d, 12h, 10m or 30s")
    return sum(int(number) * DURATION_UNITS[unit] for number, unit in parts)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=(
            "gateway configuration (default: $HOOP_CONFIG, then ./gateway.toml, then the "
            "./hoop-data/gateway.toml that `hoop-tui up` writes)"
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="use this data directory (and the gateway.toml `up` keeps in it) instead of the one "
        "the configuration names",
    )


def data_dir_from(args: argparse.Namespace) -> Path:
    """--data-dir, else [gateway].data_dir of the configuration."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    try:
        return load_config(resolve_config_path(args.config)).data_dir
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


# What `sessions` prints in its SESSION column is the first 8 characters of a session id.
SESSION_ID_PREFIX = re.compile(r"[0-9a-f]{6,32}")


def recording_argument(text: str, args: argparse.Namespace) -> str:
    """A FILE argument as given: a path, or a session id (whole, or its first 6+ characters as
    `sessions` shows it) that the data directory's catalogue turns into its recording's path."""
    if Path(text).exists() or not SESSION_ID_PREFIX.fullmatch(text):
        return text
    try:
        data_dir = data_dir_from(args)
    except CommandError:
        return text  # no gateway here: it stays a path, and its error says so
    if not (data_dir / CATALOGUE_NAME).exists():
        return text
    rows = [
        row
        for row in SqliteCatalogue.in_data_dir(data_dir).find_sessions(SessionQuery())
        if row.id.startswith(text)
    ]
    if len(rows) > 1:
        listed = ", ".join(row.id for row in rows[:5])
        raise CommandError(f"{text}: several sessions start with it ({listed}); give more of it")
    if not rows:
        raise CommandError(f"{text}: no such file, nor a session id in {data_dir}")
    return rows[0].path


def gateway_id_from(args: argparse.Namespace) -> str:
    import os

    if getattr(args, "data_dir", None):
        return os.uname().nodename
    try:
        return load_config(resolve_config_path(args.config)).gateway_id
    except ConfigError:
        return os.uname().nodename


class Progress:
    """A one-line progress bar on stderr, shown only when stderr is a terminal and the work
    takes long enough to be worth watching."""

    def __init__(self, label: str, *, delay_s: float = 0.5) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty()
        self._started = time.monotonic()
        self._delay_s = delay_s
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        if now - self._started < self._delay_s or now - self._last_draw < 0.1:
            return
        self._last_draw = now
        fraction = min(1.0, done / total)
        width = 30
        filled = int(fraction * width)
        bar = "#" * filled + "-" * (width - filled)
        sys.stderr.write(f"\r{self.label} [{bar}] {fraction:6.1%}")
        sys.stderr.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
