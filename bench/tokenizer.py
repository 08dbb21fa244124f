"""Semantic-ID tokenizers side by side: balanced RQ-Kmeans, plain RQ-Kmeans and RQ-VAE.

Usage: python bench/tokenizer.py [--dataset amazon-beauty ml-1m] [--out runs/bench-tokenizer]
                                 [--tokenizer.KEY=VALUE ...]

For each dataset, through the same code as the CLI: `reelrec prepare`, `reelrec encode` (e5-small
on item titles), `reelrec align` (QARM, default config), then `reelrec tokenize` with each method
on the aligned embeddings (3 levels x 256 codes + disambiguation). Prints a table and writes

* ``bench/results/tokenizer.json``: ``{"<dataset>": {"<method>": {"utilisation": [per level],
  "entropy_bits": [per level], "recon_loss": x, "collision_rate": x, "unique": true, ...}}}``
* ``bench/results/qarm_alignment.json``: pair Recall@10/@50 before and after alignment, per dataset;
* ``bench/results/tokenizer-<dataset>.png``: utilisation, entropy and recon loss per level;
* ``bench/results/tokenizer_reference.json``: the same code statistics of the published TIGER
  re-implementation's Beauty semantic IDs (shared dataset ``amazon-beauty-tiger-sid``), when present.

Real data only (REELREC_DATA_DIR). Run folders are reused: a finished stage is not redone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from reelrec.config import apply_overrides
from reelrec.content.stage import encode_run
from reelrec.data import sources
from reelrec.data.prepare import prepare_run
from reelrec.io import atomic_write_json
from reelrec.tokenizer.align_stage import AlignStage, align_run
from reelrec.tokenizer.semantic_ids import RQ_METHODS, level_stats, plot_stats
from reelrec.tokenizer.stage import TokenizeStage, tokenize_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
KEYS = ("utilisation", "entropy_bits", "recon_loss", "collision_rate", "unique")


def reference_stats(data_root: Path) -> dict:
    """Code statistics of the TIGER re-implementation's published Beauty IDs (no embeddings, so
    no recon loss): 3 levels + its own disambiguation level, 256 codes each."""
    folder = data_root / "amazon-beauty-tiger-sid"
    out = {}
    for name, file in (("rq-vae", "index_rqvae.json"), ("rq-kmeans", "index_rqkmeans.json")):
        path = folder / file
        if not path.exists():
            continue
        codes = np.array(list(json.loads(path.read_text()).values()), dtype=np.int64)
        s = level_stats(codes[:, :3], 256, [float("nan")] * 3)
        out[name] = {
            "items": len(codes),
            "utilisation": s["utilisation"],
            "entropy_bits": s["entropy_bits"],
            "collision_rate": s["collision_rate"],
            "source": f"{path.relative_to(data_root)} (GitHub NonameUntitled/tiger, LLaMA-7B "
            "text embeddings)",
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", nargs="+", default=["amazon-beauty", "ml-1m"])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-tokenizer")
    p.add_argument("--methods", nargs="+", default=list(RQ_METHODS), choices=RQ_METHODS)
    args, overrides = p.parse_known_args(argv)  # the rest: --tokenizer.* / --align.*
    tok_overrides = [o for o in overrides if o.lstrip("-").startswith("tokenizer.")]
    align_overrides = [o for o in overrides if o.lstrip("-").startswith("align.")]
    results = (
        json.loads((RESULTS / "tokenizer.json").read_text())
        if (RESULTS / "tokenizer.json").exists()
        else {}
    )
    alignment = (
        json.loads((RESULTS / "qarm_alignment.json").read_text())
        if (RESULTS / "qarm_alignment.json").exists()
        else {}
    )
    command = " ".join([".venv/bin/python bench/tokenizer.py", *(argv or sys.argv[1:])])
    for dataset in args.dataset:
        run = args.out / dataset
        if not (run / "data" / "interactions.parquet").exists():
            prepare_run(run, dataset)
        if not (run / "content" / "item_embeddings.npy").exists():
            encode_run(run, "e5-small")
        if not (run / "content" / "align.json").exists() or align_overrides:
            align_run(run, apply_overrides(AlignStage(), align_overrides))
        rep = json.loads((run / "content" / "align.json").read_text())
        alignment[dataset] = {
            "pairs": rep["pairs"],
            "test_before": rep["test_before"],
            "test_after": rep["test_after"],
            "best_epoch": rep["best_epoch"],
            "command": command,
        }
        rows = results.get(dataset, {})
        for method in args.methods:
            cfg = apply_overrides(TokenizeStage(), [*tok_overrides, f"--tokenizer.method={method}"])
            t0 = time.perf_counter()
            s = tokenize_run(run, cfg, run / f"tokenizer-{method}")
            rows[method] = {k: s[k] for k in KEYS} | {
                "recon_loss_per_level": s["recon_loss_per_level"],
                "collision_rate_per_level": s["collision_rate_per_level"],
                "recon_loss_relative": s["recon_loss"] / s["total_variance"],
                "disambiguation_max": s["disambiguation_max"],
                "items": s["items"],
                "levels": s["levels"],
                "codebook_size": s["codebook_size"],
                "embeddings": "aligned e5-small",
                "seconds": round(time.perf_counter() - t0, 1),
                "command": command,
            }
        results[dataset] = rows
        plot_stats(
            {m: {**rows[m], "max_entropy_bits": np.log2(rows[m]["codebook_size"])} for m in rows},
            RESULTS / f"tokenizer-{dataset}.png",
            title=f"{dataset}: semantic-ID tokenizers (aligned e5-small embeddings)",
        )
    atomic_write_json(RESULTS / "tokenizer.json", results)
    atomic_write_json(RESULTS / "qarm_alignment.json", alignment)
    ref = reference_stats(sources.data_root(None))
    if ref:
        atomic_write_json(RESULTS / "tokenizer_reference.json", {"amazon-beauty": ref})

    print(
        f"\n{'dataset':<14} {'method':<19} {'utilisation':<20} {'entropy (bits)':<20} "
        f"{'recon':>7} {'rel':>6} {'collide':>8} {'s':>6}"
    )
    for dataset, rows in results.items():
        for method, r in rows.items():
            util = "/".join(f"{u:.3f}" for u in r["utilisation"])
            ent = "/".join(f"{e:.2f}" for e in r["entropy_bits"])
            print(
                f"{dataset:<14} {method:<19} {util:<20} {ent:<20} {r['recon_loss']:>7.4f} "
                f"{r['recon_loss_relative']:>6.3f} {r['collision_rate']:>8.4f} {r['seconds']:>6.1f}"
            )
    for dataset, a in alignment.items():
        print(
            f"{dataset}: test pair Recall@10 {a['test_before']['recall@10']:.4f} -> "
            f"{a['test_after']['recall@10']:.4f} after QARM alignment ({a['pairs']['test']:,} pairs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
