"""Next-item retrieval: SASRec, ELASTIC, popularity and the semantic-ID generators OneRec /
OneRec-V2 / TIGER-style, all by full ranking over the item vocabulary (generators: every item by
its exact sequence log-probability; ``eval.ranking=beam`` ranks them by their beam's list).
``eval.mask_history`` decides whether a user's history items leave its ranking; every run
also writes its test split under both protocols (``test_protocols``) and, for generators,
ranked by the beam (``test_beam``).

Data: each user's positive items in time order (:func:`reelrec.data.sequences.build_sequences`),
left-padded training windows and one evaluation instance per validation / test target.
Metrics: Recall / NDCG / HR / MRR at ``eval.ks`` (docs/conventions.md).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from reelrec.data.sequences import SequenceData, build_sequences, item_side_features
from reelrec.eval.ranking import COUNT_KEYS, evaluate_model, evaluate_protocols
from reelrec.io import atomic_write_json, run_metadata, sha256_file
from reelrec.models.base import GeneratesSemanticIDs, RecommendsTopK, ScoresAllItems
from reelrec.tasks.base import (
    Evaluation,
    RunFolder,
    Task,
    check,
    fit_summary,
    parameters,
    read_details,
    read_history,
)
from reelrec.training import distributed as D

if TYPE_CHECKING:
    from reelrec.tasks.registry import ExperimentConfig


def gathered_evaluate(
    model: nn.Module,
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...],
    batch_size: int,
    mask_history: bool = False,
    ranking: str = "exact",
) -> dict[str, float]:
    """:func:`reelrec.eval.ranking.evaluate_model` metrics; under torchrun each rank ranks its
    share of the instances and the ranks are gathered, so every rank returns the metrics of the
    whole set (equal to one process's)."""
    env = D.current()
    args = (ks, batch_size, 65536, mask_history, ranking)
    if not env.distributed:
        return evaluate_model(model, history, targets, *args)[0]
    import torch.distributed as dist

    from reelrec.eval.ranking import count_masked_targets, rank_summary

    mine = torch.tensor_split(torch.arange(len(targets)), env.world)[env.rank]
    ranks = (
        evaluate_model(model, history[mine], targets[mine], *args)[1]
        if len(mine)
        else np.zeros((0, 2), dtype=np.int64)
    )
    parts: list = [None] * env.world
    dist.all_gather_object(parts, ranks)
    cut = not isinstance(model, ScoresAllItems) or (
        ranking == "beam" and isinstance(model, RecommendsTopK)
    )
    n_masked = count_masked_targets(history, targets) if mask_history else 0
    return rank_summary(np.concatenate(parts), targets, ks, mask_history, n_masked, cut)


class RetrievalTask(Task):
    """Sequential recommenders that score every item: SASRec, ELASTIC, popularity."""

    name = "retrieval"
    ranks_items = True

    def max_len(self, cfg: ExperimentConfig) -> int:
        """History length the data is cut to: ``max_len`` of the model's first section that
        has one (popularity has none: SASRec's default, 50)."""
        from dataclasses import fields

        from reelrec.models.sasrec import SASRecConfig
        from reelrec.tasks.registry import MODELS

        for name in MODELS[cfg.model].sections:
            section = getattr(cfg, name)
            if "max_len" in {f.name for f in fields(section)}:
                return section.max_len
        return SASRecConfig().max_len

    def trained_positions(self, cfg: ExperimentConfig) -> int | None:
        """How many trailing positions of each training window the model trains: 1 when its
        section sets ``prefixes`` (SASRec, ELASTIC: RecBole's data augmentation), None when
        it trains every position."""
        from reelrec.tasks.registry import MODELS

        prefixes = any(
            getattr(getattr(cfg, n), "prefixes", False) for n in MODELS[cfg.model].sections
        )
        return 1 if prefixes else None

    def window_step(self, cfg: ExperimentConfig) -> int | None:
        """Training-window step: 1 (one window per prefix) when only the last positions are
        trained, else None (the default, ``max_len``: every position of a window trained)."""
        return None if self.trained_positions(cfg) is None else 1

    def validate(self, cfg: ExperimentConfig) -> None:
        t, e = cfg.train, cfg.eval
        metric = re.fullmatch(r"(recall|hr|ndcg|mrr)@(\d+)|mrr", t.metric)
        check(
            metric is not None,
            "train.metric",
            "one of recall@K, hr@K, ndcg@K, mrr@K, mrr",
            t.metric,
        )
        if metric is not None and metric.group(2) is not None:
            check(
                int(metric.group(2)) in e.ks,
                "train.metric",
                f"at a cutoff listed in eval.ks {e.ks}",
                t.metric,
            )
        check(
            10 in e.ks, "eval.ks", "a list that includes 10 (reports show recall@10, ndcg@10)", e.ks
        )

    def data(self, run: RunFolder, cfg: ExperimentConfig) -> SequenceData:
        n, step = self.max_len(cfg), self.window_step(cfg)
        return run.cached(
            ("sequences", n, step),
            lambda: build_sequences(run.prep.interactions, run.prep.protocol, n, step),
        )

    def eval_rows(self, cfg: ExperimentConfig, n_valid: int) -> slice | torch.Tensor:
        """Validation instances looked at for early stopping (all of them by default)."""
        return slice(None)

    def fit(self, cfg, run, model, data, out, resume, log) -> dict[str, Any]:
        from reelrec.tasks.registry import MODELS
        from reelrec.training.checkpoint import save_model
        from reelrec.training.loop import WindowTrainSet, fit

        env = D.current()
        ks = tuple(cfg.eval.ks)
        subset = self.eval_rows(cfg, len(data.valid))

        def evaluate(m: nn.Module, split: str = "valid", full: bool = False) -> dict[str, float]:
            inst = data.valid if split == "valid" else data.test
            if full or split != "valid":  # final metrics: every user, or eval.max_users of them
                rows = user_subset(len(inst.target), cfg.eval.max_users, cfg.train.seed)
            else:
                rows = subset
            return gathered_evaluate(
                m,
                inst.history[rows],
                inst.target[rows],
                ks,
                cfg.eval.batch_size,
                cfg.eval.mask_history,
                cfg.eval.ranking,
            )

        t0 = time.perf_counter()
        info: dict[str, object] = {}
        if MODELS[cfg.model].trainable:
            log(
                f"training {cfg.run_name}"
                + (f" (model {cfg.model})" if cfg.run_name != cfg.model else "")
                + f" on {cfg.data.dataset}: {len(data.train_windows):,} windows, "
                f"{data.vocab.size:,} items, {parameters(model):,} parameters"
            )
            result = fit(
                model,
                WindowTrainSet(data.train_windows, self.trained_positions(cfg)),
                evaluate,
                cfg.train,
                out,
                resume=resume,
                log=log,
            )
            info = fit_summary(result)
        elif env.main:
            save_model(model, out / "model.safetensors")
        model.eval()
        valid, test = evaluate(model, "valid", full=True), evaluate(model, "test")  # every rank
        if not env.main:
            return {}  # rank 0 writes the metrics
        protocols = test_protocols(model, data, cfg, log)
        metrics = {
            "model": cfg.model,
            "task": self.name,
            "dataset": cfg.data.dataset,
            "protocol": run.prep.protocol.name,
            "valid": valid,
            "test": test,
            "mask_history": cfg.eval.mask_history,
            "ranking": cfg.eval.ranking if isinstance(model, RecommendsTopK) else "exact",
            **protocols,
            "train_seconds": round(time.perf_counter() - t0, 2),
            "num_items": data.vocab.size,
            "train_windows": len(data.train_windows),
            "parameters": parameters(model),
            **info,  # for trained models, train_seconds sums the epochs of every session
            **run_metadata(),
        }
        atomic_write_json(out / "metrics.json", metrics)
        log(
            f"{cfg.run_name}: test recall@10 {test['recall@10']:.4f}  ndcg@10 {test['ndcg@10']:.4f} "
            f"over {test['n_instances']:,} instances ({test['oov_targets']:,} targets unseen in train) "
            f"-> {out}"
        )
        return metrics

    def evaluate(self, cfg, model, data, folder, log) -> Evaluation:
        return next_item_evaluation(cfg, model, data, folder, log, read_history(folder))

    def report_section(self, run, evaluations) -> list[str]:
        """The full-ranking test table of every item-ranking model of the run is drawn by the
        run itself (:func:`reelrec.eval.report.retrieval_section`), across families."""
        return []


def user_subset(n: int, cap: int, seed: int) -> slice | torch.Tensor:
    """Rows of ``n`` evaluation instances to score: all (``cap`` 0 or >= n), else a fixed
    random ``cap`` of them in their order (``eval.max_users``; the same for every model of a
    seed, so their metrics stay comparable)."""
    if 0 < cap < n:
        gen = torch.Generator().manual_seed(seed + 7919)
        return torch.randperm(n, generator=gen)[:cap].sort().values
    return slice(None)


def test_protocols(model: nn.Module, data: SequenceData, cfg, log) -> dict[str, dict]:
    """The test split under both history protocols (``test_protocols``: unmasked, masked),
    and for a semantic-ID generator also by its beam's list (``test_beam``), so that every row
    of a results table can name its protocol and show beam against exact ranking."""
    ks, bs = tuple(cfg.eval.ks), cfg.eval.batch_size
    rows = user_subset(len(data.test.target), cfg.eval.max_users, cfg.train.seed)
    h, t = data.test.history[rows], data.test.target[rows]
    t0 = time.perf_counter()
    out: dict[str, dict] = {"test_protocols": evaluate_protocols(model, h, t, ks, bs)}
    if isinstance(model, GeneratesSemanticIDs):
        out["test_beam"] = evaluate_protocols(model, h, t, ks, bs, ranking="beam")
    p = out["test_protocols"]
    log(
        f"test ndcg@10 unmasked {p['unmasked']['ndcg@10']:.4f} / masked "
        f"{p['masked']['ndcg@10']:.4f}"
        + (
            f"; beam: {out['test_beam']['unmasked']['ndcg@10']:.4f} / "
            f"{out['test_beam']['masked']['ndcg@10']:.4f}"
            if "test_beam" in out
            else ""
        )
        + f" ({time.perf_counter() - t0:.0f} s)"
    )
    return out


def next_item_evaluation(cfg, model, data, folder, log, history: list) -> Evaluation:
    """Full-ranking test metrics of a next-item model under ``eval.mask_history`` and
    ``eval.ranking`` (generators: exact log-probabilities, or their beam's list), with its
    ``metrics.json`` as the detail and ``history`` as its training curve."""
    rows = user_subset(len(data.test.target), cfg.eval.max_users, cfg.train.seed)
    test, _ = evaluate_model(
        model,
        data.test.history[rows],
        data.test.target[rows],
        tuple(cfg.eval.ks),
        cfg.eval.batch_size,
        mask_history=cfg.eval.mask_history,
        ranking=cfg.eval.ranking,
    )
    detail = read_details(folder, log)
    detail["test"] = test
    summary = {k: v for k, v in test.items() if k not in COUNT_KEYS}
    log(f"{folder.name}: test recall@10 {test['recall@10']:.4f}  ndcg@10 {test['ndcg@10']:.4f}")
    return Evaluation(summary, detail, history)


class GenerativeTask(RetrievalTask):
    """OneRec / OneRec-V2 (and TIGER-style OneRec) generating semantic IDs by beam search."""

    name = "generative"

    def max_len(self, cfg: ExperimentConfig) -> int:
        return cfg.onerec.max_len

    def trained_positions(self, cfg: ExperimentConfig) -> int | None:
        """The pathways context trains the last ``session_items`` targets of each window; the
        causal context every position (None)."""
        return None if cfg.onerec.context == "causal" else cfg.onerec.session_items

    def window_step(self, cfg: ExperimentConfig) -> int | None:
        # the causal context trains every position of a window: windows every max_len items
        # make each training item a target exactly once per epoch
        return None if self.trained_positions(cfg) is None else cfg.onerec.window_step

    def validate(self, cfg: ExperimentConfig) -> None:
        super().validate(cfg)
        t, e = cfg.train, cfg.eval
        check(
            t.metric != "mrr",
            "train.metric",
            "a metric at a cutoff for generative models (their ranks are computed up to the "
            "largest cutoff only)",
            t.metric,
        )
        check(
            max(e.ks) <= cfg.onerec.beam,
            "onerec.beam",
            f">= the largest cutoff of eval.ks {e.ks} (the beam's items are the ranking)",
            cfg.onerec.beam,
        )

    def digest(self, cfg: ExperimentConfig, run: RunFolder) -> str:
        path = run.path / cfg.onerec.semantic_ids / "semantic_ids.parquet"
        return sha256_file(path) if path.exists() else ""

    def describe_digest(self, cfg: ExperimentConfig, run: RunFolder) -> str:
        return str(run.path / cfg.onerec.semantic_ids)

    def eval_rows(self, cfg: ExperimentConfig, n_valid: int) -> slice | torch.Tensor:
        # generation is costly: early stopping may look at a fixed random subset of the
        # validation instances (onerec.valid_instances); final metrics use them all
        cap = cfg.onerec.valid_instances
        if 0 < cap < n_valid:
            gen = torch.Generator().manual_seed(cfg.train.seed)
            return torch.randperm(n_valid, generator=gen)[:cap].sort().values
        return slice(None)


def build_generative(cfg: ExperimentConfig, data: SequenceData, run: RunFolder) -> nn.Module:
    """OneRec or OneRec-V2 over the semantic IDs in ``RUN/<onerec.semantic_ids>``.

    Raises:
        FileNotFoundError: the run has no semantic IDs (names the commands that make them).
        ValueError: a training item has no semantic ID, or IDs collide.
    """
    from reelrec.models.generative import SemanticIDTable
    from reelrec.models.onerec import OneRec
    from reelrec.models.onerec_v2 import OneRecV2
    from reelrec.tokenizer.semantic_ids import load_semantic_ids

    run_dir = run.path
    folder = run_dir / cfg.onerec.semantic_ids
    if not (folder / "semantic_ids.parquet").exists():
        method = " --method rq-vae" if "rq-vae" in folder.name else ""
        raise FileNotFoundError(
            f"{folder / 'semantic_ids.parquet'} not found: {cfg.run_name} generates semantic IDs "
            f"(onerec.semantic_ids={cfg.onerec.semantic_ids!r}); make them first with "
            f"`reelrec encode --run {run_dir}`, `reelrec align --run {run_dir}` and "
            f"`reelrec tokenize --run {run_dir}{method} --out {folder}`"
        )
    try:
        sid = load_semantic_ids(folder)
        table = SemanticIDTable.from_items(data.vocab.raw_ids, sid.item_ids, sid.semantic_ids)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{folder}: invalid semantic IDs ({exc})") from None
    side = torch.from_numpy(item_side_features(run.prep.interactions, data.vocab))
    cls = OneRecV2 if cfg.model == "onerec-v2" else OneRec
    return cls(table, cfg.onerec, side)
