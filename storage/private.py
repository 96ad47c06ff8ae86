"""Owner-only files and directories, whatever the umask.

What the gateway writes holds held commands, recordings, keys and the control socket: no other
local account may read any of it. A fresh file or directory is born owner-only (its mode is
given at creation, and a umask can only take bits away); one left wider by an older version or
by hand is narrowed when the gateway opens it, if this account owns it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`mkdir -p path`: every level it creates, and `path` itself, owner-only."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):
            level.mkdir(mode=DIRECTORY_MODE)
    narrow(path)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty and owner-only if it is missing; narrow it if it exists."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    narrow(path)
    return path


def narrow(path: Path) -> None:
    """Take away the group and other bits of a path this account owns (others are left)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return
    if info.st_mode & 0o077:
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)


def private_tree_top(data_dir: Path) -> None:
    """The data directory owner-only, and what lies directly in it: a directory others cannot
    enter already hides everything deeper, so a large recordings tree is not walked."""
    private_dir(data_dir)
    for entry in data_dir.iterdir():
        narrow(entry)
