"""``reelrec evaluate RUN``: score every trained model of a run on the test split (full ranking)
from its saved weights, and write RUN/metrics.json and RUN/report.md (+ plots)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.cli.common import load_prepared, read_json, sequences_for
from reelrec.cli.registry import MODELS, ExperimentConfig, semantic_ids_digest
from reelrec.cli.train import aligned_generator, ranking_data, trained_tasks
from reelrec.config import ConfigError, from_yaml, to_yaml
from reelrec.data.segments import build_segments
from reelrec.eval.ctr import evaluate_ctr
from reelrec.eval.ranking import evaluate_model
from reelrec.eval.report import write_report
from reelrec.eval.segments import evaluate_segments
from reelrec.io import atomic_write_json, run_metadata
from reelrec.training.checkpoint import CheckpointError, load_model


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec evaluate``."""
    p = argparse.ArgumentParser(
        prog="reelrec evaluate",
        description="Reload each RUN/models/NAME from model.safetensors + config.yaml, rank "
        "all items for every test instance (ranking models: AUC, GAUC and LogLoss per task on the "
        "test impressions), and write RUN/metrics.json, RUN/report.md and "
        "RUN/plots/training_curves.png.",
    )
    p.add_argument("run", type=Path, help="run folder (RUN)")
    return p


def evaluate_run(run_dir: Path, log=print) -> dict[str, object]:
    """Evaluate every model under ``run_dir/models`` and write the run's metrics and report.

    Returns:
        The ``RUN/metrics.json`` content: ``{"dataset", "protocol", "models": {name: {metric:
        value}}, "version", "commit"}``.

    Raises:
        FileNotFoundError: no prepared data or no trained model in the run.
        CheckpointError: a weights file is not safetensors or does not match its config.
    """
    run_dir = Path(run_dir)
    prep = load_prepared(run_dir)
    model_dirs = sorted(p.parent for p in (run_dir / "models").glob("*/config.yaml"))
    if not model_dirs:
        raise FileNotFoundError(
            f"{run_dir / 'models'}: no trained model; run `reelrec train` first"
        )
    cache = {}
    models, details, histories = {}, {}, {}
    for folder in model_dirs:
        if not (folder / "model.safetensors").exists():
            log(f"warning: skipping {folder.name}: no model.safetensors (no epoch finished yet)")
            continue
        cfg = from_yaml(ExperimentConfig, folder / "config.yaml")
        digest_file = folder / "semantic_ids.sha256"
        if cfg.alignment_model:  # needs its generator: say so when it is gone
            init = run_dir / "models" / cfg.preference.init / "config.yaml"
            if not init.exists():
                log(
                    f"warning: skipping {folder.name}: its generator "
                    f"RUN/models/{cfg.preference.init} is gone (preference.init)"
                )
                continue
        if digest_file.exists() and digest_file.read_text().strip() != semantic_ids_digest(
            cfg, run_dir
        ):
            log(
                f"warning: skipping {folder.name}: {run_dir / cfg.onerec.semantic_ids} changed "
                "since it was trained (retrain it with --no-resume)"
            )
            continue
        if cfg.alignment_model:  # a generator fine-tuned by IPA / ECPO: built as its SFT model
            try:
                _, data, model = aligned_generator(cfg, run_dir, prep)
                load_model(model, folder / "model.safetensors")
            except (CheckpointError, ValueError, FileNotFoundError, ConfigError) as exc:
                log(f"warning: skipping {folder.name}: {exc}")
                continue
        else:
            key = (
                (to_yaml(cfg.features), tuple(cfg.ranking.tasks), cfg.ranking.watch_ratio_clip)
                if cfg.ranking_model
                else "segments"
                if cfg.segment_model
                else cfg.max_len
            )
            try:
                if key not in cache:
                    cache[key] = (
                        ranking_data(prep, cfg, run_dir)
                        if cfg.ranking_model
                        else build_segments(prep.interactions)
                        if cfg.segment_model
                        else sequences_for(prep, cfg.max_len)
                    )
                data = cache[key]
                model = MODELS[cfg.model].build(cfg, data, run_dir)
                load_model(model, folder / "model.safetensors")
            except (CheckpointError, ValueError, KeyError, FileNotFoundError) as exc:
                log(f"warning: skipping {folder.name}: {exc}")
                continue
        model.eval()
        if cfg.segment_model:
            test = evaluate_segments(model, data, 2)
            models[folder.name] = {k: v for k, v in test.items() if k != "n"}
            detail = (
                read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
            )
            detail.update(test=test, segment=True, model=cfg.model)
            details[folder.name] = detail
            log(
                f"{folder.name}: test video-skip HR@1 {test['hr@1']:.4f}  NDCG@5 {test['ndcg@5']:.4f}"
            )
            continue
        if cfg.ranking_model:
            test = evaluate_ctr(model, data, 2, mean_over=trained_tasks(cfg))
            models[folder.name] = {
                k: v for k, v in test.items() if k not in ("tasks", "n") and "/n" not in k
            }
            if (folder / "metrics.json").exists():
                detail = read_json(folder / "metrics.json")
            else:
                detail = {"best_epoch": "unfinished", "model": cfg.model}
                log(f"warning: {folder.name} has no metrics.json: its training did not finish")
            detail.update(test=test, ranking=True)
            details[folder.name] = detail
            hist = folder / "history.json"
            histories[folder.name] = read_json(hist) if hist.exists() else []
            log(f"{folder.name}: test mean AUC {test['auc']:.4f}  GAUC {test['gauc']:.4f}")
            continue
        test, _ = evaluate_model(
            model,
            data.test.history,
            data.test.target,
            tuple(cfg.eval.ks),
            cfg.eval.batch_size,
        )
        models[folder.name] = {
            k: v for k, v in test.items() if k not in ("n_instances", "oov_targets")
        }
        if (folder / "metrics.json").exists():
            detail = read_json(folder / "metrics.json")
        else:
            detail = {"best_epoch": "unfinished"}
            log(f"warning: {folder.name} has no metrics.json: its training did not finish")
        detail["test"] = test
        detail["aligned"] = cfg.alignment_model  # its history holds another protocol's NDCG
        details[folder.name] = detail
        hist = folder / "history.json"
        histories[folder.name] = read_json(hist) if hist.exists() else []
        log(f"{folder.name}: test recall@10 {test['recall@10']:.4f}  ndcg@10 {test['ndcg@10']:.4f}")
    if not models:
        raise FileNotFoundError(
            f"{run_dir / 'models'}: no model could be evaluated (none has finished an epoch, or "
            "each was skipped: see the warnings above); run `reelrec train` first"
        )
    metrics = {
        "dataset": prep.report.get("dataset", ""),
        "protocol": prep.protocol.name,
        "models": models,
        **run_metadata(),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    report = write_report(run_dir, metrics, details, prep.report, histories)
    log(f"wrote {run_dir / 'metrics.json'} and {report}")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec evaluate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    evaluate_run(args.run)
    return 0
