"""OneRec preference alignment on KuaiRand: the P-Score reward model, then IPA (DPO) and ECPO.

Usage: python bench/alignment.py [--dataset kuairand|kuairand-pure] [--out runs/bench-alignment]
       [--minutes 5] [--stage-minutes 0] [--no-ablations] [--threads 1]
       [--a.b=c ...]   (extra overrides go to both alignment stages)

``--dataset kuairand-pure`` runs the same steps on the KuaiRand-Pure impression log (protocol
``kuairand-pure-temporal``): the generator learns users' clicked videos, the reward model's
features carry the last 50 clicked or long-viewed videos, hated videos are ``hate`` = 1, and each
stage also reports the hit rate of the test day's clicked, long-viewed and liked videos
(``<label>_hit_rate@10``). It writes ``bench/results/alignment-kuairand-pure.json``.

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
#: the day hit rates (present where the log has the label)
HIT_KEYS = tuple(
    f"{label}_{what}"
    for label in ("click", "long_view", "like")
    for what in ("hit_rate@10", "day_hits", "day_users")
)
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
    p.add_argument(
        "--dataset", choices=["kuairand", "kuairand-pure"], default="kuairand", help="the log"
    )
    p.add_argument(
        "--stage-minutes",
        type=float,
        default=0.0,
        help="training budget of each alignment stage (0 = the presets' epochs only)",
    )
    p.add_argument("--no-ablations", action="store_true", help="skip the ECPO ablations")
    p.add_argument(
        "--table", action="store_true", help="print the tables of the dataset's JSON and exit"
    )
    args, overrides = p.parse_known_args(argv)
    run = args.out / args.dataset
    results = (
        RESULTS
        if args.dataset == "kuairand"
        else RESULTS.with_name(f"alignment-{args.dataset}.json")
    )
    if args.table:
        print(tables(json.loads(results.read_text())))
        return 0
    if args.dataset == "kuairand-pure" and not (run / "content" / "item_embeddings.npy").exists():
        # item2vec leaves out the clicked videos that never co-occur with another click (146 of
        # the 4,582 training videos), and the generator needs an ID for every training video:
        # the videos' own content (tags and categorical fields) gives every video one
        if not (run / "data" / "interactions.parquet").exists():
            Run.prepare(run, args.dataset)
        Run(run).encode("metadata")
    ensure_semantic_ids(run, args.dataset, "tokenizer")
    common = ["--train.progress=false", f"--train.threads={args.threads}"]
    if args.dataset != "kuairand":
        common.append(f"--data.dataset={args.dataset}")
    # the reward model's behaviour sequence: clicked or long-viewed videos on the impression log
    reward_features = (
        [] if args.dataset == "kuairand" else ["--features.history_labels=[click,long_view]"]
    )
    stage_budget = [f"--train.max_minutes={args.stage_minutes}"] if args.stage_minutes else []
    sft = trained(
        run,
        "onerec",
        "onerec",
        [*common, f"--train.max_minutes={args.minutes}", "--train.epochs=20"],
    )
    reward = trained(run, "pscore", "pscore", [*common, *reward_features])
    single = {
        t: trained(
            run,
            f"pscore-single-{t}",
            "pscore",
            [
                *common,
                *reward_features,
                f"--ranking.tasks=[{t}]",
                "--reward.pscore_loss_weight=0",
            ],
        )
        for t in OBJECTIVES
    }
    stages = {
        kind: trained(run, kind, kind, [*common, *stage_budget, *overrides])
        for kind in ("ipa", "ecpo")
    }
    # ablations of ECPO: illegal outputs penalised (reward 0) instead of dropped; loss weight 1
    ablations = {
        name: trained(run, name, "ecpo", [*common, *stage_budget, *extra, *overrides])
        for name, extra in ({} if args.no_ablations else ABLATIONS).items()
    }
    init = [m["alignment"]["init_test"] for m in (*stages.values(), *ablations.values())]
    if any(x != init[0] for x in init):
        print("warning: the stages saw different SFT metrics (was the SFT model retrained?)")

    out: dict[str, object] = {}

    def keys(m: dict) -> dict:
        return {k: m[k] for k in (*STAGE_KEYS, *HIT_KEYS) if k in m}

    out["sft"] = {
        **keys(stages["ipa"]["alignment"]["init_test"]),
        "next_item_recall@10": sft["test"]["recall@10"],
        "next_item_ndcg@10": sft["test"]["ndcg@10"],
        "train_seconds": sft["train_seconds"],
    }
    for kind, m in stages.items():
        out[kind] = {
            **keys(m["alignment"]["test"]),
            "next_item_recall@10": m["test"]["recall@10"],
            "next_item_ndcg@10": m["test"]["ndcg@10"],
            "best_epoch": m["best_epoch"],
            "epochs_run": m["epochs_run"],
            "train_seconds": m["train_seconds"],
        }
    out["ablations"] = {
        name: {
            **keys(m["alignment"]["test"]),
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
    if args.dataset == "kuairand":
        out["protocol"] = (
            "KuaiRand temporal split; one request per test-day user at its first row of the "
            "day; top 10 by trie-constrained beam search (beam 20); recall/NDCG of the day's "
            "liked videos (per user); hate share = hated videos of the day in the 10 slots; "
            "legal rate over the top 10 of an unconstrained beam search; P-Score by "
            "RUN/models/pscore"
        )
    else:
        out["protocol"] = (
            "KuaiRand-Pure temporal split (train 04-25..05-03, valid 05-04, test 05-05); one "
            "request per test-day user at its first row of the day; top 10 by trie-constrained "
            "beam search (beam 20); recall/NDCG of the day's clicked videos (per user; the "
            "generator's positives); <label>_hit_rate@10 = share of the users with such a video "
            "that day who find one in their 10 slots; hate share = videos with hate = 1 that "
            "day in the 10 slots; legal rate over the top 10 of an unconstrained beam search; "
            "P-Score by RUN/models/pscore (requests in the most frequent training scenario)"
        )
    out["command"] = " ".join(
        [
            ".venv/bin/python bench/alignment.py",
            *([f"--dataset {args.dataset}"] if args.dataset != "kuairand" else []),
            f"--minutes {args.minutes:g} --threads {args.threads}",
            *([f"--stage-minutes {args.stage_minutes:g}"] if args.stage_minutes else []),
            *(["--no-ablations"] if args.no_ablations else []),
            *overrides,
        ]
    )
    atomic_write_json(results, out)
    print(tables(out))
    return 0


def vocabulary_coverage(run: Path) -> dict:
    """How many of the test day's liked / hated rows are videos the generator can output (the
    items with a semantic ID): a bound on what recall and hate share can show."""
    import pandas as pd

    from reelrec.data.prepare import load_prepared
    from reelrec.data.splits import positive_mask
    from reelrec.eval.alignment import hated_mask

    vocab = pd.read_parquet(run / "tokenizer" / "semantic_ids.parquet", columns=["item_id"])
    prep = load_prepared(run)
    inter = prep.interactions
    positive = positive_mask(inter, prep.protocol)
    test = inter["split"].to_numpy() == 2
    known = inter["item_id"].isin(set(vocab["item_id"])).to_numpy()[test]
    # "liked" = the protocol's positive (like; kuairand-pure: click); hated = like 0 / hate 1
    liked = positive[test]
    hated = hated_mask(inter)[test]
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
    if "click_hit_rate@10" in out["sft"]:
        lines += [
            "",
            "| stage | clicked hit rate@10 | long-viewed hit rate@10 | liked hit rate@10 |",
            "|---|---|---|---|",
        ]
        for stage, r in rows.items():
            lines.append(
                f"| {stage} | "
                + " | ".join(
                    f"{r[f'{x}_hit_rate@10']:.4f}"
                    + (f" ({r[f'{x}_day_hits']} hits)" if f"{x}_day_hits" in r else "")
                    for x in ("click", "long_view", "like")
                )
                + " |"
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
