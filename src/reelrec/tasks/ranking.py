"""Multi-task ranking on logged impressions: CAN, DIN, DeepFM and OneRec's P-Score reward
model (KuaiRand). Data: :func:`reelrec.data.ctr.kuairand_ctr`; metrics: AUC, GAUC and LogLoss
per task (:func:`reelrec.eval.ctr.evaluate_ctr`), early stopping on the mean validation AUC.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from torch import nn

from reelrec.config import to_yaml
from reelrec.data.ctr import CTRData, CTRTrainSet, kuairand_ctr
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
from reelrec.training import distributed as D

if TYPE_CHECKING:
    from reelrec.tasks.registry import ExperimentConfig


#: datasets with logged impressions and feedback labels (the rankers' data)
RANKING_DATASETS = ("kuairand", "kuairand-pure")


def trained_tasks(cfg: ExperimentConfig) -> list[str]:
    """The tasks with a loss weight > 0 (their AUC/GAUC form the mean metrics)."""
    w = cfg.ranking.task_weights or [1.0] * len(cfg.ranking.tasks)
    return [t for t, x in zip(cfg.ranking.tasks, w, strict=True) if x > 0]


class RankingTask(Task):
    """CTR / multi-task rankers and the reward model on KuaiRand impressions."""

    name = "ranking"
    scores_requests = True

    def validate(self, cfg: ExperimentConfig) -> None:
        r = cfg.ranking
        check(
            cfg.data.dataset in RANKING_DATASETS,
            "data.dataset",
            f"one of {', '.join(RANKING_DATASETS)} for the ranking models (the other datasets of `reelrec datasets` have no "
            "logged impressions with feedback labels; bench/ranking.py also runs the Taobao, "
            "Criteo and Avazu samples)",
            cfg.data.dataset,
        )
        weights = r.task_weights or [1.0] * len(r.tasks)
        binary = [x for x, w in zip(r.tasks, weights, strict=False) if x != "watch_ratio" and w > 0]
        metrics = ("auc", "gauc", *(f"{x}/{m}" for x in binary for m in ("auc", "gauc")))
        check(
            cfg.train.metric in metrics,
            "train.metric",
            f"one of {', '.join(metrics)}",
            cfg.train.metric,
        )
        if cfg.model == "pscore":
            w = cfg.reward.pscore_weights
            check(len(r.tower) > 0, "ranking.tower", "a non-empty list for pscore", r.tower)
            check(
                w == [] or len(w) == len(r.tasks),
                "reward.pscore_weights",
                f"[] or one weight per task of ranking.tasks ({len(r.tasks)})",
                w,
            )

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
                run.prep.items,
                cfg.data.dataset,
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
