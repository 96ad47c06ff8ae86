"""What several commands share: finding the data directory, and a progress bar on stderr."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from hoop_tui.errors import CommandError
from proxy.config import ConfigError, load_config, resolve_config_path

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


def catalogue_from(args: argparse.Namespace, *, existing: bool = False) -> Any:
    """The session catalogue the readers use: with `[state]` in the configuration, the
    fleet's (every instance's sessions, proxy/fleet/catalogue.py), else the data directory's
    (None when `existing` and the data directory has none)."""
    from proxy.fleet.catalogue import config_of, open_catalogue

    data_dir = data_dir_from(args)
    named = None if getattr(args, "data_dir", None) else resolve_config_path(args.config)
    return open_catalogue(data_dir, config_of(data_dir, named), existing=existing)


def warn_catalogue(catalogue: Any) -> None:
    """Say so when the fleet's catalogue could not be read and only local rows are shown."""
    problem = getattr(catalogue, "problem", None)
    if problem:
        print(f"hoop-tui: warning: {problem}; only this data directory's sessions are shown",
              file=sys.stderr)  # fmt: skip


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
    catalogue = catalogue_from(args, existing=True)
    if catalogue is None:
        return text
    rows = catalogue.find_prefix(text, limit=6)  # six: enough to list five and say "several"
    warn_catalogue(catalogue)
    if len(rows) > 1:
        listed = ", ".join(row.id for row in rows[:5])
        raise CommandError(f"{text}: several sessions start with it ({listed}); give more of it")
    if not rows:
        raise CommandError(f"{text}: no such file, nor a session id in {data_dir}")
    return str(rows[0].path)


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
