"""The one way hoop_tui opens its embedded SQLite files: WAL, autocommit, one long-lived
connection per thread, so the gateway, its recording threads and the command line can share a
file safely and a statement costs microseconds, not a checkpoint.

The gateway never runs SQLite on its event loop: a `Worker` is one thread that owns one
connection to one database, and `await worker.run(fn)` runs `fn(connection)` there. Another
process holding a write lock then makes that call wait (up to `BUSY_TIMEOUT_S`, then
`StoreUnavailable`), while every session goes on.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from storage.private import narrow, private_dir, private_file

R = TypeVar("R")

BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's lock


class Database:
    """A SQLite file with its tables. `connection()` gives this thread's connection."""

    def __init__(
        self,
        path: Path,
        schema: str,
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        lazy: bool = False,
    ) -> None:
        """`lazy`: create the file and tables on the first connection (a worker's thread),
        not here on the caller's thread."""
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._schema = schema
        self._local = threading.local()
        self._prepared = False
        self._prepare_lock = threading.Lock()
        if not lazy:
            self.prepare()

    def prepare(self) -> None:
        """Create the file (owner-only) and its tables, once; every `connection()` does it."""
        with self._prepare_lock:
            if self._prepared:
                return
            # Held commands and the catalogue are nobody else's to read: the file is made
            # owner-only before SQLite opens it, and SQLite gives -wal and -shm the same mode.
            private_dir(self.path.parent)
            private_file(self.path)
            for suffix in ("-wal", "-shm"):
                narrow(self.path.with_name(self.path.name + suffix))
            db = self._open()
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(self._schema)
            self._prepared = True

    def connection(self) -> sqlite3.Connection:
        if not self._prepared:
            self.prepare()
        return self._open()

    def _open(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            db.row_factory = sqlite3.Row
            # With WAL, NORMAL syncs at checkpoints rather than on every commit: a crash of
            # the process loses nothing, a power cut at most the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def close_connection(self) -> None:
        """Close this thread's connection, if it has one."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class Worker:
    """One thread that owns one connection to `database`; the event loop awaits its calls."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-{database.path.name}")

    async def run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """`fn(connection)` on the worker thread. A lock held elsewhere longer than the
        database's busy timeout raises `sqlite3.OperationalError` ("database is locked")."""
        return await self.call(lambda: fn(self.database.connection()))

    async def call(self, fn: Callable[[], R]) -> R:
        """`fn()` on the worker thread (for objects that open their own connection there)."""
        return await asyncio.wrap_future(self._executor.submit(fn))

    async def close(self, *more: Callable[[], None]) -> None:
        """Close the connection (and run `more` closers) on the thread, then end it."""

        def close_all() -> None:
            self.database.close_connection()
            for closer in more:
                closer()

        await self.call(close_all)
        self._executor.shutdown(wait=False)


def transaction(db: sqlite3.Connection, body: Callable[[sqlite3.Connection], R]) -> R:
    """`body(db)` inside BEGIN IMMEDIATE ... COMMIT (the write lock is taken first, so two
    read-modify-writes never interleave); any exception rolls back and propagates."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = body(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result
