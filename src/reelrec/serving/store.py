"""The online store of feedback events and user histories.

:class:`EventStore` is the interface the service needs (append events, read a user's recent
history); :class:`SQLiteStore` is the embedded default: one SQLite file in WAL mode with
``synchronous=FULL``, each append one transaction committed before the service acknowledges it,
so an event the client saw acknowledged survives a killed process. A Redis implementation
(shared by several workers) fits the same three methods.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Event:
    """One feedback event.

    Attributes:
        user_id, video_id: raw ids. timestamp_ms: event time (ms since the epoch).
        play_time_ms: how long the video played (ms, >= 0). like: the user liked it.
    """

    user_id: int
    video_id: int
    timestamp_ms: int
    play_time_ms: int = 0
    like: bool = False


class EventStore:
    """Interface of the service's store."""

    def append(self, events: list[Event]) -> int:
        """Store ``events`` atomically (all or none); returns how many were stored."""
        raise NotImplementedError

    def history(self, user_id: int, limit: int) -> list[int]:
        """The ``limit`` latest positive video ids of ``user_id`` (oldest first)."""
        raise NotImplementedError

    def count(self) -> int:
        """Events stored."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the store."""


class SQLiteStore(EventStore):
    """Events in one SQLite file (WAL, ``synchronous=FULL``); thread-safe.

    Args:
        path: the database file (created with its table when missing).
        min_play_ms: an event joins the user's history when liked or played this long.

    Raises:
        sqlite3.DatabaseError: the file is not a SQLite database.
    """

    def __init__(self, path: Path | str, min_play_ms: int = 3000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.min_play_ms = min_play_ms
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
            " video_id INTEGER NOT NULL, timestamp_ms INTEGER NOT NULL, play_time_ms INTEGER NOT"
            " NULL, liked INTEGER NOT NULL, positive INTEGER NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS by_user ON events (user_id, positive, id)")

    def append(self, events: list[Event]) -> int:
        rows = [
            (
                e.user_id,
                e.video_id,
                e.timestamp_ms,
                e.play_time_ms,
                int(e.like),
                int(e.like or e.play_time_ms >= self.min_play_ms),
            )
            for e in events
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (user_id, video_id, timestamp_ms, play_time_ms, liked,"
                    " positive) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def history(self, user_id: int, limit: int) -> list[int]:
        with self._lock:
            cur = self._db.execute(
                "SELECT video_id FROM events WHERE user_id = ? AND positive = 1 "
                "ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [r[0] for r in cur.fetchall()][::-1]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def events(self) -> list[Event]:
        """Every stored event, in insertion order."""
        with self._lock:
            cur = self._db.execute(
                "SELECT user_id, video_id, timestamp_ms, play_time_ms, liked FROM events ORDER BY id"
            )
            return [Event(u, v, t, p, bool(k)) for u, v, t, p, k in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
