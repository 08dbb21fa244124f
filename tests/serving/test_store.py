"""The event stores on their own: SQLite on a temporary file, Redis on fakeredis's in-process
server (a fixture built in code; no Redis server is needed)."""

from __future__ import annotations

import sqlite3

import pytest

from reelrec.serving.store import Event, RedisStore, SQLiteStore, StoreUnavailable

fakeredis = pytest.importorskip("fakeredis")


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """A function returning a new handle on one shared store (two processes' view)."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "events.sqlite")
    server = fakeredis.FakeServer()
    return lambda: RedisStore("redis://fake", client=fakeredis.FakeRedis(server=server))


def test_positive_events_form_the_history(make_store):
    store = make_store()
    events = [
        Event(1, 10, 100, play_time_ms=5000),  # played >= 3 s: positive
        Event(1, 11, 101, play_time_ms=100),  # skipped: stored, not in the history
        Event(1, 12, 102, like=True),  # liked: positive
        Event(2, 13, 103, like=True),
    ]
    assert store.append(events) == 4
    assert store.count() == 4
    assert store.history(1, 10) == [10, 12]  # oldest first
    assert store.history(1, 1) == [12]  # the latest
    assert store.history(3, 10) == []
    assert store.events() == events
    store.record_fallback(9, 1000, "cold_start", [1002, 1003])
    assert store.fallbacks() == [
        {"user_id": 9, "timestamp_ms": 1000, "reason": "cold_start", "items": [1002, 1003]}
    ]
    assert store.count() == 4  # a fallback is not an event
    store.close()


def test_a_second_handle_sees_the_first_ones_events(make_store):
    a, b = make_store(), make_store()  # e.g. two `reelrec serve` processes
    a.append([Event(7, 70, 1, like=True)])
    assert b.history(7, 5) == [70] and b.count() == 1
    b.append([Event(7, 71, 2, like=True)])
    assert a.history(7, 5) == [70, 71]


def test_redis_keeps_the_latest_history_only():
    store = RedisStore(client=fakeredis.FakeRedis(), max_history=3)
    store.append([Event(1, v, v, like=True) for v in range(10)])
    assert store.history(1, 100) == [7, 8, 9] and store.count() == 10
    assert store.history(1, 0) == []
    assert store.durability() == "unknown"  # fakeredis has no CONFIG, like a managed Redis


def test_redis_that_does_not_answer_is_a_clear_error():
    pytest.importorskip("redis")
    with pytest.raises(ConnectionError, match="redis://127.0.0.1:1/0 does not answer"):
        RedisStore("redis://127.0.0.1:1/0")


def test_sqlite_locked_by_another_process_fails_fast_and_reads_go_on(tmp_path):
    store = SQLiteStore(tmp_path / "e.sqlite", busy_s=0.1)
    store.append([Event(1, 10, 1, like=True)])
    other = sqlite3.connect(tmp_path / "e.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # e.g. someone in the sqlite3 shell
    with pytest.raises(StoreUnavailable, match="locked"):
        store.append([Event(1, 11, 2, like=True)])
    with pytest.raises(StoreUnavailable):  # what /healthz asks: a write cannot start
        store.check()
    with pytest.raises(StoreUnavailable):
        store.record_fallback(1, 3, "cold_start", [10])
    assert store.history(1, 10) == [10] and store.count() == 1  # WAL: readers go on
    other.execute("ROLLBACK")
    store.check()
    store.append([Event(1, 11, 2, like=True)])
    assert store.history(1, 10) == [10, 11] and store.fallbacks() == []


def test_redis_errors_are_store_unavailable():
    server = fakeredis.FakeServer()
    store = RedisStore(client=fakeredis.FakeRedis(server=server))
    server.connected = False
    calls = (lambda: store.append([Event(1, 2, 3)]), lambda: store.history(1, 5), store.count)
    for call in (*calls, store.check):
        with pytest.raises(StoreUnavailable, match="event store Redis"):
            call()
