"""Long user histories: peak memory and time per step of ELASTIC against SASRec as L grows.

Usage: python bench/long_sequence.py [--lengths 256 1024 4096 8192] [--batch 4] [--device cpu]
       [--mem-cap-gb 12] [--threads 1] [--run runs/bench/ml-1m] [--out bench/results/long_sequence.json]

Both models have the same width and depth (SASRec's RecBole defaults: width 64, 2 blocks,
2 heads, inner 256, dropout 0.5, full-softmax CE); ELASTIC adds its preset's dispatcher (8
experts, chunks of 32, 1,024 memory slots). Batches are real ML-1M histories (the prepared run;
made when missing): every user's items in time order are concatenated into one stream and each
row of a batch is a different window of L consecutive items of it (no user is that long; the
cost does not depend on which items they are).

On CPU each (model, L, mode) runs in a fresh subprocess so peak memory is its own (on CUDA
they run in this process, with the allocator's peak statistics reset for each):

* ``train``: one forward + backward of the model's training loss (CE over all items at every
  position) and an Adam step; ``infer``: scoring all items after the last position (eval mode,
  no gradient).
* ``ms_per_step``: median of ``--steps`` timed steps after one warm-up step.
* ``peak_mem_mb``: the working memory of a step: on CUDA ``torch.cuda.max_memory_allocated``
  above what was allocated before the timed steps; on CPU the process's peak resident set
  (``ru_maxrss``, which includes the warm-up step) above its resident set before the timed
  steps (model, optimiser state and batch are in that baseline).
* A run that exceeds ``--mem-cap-gb`` (CPU: an address-space limit on the subprocess) or the GPU
  is recorded as ``{"oom": true}``.
* ``gflops``: forward FLOPs counted by ``torch.utils.flop_counter`` (train mode, where SASRec's
  attention is explicit matmuls that the counter sees).

Writes ``--out`` (``{"rows": [{"model", "L", "mode", "peak_mem_mb", "ms_per_step", "gflops",
"command"}], "ratios": ..., "setup": ...}``; rows of other (model, L, mode) already in the file
are kept, each with the command that made it) and a plot beside it (``.png``), and prints a
table with ELASTIC's memory saving and speed-up against SASRec at each L.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "long_sequence.json"


def _stream(run: Path) -> tuple:
    """(int64 item stream in user/time order, vocabulary size) from the prepared ML-1M run."""
    import numpy as np
    import pandas as pd

    from reelrec.run import Run

    if not (run / "data" / "interactions.parquet").exists():
        Run.prepare(run, "ml-1m", log=lambda s: print(s, file=sys.stderr))
    inter = Run(run).prep.interactions
    codes, uniques = pd.factorize(inter["item_id"])
    return np.asarray(codes, dtype=np.int64) + 1, len(uniques)


def one(model_name: str, length: int, mode: str, args) -> dict:
    """Measure one configuration in this process (called in a subprocess)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from reelrec.models.base import NextItemBatch
    from reelrec.models.elastic import Elastic
    from reelrec.models.sasrec import SASRec
    from reelrec.run import resolve_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":  # release what the previous configuration (or an OOM) left
        import gc

        gc.collect()
        torch.cuda.empty_cache()
    stream, vocab = _stream(args.run)
    cfg = resolve_config(model_name, [f"--{model_name}.max_len={length}"])
    section = cfg.elastic if model_name == "elastic" else cfg.sasrec
    model = (Elastic if model_name == "elastic" else SASRec)(vocab, section).to(device)
    gen = torch.Generator().manual_seed(length)
    starts = torch.randint(0, len(stream) - length - 1, (args.batch,), generator=gen)
    batch = torch.stack([torch.from_numpy(stream[s : s + length + 1]) for s in starts.tolist()])
    batch = batch.to(device)
    inputs, targets = batch[:, :-1], batch[:, 1:]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.train()(inputs[:1])
    gflops = counter.get_total_flops() * args.batch / 1e9
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        if mode == "train":
            model.train()
            opt.zero_grad(set_to_none=True)
            model.loss(NextItemBatch(inputs, targets)).loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model.score_all(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()

    try:
        if mode == "train":  # optimiser state exists before the baseline
            step()
    except torch.cuda.OutOfMemoryError as exc:
        return _oom(model_name, length, mode, exc)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _rss_kb()
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        try:
            step()
        except torch.cuda.OutOfMemoryError as exc:
            return _oom(model_name, length, mode, exc)
        if i:  # the first step warms up
            times.append((time.perf_counter() - t0) * 1e3)

    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    times.sort()
    return {
        "model": model_name,
        "L": length,
        "mode": mode,
        "peak_mem_mb": round(peak, 1),
        "ms_per_step": round(times[len(times) // 2], 2),
        "gflops": round(gflops, 3),
    }


def _oom(model_name: str, length: int, mode: str, exc: Exception) -> dict:
    """The row of a configuration that did not fit on the GPU."""
    return {"model": model_name, "L": length, "mode": mode, "oom": True, "error": str(exc)[:200]}


def check_against_cpu(args, length: int = 1024) -> dict:
    """Max |GPU - CPU| of each model's hidden states on the same real batch and weights (fp32,
    eval mode), relative to the largest |CPU| value: the GPU numbers are of the same model."""
    import torch

    from reelrec.models.elastic import Elastic
    from reelrec.models.sasrec import SASRec
    from reelrec.run import resolve_config

    stream, vocab = _stream(args.run)
    gen = torch.Generator().manual_seed(1)
    starts = torch.randint(0, len(stream) - length, (args.batch,), generator=gen).tolist()
    batch = torch.stack([torch.from_numpy(stream[s : s + length]) for s in starts])
    batch[0, : length // 3] = 0  # one left-padded row
    out = {}
    for name, cls in (("sasrec", SASRec), ("elastic", Elastic)):
        torch.manual_seed(0)
        cfg = resolve_config(name, [f"--{name}.max_len={length}"])
        cpu = cls(vocab, cfg.elastic if name == "elastic" else cfg.sasrec).eval()
        gpu = cls(vocab, cfg.elastic if name == "elastic" else cfg.sasrec)
        gpu.load_state_dict(cpu.state_dict())
        gpu = gpu.to(args.device).eval()
        with torch.no_grad():
            ref = cpu(batch).hidden
            got = gpu(batch.to(args.device)).hidden.cpu()
        out[name] = float((got - ref).abs().max() / ref.abs().max())
    return out


def _rss_kb() -> float:
    """Resident set size of this process now, in KiB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


def _limit(cap_gb: float) -> None:
    if cap_gb > 0:
        cap = int(cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def measure(model_name: str, length: int, mode: str, args) -> dict:
    """Run :func:`one` in a fresh subprocess; an out-of-memory failure becomes an oom row."""
    cmd = [sys.executable, __file__, "--one", model_name, str(length), mode]
    cmd += ["--batch", str(args.batch), "--device", args.device, "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads), "--run", str(args.run)]
    cap = args.mem_cap_gb if args.device == "cpu" else 0
    # a fixed mmap threshold makes glibc return freed tensors to the OS at once, so the
    # resident set follows live memory (the dynamic threshold keeps freed blocks cached)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, preexec_fn=lambda: _limit(cap), env=env
    )
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    err = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    oom = any(
        s in proc.stderr
        for s in (
            "out of memory",
            "OutOfMemory",
            "MemoryError",
            "std::bad_alloc",
            "can't allocate memory",
        )
    ) or proc.returncode in (-9, 137)
    if not oom:
        raise RuntimeError(f"{model_name} L={length} {mode} failed: {proc.stderr[-2000:]}")
    return {"model": model_name, "L": length, "mode": mode, "oom": True, "error": err[0][:200]}


def plot(rows: list[dict], path: Path) -> None:
    """Peak memory and time per step against L, one panel each, train and infer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in (
        (axes[0], "peak_mem_mb", "peak memory (MB)"),
        (axes[1], "ms_per_step", "ms per step"),
    ):
        for model in ("sasrec", "elastic"):
            for mode, style in (("train", "-"), ("infer", "--")):
                pts = [
                    (r["L"], r[key])
                    for r in rows
                    if r["model"] == model and r["mode"] == mode and not r.get("oom")
                ]
                if pts:
                    xs, ys = zip(*sorted(pts), strict=True)
                    ax.plot(xs, ys, style, marker="o", label=f"{model} {mode}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("history length L")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("ELASTIC vs SASRec (same width and depth); missing points: out of memory")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)


def ratios(rows: list[dict]) -> list[dict]:
    """ELASTIC's memory saving (1 - elastic/sasrec) and speed-up (sasrec/elastic) per L, mode."""
    out = []
    index = {(r["model"], r["L"], r["mode"]): r for r in rows}
    for (model, length, mode), e in sorted(index.items()):
        s = index.get(("sasrec", length, mode))
        if model != "elastic" or s is None or e.get("oom"):
            continue
        row = {"L": length, "mode": mode}
        if s.get("oom"):
            row["sasrec"] = "oom"
        else:
            row["memory_saving"] = round(1 - e["peak_mem_mb"] / max(s["peak_mem_mb"], 1e-9), 3)
            row["speedup"] = round(s["ms_per_step"] / e["ms_per_step"], 2)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 8192], help="L")
    p.add_argument(
        "--models", nargs="+", default=["sasrec", "elastic"], choices=["sasrec", "elastic"]
    )
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--mem-cap-gb", type=float, default=12.0, help="CPU address-space cap per measurement"
    )
    p.add_argument(
        "--run",
        type=Path,
        default=ROOT / "runs" / "bench" / "ml-1m",
        help="run folder with prepared ML-1M data (prepared there when missing)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results JSON (plot beside it)")
    p.add_argument("--one", nargs=3, metavar=("MODEL", "L", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args)))
        return 0
    _stream(args.run)  # prepare the data once, outside the timed subprocesses
    command = "python bench/long_sequence.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    rows = []
    for length in args.lengths:
        for mode in args.modes:
            for model in args.models:
                if args.device == "cpu":
                    r = measure(model, length, mode, args)
                else:
                    r = one(model, length, mode, args)
                r["command"] = command
                rows.append(r)
                print(json.dumps(r), flush=True)
    # rows measured before for other (model, L, mode) are kept, so lengths can be added later
    done = {(r["model"], r["L"], r["mode"]) for r in rows}
    if args.out.exists():
        old = json.loads(args.out.read_text()).get("rows", [])
        rows = [r for r in old if (r["model"], r["L"], r["mode"]) not in done] + rows
        rows.sort(key=lambda r: (r["L"], r["mode"] != "train", r["model"] != "sasrec"))
    result = {
        "rows": rows,
        "ratios": ratios(rows),
        "setup": {
            "command": command,
            "note": "rows may come from several commands; each row names its own",
            "batch": args.batch,
            "steps": args.steps,
            "device": args.device,
            "threads": args.threads,
            "mem_cap_gb": args.mem_cap_gb,
            "data": "ml-1m histories concatenated into one stream, windows of L items",
        },
    }
    import torch

    from reelrec.io import atomic_write_json

    if args.device != "cpu":
        result["setup"]["device_name"] = torch.cuda.get_device_name()
        result["setup"]["max_rel_diff_vs_cpu_L1024_fp32"] = check_against_cpu(args)
        print(
            "GPU vs CPU, max |diff| / max |cpu|:", result["setup"]["max_rel_diff_vs_cpu_L1024_fp32"]
        )
    atomic_write_json(args.out, result)
    plot(rows, args.out.with_suffix(".png"))
    print(
        f"\n{'L':>6} {'mode':<6} {'sasrec MB':>10} {'elastic MB':>10} {'saving':>7} "
        f"{'sasrec ms':>10} {'elastic ms':>10} {'speedup':>7}"
    )
    index = {(r["model"], r["L"], r["mode"]): r for r in rows}
    for length in sorted({r["L"] for r in rows}):
        for mode in args.modes:
            s, e = index.get(("sasrec", length, mode), {}), index.get(("elastic", length, mode), {})

            def cell(r: dict, key: str) -> str:
                return "oom" if r.get("oom") else f"{r.get(key, float('nan')):.1f}"

            rr = next((x for x in result["ratios"] if x["L"] == length and x["mode"] == mode), {})
            print(
                f"{length:>6} {mode:<6} {cell(s, 'peak_mem_mb'):>10} {cell(e, 'peak_mem_mb'):>10} "
                f"{rr.get('memory_saving', '-')!s:>7} {cell(s, 'ms_per_step'):>10} "
                f"{cell(e, 'ms_per_step'):>10} {rr.get('speedup', '-')!s:>7}"
            )
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
