"""OneRec on one GPU: a checked training step, then training and beam-search throughput and MFU.

Usage: PYTHONPATH=src python bench/gpu_train.py [--run runs/bench-scale/kuairand]
       [--device cuda] [--batch 2048] [--steps 30] [--users 8192] [--beam 20] [--out PATH]

Prepared for a single H200-class GPU and meant to finish in under 10 minutes; it runs whenever a
GPU is available (``--device cpu --batch 64 --steps 2 --users 64`` checks the script itself on a
CPU). The run folder must hold KuaiRand prepared with semantic IDs (``bench/scale.py`` or
``bench/retrieval.py --dataset kuairand`` makes it; carry ``RUN/data`` and ``RUN/tokenizer``).

1. **Check**: the same OneRec weights and batch on the CPU (fp32) and on the device (bfloat16
   autocast): the losses and the gradient norms must agree within bf16 tolerance (relative
   error below 2e-2 and 5e-2); the script stops otherwise.
2. **Training**: AdamW steps on batches of ``--batch`` windows, bf16 autocast; samples/s;
   model FLOPs per sample counted by ``torch.utils.flop_counter`` (forward + backward); MFU
   against the device's measured bf16 matmul peak (8192 x 8192).
3. **Inference**: trie-constrained beam search (``--beam``) over ``--users`` histories in
   batches of 1,024 with the key/value cache; users/s; FLOPs counted on one batch; MFU.

Writes ``--out`` (default ``bench/results/gpu.json``): ``{"device": str, "check": {...},
"train": {"mfu", "samples_per_s", ...}, "infer": {"mfu", "users_per_s", ...}}``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from reelrec.io import atomic_write_json
from reelrec.models.base import NextItemBatch
from reelrec.models.generative import beam_search
from reelrec.run import Run, resolve_config
from reelrec.training.distributed import count_flops, peak_flops

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_peak(device: torch.device, amp: bool) -> float:
    """Measured matmul FLOP/s of ``device`` in the dtype the benchmark computes in."""
    n = 8192 if device.type == "cuda" else 1024
    return peak_flops(torch.bfloat16 if amp else torch.float32, device, n)


def grad_norm(model: torch.nn.Module) -> float:
    return float(
        torch.sqrt(
            sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None)
        )
    )


def check(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> dict:
    """Loss and gradient norm of one batch on the CPU (fp32) and on ``device`` (bf16)."""
    cpu = copy.deepcopy(model).cpu().train()
    dev = copy.deepcopy(model).to(device).train()
    for m in (cpu, dev):  # dropout off: the two runs must see the same function
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    out_cpu = cpu.loss(NextItemBatch.of_windows(batch))
    out_cpu.loss.backward()
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        b = batch.to(device)
        out_dev = dev.loss(NextItemBatch.of_windows(b))
    out_dev.loss.backward()
    l_cpu, l_dev = float(out_cpu.loss.detach()), float(out_dev.loss.detach())
    g_cpu, g_dev = grad_norm(cpu), grad_norm(dev)
    result = {
        "loss_cpu": l_cpu,
        "loss_device": l_dev,
        "loss_rel_err": abs(l_dev - l_cpu) / abs(l_cpu),
        "grad_norm_rel_err": abs(g_dev - g_cpu) / g_cpu,
        "bf16": amp,
    }
    ok = result["loss_rel_err"] < 2e-2 and result["grad_norm_rel_err"] < 5e-2
    result["ok"] = ok
    if not ok:
        raise SystemExit(f"device step disagrees with the CPU reference: {result}")
    return result


def train_throughput(model, windows: torch.Tensor, device, batch: int, steps: int) -> dict:
    model = model.to(device).train()
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    batches = [
        windows[torch.randint(len(windows), (batch,), generator=gen)].to(device)
        for _ in range(steps + 2)
    ]

    def step(w: torch.Tensor) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model.loss(NextItemBatch.of_windows(w))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    flops = count_flops(lambda: step(batches[0])) / batch
    step(batches[1])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for w in batches[2:]:
        step(w)
    sync(device)
    rate = batch * steps / (time.perf_counter() - t0)
    peak = device_peak(device, amp)
    return {
        "samples_per_s": rate,
        "flops_per_sample": flops,
        "peak_flops": peak,
        "mfu": rate * flops / peak,
        "batch": batch,
    }


@torch.no_grad()
def infer_throughput(model, history: torch.Tensor, device, users: int, beam: int) -> dict:
    model = model.to(device).eval()
    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
    batch = min(1024, users)
    idx = torch.arange(users) % len(history)
    hist = history[idx].to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        with torch.enable_grad():  # the FLOP counter's module hooks need autograd on
            flops = count_flops(lambda: beam_search(model, hist[:batch], model.trie, beam)) / batch
        beam_search(model, hist[:batch], model.trie, beam)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for s in range(0, users, batch):
            beam_search(model, hist[s : s + batch], model.trie, beam)
        sync(device)
    rate = users / (time.perf_counter() - t0)
    peak = device_peak(device, amp)
    return {
        "users_per_s": rate,
        "flops_per_user": flops,
        "peak_flops": peak,
        "mfu": rate * flops / peak,
        "beam": beam,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description="OneRec on one GPU: checked step, training and beam-search MFU."
    )
    p.add_argument(
        "--run", type=Path, default=Path("runs/bench-scale/kuairand"), help="run with semantic IDs"
    )
    p.add_argument("--device", default="cuda", help="cuda or cpu (cpu: checks the script)")
    p.add_argument("--batch", type=int, default=2048, help="training windows per step")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--users", type=int, default=8192, help="users decoded")
    p.add_argument("--beam", type=int, default=20, help="beam width")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = p.parse_args(argv)
    if min(args.batch, args.steps, args.users, args.beam) < 1:
        p.error("--batch, --steps, --users and --beam must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu to check the script")
    cfg = resolve_config("onerec", ["--data.dataset=kuairand"])
    model, data = Run(args.run).build(cfg)
    windows = data.train_windows
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "parameters": sum(q.numel() for q in model.parameters()),
        "check": check(model, windows[:64], device),
    }
    print("check:", result["check"])
    result["train"] = train_throughput(model, windows, device, args.batch, args.steps)
    print("train:", result["train"])
    result["infer"] = infer_throughput(model, data.test.history, device, args.users, args.beam)
    print("infer:", result["infer"])
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
