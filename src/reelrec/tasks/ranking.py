"""Multi-task ranking on logged impressions: CAN, DIN, DeepFM and OneRec's P-Score reward
model (KuaiRand). Data: :func:`reelrec.data.ctr.kuairand_ctr`; metrics: AUC, GAUC and LogLoss
per task (:func:`reelrec.eval.ctr.evaluate_ctr`), early stopping on the mean validation AUC.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from torch import nn

from reelrec.config import to_yaml
from reelrec.data.ctr import KUAIRAND_TASKS, CTRData, CTRTrainSet, kuairand_ctr
from reelrec.eval.ctr import evaluate_ctr
from reelrec.io import atomic_write_json, run_metadata, sha256_file
from reelrec.tasks.base import (
    Evaluation,
    RunFolder,
    Task,
    check,
    parameters,
    read_details,
    read_history,
)
from reelrec.tasks.config import ExperimentConfig
from reelrec.tasks.retrieval import check_optimizer
from reelrec.training import distributed as D


def trained_tasks(cfg: ExperimentConfig) -> list[str]:
    """The tasks with a loss weight > 0 (their AUC/GAUC form the mean metrics)."""
    w = cfg.ranking.task_weights or [1.0] * len(cfg.ranking.tasks)
    return [t for t, x in zip(cfg.ranking.tasks, w, strict=True) if x > 0]


class RankingTask(Task):
    """CTR / multi-task rankers and the reward model on KuaiRand impressions."""

    name = "ranking"
    scores_requests = True

    def validate(self, cfg: ExperimentConfig) -> None:
        r, f, t = cfg.ranking, cfg.features, cfg.train
        check(
            cfg.data.dataset == "kuairand",
            "data.dataset",
            "kuairand for the ranking models (the other datasets of `reelrec datasets` have no "
            "logged impressions with feedback labels; bench/ranking.py also runs the Taobao, "
            "Criteo and Avazu samples)",
            cfg.data.dataset,
        )
        check_optimizer(cfg)
        weights = r.task_weights or [1.0] * len(r.tasks)
        binary = [x for x, w in zip(r.tasks, weights, strict=False) if x != "watch_ratio" and w > 0]
        metrics = ("auc", "gauc", *(f"{x}/{m}" for x in binary for m in ("auc", "gauc")))
        check(
            len(binary) > 0,
            "ranking.tasks",
            "a list with at least one binary task of loss weight > 0 (early stopping uses AUC)",
            r.tasks,
        )
        check(t.metric in metrics, "train.metric", f"one of {', '.join(metrics)}", t.metric)
        check(r.embed_dim >= 1, "ranking.embed_dim", ">= 1", r.embed_dim)
        check(len(r.mlp) > 0 and min(r.mlp) >= 1, "ranking.mlp", "widths >= 1", r.mlp)
        check(0 <= r.dropout < 1, "ranking.dropout", "in [0, 1)", r.dropout)
        check(all(w >= 1 for w in r.tower), "ranking.tower", "widths >= 1 (or [])", r.tower)
        unknown = [x for x in r.tasks if x not in KUAIRAND_TASKS]
        check(
            len(r.tasks) > 0 and not unknown and len(set(r.tasks)) == len(r.tasks),
            "ranking.tasks",
            f"distinct names from {list(KUAIRAND_TASKS)}",
            r.tasks,
        )
        check(
            r.task_weights == [] or len(r.task_weights) == len(r.tasks),
            "ranking.task_weights",
            f"[] or one weight per task ({len(r.tasks)})",
            r.task_weights,
        )
        check(
            all(math.isfinite(w) and w >= 0 for w in r.task_weights)
            and (sum(r.task_weights) > 0 or not r.task_weights),
            "ranking.task_weights",
            "finite weights >= 0, not all 0",
            r.task_weights,
        )
        check(r.watch_ratio_clip > 0, "ranking.watch_ratio_clip", "> 0", r.watch_ratio_clip)
        check(1 <= f.max_history <= 1000, "features.max_history", "in 1..1000", f.max_history)
        check(f.min_count >= 1, "features.min_count", ">= 1", f.min_count)
        for key, folder in (
            ("features.semantic_ids", f.semantic_ids),
            ("features.vq_codes", f.vq_codes),
        ):
            check(
                folder == "" or (not Path(folder).is_absolute() and ".." not in Path(folder).parts),
                key,
                '"" or a folder inside the run (no absolute path, no ..)',
                folder,
            )
        check(
            len(f.history_labels) > 0 and all(x in KUAIRAND_TASKS[:-1] for x in f.history_labels),
            "features.history_labels",
            f"a non-empty list of {list(KUAIRAND_TASKS[:-1])}",
            f.history_labels,
        )
        if cfg.model in ("din", "can"):
            check(
                len(cfg.din.attention_mlp) > 0 and min(cfg.din.attention_mlp) >= 1,
                "din.attention_mlp",
                "widths >= 1",
                cfg.din.attention_mlp,
            )
        if cfg.model == "can":
            _check_can(cfg)
        if cfg.model == "pscore":
            _check_reward(cfg)

    def data(self, run: RunFolder, cfg: ExperimentConfig) -> CTRData:
        key = ("ctr", to_yaml(cfg.features), tuple(cfg.ranking.tasks), cfg.ranking.watch_ratio_clip)
        return run.cached(
            key,
            lambda: kuairand_ctr(
                run.prep.interactions,
                run.prep.users,
                cfg.features,
                cfg.ranking.tasks,
                run.path,
                cfg.ranking.watch_ratio_clip,
            ),
        )

    def digest(self, cfg: ExperimentConfig, run: RunFolder) -> str:
        files = [
            run.path / folder / name
            for folder, name in (
                (cfg.features.semantic_ids, "semantic_ids.parquet"),
                (cfg.features.vq_codes, "vq_codes.parquet"),
            )
            if folder
        ]
        return "+".join(sha256_file(f) for f in files if f.exists())

    def describe_digest(self, cfg: ExperimentConfig, run: RunFolder) -> str:
        return f"{run.path / cfg.features.semantic_ids} / {run.path / cfg.features.vq_codes}"

    def train_size(self, data: CTRData) -> int:
        return len(data.rows(0))

    def fit(self, cfg, run, model, data, out, resume, log) -> dict[str, Any]:
        from reelrec.models.reward import PScoreModel
        from reelrec.training.loop import fit

        t0 = time.perf_counter()
        trained = trained_tasks(cfg)

        def evaluate(m: nn.Module) -> dict[str, float]:
            return {
                k: v for k, v in evaluate_ctr(m, data, 1, mean_over=trained).items() if k != "tasks"
            }

        n_train = len(data.rows(0))
        log(
            f"training {cfg.run_name} on {cfg.data.dataset} ({n_train:,} impressions)"
            + (f" (model {cfg.model})" if cfg.run_name != cfg.model else "")
            + f": {len(data.fields)} fields, {len(data.sequences)} behaviour sequence(s), tasks "
            f"{', '.join(data.tasks)}; {parameters(model):,} parameters"
        )
        result = fit(model, CTRTrainSet(data), evaluate, cfg.train, out, resume=resume, log=log)
        if not D.current().main:
            return {}
        model.eval()
        test = evaluate_ctr(model, data, 2, mean_over=trained)
        seconds = sum(h["seconds"] for h in result.history)
        metrics = {
            "model": cfg.model,
            "task": self.name,
            "dataset": cfg.data.dataset,
            "valid": evaluate_ctr(model, data, 1, mean_over=trained),
            "test": test,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped": result.stopped,
            "train_seconds": round(seconds, 2),
            "train_samples_per_s": round(n_train * len(result.history) / max(seconds, 1e-9), 1),
            "wall_seconds": round(time.perf_counter() - t0, 2),
            "fields": data.fields,
            "sequences": data.sequences,
            "parameters": parameters(model),
            **run_metadata(),
        }
        if isinstance(model, PScoreModel):  # how the P-Score alone ranks each objective
            from reelrec.eval.ctr import pscore_metrics

            metrics["pscore"] = {
                "valid": pscore_metrics(model, data, 1),
                "test": pscore_metrics(model, data, 2),
            }
        atomic_write_json(out / "metrics.json", metrics)
        log(
            f"{cfg.run_name}: test mean AUC {test['auc']:.4f}, GAUC {test['gauc']:.4f}; "
            + ", ".join(f"{t} AUC {m['auc']:.4f}" for t, m in test["tasks"].items() if "auc" in m)
            + f" -> {out}"
        )
        return metrics

    def evaluate(self, cfg, model, data, folder, log) -> Evaluation:
        test = evaluate_ctr(model, data, 2, mean_over=trained_tasks(cfg))
        summary = {k: v for k, v in test.items() if k not in ("tasks", "n") and "/n" not in k}
        detail = read_details(folder, log, {"best_epoch": "unfinished", "model": cfg.model})
        detail.update(test=test)
        log(f"{folder.name}: test mean AUC {test['auc']:.4f}  GAUC {test['gauc']:.4f}")
        return Evaluation(summary, detail, read_history(folder))

    def report_section(self, run, evaluations) -> list[str]:
        from reelrec.eval.report import ranking_section

        return ranking_section({n: e.detail for n, e in evaluations.items()})


def _check_can(cfg: ExperimentConfig) -> None:
    c = cfg.can
    check(c.orders >= 1, "can.orders", ">= 1", c.orders)
    check(len(c.layers) > 0 and min(c.layers) >= 1, "can.layers", "widths >= 1", c.layers)
    check(c.feed_dim >= 1, "can.feed_dim", ">= 1", c.feed_dim)
    check(c.activation in ("tanh", "none"), "can.activation", "'tanh' or 'none'", c.activation)
    check(c.pooling in ("sum", "mean"), "can.pooling", "'sum' or 'mean'", c.pooling)
    check(
        math.isfinite(c.feed_init_std) and c.feed_init_std > 0,
        "can.feed_init_std",
        "a finite number > 0",
        c.feed_init_std,
    )
    check(all(p.count(":") == 1 for p in c.pairs), "can.pairs", "a list of 'field:feed'", c.pairs)


def _check_reward(cfg: ExperimentConfig) -> None:
    r, w = cfg.ranking, cfg.reward
    check(len(r.tower) > 0, "ranking.tower", "a non-empty list for pscore", r.tower)
    check(
        len(w.pscore_mlp) > 0 and min(w.pscore_mlp) >= 1,
        "reward.pscore_mlp",
        "widths >= 1",
        w.pscore_mlp,
    )
    check(
        w.pscore_weights == []
        or (
            len(w.pscore_weights) == len(r.tasks)
            and all(math.isfinite(x) and x >= 0 for x in w.pscore_weights)
            and sum(w.pscore_weights) > 0
        ),
        "reward.pscore_weights",
        f"[] or one finite weight >= 0 per task ({len(r.tasks)}), not all 0",
        w.pscore_weights,
    )
    check(
        w.pscore_weights == [] or all(x == 0 or 1e-6 <= x <= 1e6 for x in w.pscore_weights),
        "reward.pscore_weights",
        "weights of 0 or in [1e-6, 1e6]",
        w.pscore_weights,
    )
    check(
        math.isfinite(w.pscore_loss_weight) and 0 <= w.pscore_loss_weight <= 100,
        "reward.pscore_loss_weight",
        "in [0, 100] (0 leaves the P-Score head untrained: towers only)",
        w.pscore_loss_weight,
    )
