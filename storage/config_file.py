"""The wording of configuration-file errors and arrays of named tables, shared by every layer
that reads a part of the gateway's config file.

`ConfigError` names the file, the key and what is wrong; `entry_key` is how an error names a
field of one entry of an array of tables; `parse_named_entries` parses such an array whose
entries each have a unique name. `proxy.config` reads the file and re-exports all three.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + problem)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_Entry = TypeVar("_Entry", bound=_Named)


def entry_key(section: str, index: int, name: str | None, fieldname: str) -> str:
    """How an error names a field of entry `index` of an array of tables: `rules #2 (x).sql`."""
    return f"{section} #{index} ({name}).{fieldname}" if name else f"{section} #{index}.{fieldname}"


def parse_named_entries(
    raw: object,
    path: Path | str,
    section: str,
    parse_one: Callable[[object, int, Path | str], _Entry],
    why_unique: str = "",
) -> list[_Entry]:
    """An array of tables (`[[section]]`) whose entries each have a name no other has,
    parsed in order by `parse_one(entry, index, path)`."""
    if not isinstance(raw, list):
        raise ConfigError(path, section, f"must be an array of tables ([[{section}]])")
    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    for index, raw_entry in enumerate(raw, start=1):
        entry = parse_one(raw_entry, index, path)
        if entry.name in seen:
            raise ConfigError(
                path,
                entry_key(section, index, entry.name, "name"),
                f"the name is already used by {section.removesuffix('s')} #{seen[entry.name]}; "
                f"names must be unique{why_unique}",
            )
        seen[entry.name] = index
        entries.append(entry)
    return entries
