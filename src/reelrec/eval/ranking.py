"""Full ranking over every item, exact and memory-bounded: never sampled negatives.

Tie rule (documented, never by id or order): a target that ties with ``e`` other items counts
as every one of the ``e + 1`` positions it could take in a random order of the tied items, with
equal weight (tie-aware expected rank, :func:`reelrec.eval.metrics.metrics_from_ranks`). Ranks
are therefore int64 (n, 2) rows ``[g, e]``: ``g`` items score above the target, ``e`` tie with
it. A scorer that gives every item the same score gets HR@10 = 10 / n_items for any target.
An out-of-vocabulary target (index -1) is ``[MISS_RANK, 0]``: a miss at every cutoff.

History masking (``mask_history``, a protocol flag applied identically to every model): the
items of the evaluation history are taken out of the ranking (scored -inf; a beam never returns
them). That history is the model's input window, the user's last ``max_len`` items, so a model
with a shorter window masks fewer items (Beauty, MicroLens: 144 and 59 users have more than 50). A target that is itself in the history is then a miss, counted as ``masked_targets``.
Unmasked is RecBole's default for sequential models; masked is what public TIGER
reproductions and the MicroLens authors' evaluation do.

:func:`target_ranks_chunked` scores ``item_chunk`` items at a time from user and item
embeddings, so peak memory is ``B x item_chunk x 12`` bytes plus the buffers (RecBole #1866,
CASES.md C21), and gives the same answer for every chunk size: each score is
:func:`reelrec.models.base.inner_product_scores`'s, whose value does not depend on the chunk
(float64 products rounded once), the scores of :meth:`EmbeddingScorer.score_all` too.
:func:`topk_chunked` (serving lists, not evaluation) must return k distinct items and breaks
ties by the lower index.

:func:`evaluate_model` picks the path from what the model declares
(:mod:`reelrec.models.base`): an :class:`~reelrec.models.base.EmbeddingScorer` (SASRec,
ELASTIC, popularity) is ranked chunked, never materialising a users x catalogue matrix; any
other :class:`~reelrec.models.base.ScoresAllItems` by its ``score_all``; a
:class:`~reelrec.models.base.RanksTargets` generator by its exact ranks below the largest
cutoff (every item by its sequence log-probability, without scoring them all); a
:class:`~reelrec.models.base.RecommendsTopK` generator asked for ``ranking="beam"`` by its
beam's top-k list.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from reelrec.eval.metrics import (  # noqa: F401 - target_ranks and MISS_RANK are public here too
    MISS_RANK,
    _ranks_in_chunk,
    check_targets,
    finish_ranks,
    metrics_from_ranks,
    target_ranks,
)
from reelrec.models.base import (
    EmbeddingScorer,
    PaddingInvariant,
    RanksTargets,
    RecommendsTopK,
    ScoresAllItems,
    inner_product_scores,
)


def mask_scores(scores: torch.Tensor, exclude: torch.Tensor, offset: int) -> torch.Tensor:
    """Set to -inf, in place, the scores of the items of ``exclude`` that fall in this chunk.

    Args:
        scores: float (B, N), column c scoring item ``offset + c``. exclude: int64 (B, L) item
            indices per row (0 / negatives = none). offset: item index of column 0.

    Returns:
        ``scores`` (modified in place).
    """
    col = exclude - offset
    ok = (exclude > 0) & (col >= 0) & (col < scores.shape[1])
    rows = torch.arange(len(scores), device=scores.device).unsqueeze(1).expand_as(col)
    scores[rows[ok], col[ok]] = float("-inf")
    return scores


def target_ranks_chunked(
    user: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    item_chunk: int = 65536,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ranks from embeddings, scoring ``item_chunk`` items at a time (same result as one shot).

    Args:
        user: float (B, D) user representations.
        items: float (V + 1, D) item embeddings; row 0 is padding.
        targets: int64 (B,), 1..V or -1.
        item_chunk: items scored per step (>= 1).
        exclude: int64 (B, L) items taken out of each row's ranking (history masking), or None.

    Returns:
        int64 (B, 2) ``[g, e]`` rows (module docstring), ``[MISS_RANK, 0]`` for
        out-of-vocabulary and excluded targets. Costs two passes over the items (the first only
        over chunks holding a target).
    """
    if item_chunk < 1:
        raise ValueError("item_chunk must be >= 1")
    num_items = items.shape[0] - 1
    check_targets(targets, num_items)
    starts = range(1, num_items + 1, item_chunk)

    def chunk_scores(start: int, stop: int) -> torch.Tensor:
        chunk = inner_product_scores(user, items[start:stop])
        return chunk if exclude is None else mask_scores(chunk, exclude, start)

    # Pass 1: each target's score, taken from the same matmul that scores its chunk in pass 2,
    # so exact ties stay exact (a separate dot product can differ in the last bit).
    tgt_scores = torch.zeros(len(targets), dtype=torch.float32, device=user.device)
    for start in starts:
        stop = min(start + item_chunk, num_items + 1)
        inside = (targets >= start) & (targets < stop)
        if inside.any():
            chunk = chunk_scores(start, stop)
            tgt_scores = tgt_scores.to(chunk.dtype)
            rows = inside.nonzero().squeeze(1)
            tgt_scores[rows] = chunk[rows, targets[rows] - start]
    greater = torch.zeros(len(targets), dtype=torch.long, device=user.device)
    equal = torch.zeros_like(greater)
    for start in starts:
        stop = min(start + item_chunk, num_items + 1)
        g, e = _ranks_in_chunk(chunk_scores(start, stop), targets, start, tgt_scores)
        greater, equal = greater + g, equal + e
    return finish_ranks(greater, equal, targets, tgt_scores)


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
    mask_history: bool = False,
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
        mask_history: take each user's history items out of its ranking (module docstring).

    Returns:
        ``(metrics, ranks)``: ``hr@k``, ``recall@k``, ``ndcg@k``, ``mrr@k``, ``mrr`` averaged
        over all n instances (tie rule of the module docstring), plus ``n_instances``,
        ``oov_targets``, ``masked_targets`` and ``mask_history``; ranks int64 (n, 2) ``[g, e]``.

    Raises:
        ValueError: no instances, NaN scores, or targets outside {-1} U 1..V.
    """

    def ranks(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scores = score_all(h)
        if mask_history:
            scores = mask_scores(scores.clone(), h, 0)
        return target_ranks(scores, t)

    return _rank_metrics(ranks, history, targets, ks, batch_size, by_length, mask_history)


def evaluate_embeddings(
    model: EmbeddingScorer,
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...] = (5, 10, 20),
    batch_size: int = 512,
    by_length: bool = False,
    item_chunk: int = 65536,
    mask_history: bool = False,
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
        h = h.to(device)
        user = model.user_representation(h)
        exclude = h if mask_history else None
        return target_ranks_chunked(user, items, t.to(device), item_chunk, exclude).cpu()

    return _rank_metrics(ranks, history, targets, ks, batch_size, by_length, mask_history)


def _device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def count_masked_targets(history: torch.Tensor, targets: torch.Tensor) -> int:
    """Targets that occur in their own history (int64 (n, L), (n,)): misses under masking."""
    return int(((history == targets.unsqueeze(1)) & (targets.unsqueeze(1) > 0)).any(1).sum())


def _rank_metrics(
    rank_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...],
    batch_size: int,
    by_length: bool,
    mask_history: bool,
) -> tuple[dict[str, float], np.ndarray]:
    """Ranks of ``rank_batch(history batch, target batch)`` over all instances, batched as
    :func:`evaluate_next_item` describes, and their metrics."""
    if len(targets) == 0:
        raise ValueError("no evaluation instances")
    ranks = []
    order = None
    n_masked = count_masked_targets(history, targets) if mask_history else 0
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
        all_ranks = torch.empty_like(all_ranks).index_copy_(0, order, all_ranks)
    return rank_summary(all_ranks.numpy(), targets, ks, mask_history, n_masked), all_ranks.numpy()


#: the counts an evaluation reports beside its metrics (not metrics themselves)
COUNT_KEYS = ("n_instances", "oov_targets", "masked_targets", "mask_history")


def rank_summary(
    ranks: np.ndarray,
    targets: torch.Tensor,
    ks: tuple[int, ...],
    mask_history: bool,
    n_masked: int,
    ranks_cut: bool = False,
) -> dict[str, float]:
    """Metrics of int64 (n, 2) ranks plus the counts every evaluation reports: ``n_instances``,
    ``oov_targets``, ``masked_targets`` (0 unless masking), ``mask_history`` (1.0 / 0.0) and,
    with ``ranks_cut`` (ranks known only below the largest cutoff: a beam's list, the
    generators' exact ranks), without the uncut ``mrr``."""
    metrics = metrics_from_ranks(ranks, ks)
    if ranks_cut:
        metrics.pop("mrr", None)
    metrics["n_instances"] = int(len(ranks))
    metrics["oov_targets"] = int((targets < 1).sum())
    metrics["masked_targets"] = int(n_masked)
    metrics["mask_history"] = float(mask_history)
    return metrics


def ranks_from_topk(top: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target in a top-k list, ``[MISS_RANK, 0]`` when absent.

    Args:
        top: int64 (B, k) distinct item indices best first (-1 = empty slot), e.g. a beam's.
        targets: int64 (B,), 1..V or -1 (out of vocabulary: always a miss).

    Returns:
        int64 (B, 2) ``[position, 0]`` rows (a list has no ties). Ranks >= k are unknown, so
        metrics are exact only for cutoffs <= k.
    """
    if top.ndim != 2 or targets.shape != (top.shape[0],):
        raise ValueError(
            f"top (B, k) and targets (B,) expected, got {tuple(top.shape)} and {tuple(targets.shape)}"
        )
    hit = (top == targets.unsqueeze(1)) & (targets.unsqueeze(1) > 0)
    first = hit.float().argmax(1)
    g = torch.where(hit.any(1), first, torch.full_like(first, MISS_RANK))
    return torch.stack([g, torch.zeros_like(g)], 1)


def evaluate_model(
    model: torch.nn.Module,
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...] = (5, 10, 20),
    batch_size: int = 512,
    item_chunk: int = 65536,
    mask_history: bool = False,
    ranking: str = "exact",
) -> tuple[dict[str, float], np.ndarray]:
    """Next-item metrics of a model, by what it declares (:mod:`reelrec.models.base`).

    * :class:`~reelrec.models.base.EmbeddingScorer` (SASRec, ELASTIC, popularity): full
      ranking, ``item_chunk`` items at a time (:func:`evaluate_embeddings`; memory bounded at
      any catalogue size, ranks equal to ``score_all``'s).
    * other :class:`~reelrec.models.base.ScoresAllItems`: full ranking of ``score_all``.
    * :class:`~reelrec.models.base.RanksTargets` (the generators): each target's exact
      full-ranking rank when below ``max(ks)``, a miss beyond, so every metric at a cutoff
      equals full ranking's; ``mrr`` (uncut) is omitted (ranks beyond are not computed).
    * with ``ranking="beam"``, a :class:`~reelrec.models.base.RecommendsTopK` generator (or a
      model that only recommends): the top-``max(ks)`` list of its beam search; an item
      outside it is a miss at every cutoff, and ``mrr`` (uncut) is omitted because ranks
      beyond the list are unknown.

    :class:`~reelrec.models.base.PaddingInvariant` scorers are batched by history length.

    Args:
        model: the model (eval mode is the caller's). history: int64 (n, L) left-padded.
        targets: int64 (n,), 1..V or -1 (out of vocabulary: a miss). ks: cutoffs.
        batch_size: instances per batch. item_chunk: items per scoring step (>= 1).
        mask_history: take each user's history items out of the ranking (module docstring).
        ranking: ``"exact"`` (full ranking of every item) or ``"beam"`` (the generator's list).

    Returns and raises as :func:`evaluate_next_item`; also TypeError for
    a model that declares none of the three, ValueError for an unknown ``ranking``.
    """
    if ranking not in ("exact", "beam"):
        raise ValueError(f"ranking must be 'exact' or 'beam', got {ranking!r}")
    by_length = isinstance(model, PaddingInvariant)
    beam = ranking == "beam" and isinstance(model, RecommendsTopK)
    if not beam and isinstance(model, EmbeddingScorer):
        m, r = evaluate_embeddings(
            model, history, targets, ks, batch_size, by_length, item_chunk, mask_history
        )
        return m, r
    if not beam and isinstance(model, ScoresAllItems):
        device = _device(model)
        m, r = evaluate_next_item(
            lambda h: model.score_all(h.to(device)).cpu(),
            history,
            targets,
            ks,
            batch_size,
            by_length,
            mask_history,
        )
        return m, r
    exact_ranks = not beam and isinstance(model, RanksTargets)
    if not (exact_ranks or isinstance(model, RecommendsTopK)):
        raise TypeError(
            f"{type(model).__name__} declares none of ScoresAllItems, RanksTargets and "
            "RecommendsTopK (reelrec.models.base): it cannot rank items"
        )
    if len(targets) == 0:
        raise ValueError("no evaluation instances")
    if (num_items := getattr(model, "num_items", None)) is not None:
        check_targets(targets, num_items)
    k = max(ks)
    device = _device(model)
    ranks = []
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            sl = slice(start, start + batch_size)
            h = history[sl].to(device)
            exclude = h if mask_history else None
            if exact_ranks:
                ranks.append(model.rank_targets(h, targets[sl].to(device), k, exclude).cpu())
            else:
                top = model.recommend(h, k, exclude=exclude).cpu()
                ranks.append(ranks_from_topk(top, targets[sl]))
    all_ranks = torch.cat(ranks).numpy()
    n_masked = count_masked_targets(history, targets) if mask_history else 0
    metrics = rank_summary(all_ranks, targets, ks, mask_history, n_masked, ranks_cut=True)
    return metrics, all_ranks


def evaluate_protocols(
    model: torch.nn.Module,
    history: torch.Tensor,
    targets: torch.Tensor,
    ks: tuple[int, ...] = (5, 10, 20),
    batch_size: int = 512,
    ranking: str = "exact",
    item_chunk: int = 65536,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_model` under both history protocols: ``{"unmasked": metrics,
    "masked": metrics}``.

    A model that scores every item without embeddings is scored once per batch and ranked
    both ways; other models (embedding scorers, cheap; the generators, whose exact ranks and
    beams depend on the excluded items) are evaluated once per protocol.

    Args and raises: as :func:`evaluate_model`.
    """
    exact_scorer = not isinstance(model, EmbeddingScorer) and isinstance(model, ScoresAllItems)
    if (ranking == "beam" and isinstance(model, RecommendsTopK)) or not exact_scorer:
        return {
            name: evaluate_model(
                model, history, targets, ks, batch_size, item_chunk, masked, ranking
            )[0]
            for name, masked in (("unmasked", False), ("masked", True))
        }
    if len(targets) == 0:
        raise ValueError("no evaluation instances")
    device = _device(model)
    plain, masked = [], []
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            sl = slice(start, start + batch_size)
            scores = model.score_all(history[sl].to(device)).cpu()
            plain.append(target_ranks(scores, targets[sl]))
            # a clone: score_all may return the model's own buffer or a cache
            masked.append(target_ranks(mask_scores(scores.clone(), history[sl], 0), targets[sl]))
    n_masked = count_masked_targets(history, targets)
    return {
        "unmasked": rank_summary(torch.cat(plain).numpy(), targets, ks, False, 0),
        "masked": rank_summary(torch.cat(masked).numpy(), targets, ks, True, n_masked),
    }
