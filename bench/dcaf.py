"""DCAF on KuaiRand: value against compute for per-request allocation and for one fixed action.

Usage: python bench/dcaf.py [--out runs/bench-dcaf] [--threads 2] [--sizes 50 100 200 400 800]

Steps (real data only, ``$REELREC_DATA_DIR``):

1. ``runs/bench-dcaf/kuairand``: prepared, item2vec embeddings and semantic IDs (as
   ``bench/retrieval.py``), and the ranker ``reelrec train can`` (skipped when done).
2. Cascade (``reelrec.serving.replay``): faiss retrieval of 800 candidates from the item2vec
   embeddings, dot-product pre-rank, CAN rank of the first ``size_j`` (the action ladder);
   value = the sum of CAN's predicted click probabilities of the 10 shown videos.
3. Action costs: measured CAN milliseconds per action (median over 30 requests).
4. The request-value model Q(i, j) is fitted on the validation day's requests (hourly, one per
   user and hour) and applied to the test day's; DCAF picks each test request's action with the
   Lagrange multiplier found by bisection for each budget (``reelrec.serving.allocation``).
   Uniform: every request gets the same action. Oracle: DCAF with the true Q (upper bound).
5. Compute saving at equal value: for each uniform action, the share of its compute that DCAF
   needs less to reach the same total value (linear interpolation along DCAF's curve). The
   headline is at the default action, 200 candidates (the middle of the ladder).

Writes ``bench/results/dcaf.json`` (``{"compute_saving_at_equal_value": x, "curve": {"dcaf":
[[compute, value], ...], "uniform": [...]}, ...}``) and ``bench/results/dcaf.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import ensure_semantic_ids  # noqa: E402

from reelrec.data.splits import positive_mask  # noqa: E402
from reelrec.io import atomic_path, atomic_write_json, run_metadata  # noqa: E402
from reelrec.run import Run, resolve_config  # noqa: E402
from reelrec.serving.allocation import (  # noqa: E402
    RequestValueModel,
    choose_actions,
    find_multiplier,
    total_cost,
)
from reelrec.serving.replay import (  # noqa: E402
    FEATURES,
    Cascade,
    action_costs,
    hourly_requests,
    ranker_scores,
    replay,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "dcaf.json"
DEFAULT_SIZE = 200


def curve_points(q_pred, q_true, costs, budgets) -> list[list[float]]:
    """``[[compute, value], ...]`` of DCAF with ``q_pred`` at each budget, valued by ``q_true``."""
    pts = []
    for b in budgets:
        lam = find_multiplier(q_pred, costs, b)
        a = choose_actions(q_pred, costs, lam)
        pts.append([total_cost(a, costs), float(q_true[np.arange(len(a)), a].sum())])
    return pts


def compute_at_value(curve: list[list[float]], value: float) -> float | None:
    """Least compute at which ``curve`` reaches ``value`` (interpolated on its upper envelope)."""
    pts = sorted(curve)
    best = -np.inf
    env = []
    for c, v in pts:
        if v > best:
            env.append((c, v))
            best = v
    for (c0, v0), (c1, v1) in zip(env, env[1:], strict=False):
        if v0 >= value:
            return c0
        if v1 >= value:
            return c0 + (c1 - c0) * (value - v0) / (v1 - v0)
    return env[-1][0] if env and env[-1][1] >= value else None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-dcaf")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400, 800])
    p.add_argument("--points", type=int, default=25, help="budgets on the DCAF curve")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = args.out / "kuairand"
    ensure_semantic_ids(run, "kuairand", "tokenizer")
    if not (run / "models" / "can" / "metrics.json").exists():
        cfg = resolve_config("can", ["--train.progress=false", f"--train.threads={args.threads}"])
        Run(run).train(cfg, resume=True)
    can = json.loads((run / "models" / "can" / "metrics.json").read_text())
    prep = Run(run).prep
    inter = prep.interactions.reset_index(drop=True)
    positive = positive_mask(inter, prep.protocol)
    ids = np.load(run / "content" / "item_ids.npy")
    emb = np.load(run / "content" / "item_embeddings.npy")
    cascade = Cascade(ids, emb, ranker_scores(run, prep)[0], retrieve=max(args.sizes))
    valid = hourly_requests(inter, positive, split=1)
    test = hourly_requests(inter, positive, split=2)
    print(f"requests: {len(valid):,} validation, {len(test):,} test; actions {args.sizes}")
    costs = action_costs(test, cascade, args.sizes)
    rv, rt = replay(valid, cascade, args.sizes), replay(test, cascade, args.sizes)
    model = RequestValueModel(alpha=1.0).fit(rv.features, rv.values)
    q_pred = model.predict(rt.features)
    n = len(test)
    uniform = [[n * float(c), float(rt.values[:, j].sum())] for j, c in enumerate(costs)]
    budgets = np.linspace(n * costs[0], n * costs[-1], args.points)
    dcaf = curve_points(q_pred, rt.values, costs, budgets)
    oracle = curve_points(rt.values, rt.values, costs, budgets)
    savings, oracle_savings = {}, {}
    for j, size in enumerate(args.sizes):
        for curve, into in ((dcaf, savings), (oracle, oracle_savings)):
            c = compute_at_value(curve, uniform[j][1])
            into[str(size)] = None if c is None else 1.0 - c / uniform[j][0]
    head = savings.get(str(DEFAULT_SIZE))
    corr = [float(np.corrcoef(q_pred[:, j], rt.values[:, j])[0, 1]) for j in range(len(costs))]
    out = {
        "compute_saving_at_equal_value": head,
        "curve": {"dcaf": dcaf, "uniform": uniform, "oracle": oracle},
        "saving_by_uniform_action": savings,
        "oracle_saving_by_uniform_action": oracle_savings,
        "default_action": DEFAULT_SIZE,
        "actions": args.sizes,
        "action_cost_ms": costs.tolist(),
        "requests": {"valid": len(valid), "test": n},
        "value": "sum over the 10 shown videos of CAN's predicted click probability",
        "value_model": {
            "features": list(FEATURES),
            "test_correlation_by_action": corr,
            "marginal_value_spread": float(np.std(rt.values[:, -1] - rt.values[:, 0])),
        },
        "ranker": {"model": "can", "test_click_auc": can["test"]["tasks"]["click"]["auc"]},
        "command": f".venv/bin/python bench/dcaf.py --threads {args.threads}",
        **run_metadata(),
    }
    atomic_write_json(RESULTS, out)
    plot(out, RESULTS.with_suffix(".png"))
    print("| compute (ms) | uniform value | action |\n|---|---|---|")
    for (c, v), size in zip(uniform, args.sizes, strict=True):
        print(f"| {c:,.0f} | {v:,.1f} | {size} | DCAF saving at equal value: {savings[str(size)]}")
    print(f"-> {RESULTS}")
    return 0


def plot(out: dict, path: Path) -> None:
    """Value against compute: DCAF, oracle DCAF and uniform allocation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("uniform", "o-"), ("dcaf", "s-"), ("oracle", ":")):
        pts = np.asarray(out["curve"][name])
        ax.plot(pts[:, 0] / 1e3, pts[:, 1], style, label=name, markersize=4)
    for (c, v), size in zip(out["curve"]["uniform"], out["actions"], strict=True):
        ax.annotate(
            str(size), (c / 1e3, v), textcoords="offset points", xytext=(4, -10), fontsize=7
        )
    ax.set_xlabel("ranker compute on the test day (s)")
    ax.set_ylabel("expected clicks shown (sum)")
    ax.set_title("DCAF vs one action for all (KuaiRand test day)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
