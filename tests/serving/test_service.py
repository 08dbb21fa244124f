"""The HTTP service on real KuaiRand (item2vec embeddings + a 1-epoch CAN ranker trained here):
FastAPI's test client for the API and bad input, and one real uvicorn process on loopback that
is killed during a stream of events."""

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

from fastapi.testclient import TestClient  # noqa: E402

from reelrec.cli import main  # noqa: E402
from reelrec.serving.service import Recommender, create_app  # noqa: E402
from reelrec.serving.store import SQLiteStore  # noqa: E402


@pytest.fixture(scope="module")
def serving_run(kuairand_prepared):
    run = kuairand_prepared("serve")
    assert main.main(["encode", "--run", str(run), "--encoder", "item2vec"]) == 0
    argv = ["train", "can", "--run", str(run), "--train.epochs=1", "--train.progress=false"]
    assert main.main(argv) == 0
    return run


@pytest.fixture(scope="module")
def rec(serving_run, tmp_path_factory):
    store = SQLiteStore(tmp_path_factory.mktemp("store") / "events.sqlite")
    return Recommender(serving_run, store, calibration_requests=60)


@pytest.fixture(scope="module")
def client(rec):
    return TestClient(create_app(rec))


def known_user(rec) -> int:
    return next(u for u, h in rec.logged.items() if len(h) >= 5)


def test_recommend_returns_ranked_videos_and_a_trace(client, rec):
    r = client.post("/recommend", json={"user_id": known_user(rec), "k": 10})
    assert r.status_code == 200
    body = r.json()
    scores = [x["score"] for x in body["items"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    tr = body["trace"]
    assert tr["cold_start"] is False and tr["stages"]["retrieve"] == 800
    assert tr["stages"]["rank"] == tr["dcaf"]["action"] in rec.sizes
    assert len(tr["dcaf"]["q"]) == len(rec.sizes) and tr["dcaf"]["lambda"] >= 0
    assert {"retrieve_prerank", "rank", "total"} <= set(tr["ms"])
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
        assert client.post("/events", json={"events": [ev]}).json() == {"stored": 1}
        assert client.get("/healthz").json()["events"] == 1
    finally:
        rec.store = sqlite


def test_metrics_and_dcaf_off(client, rec, serving_run, tmp_path):
    text = client.get("/metrics").text
    assert "reelrec_requests_total" in text and "reelrec_dcaf_lambda" in text
    assert 'reelrec_actions_total{candidates="800"}' in text
    off = Recommender(
        serving_run, SQLiteStore(tmp_path / "e.sqlite"), dcaf=False, calibration_requests=30
    )
    tr = off.recommend(known_user(off), 10)["trace"]
    assert tr["dcaf"]["enabled"] is False and tr["stages"]["rank"] == 200


@pytest.mark.parametrize("signal_", ["cost", "cpu"])
def test_controller_cuts_compute_when_over_capacity(serving_run, tmp_path, signal_):
    clock = iter(0.05 * i for i in range(10_000))  # 20 requests per simulated second
    rec = Recommender(
        serving_run,
        SQLiteStore(tmp_path / "e.sqlite"),
        capacity_ms=0.5,
        calibration_requests=30,
        load_signal=signal_,
        clock=lambda: next(clock),
    )
    user = known_user(rec)
    first = rec.recommend(user, 10)["trace"]["dcaf"]["action"]
    for _ in range(40):
        tr = rec.recommend(user, 10)["trace"]
    assert rec.lam() > rec.lam0 and tr["dcaf"]["action"] == 50 and first > 50
    assert tr["dcaf"]["cost_ms"] == rec.ladder.costs[0] and tr["ms"]["rank_cpu"] > 0
    assert "reelrec_load_ms_per_second" in rec.metrics_text()
    with pytest.raises(ValueError, match="load_signal"):
        Recommender(serving_run, SQLiteStore(tmp_path / "f.sqlite"), load_signal="wall")


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
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.time() < deadline, "server did not start"
                time.sleep(0.3)
        video = int(rec.popular[0])
        acked: list[int] = []
        stop = threading.Event()

        def stream():
            ts = 0
            while not stop.is_set():
                ts += 1
                ev = {"user_id": 7, "video_id": video, "timestamp_ms": ts, "play_time_ms": ts}
                data = json.dumps({"events": [ev]}).encode()
                req = urllib.request.Request(
                    url + "/events", data=data, headers={"content-type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        if r.status == 200:
                            acked.append(ts)
                except OSError:
                    return

        t = threading.Thread(target=stream)
        t.start()
        while len(acked) < 30:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown: whatever was acknowledged must be there
        proc.wait(timeout=10)
        stop.set()
        t.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = {e.play_time_ms for e in SQLiteStore(db).events()}
    assert len(acked) >= 30
    assert set(acked) <= stored
