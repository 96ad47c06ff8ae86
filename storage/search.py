"""The full-text index of recordings (SQLite FTS5), beside the session catalogue.

Each row is one line of a recording with its time and kind (`output`, `sql_statement`,
`command`, `verdict`, ...); `replay.search` decides what goes in. A search is a phrase: its
words in that order, whatever the punctuation between them, so `rm -rf /tmp` finds
`rm -rf /tmp/x`. Session filters (user, target, time) come from the catalogue.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from storage import sqlite

SEARCH_NAME = "search.db"
_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS lines USING fts5(
    text, kind UNINDEXED, session_id UNINDEXED, t_us UNINDEXED, tokenize = 'unicode61'
);
CREATE TABLE IF NOT EXISTS indexed (
    session_id  TEXT PRIMARY KEY,
    indexed_at  REAL NOT NULL,
    entries     INTEGER NOT NULL
);
"""


class Entry(NamedTuple):
    """One searchable line: microseconds from the session's start, its kind, its text."""

    t_us: int
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    session_id: str
    t_us: int
    kind: str
    context: str  # the line, the matched words between [ and ]

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "t_us": self.t_us,
            "kind": self.kind,
            "context": self.context,
        }


def phrase(text: str) -> str:
    """An FTS5 query for `text` as one phrase: quotes doubled, so nothing in it is syntax."""
    return '"' + text.replace('"', '""') + '"'


class SearchIndex:
    """The index of one data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite.Database(path, _SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SearchIndex:
        return cls(data_dir / SEARCH_NAME)

    def close(self) -> None:
        """Close the calling thread's connection (a thread that ends does not close it at
        once: the connection waits for the garbage collector, its files open meanwhile)."""
        self._db.close_connection()

    def replace(self, session_id: str, entries: Iterable[Entry]) -> int:
        """The session's lines, instead of any it had; one transaction."""
        db = self._db.connection()
        count = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM lines WHERE session_id = ?", (session_id,))
            for entry in entries:
                db.execute(
                    "INSERT INTO lines (text, kind, session_id, t_us) VALUES (?, ?, ?, ?)",
                    (entry.text, entry.kind, session_id, entry.t_us),
                )
                count += 1
            db.execute(
                "INSERT OR REPLACE INTO indexed (session_id, indexed_at, entries) VALUES (?, ?, ?)",
                (session_id, time.time(), count),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return count

    def forget(self, session_id: str) -> None:
        db = self._db.connection()
        db.execute("DELETE FROM lines WHERE session_id = ?", (session_id,))
        db.execute("DELETE FROM indexed WHERE session_id = ?", (session_id,))

    def indexed_sessions(self) -> set[str]:
        db = self._db.connection()
        return {row[0] for row in db.execute("SELECT session_id FROM indexed")}

    def search(
        self, text: str, *, sessions: Collection[str] | None = None, limit: int = 100
    ) -> list[Hit]:
        """Lines holding `text` as a phrase, in time order per session; `sessions` limits
        them to those sessions (the catalogue's filters)."""
        if not text.strip():
            raise ValueError("say what to search for")
        sql = (
            "SELECT session_id, t_us, kind, snippet(lines, 0, '[', ']', '…', 16) AS context"
            " FROM lines WHERE lines MATCH ?"
        )
        params: list[Any] = [phrase(text)]
        if sessions is not None:
            if not sessions:
                return []
            sql += f" AND session_id IN ({', '.join('?' * len(sessions))})"
            params.extend(sessions)
        sql += " ORDER BY session_id, CAST(t_us AS INTEGER) LIMIT ?"
        params.append(limit)
        db = self._db.connection()
        return [
            Hit(row["session_id"], int(row["t_us"]), row["kind"], row["context"])
            for row in db.execute(sql, params)
        ]
