"""A bounded load test of ``reelrec serve`` on loopback: DCAF on and off, steady, burst, saturated.

Usage: python bench/serve_load.py [--run runs/bench-dcaf/kuairand] [--capacity-ms 200]
       [--steady-qps 20] [--burst-qps 60] [--load-signal cost|cpu] [--out FILE.json]

For each of DCAF on / off, a fresh ``reelrec serve RUN`` process is started on a free loopback
port with ``--capacity-ms`` (milliseconds of the actions' cost per second the controller
holds). Two paths: the faiss path (the run of ``bench/dcaf.py``: item2vec + CAN; an action is
the candidates CAN ranks), or, for a run with a generator (``reelrec quickstart --dataset
microlens``), the generative path (OneRec-V2 beam search + SASRec; an action is a (beam width,
candidates ranked) pair, its cost the generate + rank milliseconds). Then, with a fixed number of requests and stopping by itself:

* open loop, as users send requests whatever the server's state (Poisson arrivals, seeded,
  from a pool of 64 client threads; latency counted from each request's *scheduled* time, so
  a server falling behind shows as latency, not as a slower client): ``steady`` 8 s at
  ``--steady-qps``, ``burst`` 12 s at ``--burst-qps`` (3x), ``after`` 8 s at ``--steady-qps``;
* closed loop, ``saturated``: 400 requests from 8 client threads back to back (the most this
  machine serves).

Each row: offered and answered QPS, p50/p95/p99 latency (ms), errors (non-200 or over the 10 s
timeout), mean candidates ranked (and mean beam width on the generative path), the mean value
of an answer on the faiss path (the sum of the ranker's click probabilities of the 10 videos
shown, the value of ``bench/dcaf.py``; SASRec's scores are logits, so none on the generative
path), and the load per second from the responses' traces: the
start-up cost of the actions served (what ``--load-signal cost`` holds), the ranker's CPU
time and its wall time, over the whole phase and over its last 3 seconds (the burst's last
3 s show whether the controller brought the load back to capacity). A per-second timeline of
both settings is plotted to ``serve_load.png``.

Writes ``bench/results/serve_load.json`` (``serve_load_generative.json`` for a generator run): ``{"rows": [{"scenario", "dcaf", "requests", "qps",
"p50_ms", "p95_ms", "p99_ms", "errors", ...}], "timeline": ..., ...}``. Client and server share
the machine's cores: these are loopback numbers of this machine, not of a deployment.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from reelrec.io import atomic_write_json, run_metadata

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "serve_load.json"
PHASES = (("steady", 8.0, "steady"), ("burst", 12.0, "burst"), ("after", 8.0, "steady"))
SATURATED = (400, 8)  # requests, client threads
TIMEOUT_S = 10.0


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    run: Path, dcaf: bool, capacity: float, signal: str, db: Path, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    """A ``reelrec serve`` process and its URL, once ``/healthz`` answers."""
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("reelrec"))]  # the console script of this venv
    cmd += ["serve", str(run), "--port", str(port), "--db", str(db), "--load-signal", signal]
    cmd += ["--capacity-ms", str(capacity)] + ([] if dcaf else ["--no-dcaf"]) + list(extra)
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


def send(url: str, user: int) -> dict | None:
    """One ``POST /recommend``; its answer, or None on an error or timeout."""
    body = json.dumps({"user_id": user, "k": 10}).encode()
    req = urllib.request.Request(
        url + "/recommend", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except OSError:
        return None


def record(answer: dict | None, scheduled: float, done: float) -> dict:
    """One request's outcome (times in seconds from the start of the test; value = the sum
    of the ranker's click probabilities of the videos shown, as in ``bench/dcaf.py``)."""
    if answer is None:
        return {"ok": False, "scheduled": scheduled, "done": done}
    trace = answer["trace"]
    ms, generative = trace["ms"], "generate" in trace.get("stages", {})
    return {
        "value": None if generative else float(sum(x["score"] or 0.0 for x in answer["items"])),
        "beam": (trace.get("dcaf") or {}).get("beam"),
        "ok": True,
        "scheduled": scheduled,
        "done": done,
        "latency_ms": 1e3 * (done - scheduled),
        "ranked": trace["stages"].get("rank", 0),
        "cost_ms": (trace.get("dcaf") or {}).get("cost_ms", 0.0),
        "cpu_ms": ms.get("rank_cpu", ms.get("generate_rank_cpu", 0.0)),
        "wall_ms": ms.get("rank", 0.0) + ms.get("generate", 0.0),
        "lambda": (trace.get("dcaf") or {}).get("lambda"),
    }


def open_loop(url: str, users: list[int], rates: dict[str, float], seed: int = 0) -> list[dict]:
    """Send Poisson arrivals phase by phase (:data:`PHASES`); one record per request."""
    rng = np.random.default_rng(seed)
    schedule, t = [], 0.0
    for name, seconds, rate_key in PHASES:
        end = t + seconds
        while True:
            t += rng.exponential(1.0 / rates[rate_key])
            if t >= end:
                t = end
                break
            schedule.append((name, t))
    out: list[dict] = [{} for _ in schedule]
    t0 = time.perf_counter()

    def one(i: int) -> None:
        name, at = schedule[i]
        trace = send(url, users[i % len(users)])
        out[i] = {"phase": name, **record(trace, at, time.perf_counter() - t0)}

    with ThreadPoolExecutor(max_workers=64) as pool:
        for i, (_, at) in enumerate(schedule):
            delay = at - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    return out


def closed_loop(url: str, users: list[int], requests: int, threads: int) -> list[dict]:
    """``requests`` recommendations from ``threads`` threads back to back."""
    out: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    t0 = time.perf_counter()

    def worker() -> None:
        for i in counter:
            s = time.perf_counter() - t0
            trace = send(url, users[i % len(users)])
            r = {"phase": "saturated", **record(trace, s, time.perf_counter() - t0)}
            with lock:
                out.append(r)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return out


def summarise(recs: list[dict], scenario: str, offered: float | None) -> dict:
    """One row of the results table from the records of one phase."""
    ok = [r for r in recs if r["ok"]]
    lo = min(r["scheduled"] for r in recs)
    hi = max(r["done"] for r in recs)
    lat = np.array([r["latency_ms"] for r in ok]) if ok else np.array([np.nan])

    def per_second(key: str, a: float, b: float) -> float:
        return float(sum(r[key] for r in ok if a <= r["done"] < b) / max(b - a, 1e-9))

    last = max(hi - 3.0, lo)
    lams = [r["lambda"] for r in sorted(ok, key=lambda r: r["done"]) if r["lambda"] is not None]
    return {
        "scenario": scenario,
        "requests": len(recs),
        "offered_qps": offered,
        "qps": len(ok) / max(hi - lo, 1e-9),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": len(recs) - len(ok),
        "mean_candidates_ranked": float(np.mean([r["ranked"] for r in ok])) if ok else 0.0,
        "mean_beam": _mean_of(ok, "beam"),
        "mean_value": _mean_of(ok, "value"),
        "cost_ms_per_s": per_second("cost_ms", lo, hi),
        "cost_ms_per_s_last_3s": per_second("cost_ms", last, hi),
        "rank_cpu_ms_per_s": per_second("cpu_ms", lo, hi),
        "rank_cpu_ms_per_s_last_3s": per_second("cpu_ms", last, hi),
        "rank_wall_ms_per_s": per_second("wall_ms", lo, hi),
        "lambda_last": lams[-1] if lams else None,
        "seconds": hi - lo,
    }


def _mean_of(recs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in recs if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def timeline(recs: list[dict]) -> list[dict]:
    """Per second of completion time: load, candidates ranked and latency."""
    end = int(np.ceil(max(r["done"] for r in recs)))
    rows = []
    for s in range(end):
        b = [r for r in recs if r["ok"] and s <= r["done"] < s + 1]
        rows.append(
            {
                "second": s,
                "answered": len(b),
                "cost_ms": float(sum(r["cost_ms"] for r in b)),
                "cpu_ms": float(sum(r["cpu_ms"] for r in b)),
                "mean_candidates": float(np.mean([r["ranked"] for r in b])) if b else None,
                "mean_beam": _mean_of(b, "beam"),
                "p95_ms": float(np.percentile([r["latency_ms"] for r in b], 95)) if b else None,
            }
        )
    return rows


def plot(tl: dict[str, list[dict]], capacity: float, path: Path) -> None:
    """Three panels over time: load per second against capacity, candidates, p95 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for (name, rows), color in zip(tl.items(), ("tab:blue", "tab:orange"), strict=False):
        x = [r["second"] + 0.5 for r in rows]
        axes[0].plot(x, [r["cost_ms"] for r in rows], color=color, label=f"{name}: action cost")
        axes[0].plot(x, [r["cpu_ms"] for r in rows], color=color, ls=":", label=f"{name}: CPU")
        axes[1].plot(x, [r["mean_candidates"] for r in rows], color=color, label=name)
        if any(r.get("mean_beam") is not None for r in rows):
            beams = [r.get("mean_beam") for r in rows]
            axes[1].plot(x, beams, color=color, ls=":", label=f"{name}: beam width")
        axes[2].plot(x, [r["p95_ms"] for r in rows], color=color, label=name)
    axes[0].axhline(capacity, color="k", lw=0.8, ls="--", label="capacity")
    t = 0.0
    for name, seconds, _ in PHASES:
        if name == "burst":
            for ax in axes:
                ax.axvspan(t, t + seconds, color="0.9", zorder=0)
        t += seconds
    axes[0].set_ylabel("action ms per second")
    axes[1].set_ylabel("candidates ranked")
    axes[2].set_ylabel("p95 latency (ms)")
    axes[2].set_xlabel("seconds (burst shaded)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("reelrec serve under a 3x burst: DCAF vs a fixed action")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the load test; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-dcaf" / "kuairand")
    p.add_argument("--capacity-ms", type=float, default=200.0)
    p.add_argument("--steady-qps", type=float, default=20.0)
    p.add_argument("--burst-qps", type=float, default=60.0)
    p.add_argument("--load-signal", choices=("cost", "cpu"), default="cost")
    p.add_argument("--out", type=Path, default=None, help="(bench/results/serve_load*.json)")
    p.add_argument(
        "--no-popular-action",
        action="store_true",
        help="generator runs: serve with --no-popular-action (beam actions only)",
    )
    args = p.parse_args(argv)
    generative = (args.run / "models" / "onerec-v2" / "model.safetensors").exists()
    if not generative and not (args.run / "models" / "can" / "model.safetensors").exists():
        sys.exit(
            f"{args.run}: neither a generator nor a CAN ranker; run `python bench/dcaf.py` or "
            "`reelrec quickstart --dataset microlens` first"
        )
    if args.out is None:
        args.out = RESULTS.with_name("serve_load_generative.json") if generative else RESULTS
    import pandas as pd

    inter = pd.read_parquet(args.run / "data" / "interactions.parquet", columns=["user_id"])
    users = inter["user_id"].value_counts().index[:200].astype(int).tolist()
    rates = {"steady": args.steady_qps, "burst": args.burst_qps}
    rows, tl = [], {}
    for dcaf in (True, False):
        name = "dcaf" if dcaf else "fixed"
        db = args.run / "serving" / f"load-{name}.sqlite"
        db.unlink(missing_ok=True)
        extra = ("--no-popular-action",) if args.no_popular_action else ()
        proc, url = start(args.run, dcaf, args.capacity_ms, args.load_signal, db, extra)
        try:
            closed_loop(url, users, 20, 1)  # warm-up
            recs = open_loop(url, users, rates)
            tl[name] = timeline(recs)
            sat = closed_loop(url, users, *SATURATED)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        for phase, _, rate_key in PHASES:
            part = [r for r in recs if r["phase"] == phase]
            rows.append({**summarise(part, phase, rates[rate_key]), "dcaf": dcaf})
        rows.append({**summarise(sat, "saturated", None), "dcaf": dcaf, "threads": SATURATED[1]})
        for r in rows[-4:]:
            print(
                f"{r['scenario']:>9} dcaf={dcaf!s:<5} {r['qps']:6.1f} qps  p50 {r['p50_ms']:6.1f}"
                f"  p95 {r['p95_ms']:6.1f}  p99 {r['p99_ms']:6.1f} ms  errors {r['errors']}  "
                f"ranked {r['mean_candidates_ranked']:4.0f}  "
                + (
                    f"beam {r['mean_beam']:4.0f}  "
                    if generative
                    else f"value {r['mean_value']:.3f}  "
                )
                + f"cost ms/s {r['cost_ms_per_s']:5.0f} "
                f"(last 3 s {r['cost_ms_per_s_last_3s']:5.0f})  cpu ms/s "
                f"{r['rank_cpu_ms_per_s']:5.0f}",
                flush=True,
            )
    png = args.out.with_suffix(".png")
    plot(tl, args.capacity_ms, png)
    cmd = (
        f".venv/bin/python bench/serve_load.py --run {args.run} --capacity-ms "
        f"{args.capacity_ms:g} --steady-qps "
        f"{args.steady_qps:g} --burst-qps {args.burst_qps:g} --load-signal {args.load_signal}"
    )
    atomic_write_json(
        args.out,
        {
            "rows": rows,
            "timeline": tl,
            "capacity_ms_per_s": args.capacity_ms,
            "load_signal": args.load_signal,
            "phases": [
                {"scenario": n, "seconds": s, "offered_qps": rates[k]} for n, s, k in PHASES
            ],
            "saturated": {"requests": SATURATED[0], "threads": SATURATED[1]},
            "machine": f"{os.cpu_count()} CPU cores, client and server on the same machine",
            "path": "generative (OneRec-V2 + SASRec)" if generative else "faiss (item2vec + CAN)",
            "command": cmd
            + (" --no-popular-action" if args.no_popular_action else "")
            + f" --out {args.out}",
            **run_metadata(),
        },
    )
    print(f"-> {args.out}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
