"""The one way hoop_tui opens its embedded SQLite files: WAL, autocommit, one long-lived
connection per thread, so the gateway, its recording threads and the command line can share a
file safely and a statement costs microseconds, not a checkpoint."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from storage.private import narrow, private_dir, private_file


class Database:
    """A SQLite file with its tables. `connection()` gives this thread's connection."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._local = threading.local()
        # Held commands and the catalogue are nobody else's to read: the file is made
        # owner-only before SQLite opens it, and SQLite gives -wal and -shm the same mode.
        private_dir(path.parent)
        private_file(path)
        for suffix in ("-wal", "-shm"):
            narrow(path.with_name(path.name + suffix))
        db = self.connection()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)

    def connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            # With WAL, NORMAL syncs at checkpoints rather than on every commit: a crash of
            # the process loses nothing, a power cut at most the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db
