"""The content adapters on one GPU: CT-LLM and Keye-VL, checked against the CPU and timed.

Usage: python bench/gpu_content.py [--ct-llm-path DIR] [--keye-path DIR] [--repeats 20]

Without weights it runs the adapters' tiny random models (``reelrec.content.testing``: a
2-layer Llama and a 2-layer Qwen2-VL with Keye-VL's input layout); with ``--ct-llm-path`` /
``--keye-path`` it also runs the real checkpoints (GPU only, bfloat16). For each model:

* the largest absolute difference between the GPU's and the CPU's embeddings (float32 for the
  tiny models; the real ones are compared GPU bf16 vs GPU fp32 when the CPU is too slow);
* the median wall time of a forward (embedding) pass over ``--repeats`` runs after 3 warm-ups,
  with ``torch.cuda.synchronize``.

Writes ``bench/results/gpu_content.json`` only when a GPU ran it; on a machine without one it
says so and exits 0 (nothing to measure).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from reelrec.content.ct_llm import CTLLMEncoder
from reelrec.content.keye_vl import KeyeVLAdapter
from reelrec.content.testing import TINY_LINES, TinyVideoProcessor, tiny_ct_llm, tiny_qwen2_vl
from reelrec.io import atomic_write_json, run_metadata

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gpu_content.json"


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` after 3 warm-up calls (CUDA synchronised)."""
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def video(seed: int = 0, frames: int = 8, size: int = 56) -> np.ndarray:
    """A generated ``(T, size, size, 3)`` uint8 clip: two shots of random 7-pixel blocks."""
    rng = np.random.default_rng(seed)
    shots = []
    for _ in range(2):
        on = rng.random((size // 7, size // 7, 1)) < 0.5
        colour = rng.integers(64, 256, size=(size // 7, size // 7, 3))
        shots.append(np.kron(on * colour, np.ones((7, 7, 1))).astype(np.uint8))
    return np.stack([shots[i * 2 // frames] for i in range(frames)])


def ct_llm_row(path: Path, tiny: bool, repeats: int) -> dict:
    """CT-LLM embeddings on GPU vs reference, and the time of one batch."""
    gpu = CTLLMEncoder(path, device="cuda", dtype="float32" if tiny else "bfloat16")
    texts = TINY_LINES * 4
    x_gpu = gpu.encode(texts)
    ref = CTLLMEncoder(path, device="cpu" if tiny else "cuda", dtype="float32").encode(texts)
    return {
        "model": "ct-llm (tiny random)" if tiny else f"ct-llm ({path})",
        "reference": "cpu float32" if tiny else "cuda float32",
        "max_abs_diff": float(np.abs(x_gpu - ref).max()),
        "batch": len(texts),
        "forward_ms": 1e3 * timed(lambda: gpu.encode(texts), repeats),
    }


def keye_row(path: Path | None, repeats: int) -> dict:
    """Keye-VL (or its tiny stand-in) video embedding on GPU vs reference, and its time."""
    clip = video()
    if path is None:
        model = tiny_qwen2_vl()
        cpu = KeyeVLAdapter(model=model, processor=TinyVideoProcessor(), device="cpu")
        frames, types = cpu.sample(clip, video_fps=2.0)
        ref = cpu.embed(frames, frame_types=types)
        gpu = KeyeVLAdapter(model=tiny_qwen2_vl(), processor=TinyVideoProcessor(), device="cuda")
        name, reference = "keye-vl layout (tiny random Qwen2-VL)", "cpu float32"
    else:
        gpu = KeyeVLAdapter(path, device="cuda")
        frames, types = gpu.sample(clip, video_fps=2.0)
        full = KeyeVLAdapter(path, device="cuda", dtype="float32")
        ref = full.embed(frames, frame_types=types)
        del full
        name, reference = f"keye-vl ({path})", "cuda float32"
    frames, types = gpu.sample(clip, video_fps=2.0)
    x = gpu.embed(frames, frame_types=types)
    return {
        "model": name,
        "reference": reference,
        "max_abs_diff": float(np.abs(x - ref).max()),
        "frames": len(frames),
        "slow_frames": int((types == 0).sum()),
        "forward_ms": 1e3 * timed(lambda: gpu.embed(frames, frame_types=types), repeats),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the checks; returns the exit status (1 when a GPU result disagrees with the CPU)."""
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ct-llm-path", type=Path, default=None, help="real CT-LLM-Base weights")
    p.add_argument("--keye-path", type=Path, default=None, help="real Keye-VL weights")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |GPU - CPU| (tiny, fp32)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu_content.py: torch sees no GPU here; nothing measured, nothing written")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(ct_llm_row(tiny_ct_llm(Path(tmp) / "ct-llm"), True, args.repeats))
    rows.append(keye_row(None, args.repeats))
    if args.ct_llm_path:
        rows.append(ct_llm_row(args.ct_llm_path, False, args.repeats))
    if args.keye_path:
        rows.append(keye_row(args.keye_path, args.repeats))
    ok = all(r["max_abs_diff"] <= args.tolerance for r in rows if r["reference"] == "cpu float32")
    print("| model | reference | max abs diff | forward ms |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['reference']} | {r['max_abs_diff']:.2e} | {r['forward_ms']:.2f} |"
        )
    atomic_write_json(
        RESULTS,
        {
            "device": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "rows": rows,
            "agrees_with_cpu": ok,
            "command": "python bench/gpu_content.py",
            **run_metadata(),
        },
    )
    print(f"-> {RESULTS}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
