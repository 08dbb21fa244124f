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
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or is busy (Redis down, SQLite locked by another process):
    the service answers 503 for events and recommends from the logged history only."""


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
    """Interface of the service's store. Each method raises :class:`StoreUnavailable` when
    the backend cannot answer (nothing is stored half-way)."""

    def append(self, events: list[Event]) -> int:
        """Store ``events`` atomically (all or none); returns how many were stored."""
        raise NotImplementedError

    def history(self, user_id: int, limit: int) -> list[int]:
        """The ``limit`` (>= 0) latest positive video ids of ``user_id`` (oldest first)."""
        raise NotImplementedError

    def count(self) -> int:
        """Events stored."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` when the store could not take a write now."""
        raise NotImplementedError

    def record_fallback(self, user_id: int, timestamp_ms: int, reason: str, items: list[int]):
        """Record a request answered from the popular fallback, with its reason and the raw
        video ids shown."""
        raise NotImplementedError

    def fallbacks(self) -> list[dict]:
        """The recorded fallbacks, oldest first: ``{user_id, timestamp_ms, reason, items}``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the store."""


class SQLiteStore(EventStore):
    """Events in one SQLite file (WAL, ``synchronous=FULL``); thread-safe. Writes and reads
    use two connections, so that reading a history never waits behind a write (WAL readers
    do not block on writers).

    Args:
        path: the database file (created with its table when missing).
        min_play_ms: an event joins the user's history when liked or played this long.
        busy_s: how long a write waits, for this process's other writers and another
            process's lock together, before :class:`StoreUnavailable`.

    Raises:
        sqlite3.DatabaseError: the file is not a SQLite database.
        OSError: the folder cannot be created.
    """

    def __init__(self, path: Path | str, min_play_ms: int = 3000, busy_s: float = 2.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.min_play_ms, self.busy_s = min_play_ms, busy_s
        self._lock, self._read_lock = threading.Lock(), threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=busy_s
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
            " video_id INTEGER NOT NULL, timestamp_ms INTEGER NOT NULL, play_time_ms INTEGER NOT"
            " NULL, liked INTEGER NOT NULL, positive INTEGER NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS by_user ON events (user_id, positive, id)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS fallbacks (id INTEGER PRIMARY KEY, user_id INTEGER NOT "
            "NULL, timestamp_ms INTEGER NOT NULL, reason TEXT NOT NULL, items TEXT NOT NULL)"
        )
        self._read = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=busy_s
        )

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
        self._write(
            lambda db: db.executemany(
                "INSERT INTO events (user_id, video_id, timestamp_ms, play_time_ms, liked,"
                " positive) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        )
        return len(rows)

    def _write(self, fn, wait_s: float | None = None) -> None:
        """One write transaction running ``fn(connection)`` (None: take the write lock and
        let go). Waits at most ``wait_s`` (``busy_s``) in all, for this process's other writers
        and for other processes' locks together, then raises :class:`StoreUnavailable`."""
        wait_s = self.busy_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        if not self._lock.acquire(timeout=wait_s):
            raise StoreUnavailable(f"event store {self.path}: busy (writers queued > {wait_s} s)")
        try:
            left_ms = max(int(1e3 * (deadline - time.monotonic())), 0)
            self._db.execute(f"PRAGMA busy_timeout = {left_ms}")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # locked by another process past the wait
                raise StoreUnavailable(f"event store {self.path}: {exc}") from None
            try:
                if fn is not None:
                    fn(self._db)
                self._db.execute("COMMIT" if fn is not None else "ROLLBACK")
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(f"event store {self.path}: {exc}") from None
                raise
        finally:
            self._lock.release()

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` when a write could not start within 0.5 s (the
        file locked by another process): what ``GET /healthz`` asks."""
        self._write(None, wait_s=0.5)

    def record_fallback(self, user_id: int, timestamp_ms: int, reason: str, items: list[int]):
        row = (user_id, timestamp_ms, reason, json.dumps([int(v) for v in items]))
        self._write(
            lambda db: db.execute(
                "INSERT INTO fallbacks (user_id, timestamp_ms, reason, items) VALUES (?, ?, ?, ?)",
                row,
            )
        )

    def fallbacks(self) -> list[dict]:
        rows = self._query("SELECT user_id, timestamp_ms, reason, items FROM fallbacks ORDER BY id")
        return [
            {"user_id": u, "timestamp_ms": t, "reason": r, "items": json.loads(i)}
            for u, t, r, i in rows
        ]

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            try:
                return self._read.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"event store {self.path}: {exc}") from None

    def history(self, user_id: int, limit: int) -> list[int]:
        if limit <= 0:  # SQLite reads a negative LIMIT as none
            return []
        rows = self._query(
            "SELECT video_id FROM events WHERE user_id = ? AND positive = 1 "
            "ORDER BY id DESC LIMIT ?",
            (user_id, limit),
        )
        return [r[0] for r in rows][::-1]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def events(self) -> list[Event]:
        """Every stored event, in insertion order."""
        rows = self._query(
            "SELECT user_id, video_id, timestamp_ms, play_time_ms, liked FROM events ORDER BY id"
        )
        return [Event(u, v, t, p, bool(k)) for u, v, t, p, k in rows]

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._read.close()


class RedisStore(EventStore):
    """Events in Redis, shared by several service processes; thread-safe.

    Keys (``prefix`` ``reelrec`` by default): ``{prefix}:events`` (list of JSON events, in
    arrival order), ``{prefix}:history:{user_id}`` (list of positive video ids, the latest
    ``max_history`` kept), ``{prefix}:count`` and ``{prefix}:fallbacks`` (JSON records). One
    ``append`` is one MULTI/EXEC transaction: other clients see all of a batch or none of it.

    Args:
        url: ``redis://host:port/db`` (or ``client``: a ready ``redis.Redis``, e.g. fakeredis
            in tests).
        min_play_ms: an event joins the user's history when liked or played this long.
        max_history: positive videos kept per user.

    Raises:
        ConnectionError: the server does not answer PING (names the URL). Later, any Redis
            error of a call is :class:`StoreUnavailable`.
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
        import redis

        self._errors = (redis.RedisError, OSError)
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
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

    @contextmanager
    def _guard(self):
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable(f"event store Redis {self.url}: {exc}") from None

    def append(self, events: list[Event]) -> int:
        pipe = self._r.pipeline(transaction=True)
        for e in events:
            pipe.rpush(f"{self.prefix}:events", json.dumps(e.__dict__))
            if e.like or e.play_time_ms >= self.min_play_ms:
                key = f"{self.prefix}:history:{e.user_id}"
                pipe.rpush(key, e.video_id)
                pipe.ltrim(key, -self.max_history, -1)
        pipe.incrby(f"{self.prefix}:count", len(events))
        with self._guard():
            pipe.execute()
        return len(events)

    def history(self, user_id: int, limit: int) -> list[int]:
        if limit <= 0:
            return []
        with self._guard():
            hist = self._r.lrange(f"{self.prefix}:history:{user_id}", -limit, -1)
        return [int(v) for v in hist]

    def count(self) -> int:
        with self._guard():
            return int(self._r.get(f"{self.prefix}:count") or 0)

    def check(self) -> None:
        with self._guard():
            self._r.ping()

    def record_fallback(self, user_id: int, timestamp_ms: int, reason: str, items: list[int]):
        rec = {"user_id": user_id, "timestamp_ms": timestamp_ms, "reason": reason}
        with self._guard():
            self._r.rpush(
                f"{self.prefix}:fallbacks", json.dumps(rec | {"items": [int(v) for v in items]})
            )

    def fallbacks(self) -> list[dict]:
        with self._guard():
            return [json.loads(x) for x in self._r.lrange(f"{self.prefix}:fallbacks", 0, -1)]

    def events(self) -> list[Event]:
        """Every stored event, in arrival order."""
        with self._guard():
            raw = self._r.lrange(f"{self.prefix}:events", 0, -1)
        return [Event(**json.loads(x)) for x in raw]

    def close(self) -> None:
        self._r.close()
