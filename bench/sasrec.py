"""SASRec (or ELASTIC) and popularity: leave-one-out, full ranking over all items.

Usage: python bench/sasrec.py [--dataset amazon-beauty|ml-1m ...] [--model sasrec|elastic]
       [--variant full] [--out runs/bench] [--a.b=c ...]

Trains with the frozen configs in configs/<model>-<dataset>[-<variant>].yaml (``--variant full``:
ELASTIC over the whole ML-1M history) through the same code path as
`reelrec train`, prints a table beside the RecBole numbers of shared/PEERS.md, and merges
``{"<dataset>": {"<model>": {...}}}`` rows into bench/results/retrieval.json (the row format of
bench/retrieval.py: both history protocols, epochs, convergence, cost). Real data only
(REELREC_DATA_DIR).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reelrec.config import ConfigError
from reelrec.io import atomic_write_json
from reelrec.run import Run, resolve_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import result_row  # noqa: E402 - the row format shared with bench/retrieval.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "retrieval.json"
#: RecBole 1.2.1 SASRec, measured on this machine type (shared/PEERS.md).
PEERS = {
    "amazon-beauty": {"recall@10": 0.0815, "ndcg@10": 0.0409, "s_per_epoch": 139},
    "ml-1m": {"recall@10": 0.1452, "ndcg@10": 0.0704, "s_per_epoch": 6800},
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Extra --section.key=value arguments override the frozen configs (SASRec or "
        "ELASTIC, whichever --model names).",
    )
    p.add_argument(
        "--dataset", nargs="+", default=["amazon-beauty", "ml-1m"], help="datasets to run"
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "runs" / "bench", help="run folders (resumable)"
    )
    p.add_argument(
        "--results", type=Path, default=RESULTS, help="results JSON the rows are merged into"
    )
    p.add_argument("--model", default="sasrec", choices=["sasrec", "elastic"])
    p.add_argument("--variant", default="", help="config suffix, e.g. full")
    p.add_argument("--label", default="", help="result key and run name (default: model-variant)")
    args, overrides = p.parse_known_args(argv)
    default_label = args.model + (f"-{args.variant}" if args.variant else "")
    args.label = args.label or default_label
    results: dict = {}

    def config_of(dataset: str) -> str:
        return f"configs/{args.model}-{dataset}" + (f"-{args.variant}" if args.variant else "")

    try:  # every config is checked before any work starts
        configs = {
            d: resolve_config(
                str(ROOT / f"{config_of(d)}.yaml"), [*overrides, f"--name={args.label}"]
            )
            for d in args.dataset
        }
    except ConfigError as exc:
        print(f"bench/sasrec.py: error: {exc}", file=sys.stderr)
        return 2
    for dataset in args.dataset:
        run = args.out / dataset
        label_arg = [] if args.label == default_label else [f"--label {args.label}"]
        model_arg = [] if args.model == "sasrec" else [f"--model {args.model}"]
        variant_arg = [f"--variant {args.variant}"] if args.variant else []
        config = config_of(dataset)
        command = " ".join(
            [".venv/bin/python bench/sasrec.py --dataset", dataset, *model_arg, *variant_arg]
            + [*label_arg, *overrides]
        )
        rows = {}
        for model in ("popularity", args.model):
            if model == args.model:
                cfg = configs[dataset]
            else:
                cfg = resolve_config("popularity", [f"--data.dataset={dataset}"])
            m = Run(run).train(cfg, resume=True)
            name = args.label if model == args.model else model
            source = f"{config}.yaml" if model == args.model else "preset popularity"
            row = result_row(run, name, m, command, source)
            rows[args.label if model == args.model else model] = row
        # re-read: another bench may have written meanwhile; keep its rows
        results = json.loads(args.results.read_text()) if args.results.exists() else {}
        results.setdefault(dataset, {}).update(rows)
        atomic_write_json(args.results, results)
    print(f"\n{'dataset':<14} {'model':<12} {'recall@10':>9} {'ndcg@10':>8} {'s/epoch':>8}")
    for dataset, rows in results.items():
        for model, r in rows.items():
            print(
                f"{dataset:<14} {model:<12} {r['recall@10']:>9.4f} {r['ndcg@10']:>8.4f} {r.get('s_per_epoch', ''):>8}"
            )
        if dataset in PEERS:
            pr = PEERS[dataset]
            print(
                f"{dataset:<14} {'RecBole':<12} {pr['recall@10']:>9.4f} {pr['ndcg@10']:>8.4f} {pr['s_per_epoch']:>8}"
            )
    print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
