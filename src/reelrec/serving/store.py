"""The online store of feedback events and user histories.

:class:`EventStore` is the interface the service needs (append events, read a user's recent
history); :class:`SQLiteStore` is the embedded default: one SQLite file in WAL mode with
``synchronous=FULL``, each append one transaction committed before the service acknowledges it,
so an event the client saw acknowledged survives a killed process. :class:`RedisStore` keeps
the same data in Redis, so that several ``reelrec serve`` processes (behind one load balancer)
share the users' histories; its durability is the Redis server's (``appendonly yes`` with
``appendfsync always`` for the guarantee SQLite gives).
"""

from __future__ import annotations

import json
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


class RedisStore(EventStore):
    """Events in Redis, shared by several service processes; thread-safe.

    Keys (``prefix`` ``reelrec`` by default): ``{prefix}:events`` (list of JSON events, in
    arrival order), ``{prefix}:history:{user_id}`` (list of positive video ids, the latest
    ``max_history`` kept) and ``{prefix}:count``. One ``append`` is one MULTI/EXEC
    transaction: other clients see all of a batch or none of it.

    Args:
        url: ``redis://host:port/db`` (or ``client``: a ready ``redis.Redis``, e.g. fakeredis
            in tests).
        min_play_ms: an event joins the user's history when liked or played this long.
        max_history: positive videos kept per user.

    Raises:
        ConnectionError: the server does not answer PING (names the URL).
        ImportError: the ``redis`` package is missing (``pip install 'reelrec[serve]'``).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        min_play_ms: int = 3000,
        max_history: int = 1000,
        prefix: str = "reelrec",
        client=None,
    ) -> None:
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=5)
        self.url, self.min_play_ms, self.max_history = url, min_play_ms, max_history
        self.prefix, self._r = prefix, client
        try:
            self._r.ping()
        except Exception as exc:  # redis.ConnectionError, timeouts, auth errors
            raise ConnectionError(f"Redis at {url} does not answer: {exc}") from None

    def durability(self) -> str:
        """The server's ``appendfsync`` setting ("always" = every acknowledged write is on
        disk), or "unknown" where CONFIG is not allowed."""
        try:
            cfg = self._r.config_get("appendonly")
            if cfg.get("appendonly") != "yes":
                return "no append-only file"
            return str(self._r.config_get("appendfsync").get("appendfsync", "unknown"))
        except Exception:
            return "unknown"

    def append(self, events: list[Event]) -> int:
        pipe = self._r.pipeline(transaction=True)
        for e in events:
            pipe.rpush(f"{self.prefix}:events", json.dumps(e.__dict__))
            if e.like or e.play_time_ms >= self.min_play_ms:
                key = f"{self.prefix}:history:{e.user_id}"
                pipe.rpush(key, e.video_id)
                pipe.ltrim(key, -self.max_history, -1)
        pipe.incrby(f"{self.prefix}:count", len(events))
        pipe.execute()
        return len(events)

    def history(self, user_id: int, limit: int) -> list[int]:
        if limit <= 0:
            return []
        return [int(v) for v in self._r.lrange(f"{self.prefix}:history:{user_id}", -limit, -1)]

    def count(self) -> int:
        return int(self._r.get(f"{self.prefix}:count") or 0)

    def events(self) -> list[Event]:
        """Every stored event, in arrival order."""
        return [Event(**json.loads(x)) for x in self._r.lrange(f"{self.prefix}:events", 0, -1)]

    def close(self) -> None:
        self._r.close()
