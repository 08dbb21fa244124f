"""The HTTP service on real KuaiRand (item2vec embeddings + a tiny 1-epoch CAN ranker, trained
once per session in conftest.py): FastAPI's test client for the API and bad input, and one real
uvicorn process on loopback that is killed during a stream of events.

No assertion depends on time or on the machine's speed: the Recommenders get their action
costs and clocks from conftest.py, and the killed server is waited for by its output, not by
a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from reelrec.cli import main  # noqa: E402
from reelrec.serving.store import SQLiteStore  # noqa: E402


def known_user(rec) -> int:
    return next(u for u, h in rec.logged.items() if len(h) >= 5)


def test_recommend_returns_ranked_videos_and_a_trace(client, rec, costs):
    r = client.post("/recommend", json={"user_id": known_user(rec), "k": 10})
    assert r.status_code == 200
    body = r.json()
    scores = [x["score"] for x in body["items"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    tr = body["trace"]
    assert tr["cold_start"] is False and tr["stages"]["retrieve"] == 800
    assert tr["source"] == "faiss"
    assert tr["stages"]["rank"] == tr["dcaf"]["action"] in rec.sizes
    assert len(tr["dcaf"]["q"]) == len(rec.sizes) and tr["dcaf"]["lambda"] >= 0
    assert {"retrieve_prerank", "rank", "total"} <= set(tr["ms"])
    assert tr["dcaf"]["cost_ms"] == costs[rec.sizes.index(tr["dcaf"]["action"])]
    rec.flush()  # no queued fallback record holds the store's write lock while /healthz asks
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


def test_cold_start_then_events_are_seen(client, rec):
    new_user = 10**12
    r = client.post("/recommend", json={"user_id": new_user, "k": 5}).json()
    assert r["trace"]["cold_start"] is True and r["trace"]["user_known"] is False
    assert r["trace"]["fallback"] == "cold_start" and r["trace"]["dcaf"]["cost_ms"] == 0.0
    shown = [x["video_id"] for x in r["items"]]
    assert shown == [int(v) for v in rec.popular[:5]]
    assert set(shown) <= rec.known_videos  # raw catalogue ids, not internal indices (C22)
    rec.flush()  # fallback records are written by a background thread
    assert {"user_id": new_user, "reason": "cold_start", "items": shown}.items() <= (
        rec.store.fallbacks()[-1].items()
    )
    assert 'reelrec_fallback_total{reason="cold_start"}' in client.get("/metrics").text
    liked = r["items"][0]["video_id"]
    before = rec.store.count()
    ev = {"user_id": new_user, "video_id": liked, "timestamp_ms": 1, "like": True}
    assert client.post("/events", json={"events": [ev]}).json() == {"stored": 1}
    assert rec.store.count() == before + 1
    r = client.post("/recommend", json={"user_id": new_user, "k": 5}).json()
    assert r["trace"]["cold_start"] is False and r["trace"]["history"] == 1
    assert liked not in [x["video_id"] for x in r["items"]]  # seen videos are not retrieved
    assert r["trace"]["history_embedded"] == 1
    # a like of a video item2vec has no vector for: not a cold start, but flagged
    bare = next(v for v in sorted(rec.known_videos) if v not in rec.cascade.row)
    ev = {"user_id": new_user + 1, "video_id": bare, "timestamp_ms": 1, "like": True}
    assert client.post("/events", json={"events": [ev]}).json() == {"stored": 1}
    tr = client.post("/recommend", json={"user_id": new_user + 1, "k": 5}).json()["trace"]
    assert tr["cold_start"] is False and tr["history"] == 1 and tr["history_embedded"] == 0


def test_users_without_candidates_get_the_fallback(client, rec, monkeypatch):
    user, real = known_user(rec), rec.cascade.candidates
    empty = np.zeros(0, dtype=np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
    monkeypatch.setattr(rec.cascade, "candidates", lambda hist: empty)  # every video seen
    tr = client.post("/recommend", json={"user_id": user, "k": 4}).json()
    assert tr["trace"]["fallback"] == "no_candidates" and tr["trace"]["cold_start"] is False
    assert len(tr["items"]) == 4 and all(x["score"] is None for x in tr["items"])
    # three candidates for k = 4: ranked ones first, then one popular video not among them
    three = tuple(a[:3] for a in real(rec.history(user)[0]))
    monkeypatch.setattr(rec.cascade, "candidates", lambda hist: three)
    r = client.post("/recommend", json={"user_id": user, "k": 4}).json()
    ids = [x["video_id"] for x in r["items"]]
    assert r["trace"]["fallback"] == "topped_up" and len(set(ids)) == 4
    assert set(ids[:3]) == set(three[0].tolist()) and r["items"][3]["score"] is None
    rec.flush()
    assert rec.store.fallbacks()[-1]["reason"] == "topped_up"


def test_bad_input_is_a_clear_4xx_and_nothing_is_stored(client, rec):
    before = rec.store.count()
    unknown = {"user_id": 1, "video_id": 123456789, "timestamp_ms": 1}
    good = {"user_id": 1, "video_id": int(rec.popular[0]), "timestamp_ms": 1}
    r = client.post("/events", json={"events": [good, unknown]})
    assert r.status_code == 422 and "123456789" in r.json()["detail"]
    assert rec.store.count() == before  # all or none
    for body in ({"user_id": 1, "k": 0}, {"user_id": 1, "k": 101}, {"user_id": -1}, {"k": 3}):
        assert client.post("/recommend", json=body).status_code == 422
    bad = client.post("/recommend", content=b"{bad", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        head = {"content-type": kind} if kind else {}
        r = client.post("/recommend", content=b'{"user_id": 1}', headers=head)
        assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert client.post("/events", json={"events": []}).status_code == 422
    assert client.post("/events", json={"events": [good] * 1001}).status_code == 422
    huge = b'{"events": [' + b" " * 1_100_000 + b"]}"
    r = client.post("/events", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413

    def chunked():  # no content-length: the limit counts the bytes as they arrive
        yield b'{"events": [' + json.dumps(good).encode()
        yield b" " * 1_100_000
        yield b"]}"

    r = client.post("/events", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    head = {"content-type": "application/json"}
    for raw in (b'{"user_id": NaN}', b'{"user_id": 1, "k": Infinity}'):
        assert client.post("/recommend", content=raw, headers=head).status_code == 422
    for body in ({"user_id": ""}, {"user_id": "u" * 10_000}):  # case C22's malformed ids
        r = client.post("/recommend", json=body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "user_id"]
    for body in ({"user_id": 2**70}, {"user_id": True}, {"user_id": "111"}, {"user_id": 1, "x": 1}):
        r = client.post("/recommend", json=body)
        assert r.status_code == 422 and "input" not in r.json()["detail"][0]
    assert (
        client.post("/events", json={"events": [good | {"timestamp_ms": 2**63}]}).status_code == 422
    )
    assert rec.store.count() == before


def test_cli_errors_are_one_line(serving_run, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    argv = ["serve", str(serving_run), "--port", str(free_port())]
    assert main.main([*argv, "--db", str(tmp_path / "adir")]) == 2
    assert "unable to open database file" in capsys.readouterr().err
    assert main.main(["serve", str(tmp_path / "typo")]) == 2
    assert "reelrec encode" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main.main(["serve", str(serving_run), "--port", str(port)]) == 2
        assert "cannot listen on" in capsys.readouterr().err
    assert main.main([*argv, "--capacity-ms", "inf"]) == 2
    assert "--capacity-ms must be a finite number > 0" in capsys.readouterr().err
    assert main.main([*argv, "--default-size", "300"]) == 2
    assert "--default-size must be one of the actions" in capsys.readouterr().err
    pytest.importorskip("redis")
    assert main.main([*argv, "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "--redis-url: Redis at redis://127.0.0.1:1/0 does not answer" in capsys.readouterr().err
    assert main.main([*argv, "--redis-url", "redis://x", "--db", str(tmp_path / "e.db")]) == 2
    assert "give one" in capsys.readouterr().err


def test_processes_sharing_redis_share_histories(client, rec):
    fakeredis = pytest.importorskip("fakeredis")
    from reelrec.serving.store import RedisStore

    server = fakeredis.FakeServer()
    rec.flush()  # earlier tests' fallback records go to SQLite, not to this store
    sqlite, rec.store = rec.store, RedisStore(client=fakeredis.FakeRedis(server=server))
    try:
        user, video = 10**12 + 7, int(rec.popular[3])
        ev = {"user_id": user, "video_id": video, "timestamp_ms": 1, "play_time_ms": 4000}
        assert client.post("/events", json={"events": [ev]}).json() == {"stored": 1}
        other = RedisStore(client=fakeredis.FakeRedis(server=server))  # another process
        assert other.history(user, 10) == [video] and sqlite.history(user, 10) == []
        tr = client.post("/recommend", json={"user_id": user, "k": 5}).json()["trace"]
        assert tr["cold_start"] is False and tr["history"] == 1
    finally:
        rec.store = sqlite


def test_a_store_that_is_down_is_503_and_recommendations_go_on(client, rec):
    fakeredis = pytest.importorskip("fakeredis")
    from reelrec.serving.store import RedisStore

    server = fakeredis.FakeServer()
    rec.flush()
    sqlite, rec.store = rec.store, RedisStore(client=fakeredis.FakeRedis(server=server))
    try:
        server.connected = False  # Redis goes away
        ev = {"user_id": 5, "video_id": int(rec.popular[0]), "timestamp_ms": 1, "like": True}
        r = client.post("/events", json={"events": [ev]})
        assert r.status_code == 503 and "event store" in r.json()["detail"]
        assert client.get("/healthz").status_code == 503
        r = client.post("/recommend", json={"user_id": known_user(rec), "k": 5})
        assert r.status_code == 200 and r.json()["trace"]["store_unavailable"] is True
        assert len(r.json()["items"]) == 5  # from the logged history
        server.connected = True  # back
        rec.flush()
        assert client.post("/events", json={"events": [ev]}).json() == {"stored": 1}
        assert client.get("/healthz").json()["events"] == 1
    finally:
        rec.store = sqlite


def test_metrics_and_dcaf_off(client, make_rec, monkeypatch):
    text = client.get("/metrics").text
    assert "reelrec_requests_total" in text and "reelrec_dcaf_lambda" in text
    assert 'reelrec_actions_total{candidates="800"}' in text
    # without given costs the ladder is measured at start-up (production's default): here by a
    # stand-in for the measurement, so that nothing depends on this machine's speed
    measured = []

    def fake_action_costs(requests, cascade, sizes):
        measured.append(len(requests))
        return np.linspace(1.0, 5.0, len(sizes))

    monkeypatch.setattr("reelrec.serving.service.action_costs", fake_action_costs)
    off = make_rec(dcaf=False, costs=None)
    assert measured == [30] and off.ladder.costs == (1.0, 2.0, 3.0, 4.0, 5.0)
    tr = off.recommend(known_user(off), 10)["trace"]
    assert tr["dcaf"]["enabled"] is False and tr["stages"]["rank"] == 200
    assert tr["dcaf"]["cost_ms"] == 3.0 and tr["ms"]["rank_cpu"] == pytest.approx(1.0)


def test_given_costs_are_checked_before_the_start_up(make_rec, costs, monkeypatch):
    def no_start_up(*args, **kwargs):
        raise AssertionError("the start-up ran")

    monkeypatch.setattr("reelrec.serving.service.ranker_scores", no_start_up)
    with pytest.raises(ValueError, match="as many costs as sizes"):
        make_rec(costs=costs[:4])
    with pytest.raises(ValueError, match="non-decreasing"):
        make_rec(costs=(2.0, 1.0, 3.0, 4.0, 5.0))
    with pytest.raises(ValueError, match="load_signal"):
        make_rec(load_signal="wall")


@pytest.mark.parametrize("signal_", ["cost", "cpu"])
def test_controller_cuts_compute_when_over_capacity(make_rec, costs, step_clock, signal_):
    # simulated time, 0.05 s per clock read: 10 requests per second (two reads per request);
    # each costs its action's given cost ("cost") or 5 ms of the injected CPU timer ("cpu"):
    # 22 to 234 ms per second of load against a capacity of 0.5
    rec = make_rec(
        capacity_ms=0.5,
        load_signal=signal_,
        clock=step_clock(0.05),
        cpu_timer=step_clock(0.005),
    )
    user = known_user(rec)
    first = rec.recommend(user, 10)["trace"]["dcaf"]["action"]
    for _ in range(40):
        tr = rec.recommend(user, 10)["trace"]
    assert rec.lam() > rec.lam0 and tr["dcaf"]["action"] == 50 and first > 50
    assert tr["dcaf"]["cost_ms"] == costs[0] and tr["ms"]["rank_cpu"] == pytest.approx(5.0)
    assert "reelrec_load_ms_per_second" in rec.metrics_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_acknowledged_events_survive_a_killed_server(serving_run, rec, tmp_path):
    port, db = free_port(), tmp_path / "events.sqlite"
    cmd = [sys.executable, "-c", "from reelrec.cli.main import console_main; console_main()"]
    cmd += ["serve", str(serving_run), "--port", str(port), "--db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    try:
        # no deadline (a slow or busy machine only takes longer): the server prints one
        # "serving ..." line when its start-up is done, or exits
        out = []
        for line in proc.stdout:
            out.append(line.decode(errors="replace"))
            if line.startswith(b"serving "):
                break
        assert out and out[-1].startswith("serving "), "server exited:\n" + "".join(out)
        while True:  # uvicorn listens right after that line
            try:
                urllib.request.urlopen(url + "/healthz", timeout=60)
                break
            except OSError:
                assert proc.poll() is None, "".join(out) + proc.stdout.read().decode()
                time.sleep(0.1)
        video = int(rec.popular[0])
        acked: list[int] = []
        errors: list[OSError] = []
        killed = threading.Event()

        def stream():
            ts = 0
            while True:
                ts += 1
                ev = {"user_id": 7, "video_id": video, "timestamp_ms": ts, "play_time_ms": ts}
                data = json.dumps({"events": [ev]}).encode()
                req = urllib.request.Request(
                    url + "/events", data=data, headers={"content-type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        if r.status == 200:
                            acked.append(ts)
                except OSError as exc:
                    if killed.is_set():
                        return
                    errors.append(exc)  # before the kill: a slow answer; many: a broken server
                    if len(errors) > 20:
                        return

        t = threading.Thread(target=stream)
        t.start()
        while len(acked) < 30:
            assert t.is_alive(), f"the stream of events stopped: {errors[-3:]}"
            time.sleep(0.02)
        killed.set()
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown: whatever was acknowledged must be there
        proc.wait()
        t.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stored = {e.play_time_ms for e in SQLiteStore(db).events()}
    assert len(acked) >= 30
    assert set(acked) <= stored
