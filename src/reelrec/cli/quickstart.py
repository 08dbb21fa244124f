"""``reelrec quickstart``: the main job.

Two chains, by dataset:

* a dataset with item content (``microlens``: video titles) runs the content-to-feed chain:
  prepare -> encode the titles (e5-small) -> QARM alignment -> balanced RQ-Kmeans semantic IDs
  -> popularity, SASRec and OneRec-V2 (each with a wall-clock budget) -> full-ranking
  evaluation -> ``RUN/metrics.json`` and ``RUN/report.md`` (data, content, semantic IDs,
  retrieval metrics, training curves);
* KuaiRand (the default today): prepare -> popularity and SASRec on each user's liked-video
  sequence (temporal split) -> evaluation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reelrec.cli.common import add_data_args, parse_with_overrides
from reelrec.config import ConfigError
from reelrec.run import Run
from reelrec.tasks.registry import MODELS, resolve_config

#: datasets whose quickstart runs the content chain (titles -> semantic IDs -> generator)
CONTENT_CHAIN = ("microlens",)
#: the shared sections every model has: an override of one of them goes to every model
SHARED_SECTIONS = ("data", "train", "eval")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec quickstart``."""
    p = argparse.ArgumentParser(
        prog="reelrec quickstart",
        description="The main job on real data, into RUN (default runs/quickstart). --dataset "
        "microlens (the default): prepare MicroLens-50K, embed the 19,220 video titles "
        "(e5-small: about 6.5 minutes on 2 cores the first time, then read from "
        "~/.cache/reelrec), align them to behaviour (QARM), quantise them into semantic IDs "
        "(balanced RQ-Kmeans), train popularity, SASRec and OneRec-V2 within wall-clock "
        "budgets, rank the test items of a fixed random 5,000 of the 50,000 users "
        "(--eval-users) over every item, and write RUN/metrics.json and RUN/report.md, which "
        "ends with the command that serves the run (reelrec serve RUN: OneRec-V2 generates, "
        "SASRec ranks); about 13.5 minutes on 2 quiet CPU cores; budgeted, not converged: the "
        "converged numbers are bench/retrieval.py's (docs/results.md). Other datasets: "
        "popularity and SASRec (preset sasrec-kuairand on kuairand: about 2 minutes).",
        epilog="Extra --section.key=value arguments override the models' configs: a shared "
        "section (data, train, eval) every model's, a model's own section (sasrec, onerec) that "
        "model's, e.g. --train.max_minutes=10 --onerec.hidden=64. The content chain's "
        "budgets: --sasrec-minutes, --generator-minutes, --align-epochs, --eval-users.",
    )
    add_data_args(p, dataset_default="microlens")
    p.add_argument(
        "--out", type=Path, default=Path("runs/quickstart"), help="run folder (runs/quickstart)"
    )
    chain = p.add_argument_group("content chain (datasets with titles: microlens)")
    chain.add_argument(
        "--sasrec-minutes",
        type=float,
        default=1.5,
        help="SASRec's training budget, checked after each epoch (default 1.5)",
    )
    chain.add_argument(
        "--generator-minutes",
        type=float,
        default=1.5,
        help="OneRec-V2's training budget, checked after each epoch (default 1.5)",
    )
    chain.add_argument(
        "--align-epochs", type=int, default=2, help="QARM alignment epochs (default 2)"
    )
    chain.add_argument(
        "--encoder",
        default="auto",
        help="item encoder of `reelrec encode` (default auto: e5-small over the titles)",
    )
    chain.add_argument(
        "--eval-users",
        type=int,
        default=5000,
        help="users whose test items are ranked (a fixed random subset, the same for every "
        "model; 0 = all; default 5000)",
    )
    return p


def route(overrides: list[str], model: str) -> list[str]:
    """The overrides that apply to ``model``: shared sections, and the model's own."""
    own = MODELS[model].sections
    return [o for o in overrides if o[2:].split(".", 1)[0] in (*SHARED_SECTIONS, *own)]


def content_chain(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Prepare -> encode -> align -> tokenize -> popularity, SASRec, OneRec-V2 -> evaluate;
    returns ``RUN/metrics.json``'s content."""
    models = ("popularity", "sasrec", "onerec-v2")
    known = {s for m in models for s in MODELS[m].sections} | set(SHARED_SECTIONS)
    stray = [o for o in overrides if o[2:].split(".", 1)[0] not in known]
    if stray:
        raise ConfigError(
            f"override(s) {stray} name no section of the chain's models "
            f"({', '.join(sorted(known))})"
        )
    data = [
        f"--data.dataset={args.dataset}",
        f"--data.protocol={args.protocol}",
        f"--data.data_dir={args.data_dir}",
        f"--eval.max_users={args.eval_users}",
    ]
    configs = {
        "popularity": resolve_config("popularity", data + route(overrides, "popularity")),
        # the SASRec of the MicroLens row of docs/results.md: post-LN, one sample per prefix
        "sasrec": resolve_config(
            "sasrec",
            data
            + [
                "--sasrec.norm_first=false",
                "--sasrec.prefixes=true",
                f"--train.max_minutes={args.sasrec_minutes}",
            ]
            + route(overrides, "sasrec"),
        ),
        # the causal context: every position of a window is a target in one pass, so an epoch
        # over MicroLens fits the budget (the pathways context trains one target per window)
        "onerec-v2": resolve_config(
            "onerec-v2",
            data
            + [
                "--onerec.context=causal",
                "--onerec.valid_instances=2000",
                f"--train.max_minutes={args.generator_minutes}",
            ]
            + route(overrides, "onerec-v2"),
        ),
    }
    stage_seconds: dict[str, float] = {}

    def stage(name: str, fn):
        t = time.perf_counter()
        print(f"\n== {name}", flush=True)
        out = fn()
        stage_seconds[name] = round(time.perf_counter() - t, 1)
        return out

    run = stage(
        "prepare", lambda: Run.prepare(args.out, args.dataset, args.protocol, args.data_dir)
    )
    stage("encode titles", lambda: run.encode(args.encoder))
    stage("QARM alignment", lambda: run.align([f"--align.epochs={args.align_epochs}"]))
    stage("semantic IDs", lambda: run.tokenize())
    for name, cfg in configs.items():
        stage(f"train {name}", lambda cfg=cfg: run.train(cfg, resume=False))
    metrics = stage("evaluate", lambda: run.evaluate())
    print("\nseconds per stage:")
    for name, sec in stage_seconds.items():
        print(f"  {name:<18} {sec:>7.1f}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec quickstart``; returns the exit status."""
    args, overrides = parse_with_overrides(build_parser(), argv)
    t0 = time.perf_counter()
    if args.dataset in CONTENT_CHAIN:
        metrics = content_chain(args, overrides)
    else:
        data = [
            f"--data.dataset={args.dataset}",
            f"--data.protocol={args.protocol}",
            f"--data.data_dir={args.data_dir}",
        ]
        preset = "sasrec-kuairand" if args.dataset == "kuairand" else "sasrec"
        sasrec = resolve_config(preset, data + overrides)
        popularity = resolve_config(
            "popularity", data + [f"--eval.ks={','.join(map(str, sasrec.eval.ks))}"]
        )
        run = Run.prepare(args.out, args.dataset, args.protocol, args.data_dir)
        run.train(popularity, resume=False)
        run.train(sasrec, resume=False)
        metrics = run.evaluate()
    models = metrics["models"]
    print()
    print(f"{'model':<12} {'recall@10':>10} {'ndcg@10':>10}")
    for name, m in models.items():
        print(f"{name:<12} {m['recall@10']:>10.4f} {m['ndcg@10']:>10.4f}", flush=True)
    print(
        f"\ndone in {time.perf_counter() - t0:.0f}s. Results: {args.out / 'metrics.json'}, "
        f"report: {args.out / 'report.md'}"
    )
    if (args.out / "models" / "onerec-v2").is_dir():
        print(f"serve it (OneRec-V2 candidates, SASRec ranker): reelrec serve {args.out}")
    return 0
