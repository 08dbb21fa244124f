"""Preference alignment of a trained generator with a trained reward model: IPA (DPO, OneRec
arXiv 2502.18965 section 3.3) and ECPO (RL, OneRec Technical Report arXiv 2506.13695).

The model of an alignment run is its generator (``preference.init``) fine-tuned; its config
records that generator's architecture in its ``onerec`` section (with the alignment dropout),
so the aligned model reloads without guessing. Metrics: the run's full next-item metrics as for
any generator, plus P-Score, recall / NDCG of the day's likes, hate share and legal-ID rate of
one request per user and day (:mod:`reelrec.eval.alignment`), before and after.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch import nn

from reelrec.config import ConfigError
from reelrec.io import atomic_write_json, run_metadata
from reelrec.tasks.base import (
    Evaluation,
    RunError,
    RunFolder,
    Task,
    check,
    check_folder_name,
    fit_summary,
    parameters,
)
from reelrec.tasks.retrieval import GenerativeTask, gathered_evaluate
from reelrec.training import distributed as D

if TYPE_CHECKING:
    from reelrec.tasks.registry import ExperimentConfig

#: validation metrics of the alignment presets (eval/alignment.py, per user and day)
ALIGNMENT_METRICS = ("pscore_mean@10", "pscore_max@10", "recall@10", "ndcg@10")


class AlignmentTask(Task):
    """IPA and ECPO fine-tuning of ``RUN/models/<preference.init>``."""

    name = "alignment"
    ranks_items = True
    _reward = None  # the reward loaded by prepare_train, handed to the fit that follows

    def validate(self, cfg: ExperimentConfig) -> None:
        from reelrec.tasks.ranking import RANKING_DATASETS

        check(
            cfg.data.dataset in RANKING_DATASETS,
            "data.dataset",
            f"one of {', '.join(RANKING_DATASETS)} for ipa / ecpo (the reward model needs logged "
            "feedback labels)",
            cfg.data.dataset,
        )
        t = cfg.train
        check(
            t.metric in ALIGNMENT_METRICS,
            "train.metric",
            f"one of {', '.join(ALIGNMENT_METRICS)}",
            t.metric,
        )
        p = cfg.preference
        for key in ("init", "reward"):
            check_folder_name(f"preference.{key}", getattr(p, key))
            check(  # the run must not overwrite the models it reads
                getattr(p, key) != cfg.run_name,
                f"preference.{key}",
                f"another model than the one being trained (--name={cfg.run_name})",
                getattr(p, key),
            )

    # -- the generator and the reward ----------------------------------------------------------
    def generator_config(self, cfg: ExperimentConfig, run: RunFolder) -> ExperimentConfig:
        """The config of the generator ``preference.init``.

        Raises:
            RunError: it is missing or not a semantic-ID generator.
        """
        from reelrec.tasks.registry import MODELS

        sft = _input_config(run, "init", cfg.preference.init, "the generator to align", "onerec")
        if not isinstance(MODELS[sft.model].task, GenerativeTask):
            again = (
                " (an aligned model is not aligned again)" if sft.model in ("ipa", "ecpo") else ""
            )
            raise RunError(
                f"preference.init={cfg.preference.init!r} is a {sft.model!r} model; alignment "
                f"needs a semantic-ID generator (onerec, onerec-v2, tiger){again}"
            )
        return sft

    def load(self, cfg: ExperimentConfig, run: RunFolder) -> tuple[nn.Module, Any]:
        """The aligned model's architecture: its generator's model over the run's semantic IDs
        with the recorded ``onerec`` section."""
        sft = self.generator_config(cfg, run)
        gen_cfg = replace(sft, onerec=cfg.onerec)
        return sft_task(sft).build(gen_cfg, run)

    def prepare_train(self, cfg, run, log) -> tuple[ExperimentConfig, nn.Module, Any]:
        from reelrec.models.onerec import OneRecConfig
        from reelrec.tasks.trained import load_trained
        from reelrec.training.preference import set_dropout

        if D.current().distributed:
            raise ConfigError(f"{cfg.model} trains in a single process (not under torchrun)")
        sft_cfg = self.generator_config(cfg, run)
        if cfg.onerec != OneRecConfig() and cfg.onerec != sft_cfg.onerec:
            raise ConfigError(
                f"{cfg.model} takes its architecture from RUN/models/{cfg.preference.init} "
                "(its config.yaml): remove the --onerec.* overrides"
            )
        sft = load_trained(run, cfg.preference.init)
        # config.yaml records the architecture trained (with the dropout used while aligning)
        cfg = replace(cfg, onerec=replace(sft.cfg.onerec, dropout=cfg.preference.dropout))
        self._reward = self.reward(cfg, run, sft.data.vocab)  # fails before anything is written
        return cfg, set_dropout(sft.model.train(), cfg.preference.dropout), sft.data

    def reward(self, cfg: ExperimentConfig, run: RunFolder, vocab) -> Any:
        """The P-Score of ``RUN/models/<preference.reward>`` as a
        :class:`reelrec.training.preference.RewardFn` over the generator's ``vocab``.

        Raises:
            RunError: no trained reward model there, or it is not a P-Score model with a
                trained P-Score head.
        """
        from reelrec.data.ctr import RequestFeatures
        from reelrec.tasks.trained import load_trained
        from reelrec.training.preference import RewardFn

        rcfg = _input_config(run, "reward", cfg.preference.reward, "the reward model", "pscore")
        if rcfg.model != "pscore":
            raise RunError(
                f"preference.reward={cfg.preference.reward!r} is a {rcfg.model!r} model; the "
                "reward must be a P-Score model (reelrec train pscore)"
            )
        if rcfg.reward.pscore_loss_weight == 0:
            raise RunError(
                f"{run.model_dir(cfg.preference.reward)} was trained with "
                "reward.pscore_loss_weight=0: its P-Score head is untrained (a towers-only "
                "baseline); use a reward model with a P-Score loss"
            )
        r = load_trained(run, cfg.preference.reward)
        features = RequestFeatures(r.data, run.prep.interactions, r.cfg.features)
        return RewardFn(r.model, features, vocab)

    def digest(self, cfg: ExperimentConfig, run: RunFolder) -> str:
        try:
            sft = self.generator_config(cfg, run)
        except RunError:
            return ""
        return sft_task(sft).digest(sft, run)

    def data(self, run: RunFolder, cfg: ExperimentConfig) -> Any:
        sft = self.generator_config(cfg, run)
        return sft_task(sft).data(run, sft)

    def train_size(self, data: Any) -> int:
        return len(data.train_windows)

    # -- training and evaluation ---------------------------------------------------------------
    def _requests(self, run: RunFolder, cfg: ExperimentConfig, vocab) -> dict[int, Any]:
        from reelrec.data.splits import positive_mask
        from reelrec.eval.alignment import day_requests

        inter = run.prep.interactions
        positive = positive_mask(inter, run.prep.protocol)
        max_len = cfg.onerec.max_len
        return {s: day_requests(inter, positive, vocab, s, max_len) for s in (1, 2)}

    def fit(self, cfg, run, model, data, out, resume, log) -> dict[str, Any]:
        from reelrec.data.splits import positive_mask
        from reelrec.eval.alignment import alignment_metrics
        from reelrec.training.loop import fit
        from reelrec.training.preference import AlignmentTrainSet, alignment_samples

        inter = run.prep.interactions
        positive = positive_mask(inter, run.prep.protocol)
        reward, self._reward = self._reward or self.reward(cfg, run, data.vocab), None
        samples = alignment_samples(
            inter, positive, data.vocab, cfg.onerec.max_len, cfg.onerec.window_step
        )
        requests = self._requests(run, cfg, data.vocab)
        trainset = AlignmentTrainSet(cfg.model, model, samples, reward, cfg.preference)
        ks = tuple(cfg.eval.ks)

        def day(m: nn.Module, split: int) -> dict[str, float]:
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
            "task": self.name,
            "alignment": {"init_test": before, "valid": day(model, 1), "test": after},
            "init": cfg.preference.init,
            "reward": cfg.preference.reward,
            "dataset": cfg.data.dataset,
            "protocol": run.prep.protocol.name,
            "valid": gathered_evaluate(model, data.valid.history, data.valid.target, ks, 1024),
            "test": gathered_evaluate(model, data.test.history, data.test.target, ks, 1024),
            **fit_summary(result),
            "num_items": data.vocab.size,
            "train_windows": len(samples),
            "parameters": parameters(model),
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

    def evaluate(self, cfg, model, data, folder, log) -> Evaluation:
        from reelrec.tasks.retrieval import next_item_evaluation

        # its epoch rows hold the per-user next-day protocol, not the run's: no training curve
        return next_item_evaluation(cfg, model, data, folder, log, history=[])

    def report_section(self, run, evaluations) -> list[str]:
        from reelrec.eval.report import alignment_section

        aligned = {n: e.detail for n, e in evaluations.items() if "alignment" in e.detail}
        return alignment_section(aligned) if aligned else []


def sft_task(sft: ExperimentConfig) -> Task:
    """The task of a generator config."""
    from reelrec.tasks.registry import MODELS

    return MODELS[sft.model].task


def _input_config(run: RunFolder, key: str, name: str, role: str, preset: str) -> ExperimentConfig:
    """The saved config of a model an alignment run reads (``preference.<key>`` = ``name``).

    Raises:
        RunError: it is missing or unreadable; says which key names it and how to train one.
    """
    from reelrec.tasks.trained import saved_config

    try:
        return saved_config(run, name)
    except RunError as exc:
        raise RunError(
            f"{exc} (preference.{key}={name!r}: {role}; train one first, e.g. "
            f"`reelrec train {preset} --run {run.path}`)"
        ) from None
