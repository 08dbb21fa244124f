"""Training throughput and MFU of `reelrec train` on 1 and 2 CPU processes (torchrun, gloo).

Usage: python bench/scale.py [--out runs/bench-scale] [--procs 1 2]

For each model (SASRec on amazon-beauty, OneRec on kuairand: its semantic IDs are made first
when missing, as bench/retrieval.py does) and each process count N, runs

    torchrun --standalone --nproc_per_node N $(which reelrec) train PRESET --run-dir RUN
        --name=scale-N --train.epochs=1 --train.threads=1 --no-resume

(one torch thread per process, so N processes use N of the machine's cores), and reads the
epoch's ``samples_per_s`` (training samples of the global batch per second, validation
excluded), ``flops_per_sample`` and ``mfu`` from RUN/models/scale-N/history.json. MFU is
achieved FLOP/s over N x the peak one process measured (a 2048 x 2048 fp32 matrix product on one
thread). Writes ``bench/results/scale.json``: ``{"<model>": {"<N>": {"samples_per_s", "mfu",
"flops_per_sample", "seconds", "command"}}}``. Real data only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from reelrec.io import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import ensure_semantic_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"
#: model -> (preset, dataset, extra overrides)
MODELS = {
    "sasrec": ("sasrec", "amazon-beauty", ["--data.dataset=amazon-beauty"]),
    "onerec": ("onerec", "kuairand", []),
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description="Throughput and MFU of reelrec train on 1 and 2 CPU processes."
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench-scale"), help="run folders")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts")
    p.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = p.parse_args(argv)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    reelrec = shutil.which("reelrec") or str(Path(sys.executable).parent / "reelrec")
    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for model in args.model:
        preset, dataset, extra = MODELS[model]
        run = args.out / dataset
        if model == "onerec":
            ensure_semantic_ids(run, dataset, "tokenizer")
        for n in args.procs:
            name = f"scale-{preset}-{n}"
            cmd = [
                torchrun,
                "--standalone",
                f"--nproc_per_node={n}",
                reelrec,
                "train",
                preset,
                "--run-dir",
                str(run),
                f"--name={name}",
                "--train.epochs=1",
                "--train.threads=1",
                "--train.progress=false",
                "--no-resume",
                *extra,
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            hist = json.loads((run / "models" / name / "history.json").read_text())[-1]
            row = {
                "samples_per_s": round(hist["samples_per_s"], 1),
                "mfu": round(hist["mfu"], 4),
                "flops_per_sample": hist["flops_per_sample"],
                "seconds": round(time.perf_counter() - t0, 1),
                "command": " ".join(["torchrun", *cmd[1:3], "$(which reelrec)", *cmd[4:]]),
            }
            results.setdefault(model, {})[str(n)] = row
            atomic_write_json(RESULTS, results)
            print(f"{model} x{n}: {row['samples_per_s']:,.0f} samples/s, MFU {row['mfu']:.3f}")
    print("\n| model | processes | samples/s | MFU | MFLOP/sample |\n|---|---|---|---|---|")
    for model, rows in results.items():
        for n, r in rows.items():
            print(
                f"| {model} | {n} | {r['samples_per_s']:,.0f} | {r['mfu']:.3f} | {r['flops_per_sample'] / 1e6:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
