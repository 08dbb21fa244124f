"""Multi-task ranking on KuaiRand: CAN against DIN and DeepFM, the CAN ablations, speed, and smoke
runs on the Taobao, Criteo and Avazu samples.

Usage: python bench/ranking.py [--out runs/bench-ranking] [--only LABEL ...] [--skip-smoke]
       [--threads 1] [--seeds 2024 1 2] [--a.b=c ...]

KuaiRand (temporal split of DESIGN.md: train 04-08..16, valid 04-17, test 04-18): every variant
trains with its preset through ``reelrec train`` (early stopping on the mean validation AUC over
the binary tasks, patience 3) and is tested on the test day's 2,220 impressions: AUC, GAUC
(single-class users left out) and LogLoss per task, MAE/RMSE of the watch ratio. Variants:

* ``deepfm``, ``din``, ``can``: the presets, all features (ids, hour, duration, user profile and
  the real-time counters of the video and the user);
* ``*-no-counters``: the same without the counters (the feature set closest to the peers' in
  shared/PEERS.md); the CAN ablations use this base, where the model structure matters most:
  ``can-order1`` (orders 1 instead of 1..3), ``can-sum-pooling`` (the paper's sum pooling),
  ``can-shared`` (no order or combination independence), ``can-sid`` (semantic-ID codes of the
  target and the history as features, and code-level co-action pairs), ``can-sid-vq`` (plus
  QARM VQ codes of the target);
* ``deepfm-single-task``, ``din-single-task``: one model per task (like, long_view, click),
  no counters: the peers' protocol in shared/PEERS.md; ``deepfm-no-counters-like-stop``: the
  multi-task DeepFM with early stopping on the validation like AUC (is the single-task gap on
  like the tasks or the stopping metric?).

KuaiRand-Pure (``--dataset kuairand-pure``; protocol ``kuairand-pure-temporal``: train 04-25..05-03,
valid 05-04, test 05-05, the split of the FuxiCTR runs in shared/PEERS.md): 149,734 training
impressions, 13,091 test impressions of 7,517 users. Every variant uses the behaviour sequence of
the user's last 50 clicked or long-viewed videos (strictly earlier rows), the video's basic fields,
tags and scenario. Variants (``PURE_VARIANTS``): ``deepfm``, ``din``, ``can`` multi-task over the 7
tasks; ``*-single-task`` one model per task (click, long_view, like); ``mmoe`` and ``ple``
(embedding concatenation into MMoE / PLE experts, as FuxiCTR's); ``can-ple`` (CAN's
representation into PLE); CAN ablations ``can-order1``, ``can-shared`` (no order / combination
independence), ``can-no-counters``, ``can-sid`` (content semantic-ID codes of the target and the
history, from the videos' tags and categorical fields: ``reelrec encode --encoder metadata`` then
plain residual k-means), ``can-qarm`` (QARM VQ codes of the QARM-aligned content embeddings);
``deepfm-gauc-stop`` (early stopping on the mean validation GAUC instead of AUC);
``deepfm-daily``, ``can-daily`` (the user's counters over strictly earlier days only,
``--features.user_counters=daily``: constant over a user's day).
Model-free references (smoothed per-video and per-user training rates) are scored beside them.

Every variant runs with each of ``--seeds`` (default 2024, 1, 2); ``ranking.json`` holds the
mean, the std and the per-seed values.

Speed: training samples/s (training impressions x epochs / seconds of the epochs, validation
included) and the latency of ``score_candidates`` on 1,000 test impressions (median of 30, one
thread). Smoke runs: each model for at most 5 epochs on the Taobao UserBehavior head (predict
cart/fav/buy vs page view), Criteo and Avazu samples (click); DIN and CAN see no behaviour
sequence on Criteo/Avazu (CAN pairs two categorical fields there) and GAUC equals AUC (no
user ids). Writes ``bench/results/ranking.json`` (``{dataset: {model: {task: {auc, gauc,
logloss}}}}``) and ``bench/results/ranking_speed.json``. Real data only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reelrec.data.ctr import CTRTrainSet, avazu_ctr, criteo_ctr, taobao_ctr
from reelrec.data.sources import data_root
from reelrec.eval.ctr import evaluate_ctr
from reelrec.io import atomic_write_json
from reelrec.run import Run, resolve_config
from reelrec.tasks.registry import MODELS
from reelrec.training.loop import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval import ensure_semantic_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NO_COUNTERS = ["--features.counters=false"]
SID = [
    "--features.semantic_ids=tokenizer",
    "--can.pairs=[video_id:hist_video,duration:hist_video,sid_1:hist_sid_1,sid_2:hist_sid_2,"
    "sid_3:hist_sid_3]",
]
#: label -> (preset, overrides)
VARIANTS = {
    "deepfm": ("deepfm", []),
    "din": ("din", []),
    "can": ("can", []),
    "deepfm-no-counters": ("deepfm", NO_COUNTERS),
    "deepfm-single-task": ("deepfm", NO_COUNTERS),
    "deepfm-no-counters-like-stop": ("deepfm", [*NO_COUNTERS, "--train.metric=like/auc"]),
    "din-single-task": ("din", NO_COUNTERS),
    "din-no-counters": ("din", NO_COUNTERS),
    "can-no-counters": ("can", NO_COUNTERS),
    "can-order1": ("can", [*NO_COUNTERS, "--can.orders=1"]),
    "can-sum-pooling": ("can", [*NO_COUNTERS, "--can.pooling=sum"]),
    "can-shared": (
        "can",
        [*NO_COUNTERS, "--can.order_independent=false", "--can.pair_independent=false"],
    ),
    "can-sid": ("can", [*NO_COUNTERS, *SID]),
    "can-sid-vq": ("can", [*NO_COUNTERS, *SID, "--features.vq_codes=tokenizer-vq"]),
}
#: what every KuaiRand-Pure variant shares: the dataset and histories of clicked / long-viewed
#: videos (the peers' history is the last 50 clicked videos of earlier days)
PURE = ["--data.dataset=kuairand-pure", "--features.history_labels=[click,long_view]"]
PURE_SID = [
    "--features.semantic_ids=tokenizer-content",
    "--can.pairs=[video_id:hist_video,duration:hist_video,sid_1:hist_sid_1,sid_2:hist_sid_2]",
]
#: label -> (preset, overrides) on kuairand-pure
PURE_VARIANTS = {
    "deepfm": ("deepfm", []),
    "deepfm-single-task": ("deepfm", []),
    "mmoe": ("mmoe", []),
    "ple": ("ple", []),
    "din": ("din", []),
    "din-single-task": ("din", []),
    "can": ("can", []),
    "can-single-task": ("can", []),
    "can-ple": ("can", ["--ranking.multitask=ple"]),
    "can-order1": ("can", ["--can.orders=1"]),
    "can-shared": ("can", ["--can.order_independent=false", "--can.pair_independent=false"]),
    "can-no-counters": ("can", NO_COUNTERS),
    "can-sid": ("can", PURE_SID),
    "can-qarm": ("can", ["--features.vq_codes=tokenizer-qarm"]),
    # AUC peaks after 1-2 epochs while GAUC keeps rising for 2-3 more: the same DeepFM with
    # early stopping on the mean validation GAUC instead
    "deepfm-gauc-stop": ("deepfm", ["--train.metric=gauc"]),
    # the user's counters over earlier days only: the real-time ones drift within a user's day,
    # and that drift costs GAUC (docs/results.md)
    "deepfm-daily": ("deepfm", ["--features.user_counters=daily"]),
    "can-daily": ("can", ["--features.user_counters=daily"]),
}
#: the tasks of the single-task rows (shared/PEERS.md trains one model per task)
SINGLE_TASK = ["like", "long_view", "click"]
SMOKE_PAIRS = {
    "criteo-sample": ["C1:C2", "C3:C4"],
    "avazu-sample": ["site_id:device_model", "app_id:device_model"],
}


def per_task(test: dict) -> dict:
    """``{task: {auc, gauc, logloss}}`` (watch ratio: ``{mae, rmse}``) from evaluate_ctr."""
    out = {}
    for task, m in test["tasks"].items():
        keys = ("auc", "gauc", "logloss") if "auc" in m else ("mae", "rmse")
        out[task] = {k: m.get(k) for k in keys}
    return out


def latency_ms(model: torch.nn.Module, data, rows: np.ndarray, reps: int = 30) -> float:
    """Median milliseconds of ``score_candidates`` on 1,000 rows (one batch)."""
    batch = data.batch(np.resize(rows, 1000))  # smaller test sets are repeated to 1,000
    model.eval()
    model.score_candidates(batch)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        model.score_candidates(batch)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def ensure_vq(run: Path) -> None:
    """QARM VQ codes of the run's items in RUN/tokenizer-vq unless present."""
    if not (run / "tokenizer-vq" / "vq_codes.parquet").exists():
        Run(run).tokenize("vq", run / "tokenizer-vq", ["--tokenizer.embeddings=raw"])


def aggregate(runs: list[dict]) -> dict:
    """Mean over seeds of each task's metrics, with ``<metric>_std`` (population std) and the
    seeds' values in ``<metric>_runs``."""
    out: dict[str, dict] = {}
    for task in runs[0]:
        out[task] = {}
        for k in runs[0][task]:
            vals = [r[task][k] for r in runs if r[task][k] is not None]
            out[task][k] = round(float(np.mean(vals)), 4) if vals else None
            out[task][f"{k}_std"] = round(float(np.std(vals)), 4) if vals else None
            out[task][f"{k}_runs"] = [round(v, 4) for v in vals]
    return out


def ensure_content_codes(run: Path) -> None:
    """KuaiRand-Pure content codes: metadata embeddings (tags, categorical fields), semantic IDs
    by plain residual k-means (identical metadata -> identical codes) in RUN/tokenizer-content,
    and QARM VQ codes of the aligned embeddings in RUN/tokenizer-qarm."""
    if not (run / "data" / "interactions.parquet").exists():
        Run.prepare(run, "kuairand-pure")
    r = Run(run)
    if not (run / "content" / "item_embeddings.npy").exists():
        r.encode("metadata")
    if not (run / "tokenizer-content" / "semantic_ids.parquet").exists():
        r.tokenize(
            "rq-kmeans",
            run / "tokenizer-content",
            ["--tokenizer.embeddings=raw", "--tokenizer.levels=2", "--tokenizer.codebook_size=32"],
        )
    if not (run / "tokenizer-qarm" / "vq_codes.parquet").exists():
        if not (run / "content" / "aligned_embeddings.npy").exists():
            r.align()
        r.tokenize("vq", run / "tokenizer-qarm", ["--tokenizer.embeddings=aligned"])


def model_free(run: Path) -> dict:
    """Smoothed training-split rates as scores of the test day: per video (click, long_view,
    like) and per user (like), each ``(hits + m * global rate) / (count + m)`` with m = 10."""
    from reelrec.data.prepare import load_prepared
    from reelrec.eval.ctr import task_metrics

    inter = load_prepared(run).interactions
    train, test = inter[inter["split"] == 0], inter[inter["split"] == 2]
    out = {}
    for key, label in (("item_id", "click"), ("item_id", "long_view"), ("user_id", "like")):
        g = train.groupby(key)[label].agg(["sum", "count"])
        prior = float(train[label].mean())
        rate = (g["sum"] + 10 * prior) / (g["count"] + 10)
        p = test[key].map(rate).fillna(prior).to_numpy(dtype=np.float64)
        y = test[label].to_numpy(dtype=np.float64)
        m = task_metrics([label], [True], y[:, None], p[:, None], test["user_id"].to_numpy())
        who = "video" if key == "item_id" else "user"
        out[f"per-{who} {label} rate"] = {
            label: {k: round(m[label][k], 4) for k in ("auc", "gauc", "logloss")}
        }
    return out


def run_kuairand(
    out: Path,
    labels: list[str],
    seeds: list[int],
    extra: list[str],
    results: dict,
    speed: dict,
    dataset: str = "kuairand",
) -> None:
    run = out / dataset
    if dataset == "kuairand":
        ensure_semantic_ids(run, "kuairand", "tokenizer")
        ensure_vq(run)
        variants, common = VARIANTS, []
    else:
        ensure_content_codes(run)
        variants, common = PURE_VARIANTS, PURE
        results.setdefault(dataset, {}).update(model_free(run))
    for label in labels:
        preset, overrides = variants[label]
        tasks = SINGLE_TASK if label.endswith("-single-task") else [None]
        per_seed, rates, epochs, runs_, per_epoch = [], [], [], [], []
        for seed in seeds:
            merged: dict = {}
            for task in tasks:
                name = f"{label}-{task}-s{seed}" if task else f"{label}-s{seed}"
                task_args = [f"--ranking.tasks=[{task}]"] if task else []
                cfg = resolve_config(
                    preset,
                    [
                        *common,
                        *overrides,
                        *task_args,
                        f"--name={name}",
                        f"--train.seed={seed}",
                        "--train.progress=false",
                        *extra,
                    ],
                )
                m = Run(run).train(cfg)
                merged.update(per_task(m["test"]))
                rates.append(m["train_samples_per_s"])
                epochs.append(m["best_epoch"])
                runs_.append(m["epochs_run"])
                per_epoch.append(m["train_seconds"] / max(m["epochs_run"], 1))
            per_seed.append(merged)
        results.setdefault(dataset, {})[label] = aggregate(per_seed)
        trained = Run(run).trained(name)
        model, data = trained.model, trained.data
        flag = "" if dataset == "kuairand" else f" --dataset {dataset}"
        speed.setdefault(dataset, {})[label] = {
            "train_samples_per_s": round(float(np.median(rates)), 1),
            "seconds_per_epoch": round(float(np.median(per_epoch)), 2),
            "score_ms_per_1000": round(latency_ms(model, data, data.rows(2)), 2),
            "parameters": m["parameters"],
            "best_epochs": epochs,
            "epochs_run": runs_,
            "seeds": seeds,
            "command": f"python bench/ranking.py{flag} --seeds {' '.join(map(str, seeds))} "
            f"--only {label}",
        }
        save(results, speed, {dataset: [label]})


def run_smoke(out: Path, results: dict, speed: dict) -> None:
    root = data_root()
    sets = {
        "taobao-sample": lambda: taobao_ctr(root / "taobao-userbehavior-head" / "UserBehavior.csv"),
        "criteo-sample": lambda: criteo_ctr(root / "criteo-avazu-samples" / "criteo"),
        "avazu-sample": lambda: avazu_ctr(root / "criteo-avazu-samples" / "avazu"),
    }
    for name, load in sets.items():
        data = load()
        for model_name in ("deepfm", "din", "can"):
            pairs = SMOKE_PAIRS.get(name, [])
            cfg = resolve_config(model_name, ["--train.progress=false"])
            cfg.ranking.tasks = list(data.tasks)
            cfg.can.pairs = pairs
            torch.manual_seed(cfg.train.seed)
            model = MODELS[model_name].build(cfg, data, None)
            tcfg = TrainConfig(
                lr=1e-3, batch_size=256, epochs=5, patience=2, metric="auc", progress=False
            )

            def ev(m, data=data):
                return {k: v for k, v in evaluate_ctr(m, data, 1).items() if k != "tasks"}

            t0 = time.perf_counter()
            res = fit(
                model,
                CTRTrainSet(data),
                ev,
                tcfg,
                out / name / model_name,
                resume=False,
                log=lambda s: None,
            )
            secs = time.perf_counter() - t0
            test = evaluate_ctr(model, data, 2)
            results.setdefault(name, {})[model_name] = per_task(test)
            speed.setdefault(name, {})[model_name] = {
                "train_samples_per_s": round(len(data.rows(0)) * len(res.history) / secs, 1),
                "score_ms_per_1000": round(latency_ms(model, data, data.rows(2)), 2),
                "best_epoch": res.best_epoch,
                "test_rows": int(len(data.rows(2))),
            }
            print(f"{name} {model_name}: test AUC {test['auc']:.4f} (best epoch {res.best_epoch})")
            save(results, speed)


#: FuxiCTR 2.3.10 on the same split, from shared/PEERS.md ("Multi-task ranking on kuairand-pure"):
#: task -> model -> (AUC, GAUC, LogLoss at seed 2024, AUC mean and sd over seeds 2024-2026);
#: s/epoch with its npz loader. Peers' numbers, printed beside ours, never computed here.
FUXICTR = {
    "click": {
        "DeepFM": (0.7371, 0.6245, 0.5903, 0.737, 0.002),
        "DIN": (0.7367, 0.6120, 0.5953, 0.738, 0.001),
        "MMoE": (0.7296, 0.6293, 0.6135, 0.731, None),
        "PLE": (0.7346, 0.6293, 0.5981, 0.731, None),
    },
    "long_view": {
        "DeepFM": (0.7318, 0.6482, 0.5370, 0.733, 0.001),
        "DIN": (0.7327, 0.6506, 0.5349, 0.733, 0.000),
        "MMoE": (0.7243, 0.6541, 0.5603, 0.726, None),
        "PLE": (0.7300, 0.6499, 0.5434, 0.727, None),
    },
    "like": {
        "DeepFM": (0.8270, 0.6161, 0.0601, 0.829, 0.007),
        "DIN": (0.8206, 0.6316, 0.0605, 0.811, 0.010),
        "MMoE": (0.8196, 0.6283, 0.0627, 0.818, None),
        "PLE": (0.8301, 0.6386, 0.0595, 0.820, None),
    },
}
FUXICTR_SECONDS = {"DeepFM": 5.0, "DIN": 20.6, "MMoE": 13.2, "PLE": 16.3}


def pure_tables(results: dict, speed: dict) -> str:
    """Markdown tables of the kuairand-pure rows: one per task (ours mean ± std over seeds,
    FuxiCTR's beside them), then speed."""
    rows = results.get("kuairand-pure", {})
    sp = speed.get("kuairand-pure", {})
    lines = []
    for task in ("click", "long_view", "like"):
        lines += [
            f"**{task}**",
            "",
            "| model | AUC | GAUC | LogLoss | best epochs |",
            "|---|---|---|---|---|",
        ]
        for label, r in rows.items():
            if task not in r:
                continue
            m = r[task]

            def cell(k: str, m: dict = m) -> str:
                sd = m.get(f"{k}_std")
                return f"{m[k]:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")

            epochs = sp.get(label, {}).get("best_epochs", "")
            if label.endswith("-single-task") and epochs:
                i = SINGLE_TASK.index(task)
                epochs = epochs[i :: len(SINGLE_TASK)]
            lines.append(
                f"| {label} | {cell('auc')} | {cell('gauc')} | {cell('logloss')} | {epochs} |"
            )
        for model, (auc, gauc, ll, auc3, sd3) in FUXICTR[task].items():
            three = f" (3 seeds {auc3:.3f}" + (f" ± {sd3:.3f})" if sd3 is not None else ")")
            lines.append(f"| FuxiCTR {model} | {auc:.4f}{three} | {gauc:.4f} | {ll:.4f} | |")
        lines.append("")
    lines += [
        "| model | s/epoch | train samples/s | ms per 1,000 candidates | parameters |",
        "|---|---|---|---|---|",
    ]
    for label, m in sp.items():
        lines.append(
            f"| {label} | {m.get('seconds_per_epoch', '')} | {m['train_samples_per_s']:,.0f} | "
            f"{m['score_ms_per_1000']} | {m['parameters']:,} |"
        )
    for model, sec in FUXICTR_SECONDS.items():
        lines.append(f"| FuxiCTR {model} | {sec} | {154071 / sec:,.0f} | | |")
    return "\n".join(lines)


def save(results: dict, speed: dict, only: dict[str, list[str]] | None = None) -> None:
    """Write both result files. With ``only`` (``{dataset: [label]}``), merge just those rows
    (and the dataset's model-free references) into what is on disk, so that two bench processes
    on different variants never drop each other's rows."""
    if only is None:
        atomic_write_json(RESULTS / "ranking.json", results)
        atomic_write_json(RESULTS / "ranking_speed.json", speed)
        return
    for name, mine in (("ranking.json", results), ("ranking_speed.json", speed)):
        path = RESULTS / name
        disk = json.loads(path.read_text()) if path.exists() else {}
        for dataset, labels in only.items():
            rows = disk.setdefault(dataset, {})
            for key, value in mine.get(dataset, {}).items():
                if key in labels or key.startswith("per-"):
                    rows[key] = value
        atomic_write_json(path, disk)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description="Multi-task ranking on KuaiRand (CAN vs DIN and DeepFM, CAN ablations, speed) "
        "and smoke runs on the Taobao, Criteo and Avazu samples.",
        epilog="Extra --section.key=value arguments override every KuaiRand variant's preset.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/bench-ranking"), help="run folders")
    p.add_argument(
        "--dataset",
        choices=["kuairand", "kuairand-pure"],
        default="kuairand",
        help="kuairand (the like/hate slice) or kuairand-pure (the impression log)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=sorted({*VARIANTS, *PURE_VARIANTS}),
        help="variants to run (default: every variant of --dataset)",
    )
    p.add_argument("--skip-smoke", action="store_true", help="no Taobao/Criteo/Avazu runs")
    p.add_argument(
        "--table",
        action="store_true",
        help="print the kuairand-pure tables of bench/results/*.json (beside FuxiCTR) and exit",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seeds", type=int, nargs="+", default=[2024, 1, 2], help="train.seed values")
    args, extra = p.parse_known_args(argv)
    if args.table:
        results = json.loads((RESULTS / "ranking.json").read_text())
        speed = json.loads((RESULTS / "ranking_speed.json").read_text())
        print(pure_tables(results, speed))
        return 0
    torch.set_num_threads(args.threads)
    results = (
        json.loads((RESULTS / "ranking.json").read_text())
        if (RESULTS / "ranking.json").exists()
        else {}
    )
    speed = (
        json.loads((RESULTS / "ranking_speed.json").read_text())
        if (RESULTS / "ranking_speed.json").exists()
        else {}
    )
    variants = VARIANTS if args.dataset == "kuairand" else PURE_VARIANTS
    unknown = [v for v in args.only or [] if v not in variants]
    if unknown:
        p.error(f"--only {' '.join(unknown)}: not a variant of {args.dataset}")
    run_kuairand(
        args.out, args.only or list(variants), args.seeds, extra, results, speed, args.dataset
    )
    if not args.skip_smoke and not args.only and args.dataset == "kuairand":
        run_smoke(args.out, results, speed)
    print("\n| dataset | model | task | AUC | GAUC | LogLoss |\n|---|---|---|---|---|---|")
    for ds, models in results.items():
        for model, tasks in models.items():
            for task, m in tasks.items():
                if m.get("auc") is not None:
                    print(
                        f"| {ds} | {model} | {task} | {m['auc']:.4f} | {m['gauc']:.4f} | {m['logloss']:.4f} |"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
