"""A bounded load test of ``reelrec serve`` on loopback, DCAF on and off, steady and bursty.

Usage: python bench/serve_load.py [--run runs/bench-dcaf/kuairand] [--capacity-ms 300]

For each of DCAF on / off, a fresh ``reelrec serve RUN`` process (the run of
``bench/dcaf.py``: item2vec + CAN) is started on a free loopback port; then, with a fixed number
of requests and stopping by itself:

* ``steady``: 300 ``POST /recommend`` from 2 client threads (known users, k = 10);
* ``burst``: 600 requests from 8 client threads (4x the concurrency).

Reported per row: QPS, p50/p95/p99 latency (ms, client side, 10 s timeout), errors (non-200 or
timeouts), the mean candidates ranked (``trace.stages.rank``) and the ranker milliseconds per
second of wall time in the first and the last 3 seconds of the scenario (from the responses'
traces), beside the service's capacity (``--capacity-ms``): with DCAF the controller should
bring the burst's rate back towards the capacity with fewer candidates; without DCAF every
request ranks 200 candidates and latency grows instead.

Writes ``bench/results/serve_load.json``: ``{"rows": [{"scenario", "dcaf", "requests", "qps",
"p50_ms", "p95_ms", "p99_ms", "errors", ...}], ...}``. Client and server share the machine's
cores: the numbers are loopback numbers of this machine, not of a deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from reelrec.io import atomic_write_json, run_metadata

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serve_load.json"
SCENARIOS = {"steady": (300, 2), "burst": (600, 8)}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, dcaf: bool, capacity: float, db: Path) -> tuple[subprocess.Popen, str]:
    """A ``reelrec serve`` process and its URL, once ``/healthz`` answers."""
    port = free_port()
    cmd = [sys.executable, "-c", "from reelrec.cli.main import console_main; console_main()"]
    cmd += ["serve", str(run), "--port", str(port), "--db", str(db)]
    cmd += ["--capacity-ms", str(capacity)] + ([] if dcaf else ["--no-dcaf"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                msg = proc.stdout.read().decode()[-2000:] if proc.poll() is not None else ""
                raise RuntimeError(f"server did not start: {msg}") from None
            time.sleep(0.3)


def load(url: str, users: list[int], requests: int, threads: int) -> dict:
    """Send ``requests`` recommendations from ``threads`` threads; latency and trace stats."""
    lat, ranked, rank_ms, stamps, errors = [], [], [], [], [0]
    lock = threading.Lock()
    counter = iter(range(requests))
    t0 = time.perf_counter()

    def worker() -> None:
        for i in counter:
            body = json.dumps({"user_id": users[i % len(users)], "k": 10}).encode()
            req = urllib.request.Request(
                url + "/recommend", data=body, headers={"content-type": "application/json"}
            )
            s = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    out = json.loads(r.read())
                    ok = r.status == 200
            except OSError:
                ok = False
            e = time.perf_counter()
            with lock:
                if not ok:
                    errors[0] += 1
                    continue
                lat.append(1e3 * (e - s))
                tr = out["trace"]
                ranked.append(tr["stages"].get("rank", 0))
                rank_ms.append(tr["ms"].get("rank", 0.0))
                stamps.append(e - t0)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    stamps, rank_ms = np.asarray(stamps), np.asarray(rank_ms)

    def rate(lo: float, hi: float) -> float:
        m = (stamps >= lo) & (stamps < hi)
        return float(rank_ms[m].sum() / max(hi - lo, 1e-9))

    return {
        "requests": requests,
        "threads": threads,
        "qps": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors[0],
        "mean_candidates_ranked": float(np.mean(ranked)),
        "rank_ms_per_s_first_3s": rate(0.0, 3.0),
        "rank_ms_per_s_last_3s": rate(max(wall - 3.0, 0.0), wall),
        "seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the load test; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-dcaf" / "kuairand")
    p.add_argument("--capacity-ms", type=float, default=300.0)
    args = p.parse_args(argv)
    if not (args.run / "models" / "can" / "model.safetensors").exists():
        sys.exit(f"{args.run}: no CAN ranker; run `python bench/dcaf.py` first")
    import pandas as pd

    inter = pd.read_parquet(args.run / "data" / "interactions.parquet", columns=["user_id"])
    users = inter["user_id"].value_counts().index[:200].astype(int).tolist()
    rows = []
    for dcaf in (True, False):
        db = args.run / "serving" / f"load-{'dcaf' if dcaf else 'fixed'}.sqlite"
        db.unlink(missing_ok=True)
        proc, url = start(args.run, dcaf, args.capacity_ms, db)
        try:
            load(url, users, 20, 1)  # warm-up
            for name, (n, threads) in SCENARIOS.items():
                r = {"scenario": name, "dcaf": dcaf, **load(url, users, n, threads)}
                rows.append(r)
                print(
                    f"{name:>6} dcaf={dcaf!s:<5} {r['qps']:6.1f} qps  p50 {r['p50_ms']:6.1f}  "
                    f"p95 {r['p95_ms']:6.1f}  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  "
                    f"ranked {r['mean_candidates_ranked']:.0f}  rank ms/s "
                    f"{r['rank_ms_per_s_first_3s']:.0f} -> {r['rank_ms_per_s_last_3s']:.0f}",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    atomic_write_json(
        RESULTS,
        {
            "rows": rows,
            "capacity_ms_per_s": args.capacity_ms,
            "scenarios": {k: {"requests": n, "threads": t} for k, (n, t) in SCENARIOS.items()},
            "machine": f"{os.cpu_count()} CPU cores, client and server on the same machine",
            "command": f".venv/bin/python bench/serve_load.py --capacity-ms {args.capacity_ms:g}",
            **run_metadata(),
        },
    )
    print(f"-> {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
