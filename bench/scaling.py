"""Scaling sweep: final training loss and test NDCG@10 against parameter count (OneRec reports
loss falling with model size, Technical Report section 4.2.1; OneRec-V2 fits L = E + A / N^alpha).

Usage: python bench/scaling.py [--dataset amazon-beauty] [--model onerec-v2] [--epochs 4]
       [--hidden 32 64 128 256] [--a.b=c ...]

Every size trains the same number of epochs with the same schedule (AdamW, warmup, cosine to 0)
on the same run folder as bench/retrieval.py (semantic IDs made there when missing); width
``hidden`` with feed-forward width ``2 x hidden`` and the preset's depth. Writes
``bench/results/scaling.json`` (one row per size) and ``bench/results/scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from reelrec.io import atomic_write_json
from reelrec.models.base import NextItemBatch
from reelrec.run import Run, resolve_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import ensure_semantic_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="amazon-beauty")
    p.add_argument("--model", default="onerec-v2", choices=["onerec", "onerec-v2"])
    p.add_argument("--epochs", type=int, default=4, help="epochs per size (same for all)")
    p.add_argument("--hidden", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-retrieval")
    args, overrides = p.parse_known_args(argv)
    run = args.out / args.dataset
    rows = []
    data = None
    for h in args.hidden:
        cfg = resolve_config(
            args.model,
            [
                f"--data.dataset={args.dataset}",
                f"--name=scale-{args.model}-h{h}",
                f"--onerec.hidden={h}",
                f"--onerec.inner={2 * h}",
                f"--train.epochs={args.epochs}",
                "--train.patience=100",
                *overrides,
            ],
        )
        ensure_semantic_ids(run, args.dataset, cfg.onerec.semantic_ids)
        m = Run(run).train(cfg, resume=True)
        hist = json.loads((run / "models" / cfg.run_name / "history.json").read_text())
        if data is None:
            data = Run(run).data(cfg)
        rows.append(
            {
                "hidden": h,
                "parameters": m["parameters"],
                "flops_per_sample": flops_per_sample(cfg, data, run),
                "final_train_loss": hist[-1]["loss"],
                "test_ndcg@10": m["test"]["ndcg@10"],
                "test_recall@10": m["test"]["recall@10"],
                "train_seconds": m["train_seconds"],
                "epochs": len(hist),
            }
        )
    command = "python bench/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"dataset": args.dataset, "model": args.model, "command": command, "rows": rows}
    atomic_write_json(RESULTS / "scaling.json", out)
    plot(out, RESULTS / "scaling.png")
    print(
        "| hidden | parameters | MFLOPs/sample | final train loss | test NDCG@10 | test Recall@10 | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['hidden']} | {r['parameters']:,} | {r['flops_per_sample'] / 1e6:.1f} | "
            f"{r['final_train_loss']:.4f} | "
            f"{r['test_ndcg@10']:.4f} | {r['test_recall@10']:.4f} | {r['train_seconds']:.0f} |"
        )
    return 0


def flops_per_sample(cfg, data, run: Path, batch: int = 256) -> float:
    """Forward + backward FLOPs per training sample (FlopCounterMode, fixed random batch)."""
    model = Run(run).build(cfg)[0]
    gen = torch.Generator().manual_seed(0)
    w = data.train_windows[torch.randint(len(data.train_windows), (batch,), generator=gen)]
    counter = FlopCounterMode(display=False)
    with counter:
        model.loss(NextItemBatch.of_windows(w)).loss.backward()
    return counter.get_total_flops() / batch


def plot(result: dict, path: Path) -> None:
    """Loss and NDCG@10 against parameters (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    n = [r["parameters"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(n, [r["final_train_loss"] for r in rows], "o-")
    ax[0].set(xscale="log", xlabel="parameters", ylabel="final training loss (CE per code)")
    ax[1].plot(n, [r["test_ndcg@10"] for r in rows], "o-", color="C1")
    ax[1].set(xscale="log", xlabel="parameters", ylabel="test NDCG@10")
    fig.suptitle(f"{result['model']} on {result['dataset']}, {rows[0]['epochs']} epochs per size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
