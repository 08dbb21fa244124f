"""What each DCAF action of the generative serving path is worth and costs, on validation requests.

Usage: python bench/serve_actions.py [--run runs/quickstart] [--requests 1000] [--out FILE.json]

For a run with a generator (``reelrec quickstart --dataset microlens``), builds the service's
:class:`~reelrec.serving.service.Recommender` (one torch thread, as ``reelrec serve``) with
``--requests`` calibration requests (a seeded random choice of users: training history ->
held-out validation video) and prints, per action (beam width, candidates ranked): the measured
cost (median generate + rank ms), the value DCAF's request-value model learns (SASRec's softmax
probability of the 10 shown videos), the real hit rate of the held-out validation video in the
10 shown (HR@10, leave-one-out validation split, history masked), and the share of requests
DCAF gives each action at the start-up multiplier. Writes ``bench/results/serve_actions.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from reelrec.io import atomic_write_json, run_metadata

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Print the table and write the JSON; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "quickstart")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_actions.json")
    args = p.parse_args(argv)
    if not (args.run / "models" / "onerec-v2" / "model.safetensors").exists():
        sys.exit(f"{args.run}: no generator; run `reelrec quickstart --dataset microlens` first")
    import torch

    from reelrec.serving.allocation import choose_actions
    from reelrec.serving.service import Recommender
    from reelrec.serving.store import SQLiteStore

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "events.sqlite")
        rec = Recommender(args.run, store, calibration_requests=args.requests)
        store.close()
    c = rec.calibration
    q = rec.value_model.predict(c.features)
    chosen = choose_actions(q, rec.ladder.cost_array, rec.lam0)
    share = np.bincount(chosen, minlength=len(rec.sizes)) / len(chosen)
    rows = []
    print(f"{len(c.values)} validation requests of {args.run}")
    print(f"{'beam':>5} {'ranked':>6} {'cost ms':>8} {'value':>7} {'HR@10':>7} {'DCAF share':>10}")
    for j, (beam, ranked) in enumerate(rec.sizes):
        row = {
            "beam": beam,
            "ranked": ranked,
            "cost_ms": float(rec.ladder.costs[j]),
            "value": float(c.values[:, j].mean()),
            "valid_hr@10": float(c.valid_hit[:, j].mean()),
            "dcaf_share": float(share[j]),
        }
        rows.append(row)
        print(
            f"{beam:>5} {ranked:>6} {row['cost_ms']:>8.2f} {row['value']:>7.4f} "
            f"{row['valid_hr@10']:>7.4f} {row['dcaf_share']:>10.3f}"
        )
    served = c.valid_hit[np.arange(len(chosen)), chosen].mean()
    print(
        f"DCAF at the start-up multiplier {rec.lam0:.3g}: HR@10 {served:.4f} at "
        f"{rec.ladder.cost_array[chosen].mean():.2f} ms per request"
    )
    cmd = f".venv/bin/python bench/serve_actions.py --run {args.run} --requests {args.requests}"
    atomic_write_json(
        args.out,
        {
            "rows": rows,
            "requests": len(c.values),
            "lambda0": rec.lam0,
            "dcaf_valid_hr@10": float(served),
            "dcaf_cost_ms": float(rec.ladder.cost_array[chosen].mean()),
            "command": cmd,
            "machine": "2 CPU cores, one torch thread",
            **run_metadata(),
        },
    )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
