"""Segment-level interest (SegMM, arXiv 2504.04237): per view, rank the 5-second segments by
skip probability; HR@{1,5,10} and NDCG@{5,10} of the skip segment (the SegMM sample)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reelrec.data.segments import SegmentData, SegmentTrainSet, build_segments
from reelrec.eval.segments import evaluate_segments
from reelrec.io import atomic_write_json, run_metadata
from reelrec.tasks.base import (
    Evaluation,
    RunFolder,
    Task,
    check,
    fit_summary,
    parameters,
    read_details,
)
from reelrec.training import distributed as D

if TYPE_CHECKING:
    from reelrec.tasks.registry import ExperimentConfig

#: validation metrics of the skip models
SKIP_METRICS = tuple(f"{m}@{k}" for m in ("hr", "ndcg") for k in (1, 5, 10))


class SegmentTask(Task):
    """Video-skip prediction on the SegMM sample."""

    name = "segment"

    def validate(self, cfg: ExperimentConfig) -> None:
        check(
            cfg.data.dataset == "segmm",
            "data.dataset",
            "segmm for segment-interest",
            cfg.data.dataset,
        )
        check(
            cfg.train.metric in SKIP_METRICS,
            "train.metric",
            f"one of {', '.join(SKIP_METRICS)}",
            cfg.train.metric,
        )

    def data(self, run: RunFolder, cfg: ExperimentConfig) -> SegmentData:
        return run.cached("segments", lambda: build_segments(run.prep.interactions))

    def train_size(self, data: SegmentData) -> int:
        return len(SegmentTrainSet(data))

    def fit(self, cfg, run, model, data, out, resume, log) -> dict[str, Any]:
        from reelrec.training.loop import fit

        train = SegmentTrainSet(data)
        log(
            f"training {cfg.run_name} on {cfg.data.dataset}: {len(train):,} training views with a "
            f"skip segment, {parameters(model):,} parameters"
        )
        result = fit(
            model,
            train,
            lambda m: evaluate_segments(m, data, 1),
            cfg.train,
            out,
            resume=resume,
            log=log,
        )
        if not D.current().main:
            return {}
        test = evaluate_segments(model, data, 2)
        metrics = {
            "model": cfg.model,
            "task": self.name,
            "dataset": cfg.data.dataset,
            "valid": evaluate_segments(model, data, 1),
            "test": test,
            **fit_summary(result),
            "parameters": parameters(model),
            **run_metadata(),
        }
        atomic_write_json(out / "metrics.json", metrics)
        log(
            f"{cfg.run_name}: test video-skip HR@1 {test['hr@1']:.4f}, HR@5 {test['hr@5']:.4f}, "
            f"NDCG@5 {test['ndcg@5']:.4f} over {test['n']:,} views -> {out}"
        )
        return metrics

    def evaluate(self, cfg, model, data, folder, log) -> Evaluation:
        test = evaluate_segments(model, data, 2)
        detail = read_details(folder, log, {"model": cfg.model})
        detail.update(test=test, model=cfg.model)
        log(f"{folder.name}: test video-skip HR@1 {test['hr@1']:.4f}  NDCG@5 {test['ndcg@5']:.4f}")
        return Evaluation({k: v for k, v in test.items() if k != "n"}, detail)

    def report_section(self, run, evaluations) -> list[str]:
        from reelrec.eval.report import skip_section

        return skip_section({n: e.detail for n, e in evaluations.items()})
