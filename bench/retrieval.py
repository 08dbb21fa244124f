"""Generative retrieval (OneRec, OneRec-V2, TIGER-style) beside SASRec and popularity, under
both history protocols, ranked exactly and by the beam.

Usage: python bench/retrieval.py [--dataset amazon-beauty ...]
       [--model onerec-v2 sasrec popularity onerec tiger] [--out runs/bench-retrieval]
       [--minutes 60] [--label L] [--a.b=c ...]

For each dataset the run folder is prepared and given semantic IDs through the same code as the
CLI when they are missing (`reelrec encode`, `align`, `tokenize` for OneRec's balanced RQ-Kmeans
IDs in RUN/tokenizer, `tokenize --method rq-vae` for TIGER's in RUN/tokenizer-rq-vae; datasets
without item text get behaviour-only item2vec embeddings, quantised without alignment). Each
model trains with its preset (`reelrec train NAME`; SASRec with configs/sasrec-<dataset>.yaml
where that file exists) with early stopping on validation NDCG@10 (patience from the preset),
``--minutes`` only as a safety cap: a row is ``converged: true`` only when patience stopped it
with its best epoch before the last; one stopped by the epoch limit or the cap is ``false``.
Seconds per epoch and to the best epoch include the validation of each epoch. Every model is
tested by full ranking of the test split under the protocol of its config
(``eval.mask_history``) and under both protocols
(``unmasked``, ``masked``), generators also by their beam's list (``beam``). Rows are merged
into ``bench/results/retrieval.json`` as ``{"<dataset>": {"<model>": {...}}}`` with the command,
epochs (best), seconds per epoch, seconds to the best epoch and wall time, and printed beside
the published numbers. Real data only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reelrec.config import ConfigError
from reelrec.data.sources import DATASETS
from reelrec.io import atomic_write_json
from reelrec.run import Run, resolve_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "retrieval.json"
#: published test numbers and their protocol (TIGER arXiv 2305.05065 Table 3; HSTU arXiv
#: 2402.17152 Table 2; RPG arXiv 2506.05781 Table 2; RecBole from shared/PEERS.md)
PUBLISHED = {
    "amazon-beauty": [
        ("TIGER", {"recall@10": 0.0648, "ndcg@10": 0.0384}, "paper; masking not stated"),
        ("RPG", {"recall@10": float("nan"), "ndcg@10": 0.0464}, "paper; own preprocessing"),
        ("RecBole SASRec", {"recall@10": 0.0815, "ndcg@10": 0.0409}, "unmasked (PEERS.md)"),
    ],
    "amazon-sports": [
        ("TIGER", {"recall@10": 0.0400, "ndcg@10": 0.0225}, "paper; masking not stated"),
        ("RPG", {"recall@10": float("nan"), "ndcg@10": 0.0263}, "paper; own preprocessing"),
    ],
    "amazon-toys": [
        ("TIGER", {"recall@10": 0.0712, "ndcg@10": 0.0432}, "paper; masking not stated"),
        ("RPG", {"recall@10": float("nan"), "ndcg@10": 0.0490}, "paper; own preprocessing"),
    ],
    "ml-1m": [("HSTU-large", {"recall@10": 0.3294, "ndcg@10": 0.1893}, "paper; unmasked")],
    "microlens": [
        ("RecBole SASRec", {"recall@10": 0.0496, "ndcg@10": 0.0237}, "unmasked, not converged"),
    ],
}
#: per-dataset settings: ML-1M histories are long (HSTU/SASRec use 200 items)
DATASET_OVERRIDES = {
    "ml-1m": ["--onerec.max_len=200"],
}
GENERATORS = ("onerec", "onerec-v2", "tiger")


def result_row(run: Path, name: str, metrics: dict, command: str, config: str) -> dict:
    """One ``retrieval.json`` row from a model's ``metrics.json`` (and its ``history.json``):
    the test metrics of its own protocol, both protocols, beam vs exact for generators, cost
    and whether the run converged (stopped by patience with its best epoch before the last)."""
    t = metrics["test"]
    row = {k: t[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10") if k in t}
    row["mask_history"] = bool(metrics.get("mask_history", False))
    row["ranking"] = metrics.get("ranking", "exact")
    for protocol, m in metrics.get("test_protocols", {}).items():
        row[protocol] = {k: m[k] for k in ("recall@10", "ndcg@10", "masked_targets")}
    if "test_beam" in metrics:
        row["beam"] = {
            protocol: {k: m[k] for k in ("recall@10", "ndcg@10")}
            for protocol, m in metrics["test_beam"].items()
        }
    row.update(command=command, config=config, n_test_users=t["n_instances"])
    row["parameters"] = metrics.get("parameters")
    row["train_seconds"] = metrics["train_seconds"]
    if "epochs_run" in metrics:
        hist_path = run / "models" / name / "history.json"
        hist = json.loads(hist_path.read_text()) if hist_path.exists() else []
        best, n = metrics["best_epoch"], metrics["epochs_run"]
        row.update(epochs_run=n, best_epoch=best, stopped=metrics["stopped"])
        row["s_per_epoch"] = round(metrics["train_seconds"] / max(n, 1), 1)
        row["seconds_to_best"] = round(sum(h["seconds"] for h in hist[:best]), 1) if hist else None
        row["converged"] = bool(best < n and metrics["stopped"] == "patience")
    return row


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


def model_config(preset: str, dataset: str, extra: list[str]):
    """The config of ``preset`` on ``dataset``: SASRec's frozen YAML where one exists."""
    frozen = ROOT / "configs" / f"{preset}-{dataset}.yaml"
    if preset == "sasrec" and frozen.exists():
        return resolve_config(str(frozen), extra), str(frozen.relative_to(ROOT))
    return resolve_config(preset, extra), f"preset {preset}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Extra --section.key=value arguments override every model's config.",
    )
    p.add_argument("--dataset", nargs="+", default=["amazon-beauty"], help="datasets to run")
    p.add_argument(
        "--model",
        nargs="+",
        default=["popularity", "sasrec", "onerec-v2"],
        choices=["popularity", "sasrec", *GENERATORS],
        help="models to train (presets)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-retrieval")
    p.add_argument(
        "--minutes", type=float, default=60.0, help="safety cap on training per model (minutes)"
    )
    p.add_argument("--label", default="", help="result key suffix and run-name suffix")
    p.add_argument("--table", action="store_true", help="only print the stored table")
    args, overrides = p.parse_known_args(argv)
    unknown = [d for d in args.dataset if d not in DATASETS]
    if unknown:
        p.error(f"unknown dataset {unknown[0]!r}; known: {', '.join(sorted(DATASETS))}")
    if args.table and overrides:
        p.error(f"--table takes no other arguments, got {' '.join(overrides)}")
    if args.table:
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        print(table(results, args.dataset))
        return 0
    for dataset in args.dataset:
        run = args.out / dataset
        for preset in args.model:
            key = preset + (f"-{args.label}" if args.label else "")
            extra = [
                f"--data.dataset={dataset}",
                f"--train.max_minutes={args.minutes}",
                f"--name={key}",
                *(DATASET_OVERRIDES.get(dataset, []) if preset in GENERATORS else []),
                *overrides,
            ]
            try:
                cfg, source = model_config(preset, dataset, extra)
            except ConfigError as exc:
                print(f"bench/retrieval.py: error: {exc}", file=sys.stderr)
                return 2
            if preset in GENERATORS:
                ensure_semantic_ids(run, dataset, cfg.onerec.semantic_ids)
            elif not (run / "data" / "interactions.parquet").exists():
                Run.prepare(run, dataset)
            m = Run(run).train(cfg, resume=True)
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
            row = result_row(run, key, m, command, f"{source} + " + " ".join(extra[1:]))
            # re-read before merging: several bench processes may share the file
            results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            results.setdefault(dataset, {})[key] = row
            atomic_write_json(RESULTS, results)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    print(table(results, args.dataset))
    return 0


def _cell(row: dict, *path: str) -> str:
    for key in path:
        row = row.get(key, {}) if isinstance(row, dict) else {}
    return f"{row:.4f}" if isinstance(row, float) else "-"


def table(results: dict, datasets: list[str]) -> str:
    """Markdown table of the stored rows of ``datasets`` (test split, full ranking) beside the
    published numbers, each with the protocol it used."""
    lines = [
        "| dataset | model | NDCG@10 unmasked | NDCG@10 masked | Recall@10 unmasked | "
        "Recall@10 masked | NDCG@10 beam (unm. / masked) | epochs (best) | s/epoch (with valid.) | "
        "s to best | converged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    commands = []
    for d in datasets:
        for name, r in sorted(results.get(d, {}).items()):
            if "unmasked" not in r:
                continue  # rows recorded before both protocols were measured
            commands.append(f"* {d} / {name}: `{r['command']}` ({r['config']})")
            beam = (
                f"{_cell(r, 'beam', 'unmasked', 'ndcg@10')} / {_cell(r, 'beam', 'masked', 'ndcg@10')}"
                if "beam" in r
                else "-"
            )
            epochs = f"{r['epochs_run']} ({r['best_epoch']})" if "epochs_run" in r else "-"
            conv = {True: "yes", False: "**no**"}.get(r.get("converged"), "-")
            lines.append(
                f"| {d} | {name} | {_cell(r, 'unmasked', 'ndcg@10')} | "
                f"{_cell(r, 'masked', 'ndcg@10')} | {_cell(r, 'unmasked', 'recall@10')} | "
                f"{_cell(r, 'masked', 'recall@10')} | {beam} | {epochs} | "
                f"{r.get('s_per_epoch', '-')} | {r.get('seconds_to_best', '-')} | {conv} |"
            )
        for ref, v, protocol in PUBLISHED.get(d, []):
            recall = v["recall@10"] if v["recall@10"] == v["recall@10"] else ""
            if protocol.startswith("unmasked"):  # a known protocol: its own columns
                lines.append(
                    f"| {d} | {ref} (published: {protocol}) | {v['ndcg@10']} | | {recall} | "
                    "| | | | | |"
                )
            else:  # masking not stated: under neither protocol's columns
                lines.append(
                    f"| {d} | {ref} (published: {protocol}): NDCG@10 {v['ndcg@10']}"
                    + (f", Recall@10 {recall}" if recall else "")
                    + " | | | | | | | | | |"
                )
    return "\n".join([*lines, "", "Commands (config after the parenthesis):", "", *commands])


if __name__ == "__main__":
    sys.exit(main())
