"""Full ranking over every item, exact and memory-bounded: never sampled negatives.

Tie rule (documented, deterministic): among items with equal score, the lower item index ranks
first. So the rank of the target ``t`` is ``#{i : s_i > s_t} + #{i < t : s_i = s_t}``, 0-based,
over real items 1..V (column 0 is padding and never ranked). An out-of-vocabulary target
(index -1) gets rank :data:`MISS_RANK`: a miss at every cutoff, and a reciprocal rank below 1e-18.

:func:`target_ranks_chunked` and :func:`topk_chunked` score ``item_chunk`` items at a time from
user and item embeddings, so peak memory is ``B x item_chunk x 4`` bytes plus the buffers
(RecBole #1866, CASES.md C21), and give the same answer for every chunk size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from reelrec.eval.metrics import metrics_from_ranks

#: rank given to targets that cannot be ranked (out of vocabulary): beyond every cutoff.
MISS_RANK = 2**62


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among items 1..V.

    Args:
        scores: float (B, V + 1); column 0 is ignored.
        targets: int64 (B,), item index in 1..V, or -1 for out of vocabulary.

    Returns:
        int64 (B,) ranks in 0..V-1, :data:`MISS_RANK` for out-of-vocabulary targets.

    Raises:
        ValueError: NaN scores, shape mismatch or targets outside {-1} U 1..V.
    """
    ranks = _ranks_in_chunk(scores[:, 1:], targets, offset=1)
    return torch.where(targets < 1, torch.full_like(ranks, MISS_RANK), ranks)


def _ranks_in_chunk(
    scores: torch.Tensor,
    targets: torch.Tensor,
    offset: int,
    target_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"scores (B, N) and targets (B,) expected, got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    oov = targets < 1
    if target_scores is None:
        n = scores.shape[1]
        if bool(((targets > n) | ((targets < 1) & (targets != -1))).any()):
            raise ValueError(f"targets must be -1 or in 1..{n}")
        target_scores = scores.gather(1, (targets.clamp(min=1) - offset).unsqueeze(1)).squeeze(1)
    ids = torch.arange(offset, offset + scores.shape[1], device=scores.device)
    ts = target_scores.unsqueeze(1)
    ahead = (scores > ts) | ((scores == ts) & (ids.unsqueeze(0) < targets.unsqueeze(1)))
    ranks = ahead.sum(1)
    return torch.where(oov, torch.full_like(ranks, -1), ranks)


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
    tgt_scores = torch.zeros(len(targets), dtype=user.dtype, device=user.device)
    for start in starts:
        stop = min(start + item_chunk, num_items + 1)
        inside = (targets >= start) & (targets < stop)
        if inside.any():
            chunk = user @ items[start:stop].T
            rows = inside.nonzero().squeeze(1)
            tgt_scores[rows] = chunk[rows, targets[rows] - start]
    total = torch.zeros(len(targets), dtype=torch.long, device=user.device)
    for start in starts:
        stop = min(start + item_chunk, num_items + 1)
        chunk = user @ items[start:stop].T
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
        s = torch.cat([best_s, user @ items[start:stop].T], 1)
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
        ValueError: no instances.
    """
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
            scores = score_all(batch)
            ranks.append(target_ranks(scores, targets[sl]))
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
) -> tuple[dict[str, float], np.ndarray]:
    """Next-item metrics of a model: full ranking by ``model.score_all`` when it scores every
    item, else the top-``max(ks)`` list of ``model.recommend(history, k)`` (generative models,
    whose beam search returns ranked items; an item outside the list is a miss at every cutoff).

    Returns and raises as :func:`evaluate_next_item`; ``mrr`` (uncut) is omitted for top-k
    models because ranks beyond the list are unknown.
    """
    if hasattr(model, "score_all"):
        by_length = bool(getattr(model, "padding_invariant", False))
        return evaluate_next_item(model.score_all, history, targets, ks, batch_size, by_length)
    if len(targets) == 0:
        raise ValueError("no evaluation instances")
    k = max(ks)
    device = next(model.parameters()).device
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
