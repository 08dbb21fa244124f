"""``reelrec train CONFIG --run RUN [--a.b=c ...]``: train one model on a prepared run."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from reelrec.cli.common import (
    load_prepared,
    parse_with_overrides,
    prepare_run,
    sequences_for,
)
from reelrec.cli.registry import (
    MODELS,
    PRESETS,
    RESUMABLE_CHANGES,
    ExperimentConfig,
    resolve_config,
    semantic_ids_digest,
    used_sections,
    validate,
)
from reelrec.config import ConfigError, differences, from_yaml, to_yaml
from reelrec.data.ctr import CTRData, CTRTrainSet, kuairand_ctr
from reelrec.data.segments import SegmentData, SegmentTrainSet, build_segments
from reelrec.eval.ctr import evaluate_ctr
from reelrec.eval.ranking import evaluate_model
from reelrec.eval.segments import evaluate_segments
from reelrec.io import atomic_write_json, atomic_write_text, run_metadata
from reelrec.models.onerec import OneRecConfig
from reelrec.training import distributed as D
from reelrec.training.checkpoint import check_matches, load_tensors, save_model
from reelrec.training.loop import fit


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec train``."""
    p = argparse.ArgumentParser(
        prog="reelrec train",
        description="Train one model on RUN/data (prepared first if missing), keep the best "
        "epoch by validation NDCG@10 (rankers can, din, deepfm and the reward model pscore: "
        "mean validation AUC over the binary tasks; ipa, ecpo: validation P-Score mean@10; "
        "train.metric), and write RUN/models/NAME/{model.safetensors, "
        "config.yaml, metrics.json, history.json, checkpoint/}. An interrupted run resumes "
        "from its checkpoint when started again with the same command.",
        epilog="Overrides: any config key as --section.key=value, e.g. --train.epochs=5 "
        "--sasrec.hidden=128 --data.dataset=amazon-beauty. Unknown keys are rejected. "
        f"Presets: {', '.join(PRESETS)}. Models: "
        + "; ".join(f"{k}: {v.description}" for k, v in MODELS.items())
        + ". Each model writes to RUN/models/<--name, default the model name>: use --name=NAME "
        "to keep several runs of one model side by side. The generative presets onerec, "
        "onerec-v2 and tiger (OneRec with TIGER's setup, saved as RUN/models/tiger) read "
        "semantic IDs from RUN/tokenizer (tiger: RUN/tokenizer-rq-vae), made by reelrec "
        "encode, align and tokenize; they are set by --onerec.KEY=VALUE "
        "(docs/generative-retrieval.md). ELASTIC (preset elastic: SASRec's RecBole defaults, "
        "max_len 50; frozen long-history configs in configs/elastic-*.yaml) is set by "
        "--elastic.KEY=VALUE (docs/long-sequences.md). The rankers can, din and deepfm "
        "(KuaiRand impressions; multi-task click, long_view, like, follow, comment, forward "
        "and watch ratio; early stopping on the mean validation AUC) are set by "
        "--features.KEY, --ranking.KEY, --din.KEY and --can.KEY (DeepFM has no section of its "
        "own; every key and default: docs/ranking.md, or RUN/models/NAME/config.yaml after a "
        "run; lists are written --ranking.tasks=[click,like]). The preset segment-interest "
        "(SegMM video-skip prediction on --data.dataset=segmm; HR@k / NDCG@k of the skip "
        "segment) is set by --segment.KEY. Preference alignment (docs/alignment.md): pscore trains "
        "the reward model (objective towers + P-Score head; --reward.KEY, plus the ranking "
        "sections); ipa (DPO) and ecpo (RL) fine-tune the generator RUN/models/onerec "
        "(--preference.init) with the reward RUN/models/pscore (--preference.reward), set by "
        "--preference.KEY, single process. --train.progress=false hides the progress bar; "
        "--train.threads=N sets torch's CPU threads. Several processes: torchrun "
        "--nproc_per_node N $(which reelrec) train CONFIG --run-dir RUN ... (DDP; --train.strategy=fsdp shards the "
        "model; train.batch_size is the global batch, split across ranks).",
    )
    p.add_argument("config", help="preset name or path to a YAML config")
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        type=Path,
        help="run folder (RUN); under torchrun write --run-dir (torchrun reads --run as its own --run-path)",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    return p


def train_model(
    run_dir: Path, cfg: ExperimentConfig, resume: bool = True, log=print
) -> dict[str, object]:
    """Train ``cfg`` on ``run_dir`` and return the model's metrics (also written to disk).

    Raises:
        ConfigError: an invalid config, a run prepared for another dataset than
            ``cfg.data.dataset``, or a checkpoint trained with another config.
        FileNotFoundError, DatasetNotFound, DataFormatError: missing or malformed data.
    """
    validate(cfg)
    run_dir = Path(run_dir)
    env = D.current()  # under torchrun: rank 0 prepares and writes, every rank trains
    if env.main and not (run_dir / "data" / "interactions.parquet").exists():
        log(f"{run_dir / 'data'} not found: preparing {cfg.data.dataset} first")
        prepare_run(run_dir, cfg.data.dataset, cfg.data.protocol, cfg.data.data_dir, log=log)
    D.barrier(env)
    prep = load_prepared(run_dir)
    prepared_for = prep.report.get("dataset")
    if prepared_for and prepared_for != cfg.data.dataset:
        raise ConfigError(
            f"{run_dir} was prepared for dataset {prepared_for!r} but the config says "
            f"data.dataset={cfg.data.dataset!r}; use another --run or --data.dataset={prepared_for}"
        )
    data = ranking_data(prep, cfg, run_dir) if cfg.ranking_model else None
    if cfg.segment_model:
        data = build_segments(prep.interactions)
    torch.manual_seed(cfg.train.seed)  # initialisation; the loop seeds shuffling per epoch
    entry = MODELS[cfg.model]
    if cfg.alignment_model:
        if env.distributed:
            raise ConfigError(f"{cfg.model} trains in a single process (not under torchrun)")
        sft, data, model = aligned_generator(cfg, run_dir, prep)
        if cfg.onerec != OneRecConfig() and cfg.onerec != sft.onerec:
            raise ConfigError(
                f"{cfg.model} takes its architecture from RUN/models/{cfg.preference.init} "
                "(its config.yaml): remove the --onerec.* overrides"
            )
        # config.yaml records the architecture trained (with the dropout used while aligning)
        cfg = replace(cfg, onerec=replace(sft.onerec, dropout=cfg.preference.dropout))
        reward = reward_function(cfg, run_dir, prep, data.vocab)  # fails before writing
    else:
        if data is None:
            data = sequences_for(prep, cfg.max_len, cfg.window_step)
        model = entry.build(cfg, data, run_dir)
    out = run_dir / "models" / cfg.run_name
    if resume and (out / "checkpoint").exists() and (out / "config.yaml").exists():
        old = from_yaml(ExperimentConfig, out / "config.yaml")
        changed = [
            d
            for d in differences(old, cfg)
            if not d.startswith(RESUMABLE_CHANGES)
            and d.split(" ")[0].split(".")[0] in used_sections(cfg)
        ]
        if changed:
            raise ConfigError(
                f"{out} holds a checkpoint trained with another config: {'; '.join(changed)}. "
                "Rerun with the same settings to resume, or add --no-resume to start over."
            )
    digest = semantic_ids_digest(cfg, run_dir)
    digest_file = out / "semantic_ids.sha256"
    resuming = resume and (out / "checkpoint").exists() and digest_file.exists()
    if resuming and digest_file.read_text().strip() != digest:
        where = (
            f"{run_dir / cfg.features.semantic_ids} / {run_dir / cfg.features.vq_codes}"
            if cfg.ranking_model
            else run_dir / cfg.onerec.semantic_ids
        )
        raise ConfigError(
            f"{out} was trained on other semantic IDs (or VQ codes) than {where} holds now "
            "(re-tokenized?); add --no-resume to train from scratch on the new ones"
        )
    ckpt_weights = out / "checkpoint" / "model.safetensors"
    if resume and ckpt_weights.exists():  # refuse before anything of the finished run is touched
        check_matches(model, load_tensors(ckpt_weights), ckpt_weights)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").unlink(missing_ok=True)  # the run is unfinished until it ends
        if not resume:  # starting over: an old checkpoint must not be resumed under this config
            import shutil

            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            for name in ("model.safetensors", "history.json"):
                (out / name).unlink(missing_ok=True)
        to_yaml(cfg, out / "config.yaml")
        if digest:
            atomic_write_text(digest_file, digest + "\n")
    D.barrier(env)
    if cfg.ranking_model:
        return _train_ranking(model, data, cfg, out, resume, log)
    if cfg.alignment_model:
        return _train_alignment(model, sft, data, prep, reward, cfg, out, resume, log)
    if cfg.segment_model:
        return _train_segment(model, data, cfg, out, resume, log)
    ks = tuple(cfg.eval.ks)

    # beam search is costly: early stopping of generative models may look at a fixed random
    # subset of the validation instances (onerec.valid_instances); final metrics use them all
    n_valid = len(data.valid)
    cap = cfg.onerec.valid_instances if cfg.generative else 0
    subset = slice(None)
    if 0 < cap < n_valid:
        gen = torch.Generator().manual_seed(cfg.train.seed)
        subset = torch.randperm(n_valid, generator=gen)[:cap].sort().values

    def evaluate(m: torch.nn.Module, split: str = "valid", full: bool = False) -> dict[str, float]:
        inst = data.valid if split == "valid" else data.test
        rows = slice(None) if full or split != "valid" else subset
        return gathered_evaluate(m, inst.history[rows], inst.target[rows], ks, cfg.eval.batch_size)

    t0 = time.perf_counter()
    info: dict[str, object] = {}
    if entry.trainable:
        log(
            f"training {cfg.run_name}"
            + (f" (model {cfg.model})" if cfg.run_name != cfg.model else "")
            + f" on {cfg.data.dataset}: {len(data.train_windows):,} windows, "
            f"{data.vocab.size:,} items, {sum(p.numel() for p in model.parameters()):,} parameters"
        )
        result = fit(model, data.train_windows, evaluate, cfg.train, out, resume=resume, log=log)
        info = {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped": result.stopped,
            # wall time of all epochs (training + validation), across resumed sessions
            "train_seconds": round(sum(h["seconds"] for h in result.history), 2),
        }
    elif env.main:
        save_model(model, out / "model.safetensors")
    model.eval()
    valid, test = evaluate(model, "valid", full=True), evaluate(model, "test")  # every rank
    if not env.main:
        return {}  # rank 0 writes the metrics
    metrics = {
        "model": cfg.model,
        "dataset": cfg.data.dataset,
        "protocol": prep.protocol.name,
        "valid": valid,
        "test": test,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "num_items": data.vocab.size,
        "train_windows": len(data.train_windows),
        "parameters": sum(p.numel() for p in model.parameters()),
        **info,  # for trained models, train_seconds sums the epochs of every session
        **run_metadata(),
    }
    atomic_write_json(out / "metrics.json", metrics)
    t = metrics["test"]
    log(
        f"{cfg.run_name}: test recall@10 {t['recall@10']:.4f}  ndcg@10 {t['ndcg@10']:.4f} "
        f"over {t['n_instances']:,} instances ({t['oov_targets']:,} targets unseen in train) "
        f"-> {out}"
    )
    return metrics


def gathered_evaluate(
    model: torch.nn.Module,
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...],
    batch_size: int,
) -> dict[str, float]:
    """:func:`reelrec.eval.ranking.evaluate_model` metrics; under torchrun each rank ranks its
    share of the instances and the ranks are gathered, so every rank returns the metrics of the
    whole set (equal to one process's)."""
    env = D.current()
    if not env.distributed:
        return evaluate_model(model, history, targets, ks, batch_size)[0]
    import numpy as np
    import torch.distributed as dist

    from reelrec.eval.metrics import metrics_from_ranks

    mine = torch.tensor_split(torch.arange(len(targets)), env.world)[env.rank]
    ranks = (
        evaluate_model(model, history[mine], targets[mine], ks, batch_size)[1]
        if len(mine)
        else np.zeros(0)
    )
    parts: list = [None] * env.world
    dist.all_gather_object(parts, ranks)
    all_ranks = np.concatenate(parts)
    metrics = metrics_from_ranks(all_ranks, ks)
    if not hasattr(model, "score_all"):
        metrics.pop("mrr", None)  # ranks beyond a generative model's list are unknown
    metrics["n_instances"] = int(len(all_ranks))
    metrics["oov_targets"] = int((targets < 1).sum())
    return metrics


def ranking_data(prep, cfg: ExperimentConfig, run_dir: Path) -> CTRData:
    """The KuaiRand impressions a ranking model trains on (``validate`` has checked that the
    config's dataset is kuairand: the other datasets have no logged impressions with labels)."""
    return kuairand_ctr(
        prep.interactions,
        prep.users,
        cfg.features,
        cfg.ranking.tasks,
        run_dir,
        cfg.ranking.watch_ratio_clip,
    )


def aligned_generator(cfg: ExperimentConfig, run_dir: Path, prep) -> tuple:
    """The trained generator an alignment config starts from (``preference.init``), with its
    config and sequences; dropout set to ``preference.dropout``.

    Returns:
        ``(sft config, SequenceData, model)`` with the SFT weights loaded.

    Raises:
        FileNotFoundError: no trained generator in ``RUN/models/<preference.init>``.
        ConfigError: that model is not a generator, or its semantic IDs changed since.
    """
    from reelrec.training.preference import set_dropout

    src = Path(run_dir) / "models" / cfg.preference.init
    if not (src / "model.safetensors").exists() or not (src / "config.yaml").exists():
        raise FileNotFoundError(
            f"{src}: no trained generator to align (preference.init={cfg.preference.init!r}); "
            f"train one first, e.g. `reelrec train onerec --run {run_dir}`"
        )
    sft = _model_config(src)
    if not sft.generative:
        again = " (an aligned model is not aligned again)" if sft.alignment_model else ""
        raise ConfigError(
            f"preference.init={cfg.preference.init!r} is a {sft.model!r} model; alignment "
            f"needs a semantic-ID generator (onerec, onerec-v2, tiger){again}"
        )
    digest = src / "semantic_ids.sha256"
    if digest.exists() and digest.read_text().strip() != semantic_ids_digest(sft, run_dir):
        raise ConfigError(
            f"{src} was trained on other semantic IDs than {run_dir / sft.onerec.semantic_ids} "
            "holds now: retrain it (reelrec train ... --no-resume) before aligning it"
        )
    data = sequences_for(prep, sft.max_len, sft.window_step)
    model = MODELS[sft.model].build(sft, data, run_dir)
    from reelrec.training.checkpoint import CheckpointError, load_model

    try:
        check_matches(model, load_tensors(src / "model.safetensors"), src / "model.safetensors")
    except CheckpointError as exc:
        raise ConfigError(
            f"{exc} -- the generator no longer fits the run's semantic IDs (re-tokenized?): "
            f"retrain it with `reelrec train {sft.run_name} --run {run_dir} --no-resume`"
        ) from None

    load_model(model, src / "model.safetensors")
    return sft, data, set_dropout(model, cfg.preference.dropout)


def _model_config(folder: Path) -> ExperimentConfig:
    """The config of a trained model folder (an empty file is an error, not the defaults)."""
    path = folder / "config.yaml"
    if not path.read_text(encoding="utf-8").strip():
        raise ConfigError(f"{path} is empty: retrain that model")
    return from_yaml(ExperimentConfig, path)


def reward_function(cfg: ExperimentConfig, run_dir: Path, prep, vocab):
    """The P-Score of the trained reward model ``RUN/models/<preference.reward>`` as a
    :class:`reelrec.training.preference.RewardFn` over the generator's ``vocab``.

    Raises:
        FileNotFoundError: no trained reward model there. ConfigError: it is not a pscore model.
    """
    from reelrec.training.preference import RewardFn

    src = Path(run_dir) / "models" / cfg.preference.reward
    if not (src / "model.safetensors").exists() or not (src / "config.yaml").exists():
        raise FileNotFoundError(
            f"{src}: no trained reward model (preference.reward={cfg.preference.reward!r}); "
            f"train one first with `reelrec train pscore --run {run_dir}`"
        )
    rcfg = _model_config(src)
    if rcfg.model != "pscore":
        raise ConfigError(
            f"preference.reward={cfg.preference.reward!r} is a {rcfg.model!r} model; the "
            "reward must be a P-Score model (reelrec train pscore)"
        )
    if rcfg.reward.pscore_loss_weight == 0:
        raise ConfigError(
            f"{src} was trained with reward.pscore_loss_weight=0: its P-Score head is "
            "untrained (a towers-only baseline); use a reward model with a P-Score loss"
        )
    digest = src / "semantic_ids.sha256"
    if digest.exists() and digest.read_text().strip() != semantic_ids_digest(rcfg, run_dir):
        raise ConfigError(
            f"{src} was trained on other semantic-ID / VQ code features than the run holds "
            f"now (re-tokenized?): retrain it with `reelrec train pscore --run {run_dir} "
            "--no-resume`"
        )
    model, features = load_ranker(src, rcfg, prep, run_dir)
    return RewardFn(model, features, vocab)


def load_ranker(src: Path, rcfg: ExperimentConfig, prep, run_dir: Path):
    """The trained ranking model in ``src`` (any of ``RANKING``) in eval mode, and the
    :class:`reelrec.data.ctr.RequestFeatures` that score any (user, video, time) with it.

    Raises:
        ValueError: the weights do not match the model the config describes.
    """
    from reelrec.data.ctr import RequestFeatures
    from reelrec.training.checkpoint import load_model

    rdata = ranking_data(prep, rcfg, run_dir)
    model = MODELS[rcfg.model].build(rcfg, rdata, run_dir)
    check_matches(model, load_tensors(src / "model.safetensors"), src / "model.safetensors")
    load_model(model, src / "model.safetensors")
    return model.eval(), RequestFeatures(rdata, prep.interactions, rcfg.features)


def _train_alignment(
    model: torch.nn.Module,
    sft: ExperimentConfig,
    data,
    prep,
    reward,
    cfg: ExperimentConfig,
    out: Path,
    resume: bool,
    log,
) -> dict[str, object]:
    """IPA or ECPO of the SFT generator with the reward model; writes the model's metrics."""
    from reelrec.data.splits import positive_mask
    from reelrec.eval.alignment import alignment_metrics, day_requests
    from reelrec.training.preference import AlignmentTrainSet, alignment_samples

    inter = prep.interactions
    positive = positive_mask(inter, prep.protocol)
    samples = alignment_samples(inter, positive, data.vocab, sft.max_len, sft.onerec.window_step)
    requests = {s: day_requests(inter, positive, data.vocab, s, sft.max_len) for s in (1, 2)}
    trainset = AlignmentTrainSet(cfg.model, model, samples, reward, cfg.preference)
    ks = tuple(cfg.eval.ks)

    def day(m: torch.nn.Module, split: int) -> dict[str, float]:
        return alignment_metrics(m, requests[split], reward, data.vocab)

    model.eval()
    before = day(model, 2)
    log(
        f"training {cfg.run_name} ({cfg.model}) from RUN/models/{cfg.preference.init} with the "
        f"reward RUN/models/{cfg.preference.reward}: {len(samples):,} samples, "
        f"{cfg.preference.candidates} candidates for {cfg.preference.fraction:.0%} of each "
        f"batch; test before: P-Score mean@10 {before['pscore_mean@10']:.4f}, legal rate "
        f"{before['legal_rate']:.4f}"
    )
    result = fit(model, trainset, lambda m: day(m, 1), cfg.train, out, resume=resume, log=log)
    model.eval()
    after = day(model, 2)
    metrics = {
        "model": cfg.model,
        "alignment": {"init_test": before, "valid": day(model, 1), "test": after},
        "init": cfg.preference.init,
        "reward": cfg.preference.reward,
        "dataset": cfg.data.dataset,
        "protocol": prep.protocol.name,
        "valid": gathered_evaluate(model, data.valid.history, data.valid.target, ks, 1024),
        "test": gathered_evaluate(model, data.test.history, data.test.target, ks, 1024),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        "train_seconds": round(sum(h["seconds"] for h in result.history), 2),
        "num_items": data.vocab.size,
        "train_windows": len(samples),
        "parameters": sum(p.numel() for p in model.parameters()),
        **run_metadata(),
    }
    atomic_write_json(out / "metrics.json", metrics)
    log(
        f"{cfg.run_name}: test P-Score mean@10 {before['pscore_mean@10']:.4f} -> "
        f"{after['pscore_mean@10']:.4f}, recall@10 (per user, next day) "
        f"{before['recall@10']:.4f} -> {after['recall@10']:.4f}, hate share@10 "
        f"{before['hate_share@10']:.4f} -> {after['hate_share@10']:.4f}, legal rate "
        f"{before['legal_rate']:.4f} -> {after['legal_rate']:.4f} -> {out}"
    )
    return metrics


def _train_segment(
    model: torch.nn.Module, data: SegmentData, cfg: ExperimentConfig, out: Path, resume: bool, log
) -> dict[str, object]:
    """Fit the SegMM model with early stopping on ``cfg.train.metric`` and write its metrics."""
    log(
        f"training {cfg.run_name} on {cfg.data.dataset}: {len(SegmentTrainSet(data)):,} "
        f"training views with a skip segment, {sum(p.numel() for p in model.parameters()):,} "
        "parameters"
    )
    result = fit(
        model,
        SegmentTrainSet(data),
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
        "segment": True,
        "dataset": cfg.data.dataset,
        "valid": evaluate_segments(model, data, 1),
        "test": test,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        "train_seconds": round(sum(h["seconds"] for h in result.history), 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        **run_metadata(),
    }
    atomic_write_json(out / "metrics.json", metrics)
    log(
        f"{cfg.run_name}: test video-skip HR@1 {test['hr@1']:.4f}, HR@5 {test['hr@5']:.4f}, "
        f"NDCG@5 {test['ndcg@5']:.4f} over {test['n']:,} views -> {out}"
    )
    return metrics


def trained_tasks(cfg: ExperimentConfig) -> list[str]:
    """The tasks with a loss weight > 0 (their AUC/GAUC form the mean metrics)."""
    w = cfg.ranking.task_weights or [1.0] * len(cfg.ranking.tasks)
    return [t for t, x in zip(cfg.ranking.tasks, w, strict=True) if x > 0]


def _train_ranking(
    model: torch.nn.Module, data: CTRData, cfg: ExperimentConfig, out: Path, resume: bool, log
) -> dict[str, object]:
    """Fit a ranking model with early stopping on ``cfg.train.metric`` and write its metrics."""
    t0 = time.perf_counter()

    trained = trained_tasks(cfg)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return {
            k: v for k, v in evaluate_ctr(m, data, 1, mean_over=trained).items() if k != "tasks"
        }

    n_train = len(data.rows(0))
    log(
        f"training {cfg.run_name} on {cfg.data.dataset} ({n_train:,} impressions)"
        + (f" (model {cfg.model})" if cfg.run_name != cfg.model else "")
        + f": {len(data.fields)} fields, {len(data.sequences)} behaviour sequence(s), tasks "
        f"{', '.join(data.tasks)}; {sum(p.numel() for p in model.parameters()):,} parameters"
    )
    result = fit(model, CTRTrainSet(data), evaluate, cfg.train, out, resume=resume, log=log)
    if not D.current().main:
        return {}
    model.eval()
    test = evaluate_ctr(model, data, 2, mean_over=trained)
    seconds = sum(h["seconds"] for h in result.history)
    metrics = {
        "model": cfg.model,
        "ranking": True,
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
        "parameters": sum(p.numel() for p in model.parameters()),
        **run_metadata(),
    }
    if hasattr(model, "pscore"):  # the reward model: how the P-Score alone ranks each objective
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


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec train``; returns the exit status."""
    args, overrides = parse_with_overrides(build_parser(), argv)
    cfg = resolve_config(args.config, overrides)
    env = D.setup()  # joins the process group under torchrun (gloo on CPU, NCCL on GPU)
    try:
        train_model(args.run, cfg, resume=not args.no_resume, log=print if env.main else _quiet)
    finally:
        if env.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""
