"""Beam-search latency, training throughput and model FLOP utilisation of OneRec and OneRec-V2.

Usage: python bench/decode.py [--run runs/bench-retrieval/amazon-beauty] [--threads 2]

Uses the run's semantic IDs and test histories (real data) and, when the run holds trained
``onerec`` / ``onerec-v2`` weights, those weights (latency does not depend on them). Measures, on
this machine:

* ``matmul_gflops``: fp32 2048 x 2048 matrix products per second (the reference peak);
* ``train_samples_per_s``: AdamW training steps of batch 256 on the run's training windows;
* ``flops_per_sample``: forward + backward FLOPs per training sample, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention);
* ``mfu``: ``train_samples_per_s * flops_per_sample / matmul_gflops``;
* ``rows``: milliseconds per user of trie-constrained beam search for beams 10/50/128, batches of
  1 and 64 users, with and without the key/value cache.

Writes ``bench/results/decode.json``: ``{"matmul_gflops", "train_samples_per_s",
"flops_per_sample", "mfu", "rows": [...], "models": {"onerec-v2": {same keys}}}`` (the top level
is OneRec) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from reelrec.io import atomic_write_json
from reelrec.models.base import NextItemBatch
from reelrec.models.generative import beam_search
from reelrec.run import Run, resolve_config
from reelrec.training.checkpoint import load_model
from reelrec.training.distributed import count_flops, peak_flops

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "decode.json"


def matmul_gflops(n: int = 2048) -> float:
    """Measured fp32 matmul rate of this machine in GFLOP/s (the reference peak)."""
    return peak_flops(torch.float32, "cpu", n) / 1e9


def train_rate(
    model, windows: torch.Tensor, batch: int = 256, steps: int = 8
) -> tuple[float, float]:
    """(samples/s, FLOPs per sample) of AdamW steps on random batches of ``windows``."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    batches = [
        windows[torch.randint(len(windows), (batch,), generator=gen)] for _ in range(steps + 1)
    ]
    first = batches[0]
    flops = count_flops(lambda: model.loss(NextItemBatch.of_windows(first)).loss.backward()) / batch
    opt.zero_grad()
    t0 = time.perf_counter()
    for w in batches[1:]:
        out = model.loss(NextItemBatch.of_windows(w))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0), flops


@torch.no_grad()
def latency(model, history: torch.Tensor, beam: int, batch: int, cache: bool, users: int) -> float:
    """Milliseconds per user of beam search over ``users`` histories in batches of ``batch``."""
    model.eval()
    beam_search(model, history[:batch], model.trie, beam, cache)  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < users:
        beam_search(model, history[done : done + batch], model.trie, beam, cache)
        done += batch
    return (time.perf_counter() - t0) * 1000 / done


def measure(name: str, run: Path, data, gflops: float) -> dict:
    """All measurements of one model preset."""
    cfg = resolve_config(name, [f"--data.dataset={data.dataset}"])
    torch.manual_seed(0)
    model = Run(run).build(cfg)[0]
    weights = run / "models" / name / "model.safetensors"
    if weights.exists():
        load_model(model, weights)
    sps, flops = train_rate(model, data.seq.train_windows)
    hist = data.seq.test.history
    rows = []
    for beam in (10, 50, 128):
        for batch in (1, 64):
            for cache in (True, False):
                users = 16 if batch == 1 else 128
                ms = latency(model, hist, beam, batch, cache, users)
                rows.append({"beam": beam, "batch": batch, "kv_cache": cache, "ms_per_user": ms})
                print(
                    f"{name:10s} beam {beam:3d} batch {batch:2d} cache {cache!s:5s} {ms:8.2f} ms/user"
                )
    return {
        "matmul_gflops": gflops,
        "train_samples_per_s": sps,
        "flops_per_sample": flops,
        "mfu": sps * flops / (gflops * 1e9),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_weights": weights.exists(),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-retrieval" / "amazon-beauty")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prep = Run(args.run).prep

    class Data:
        dataset = prep.report.get("dataset", "")
        seq = Run(args.run).data(
            resolve_config("onerec", ["--onerec.max_len=50", "--onerec.window_step=1"])
        )

    gflops = matmul_gflops()
    print(f"matmul: {gflops:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    result = measure("onerec", args.run, Data, gflops)
    result["models"] = {"onerec-v2": measure("onerec-v2", args.run, Data, gflops)}
    result["command"] = "python bench/decode.py " + " ".join(argv or sys.argv[1:])
    result["threads"] = torch.get_num_threads()
    atomic_write_json(RESULTS, result)
    print("| model | params | train samples/s | GFLOPs/sample | MFU |")
    print("|---|---|---|---|---|")
    for name, r in (("onerec", result), ("onerec-v2", result["models"]["onerec-v2"])):
        print(
            f"| {name} | {r['parameters']:,} | {r['train_samples_per_s']:.0f} | "
            f"{r['flops_per_sample'] / 1e9:.3f} | {r['mfu']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
