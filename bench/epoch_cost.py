"""Seconds per training epoch of a generator, one target per sample (the pathways context, every
prefix a sample) against every position of a window a target (the causal context).

Usage: python bench/epoch_cost.py [--run runs/bench-retrieval/amazon-beauty] [--model onerec-v2]
       [--steps 24] [--rounds 3] [--threads 1]

Both variants are built from the model's preset on the run's real training data and semantic
IDs, with the batch sizes of their presets (pathways: 256 prefixes; causal: 128 windows of
``max_len + 1`` items) and the batches training uses (length-bucketed, leading padding cut).
``--steps`` batches are taken evenly along the length order of the epoch's batches (a
stratified sample: short and long batches cost very differently); each round times them for
one variant, then for the other, so that load on a shared machine falls on both alike. A
variant's epoch estimate is the median over rounds of the sampled steps' seconds, times
(batches per epoch / sampled batches). Evaluation is not included. A training *target* is one
(history, next item) pair: the pathways epoch has one per sample, the causal epoch one per
window position with a real item before it, and both epochs present every training target of
the split once.

Writes ``bench/results/epoch_cost.json`` (``{"<model>": {"pathways": {...}, "causal": {...},
"speedup": x}}``) and prints a table. Real data only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from reelrec.io import atomic_write_json
from reelrec.models.base import NextItemBatch
from reelrec.run import Run, resolve_config
from reelrec.training.trainsets import WindowTrainSet, trim_left_padding

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "epoch_cost.json"
#: the variants: context and the batch size of its preset
VARIANTS = {"pathways": ("pathways", 256), "causal": ("causal", 128)}


def build(run: Run, model: str, context: str, batch: int):
    """(model, int64 (n, L + 1) left-padded training windows, batch size) of one variant: the
    preset ``model`` with ``onerec.context=context`` on the run's dataset (seeded weights)."""
    cfg = resolve_config(
        model,
        [
            f"--data.dataset={run.prep.report.get('dataset', '')}",
            f"--onerec.context={context}",
            f"--train.batch_size={batch}",
        ],
    )
    torch.manual_seed(0)
    net = run.build(cfg)[0]
    return net, run.data(cfg).train_windows, batch


def sampled_batches(windows: torch.Tensor, batch: int, steps: int) -> tuple[list, int]:
    """(``steps`` batches of trimmed windows evenly spaced in length order, batches per epoch)
    of one epoch of :class:`~reelrec.training.trainsets.WindowTrainSet` batches."""
    train = WindowTrainSet(windows)
    idx = train.batches(batch, torch.Generator().manual_seed(0))
    by_len = sorted(idx, key=lambda i: int(train.lengths[i].max()))
    picks = [by_len[(2 * j + 1) * len(by_len) // (2 * steps)] for j in range(steps)]
    return [trim_left_padding(windows[i]) for i in picks], len(idx)


def step_seconds(net, batches: list[torch.Tensor]) -> float:
    """Wall seconds of one AdamW step (loss, backward, update) per int64 (B, W) window batch of
    ``batches``, summed."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()
    t0 = time.perf_counter()
    for w in batches:
        out = net.loss(NextItemBatch.of_windows(w))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-retrieval" / "amazon-beauty")
    p.add_argument("--model", default="onerec-v2", choices=["onerec", "onerec-v2"])
    p.add_argument("--steps", type=int, default=24, help="sampled batches per variant and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.threads < 1:
        p.error("--steps, --rounds and --threads must be >= 1")
    if not (args.run / "data" / "interactions.parquet").exists():
        p.error(f"{args.run}: not a prepared run (run bench/retrieval.py first)")
    torch.set_num_threads(args.threads)
    run = Run(args.run)
    built = {name: build(run, args.model, *v) for name, v in VARIANTS.items()}
    sample = {name: sampled_batches(w, b, args.steps) for name, (_, w, b) in built.items()}
    for name, (net, _, _) in built.items():  # warm-up
        step_seconds(net, sample[name][0][:1])
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.rounds):
        for name, (net, _, _) in built.items():
            times[name].append(step_seconds(net, sample[name][0]))
    out: dict[str, dict] = {}
    for name, (_, w, b) in built.items():
        # a target has at least one real item before it (the causal loss's rule)
        targets = int(((w[:, :-1] > 0) & (w[:, 1:] > 0)).sum()) if name == "causal" else len(w)
        steps = sample[name][1]
        epoch = statistics.median(times[name]) * steps / args.steps
        out[name] = {
            "samples": len(w),
            "targets": targets,
            "batch_size": b,
            "steps_per_epoch": steps,
            "seconds_per_step": round(epoch / steps, 4),
            "seconds_per_epoch": round(epoch, 1),
            "targets_per_s": round(targets / epoch, 1),
            "sampled_seconds_all_rounds": [round(t, 3) for t in times[name]],
        }
    out["speedup"] = round(
        out["pathways"]["seconds_per_epoch"] / out["causal"]["seconds_per_epoch"], 2
    )
    out["command"] = "python bench/epoch_cost.py " + " ".join(argv or sys.argv[1:])
    out["threads"] = args.threads
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.model] = out
    atomic_write_json(RESULTS, results)
    print("| context | samples | targets | batch | s/step (median) | s/epoch | targets/s |")
    print("|---|---|---|---|---|---|---|")
    for name in built:
        r = out[name]
        print(
            f"| {name} | {r['samples']:,} | {r['targets']:,} | {r['batch_size']} | "
            f"{r['seconds_per_step']:.3f} | {r['seconds_per_epoch']:.1f} | "
            f"{r['targets_per_s']:,.0f} |"
        )
    print(f"causal epoch {out['speedup']:.2f}x faster ({out['command']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
