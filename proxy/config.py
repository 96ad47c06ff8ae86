"""The gateway configuration: one TOML file, read once, validated whole before anything starts.

Errors name the file, the key and what is wrong, so a broken config never half-starts a gateway.
Sections beyond `[gateway]` are added by the features that need them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_NAME = "gateway.toml"


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


@dataclass(slots=True)
class GatewayConfig:
    path: Path
    data_dir: Path
    gateway_id: str
    raw: dict[str, Any]


def resolve_config_path(explicit: str | None) -> Path:
    """--config, then $HOOP_CONFIG, then ./gateway.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("HOOP_CONFIG")
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG_NAME)


def load_config(path: Path) -> GatewayConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path, "", "no such file (give --config FILE, set HOOP_CONFIG, or run `hoop-tui up`)"
        ) from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    gateway = raw.get("gateway")
    if not isinstance(gateway, dict):
        raise ConfigError(path, "gateway", "missing [gateway] section")
    data_dir = gateway.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ConfigError(path, "gateway.data_dir", "must be a non-empty string (a directory)")
    resolved = Path(data_dir)
    if not resolved.is_absolute():
        resolved = (path.parent / resolved).resolve()
    gateway_id = gateway.get("id", os.uname().nodename)
    if not isinstance(gateway_id, str) or not gateway_id:
        raise ConfigError(path, "gateway.id", "must be a non-empty string")
    return GatewayConfig(path=path, data_dir=resolved, gateway_id=gateway_id, raw=raw)
