"""OneRec preference alignment on KuaiRand: the P-Score reward model, then IPA (DPO) and ECPO.

Usage: python bench/alignment.py [--out runs/bench-alignment] [--minutes 5] [--threads 1]
       [--a.b=c ...]   (extra overrides go to both alignment stages)

Steps, each through the same code as the CLI and skipped when its model already finished:

1. ``runs/bench-alignment/kuairand``: prepared, item2vec embeddings, balanced RQ-Kmeans
   semantic IDs (as ``bench/retrieval.py``), then the SFT generator ``reelrec train onerec``
   with ``--train.max_minutes`` (the retrieval bench's setting).
2. The reward model ``reelrec train pscore`` (all 7 objectives + P-Score), and for each
   objective a single-task baseline of the same network (``--ranking.tasks=[t]
   --reward.pscore_loss_weight=0``): test AUC / GAUC per objective side by side.
3. ``reelrec train ipa`` and ``reelrec train ecpo``, both from the SFT model; ablations of
   ECPO: illegal outputs penalised instead of dropped (``--preference.illegal=penalize``) and
   the loss weight 1 instead of the preset's 0.05.
4. Every stage (sft, ipa, ecpo) on the test day by ``reelrec.eval.alignment`` (one request per
   user at the start of the day): reward-model P-Score mean / max over the top 10, Recall@10 /
   NDCG@10 of the day's liked videos, share of hated videos in the top 10, legal-ID rate of an
   unconstrained beam search.

Writes ``bench/results/alignment.json``:
``{"sft"|"ipa"|"ecpo": {"pscore_mean@10", "pscore_max@10", "recall@10", "ndcg@10",
"hate_share@10", "legal_rate", ...}, "reward_model": {...}, "command": ...}`` and prints tables.
Real data only (``$REELREC_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import ensure_semantic_ids  # noqa: E402

from reelrec.io import atomic_write_json  # noqa: E402
from reelrec.run import Run, resolve_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "alignment.json"
OBJECTIVES = ["click", "long_view", "like", "follow", "comment", "forward"]
ABLATIONS = {
    "ecpo-penalize": ["--preference.illegal=penalize"],
    "ecpo-weight1": ["--preference.weight=1.0"],
}
STAGE_KEYS = (
    "pscore_mean@10",
    "pscore_max@10",
    "recall@10",
    "ndcg@10",
    "hate_share@10",
    "legal_rate",
    "like_hits",
    "hate_hits",
    "users",
    "users_with_likes",
)


def trained(run: Path, name: str, preset: str, overrides: list[str]) -> dict:
    """The metrics of ``RUN/models/name``, training it first unless it finished."""
    path = run / "models" / name / "metrics.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = resolve_config(preset, [f"--name={name}", *overrides])
    return Run(run).train(cfg, resume=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Extra --section.key=value arguments override both alignment presets.",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-alignment")
    p.add_argument("--minutes", type=float, default=5.0, help="SFT training budget (minutes)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args, overrides = p.parse_known_args(argv)
    run = args.out / "kuairand"
    ensure_semantic_ids(run, "kuairand", "tokenizer")
    common = ["--train.progress=false", f"--train.threads={args.threads}"]
    sft = trained(
        run,
        "onerec",
        "onerec",
        [*common, f"--train.max_minutes={args.minutes}", "--train.epochs=20"],
    )
    reward = trained(run, "pscore", "pscore", common)
    single = {
        t: trained(
            run,
            f"pscore-single-{t}",
            "pscore",
            [*common, f"--ranking.tasks=[{t}]", "--reward.pscore_loss_weight=0"],
        )
        for t in OBJECTIVES
    }
    stages = {kind: trained(run, kind, kind, [*common, *overrides]) for kind in ("ipa", "ecpo")}
    # ablations of ECPO: illegal outputs penalised (reward 0) instead of dropped; loss weight 1
    ablations = {
        name: trained(run, name, "ecpo", [*common, *extra, *overrides])
        for name, extra in ABLATIONS.items()
    }
    init = [m["alignment"]["init_test"] for m in (*stages.values(), *ablations.values())]
    if any(x != init[0] for x in init):
        print("warning: the stages saw different SFT metrics (was the SFT model retrained?)")

    out: dict[str, object] = {}
    out["sft"] = {
        **{k: stages["ipa"]["alignment"]["init_test"][k] for k in STAGE_KEYS},
        "next_item_recall@10": sft["test"]["recall@10"],
        "next_item_ndcg@10": sft["test"]["ndcg@10"],
        "train_seconds": sft["train_seconds"],
    }
    for kind, m in stages.items():
        out[kind] = {
            **{k: m["alignment"]["test"][k] for k in STAGE_KEYS},
            "next_item_recall@10": m["test"]["recall@10"],
            "next_item_ndcg@10": m["test"]["ndcg@10"],
            "best_epoch": m["best_epoch"],
            "epochs_run": m["epochs_run"],
            "train_seconds": m["train_seconds"],
        }
    out["ablations"] = {
        name: {
            **{k: m["alignment"]["test"][k] for k in STAGE_KEYS},
            "overrides": " ".join(ABLATIONS[name]),
            "best_epoch": m["best_epoch"],
            "epochs_run": m["epochs_run"],
        }
        for name, m in ablations.items()
    }
    objectives = {}
    for t in OBJECTIVES:
        multi = reward["test"]["tasks"][t]
        one = single[t]["test"]["tasks"][t]
        ps = reward["pscore"]["test"][t]
        objectives[t] = {
            "tower_auc": multi["auc"],
            "tower_gauc": multi["gauc"],
            "single_task_auc": one["auc"],
            "single_task_gauc": one["gauc"],
            "pscore_auc": ps["auc"],
            "pscore_gauc": ps["gauc"],
            "test_positives": multi["positives"],
        }
    out["reward_model"] = {
        "objectives": objectives,
        "watch_ratio_mae": reward["test"]["tasks"]["watch_ratio"]["mae"],
        "parameters": reward["parameters"],
        "train_seconds": reward["train_seconds"],
    }
    out["vocabulary_coverage"] = vocabulary_coverage(run)
    out["protocol"] = (
        "KuaiRand temporal split; one request per test-day user at its first row of the day; "
        "top 10 by trie-constrained beam search (beam 20); recall/NDCG of the day's liked "
        "videos (per user); hate share = hated videos of the day in the 10 slots; legal rate "
        "over the top 10 of an unconstrained beam search; P-Score by RUN/models/pscore"
    )
    out["command"] = " ".join(
        [
            ".venv/bin/python bench/alignment.py",
            f"--minutes {args.minutes:g} --threads {args.threads}",
            *overrides,
        ]
    )
    atomic_write_json(RESULTS, out)
    print(tables(out))
    return 0


def vocabulary_coverage(run: Path) -> dict:
    """How many of the test day's liked / hated rows are videos the generator can output (the
    items with a semantic ID): a bound on what recall and hate share can show."""
    import pandas as pd

    vocab = pd.read_parquet(run / "tokenizer" / "semantic_ids.parquet", columns=["item_id"])
    inter = pd.read_parquet(
        run / "data" / "interactions.parquet", columns=["item_id", "like", "split"]
    )
    test = inter[inter["split"] == 2]
    known = test["item_id"].isin(set(vocab["item_id"]))
    liked, hated = test["like"] == 1, test["like"] == 0
    return {
        "test_liked_rows": int(liked.sum()),
        "liked_in_vocabulary": float(known[liked].mean()),
        "test_hated_rows": int(hated.sum()),
        "hated_in_vocabulary": float(known[hated].mean()),
        "generator_items": int(len(vocab)),
    }


def tables(out: dict) -> str:
    """Markdown tables of the stages and of the reward model."""
    lines = [
        "| stage | P-Score mean@10 | P-Score max@10 | Recall@10 | NDCG@10 | hate share@10 "
        "| legal rate | like hits | hate hits |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {s: out[s] for s in ("sft", "ipa", "ecpo")} | out.get("ablations", {})
    for stage, r in rows.items():
        lines.append(
            f"| {stage} | {r['pscore_mean@10']:.4f} | {r['pscore_max@10']:.4f} | "
            f"{r['recall@10']:.4f} | {r['ndcg@10']:.4f} | {r['hate_share@10']:.4f} | "
            f"{r['legal_rate']:.4f} | {r['like_hits']} | {r['hate_hits']} |"
        )
    lines += [
        "",
        "| objective | multi-task tower AUC / GAUC | single-task AUC / GAUC | P-Score AUC / GAUC |",
        "|---|---|---|---|",
    ]
    for t, r in out["reward_model"]["objectives"].items():
        lines.append(
            f"| {t} | {r['tower_auc']:.4f} / {r['tower_gauc']:.4f} | "
            f"{r['single_task_auc']:.4f} / {r['single_task_gauc']:.4f} | "
            f"{r['pscore_auc']:.4f} / {r['pscore_gauc']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
