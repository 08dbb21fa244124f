"""Full ranking over every item, exact and memory-bounded: never sampled negatives.

Tie rule (documented, deterministic): among items with equal score, the lower item index ranks
first. So the rank of the target ``t`` is ``#{i : s_i > s_t} + #{i < t : s_i = s_t}``, 0-based,
over real items 1..V (column 0 is padding and never ranked). An out-of-vocabulary target
(index -1) gets rank :data:`MISS_RANK`: a miss at every cutoff, and a reciprocal rank below 1e-18.

:func:`target_ranks_chunked` and :func:`topk_chunked` score ``item_chunk`` items at a time from
user and item embeddings, so peak memory is ``B x item_chunk x 12`` bytes plus the buffers
(RecBole #1866, CASES.md C21), and give the same answer for every chunk size: each score is
:func:`reelrec.models.base.inner_product_scores`'s, whose value does not depend on the chunk
(float64 products rounded once), the scores of :meth:`EmbeddingScorer.score_all` too.

:func:`evaluate_model` picks the path from what the model declares
(:mod:`reelrec.models.base`): an :class:`~reelrec.models.base.EmbeddingScorer` (SASRec,
ELASTIC, popularity) is ranked chunked, never materialising a users x catalogue matrix; any
other :class:`~reelrec.models.base.ScoresAllItems` by its ``score_all``; a
:class:`~reelrec.models.base.RecommendsTopK` generator by its top-k list.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from reelrec.eval.metrics import (  # noqa: F401 - target_ranks and MISS_RANK are public here too
    MISS_RANK,
    _ranks_in_chunk,
    metrics_from_ranks,
    target_ranks,
)
from reelrec.models.base import (
    EmbeddingScorer,
    PaddingInvariant,
    RecommendsTopK,
    ScoresAllItems,
    inner_product_scores,
)


def target_ranks_chunked(
    user: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, item_chunk: int = 65536
) -> torch.Tensor:
    """Ranks from embeddings, scoring ``item_chunk`` items at a time (same result as one shot).

    Args:
        user: float (B, D) user representations.
        items: float (V + 1, D) item embeddings; row 0 is padding.
        targets: int64 (B,), 1..V or -1.
        item_chunk: items scored per step (>= 1).

    Returns:
        int64 (B,) ranks, :data:`MISS_RANK` for out-of-vocabulary targets. Costs two passes
        over the items (the first only over chunks holding a target).
    """
    if item_chunk < 1:
        raise ValueError("item_chunk must be >= 1")
    num_items = items.shape[0] - 1
    if bool(((targets > num_items) | ((targets < 1) & (targets != -1))).any()):
        raise ValueError(f"targets must be -1 or in 1..{num_items}")
    starts = range(1, num_items + 1, item_chunk)
    # Pass 1: each target's score, taken from the same matmul that scores its chunk in pass 2,
    # so exact ties stay exact (a separate dot product can differ in the last bit).
    tgt_scores = torch.zeros(len(targets), dtype=torch.float32, device=user.device)
    for start in starts:
        stop = min(start + item_chunk, num_items + 1)
        inside = (targets >= start) & (targets < stop)
        if inside.any():
            chunk = inner_product_scores(user, items[start:stop])
            tgt_scores = tgt_scores.to(chunk.dtype)
            rows = inside.nonzero().squeeze(1)
            tgt_scores[rows] = chunk[rows, targets[rows] - start]
    total = torch.zeros(len(targets), dtype=torch.long, device=user.device)
    for start in starts:
        stop = min(start + item_chunk, num_items + 1)
        chunk = inner_product_scores(user, items[start:stop])
        total += _ranks_in_chunk(chunk, targets, offset=start, target_scores=tgt_scores).clamp(
            min=0
        )
    return torch.where(targets < 1, torch.full_like(total, MISS_RANK), total)


def topk_chunked(
    user: torch.Tensor, items: torch.Tensor, k: int, item_chunk: int = 65536
) -> torch.Tensor:
    """Top-k item indices per user under the tie rule, scoring ``item_chunk`` items at a time.

    Args:
        user: float (B, D); items: float (V + 1, D), row 0 padding; k: list length (>= 1).

    Returns:
        int64 (B, k) item indices in 1..V, best first; -1 fills slots when V < k (CASES.md C05).
    """
    if k < 1 or item_chunk < 1:
        raise ValueError("k and item_chunk must be >= 1")
    b = user.shape[0]
    best_s = torch.full((b, 0), float("-inf"), device=user.device)
    best_i = torch.zeros((b, 0), dtype=torch.long, device=user.device)
    for start in range(1, items.shape[0], item_chunk):
        stop = min(start + item_chunk, items.shape[0])
        s = torch.cat([best_s, inner_product_scores(user, items[start:stop])], 1)
        i = torch.cat([best_i, torch.arange(start, stop, device=user.device).expand(b, -1)], 1)
        # sort by index (ascending) then stably by score (descending): ties keep lower index first
        order = torch.argsort(i, dim=1, stable=True)
        s, i = s.gather(1, order), i.gather(1, order)
        order = torch.argsort(s, dim=1, descending=True, stable=True)[:, :k]
        best_s, best_i = s.gather(1, order), i.gather(1, order)
    if best_i.shape[1] < k:
        pad = torch.full((b, k - best_i.shape[1]), -1, dtype=torch.long, device=user.device)
        best_i = torch.cat([best_i, pad], 1)
    return best_i


def evaluate_next_item(
    score_all: Callable[[torch.Tensor], torch.Tensor],
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...] = (5, 10, 20),
    batch_size: int = 512,
    by_length: bool = False,
) -> tuple[dict[str, float], np.ndarray]:
    """Full-ranking next-item metrics of a scorer over evaluation instances.

    Args:
        score_all: ``history (B, L) -> scores (B, V + 1)``.
        history: int64 (n, L) left-padded; targets: int64 (n,) (-1 = out of vocabulary,
            counted as a miss).
        ks: cutoffs.
        batch_size: instances scored at once.
        by_length: score instances in order of history length, each batch cut to its longest
            history (only for scorers whose output does not depend on left padding; ranks are
            returned in the input order). Saves most of the work when L is large and most
            histories are short (ML-1M over the whole history: 2,400 columns, median 96 items).

    Returns:
        ``(metrics, ranks)``: ``hr@k``, ``recall@k``, ``ndcg@k``, ``mrr@k``, ``mrr`` averaged
        over all n instances, plus ``n_instances`` and ``oov_targets``; ranks int64 (n,).

    Raises:
        ValueError: no instances, NaN scores, or targets outside {-1} U 1..V.
    """
    return _rank_metrics(
        lambda h, t: target_ranks(score_all(h), t), history, targets, ks, batch_size, by_length
    )


def evaluate_embeddings(
    model: EmbeddingScorer,
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...] = (5, 10, 20),
    batch_size: int = 512,
    by_length: bool = False,
    item_chunk: int = 65536,
) -> tuple[dict[str, float], np.ndarray]:
    """:func:`evaluate_next_item` of ``model.score_all`` without its (B, V + 1) matrices.

    Each batch's ``user_representation`` is ranked against ``item_embeddings()`` by
    :func:`target_ranks_chunked`: peak memory ``batch_size x item_chunk`` scores whatever the
    catalogue size, the same ranks (same tie rule) as the one-shot path.

    Args:
        model: an :class:`~reelrec.models.base.EmbeddingScorer`; histories are moved to its
            device. item_chunk: items scored per step (>= 1). Others: :func:`evaluate_next_item`.

    Returns and raises as :func:`evaluate_next_item`.
    """
    device = _device(model)
    with torch.no_grad():
        items = model.item_embeddings()

    def ranks(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        user = model.user_representation(h.to(device))
        return target_ranks_chunked(user, items, t.to(device), item_chunk).cpu()

    return _rank_metrics(ranks, history, targets, ks, batch_size, by_length)


def _device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _rank_metrics(
    rank_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...],
    batch_size: int,
    by_length: bool,
) -> tuple[dict[str, float], np.ndarray]:
    """Ranks of ``rank_batch(history batch, target batch)`` over all instances, batched as
    :func:`evaluate_next_item` describes, and their metrics."""
    if len(targets) == 0:
        raise ValueError("no evaluation instances")
    ranks = []
    order = None
    if by_length:  # similar lengths together; leading all-padding columns dropped per batch
        lengths = (history > 0).sum(1)
        order = torch.argsort(lengths, stable=True)
        history, targets = history[order], targets[order]
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            sl = slice(start, start + batch_size)
            batch = history[sl]
            if by_length:
                width = max(int((batch > 0).sum(1).max()), 1)
                batch = batch[:, batch.shape[1] - width :]
            ranks.append(rank_batch(batch, targets[sl]))
    all_ranks = torch.cat(ranks)
    if order is not None:
        all_ranks = torch.empty_like(all_ranks).scatter_(0, order, all_ranks)
    all_ranks = all_ranks.numpy()
    metrics = metrics_from_ranks(all_ranks, ks)
    metrics["n_instances"] = int(len(all_ranks))
    metrics["oov_targets"] = int((targets < 1).sum())
    return metrics, all_ranks


def ranks_from_topk(top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target in a top-k list, :data:`MISS_RANK` when absent.

    Args:
        top: int64 (B, k) item indices best first (-1 = empty slot), e.g. a beam's items.
        targets: int64 (B,), 1..V or -1 (out of vocabulary: always a miss).

    Returns:
        int64 (B,). Ranks >= k are unknown, so metrics are exact only for cutoffs <= k.
    """
    if top.ndim != 2 or targets.shape != (top.shape[0],):
        raise ValueError(
            f"top (B, k) and targets (B,) expected, got {tuple(top.shape)} and {tuple(targets.shape)}"
        )
    hit = (top == targets.unsqueeze(1)) & (targets.unsqueeze(1) > 0)
    first = hit.float().argmax(1)
    return torch.where(hit.any(1), first, torch.full_like(first, MISS_RANK))


def evaluate_model(
    model: torch.nn.Module,
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...] = (5, 10, 20),
    batch_size: int = 512,
    item_chunk: int = 65536,
) -> tuple[dict[str, float], np.ndarray]:
    """Next-item metrics of a model, by what it declares (:mod:`reelrec.models.base`).

    * :class:`~reelrec.models.base.EmbeddingScorer` (SASRec, ELASTIC, popularity): full
      ranking, ``item_chunk`` items at a time (:func:`evaluate_embeddings`; memory bounded at
      any catalogue size, ranks equal to ``score_all``'s).
    * other :class:`~reelrec.models.base.ScoresAllItems`: full ranking of ``score_all``.
    * :class:`~reelrec.models.base.RecommendsTopK` (generative models, whose beam search
      returns ranked items): the top-``max(ks)`` list; an item outside it is a miss at every
      cutoff, and ``mrr`` (uncut) is omitted because ranks beyond the list are unknown.

    :class:`~reelrec.models.base.PaddingInvariant` scorers are batched by history length.

    Args:
        model: the model (eval mode is the caller's). history: int64 (n, L) left-padded.
        targets: int64 (n,), 1..V or -1 (out of vocabulary: a miss). ks: cutoffs.
        batch_size: instances per batch. item_chunk: items per scoring step (>= 1).

    Returns and raises as :func:`evaluate_next_item`; also TypeError for a model that
    declares none of the three.
    """
    by_length = isinstance(model, PaddingInvariant)
    if isinstance(model, EmbeddingScorer):
        return evaluate_embeddings(model, history, targets, ks, batch_size, by_length, item_chunk)
    if isinstance(model, ScoresAllItems):
        return evaluate_next_item(model.score_all, history, targets, ks, batch_size, by_length)
    if not isinstance(model, RecommendsTopK):
        raise TypeError(
            f"{type(model).__name__} declares neither ScoresAllItems nor RecommendsTopK "
            "(reelrec.models.base): it cannot rank items"
        )
    if len(targets) == 0:
        raise ValueError("no evaluation instances")
    k = max(ks)
    device = _device(model)
    ranks = []
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            sl = slice(start, start + batch_size)
            top = model.recommend(history[sl].to(device), k).cpu()
            ranks.append(ranks_from_topk(top, targets[sl]))
    all_ranks = torch.cat(ranks).numpy()
    metrics = metrics_from_ranks(all_ranks, ks)
    metrics.pop("mrr", None)
    metrics["n_instances"] = int(len(all_ranks))
    metrics["oov_targets"] = int((targets < 1).sum())
    return metrics, all_ranks
