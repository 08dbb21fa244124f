"""Generative retrieval: OneRec, OneRec-V2 and a TIGER-style baseline beside SASRec and the papers.

Usage: python bench/retrieval.py [--dataset amazon-beauty ...] [--model onerec onerec-v2 tiger]
       [--out runs/bench-retrieval] [--minutes 25] [--a.b=c ...]

For each dataset the run folder is prepared and given semantic IDs through the same code as the
CLI when they are missing (`reelrec encode`, `align`, `tokenize` for OneRec's balanced RQ-Kmeans
IDs in RUN/tokenizer, `tokenize --method rq-vae` for TIGER's in RUN/tokenizer-rq-vae; datasets
without item text get behaviour-only item2vec embeddings, quantised without alignment), then each
model trains with its preset (`reelrec train onerec|onerec-v2|tiger`) under a wall-clock budget
(``--minutes``, early stopping on a validation subset), and is tested by leave-one-out (or
KuaiRand temporal) full ranking of the beam's items (beam 20 >= K). Rows are merged into
``bench/results/retrieval.json`` as ``{"<dataset>": {"<model>": {"recall@10", "ndcg@10", ...,
"command"}}}`` and printed beside the published TIGER and HSTU numbers. Real data only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reelrec.io import atomic_write_json
from reelrec.run import Run, resolve_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "retrieval.json"
#: published test numbers (TIGER arXiv 2305.05065 Table 3; HSTU arXiv 2402.17152 Table 2)
PUBLISHED = {
    "amazon-beauty": ("TIGER", {"recall@10": 0.0648, "ndcg@10": 0.0384}),
    "amazon-sports": ("TIGER", {"recall@10": 0.0400, "ndcg@10": 0.0225}),
    "amazon-toys": ("TIGER", {"recall@10": 0.0712, "ndcg@10": 0.0432}),
    "ml-1m": ("HSTU-large", {"recall@10": 0.3294, "ndcg@10": 0.1893}),
}
#: per-dataset settings: ML-1M histories are long (HSTU/SASRec use 200 items); a window every
#: 5 items keeps an epoch near 200k samples on a CPU
DATASET_OVERRIDES = {
    "ml-1m": ["--onerec.max_len=200", "--onerec.window_step=5"],
}


def ensure_semantic_ids(run: Path, dataset: str, folder: str, log=print) -> None:
    """Prepare ``run`` and write semantic IDs into ``run/folder`` unless they exist."""
    if not (run / "data" / "interactions.parquet").exists():
        Run.prepare(run, dataset, log=log)
    if (run / folder / "semantic_ids.parquet").exists():
        return
    if not (run / "content" / "item_embeddings.npy").exists():
        Run(run).encode()
    method = "rq-vae" if folder == "tokenizer-rq-vae" else ""
    overrides = []
    encoder = json.loads((run / "content" / "encoder.json").read_text())["encoder"]
    if encoder == "item2vec":
        # behaviour-only embeddings (no item text: amazon-sports, kuairand) are what QARM
        # aligns content *to*; aligning them to behaviour again is skipped
        overrides.append("--tokenizer.embeddings=raw")
    elif not (run / "content" / "aligned_embeddings.npy").exists():
        Run(run).align()
    Run(run).tokenize(method, run / folder, overrides)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Extra --section.key=value arguments override every model's preset.",
    )
    p.add_argument("--dataset", nargs="+", default=["amazon-beauty"], help="datasets to run")
    p.add_argument(
        "--model",
        nargs="+",
        default=["onerec", "onerec-v2", "tiger"],
        choices=["onerec", "onerec-v2", "tiger"],
        help="presets to train",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-retrieval")
    p.add_argument("--minutes", type=float, default=25.0, help="training budget per model")
    p.add_argument("--label", default="", help="result key suffix and run-name suffix")
    args, overrides = p.parse_known_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for dataset in args.dataset:
        run = args.out / dataset
        for preset in args.model:
            cfg0 = resolve_config(preset, [f"--data.dataset={dataset}"])
            ensure_semantic_ids(run, dataset, cfg0.onerec.semantic_ids)
            key = preset + (f"-{args.label}" if args.label else "")
            extra = [
                f"--data.dataset={dataset}",
                f"--train.max_minutes={args.minutes}",
                f"--name={key}",
                *DATASET_OVERRIDES.get(dataset, []),
                *overrides,
            ]
            cfg = resolve_config(preset, extra)
            m = Run(run).train(cfg, resume=True)
            t = m["test"]
            command = " ".join(
                [
                    ".venv/bin/python bench/retrieval.py --dataset",
                    dataset,
                    "--model",
                    preset,
                    f"--minutes {args.minutes:g}",
                    *([f"--label {args.label}"] if args.label else []),
                    *overrides,
                ]
            )
            # re-read before merging: several bench processes may share the file
            results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            results.setdefault(dataset, {})[key] = {
                **{k: t[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")},
                "command": command,
                "config": f"preset {preset} + " + " ".join(extra[1:]),
                "parameters": m["parameters"],
                "train_seconds": m["train_seconds"],
                "epochs_run": m["epochs_run"],
                "best_epoch": m["best_epoch"],
                "stopped": m["stopped"],
                "n_test_users": t["n_instances"],
            }
            atomic_write_json(RESULTS, results)
    print(table(results, args.dataset))
    return 0


def table(results: dict, datasets: list[str]) -> str:
    """Markdown table of every stored row of ``datasets`` plus the published reference."""
    lines = ["| dataset | model | Recall@10 | NDCG@10 | Recall@5 | NDCG@5 | params |"]
    lines.append("|---|---|---|---|---|---|---|")
    for d in datasets:
        for name, r in sorted(results.get(d, {}).items()):
            lines.append(
                f"| {d} | {name} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
                f"{r.get('recall@5', float('nan')):.4f} | {r.get('ndcg@5', float('nan')):.4f} | "
                f"{r.get('parameters', '-')} |"
            )
        if d in PUBLISHED:
            ref, v = PUBLISHED[d]
            lines.append(f"| {d} | {ref} (published) | {v['recall@10']} | {v['ndcg@10']} | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
