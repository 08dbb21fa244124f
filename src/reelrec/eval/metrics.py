"""Evaluation metrics as pure, vectorised functions: arrays in, floats or arrays out.

Every function accepts numpy arrays (or anything ``np.asarray`` takes) and torch tensors,
which are detached and moved to the CPU first. Nothing here loops in Python over users or
rows, except to turn a ragged Python list of per-user items into one padded array.

Conventions (shared/cases/CASES.md, "Conventions"; each case named below is a test):

- AUC is the Mann-Whitney rank-sum statistic with AVERAGE ranks for tied scores, so a tied
  positive/negative pair counts 1/2 (case C01); it equals ``sklearn.metrics.roc_auc_score``.
  AUC over a set holding one class only is undefined and raises ``ValueError``, never 0 or 1
  (case C02).
- GAUC follows Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018,
  arXiv:1706.06978, the "Metrics" subsection of the experiments (Sect. 6): the mean of per-user
  AUC weighted by each user's number of impressions. Users with one class only are left out
  and counted (case C02); the per-user AUC uses average ranks inside each user, so GAUC does not
  depend on row order (case C01).
- NDCG uses linear gain and the discount 1/log2(rank + 1) with 1-based ranks (Järvelin and
  Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 20(4), 2002). NDCG@k
  divides the DCG of the top k recommended items by the DCG of the top k of the ideal order, so
  it lies in [0, 1]; a value outside raises ``AssertionError`` (case C04).
- Recall@k is hits in the top k divided by the user's number of relevant items (RecBole's
  definition), not by min(k, n_relevant).
- Top-k lists mark an empty slot with -1; an empty slot never counts as a hit, and -1 in the
  truth is padding, not an item (case C05). Item ids are otherwise >= 0.
- Users with no relevant items get NaN from the per-user top-k metrics; ``mean_over_users``
  leaves them out and counts them.
- Counting ids with repeats uses ``bincount`` (case C07), never ``counts[idx] += 1``.

Shape letters: U users, K list length (columns of ``ranked``), T truth items per user
(padded), N impressions (rows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "GAUCResult",
    "MeanResult",
    "auc",
    "count_ids",
    "count_ids_torch",
    "gauc",
    "hit_rate_at_k",
    "hits_at_k",
    "log_loss",
    "mean_over_users",
    "metrics_from_ranks",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
]

# Slack for the [0, 1] check of NDCG: sums of the same terms in a different order may differ
# in the last bits; anything beyond this is a real bug (case C04).
_UNIT_INTERVAL_TOL = 1e-9

Truth = Any  # int array (U, T) padded with -1, or a sequence of U iterables of item ids


@dataclass(frozen=True)
class GAUCResult:
    """Group AUC and what was left out.

    Attributes:
        value: impression-weighted mean of per-user AUC over users with both classes;
            NaN if no user has both classes.
        n_users: users that entered the mean.
        n_excluded_users: users left out because all their labels are one class.
        n_excluded_impressions: rows belonging to the excluded users.
    """

    value: float
    n_users: int
    n_excluded_users: int
    n_excluded_impressions: int


@dataclass(frozen=True)
class MeanResult:
    """Mean of a per-user metric over the users for which it is defined.

    Attributes:
        value: mean over the non-NaN entries; NaN if there are none.
        n_users: entries that entered the mean.
        n_excluded: NaN entries left out (users with no relevant items).
    """

    value: float
    n_users: int
    n_excluded: int


# --------------------------------------------------------------------------- input handling


def _to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and copied to the CPU."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        return np.asarray(t)
    return np.asarray(x)


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_numeric(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric (bool, int or float), got dtype {arr.dtype}")


def _check_integer(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")


def _binary_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Validate 0/1 labels of any numeric dtype; return them as int64 (N,)."""
    lab = _as_1d(labels, name)
    _check_numeric(lab, name)
    ok = (lab == 0) | (lab == 1)  # NaN fails both comparisons
    if not np.all(ok):
        bad = lab[~ok][0]
        raise ValueError(f"{name} must be 0 or 1, found {bad!r}")
    return lab.astype(np.int64)


def _float_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """Validate real scores without NaN; return them as float64 (N,)."""
    sc = _as_1d(scores, name)
    _check_numeric(sc, name)
    sc = sc.astype(np.float64)
    if np.isnan(sc).any():
        raise ValueError(f"{name} contain NaN (at index {int(np.flatnonzero(np.isnan(sc))[0])})")
    return sc


def _check_same_length(n: int, **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if len(arr) != n:
            lengths = ", ".join(f"{k}={len(v)}" for k, v in arrays.items())
            raise ValueError(f"length mismatch: {lengths} ({name} differs from {n})")
    if n == 0:
        raise ValueError("empty input: need at least one row")


# --------------------------------------------------------------------------- AUC, GAUC, log loss


def _tie_group_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean (N,) that is True where a new run of equal keys starts in sorted order."""
    n = len(sorted_keys[0])
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    for key in sorted_keys:
        starts[1:] |= key[1:] != key[:-1]
    return starts


def _average_positions(starts: np.ndarray) -> np.ndarray:
    """Mean 0-based position of each row's tie group, given the run starts; float64 (N,)."""
    n = len(starts)
    start_pos = np.flatnonzero(starts)
    end_pos = np.append(start_pos[1:], n) - 1  # inclusive end of each run
    group = np.cumsum(starts) - 1
    return (start_pos[group] + end_pos[group]) / 2.0


def _auc_from_rank_sums(rank_sum_pos: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray):
    """Mann-Whitney U / (n_pos * n_neg) from 1-based rank sums of the positives."""
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def auc(labels: Any, scores: Any) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula with average ranks for ties.

    A tied positive/negative pair counts 1/2, so the value equals
    ``sklearn.metrics.roc_auc_score`` and does not depend on row order (CASES.md C01).

    Args:
        labels: (N,) 0/1 labels, any bool/int/float dtype, numpy or torch.
        scores: (N,) real scores (higher = more likely positive), any numeric dtype.

    Returns:
        AUC in [0, 1] as a Python float.

    Raises:
        ValueError: empty input, length mismatch, non 1-D input, labels not in {0, 1}, NaN
            scores, or all labels one class (AUC is undefined there, CASES.md C02).
    """
    lab = _binary_labels(labels)
    sc = _float_scores(scores)
    _check_same_length(len(lab), labels=lab, scores=sc)
    n_pos = int(lab.sum())
    n_neg = len(lab) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"AUC is undefined when all labels are one class (n_pos={n_pos}, n_neg={n_neg})"
        )
    order = np.argsort(sc, kind="stable")
    ranks = _average_positions(_tie_group_starts(sc[order])) + 1.0  # 1-based average ranks
    rank_sum = float(ranks[lab[order] == 1].sum())
    return float(_auc_from_rank_sums(rank_sum, n_pos, n_neg))


def gauc(user_ids: Any, labels: Any, scores: Any) -> GAUCResult:
    """Group AUC: impression-weighted mean of per-user AUC (Zhou et al., DIN, arXiv:1706.06978).

    Rows are sorted by (user, score); ties inside one user get their average rank, so a tied
    positive/negative pair counts 1/2 and the result does not depend on row order (C01).
    Users whose labels are all one class are left out and counted (C02). No Python loop over
    users: rank sums per user come from ``np.bincount``.

    Args:
        user_ids: (N,) user of each impression; ints or strings (any dtype ``np.unique`` sorts).
        labels: (N,) 0/1 labels, any bool/int/float dtype.
        scores: (N,) real scores, any numeric dtype.

    Returns:
        GAUCResult(value, n_users, n_excluded_users, n_excluded_impressions); value is NaN when
        no user has both classes.

    Raises:
        ValueError: empty input, length mismatch, non 1-D input, labels not in {0, 1} or NaN
            scores.
    """
    users = _as_1d(user_ids, "user_ids")
    lab = _binary_labels(labels)
    sc = _float_scores(scores)
    _check_same_length(len(lab), user_ids=users, labels=lab, scores=sc)

    _, user_code = np.unique(users, return_inverse=True)
    user_code = user_code.reshape(-1)  # numpy 2.x may keep the input's shape
    n_groups = int(user_code.max()) + 1

    order = np.lexsort((sc, user_code))  # primary key: user, secondary: score
    u_sorted = user_code[order]
    lab_sorted = lab[order]
    avg_pos = _average_positions(_tie_group_starts(u_sorted, sc[order]))

    n_rows = np.bincount(user_code, minlength=n_groups)
    n_pos = np.bincount(user_code, weights=lab, minlength=n_groups)
    n_neg = n_rows - n_pos
    user_first_pos = np.concatenate(([0], np.cumsum(n_rows)[:-1]))
    ranks = avg_pos - user_first_pos[u_sorted] + 1.0  # 1-based average rank inside the user
    rank_sum_pos = np.bincount(u_sorted, weights=ranks * lab_sorted, minlength=n_groups)

    valid = (n_pos > 0) & (n_neg > 0)
    n_excluded_users = int((~valid).sum())
    n_excluded_impressions = int(n_rows[~valid].sum())
    if not valid.any():
        return GAUCResult(float("nan"), 0, n_excluded_users, n_excluded_impressions)
    per_user = _auc_from_rank_sums(rank_sum_pos[valid], n_pos[valid], n_neg[valid])
    weights = n_rows[valid]
    value = float((weights * per_user).sum() / weights.sum())
    return GAUCResult(value, int(valid.sum()), n_excluded_users, n_excluded_impressions)


def log_loss(labels: Any, probs: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, with probabilities clipped to [eps, 1 - eps] (natural log).

    Args:
        labels: (N,) 0/1 labels, any bool/int/float dtype.
        probs: (N,) predicted probabilities of the positive class, in [0, 1].
        eps: clipping margin in (0, 0.5); keeps a confident mistake finite (-log(eps)).

    Returns:
        Mean loss in nats as a Python float.

    Raises:
        ValueError: empty input, length mismatch, non 1-D input, labels not in {0, 1}, NaN
            probabilities, probabilities outside [0, 1], or eps outside (0, 0.5).
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    lab = _binary_labels(labels)
    p = _float_scores(probs, "probs")
    _check_same_length(len(lab), labels=lab, probs=p)
    out = (p < 0.0) | (p > 1.0)
    if out.any():
        raise ValueError(f"probs must lie in [0, 1], found {p[out][0]!r}")
    p = np.clip(p, eps, 1.0 - eps)
    losses = -(lab * np.log(p) + (1 - lab) * np.log1p(-p))
    return float(losses.mean())


# --------------------------------------------------------------------------- top-k list metrics


def _ranked_array(ranked: Any) -> np.ndarray:
    """Validate a (U, K) int list of item ids with -1 for empty slots; return int64."""
    arr = _to_numpy(ranked)
    if arr.ndim != 2:
        raise ValueError(f"ranked must be 2-D (U, K), got shape {arr.shape}")
    _check_integer(arr, "ranked")
    arr = arr.astype(np.int64)
    if (arr < -1).any():
        bad = int(arr[arr < -1][0])
        raise ValueError(f"ranked holds id {bad}; item ids are >= 0 and -1 marks an empty slot")
    # A repeated item would be counted twice and push recall above 1: reject it.
    srt = np.sort(arr, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        item = int(srt[row, 1:][dup[row]][0])
        raise ValueError(f"ranked row {row} lists item {item} more than once")
    return arr


def _pad_ragged(rows: Sequence[np.ndarray], fill: float | int, dtype: Any) -> np.ndarray:
    """Stack 1-D arrays of different lengths into a (len(rows), max_len) array."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    width = int(lengths.max()) if len(rows) else 0
    out = np.full((len(rows), width), fill, dtype=dtype)
    if width:
        mask = np.arange(width) < lengths[:, None]
        out[mask] = np.concatenate([np.asarray(r, dtype=dtype) for r in rows])
    return out


def _ids_1d(items: Iterable[Any], what: str) -> np.ndarray:
    arr = _to_numpy(list(items) if not isinstance(items, np.ndarray | torch.Tensor) else items)
    arr = arr.reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer item ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _truth_array(truth: Truth, n_users: int) -> np.ndarray:
    """Padded (U, T) int64 truth with -1 padding, duplicates within a row turned into -1."""
    if isinstance(truth, np.ndarray | torch.Tensor):
        arr = _to_numpy(truth)
        if arr.ndim != 2:
            raise ValueError(f"truth as an array must be 2-D (U, T), got shape {arr.shape}")
        _check_integer(arr, "truth")
        arr = arr.astype(np.int64)
    else:
        rows = list(truth)
        arr = _pad_ragged([_ids_1d(r, f"truth[{i}]") for i, r in enumerate(rows)], -1, np.int64)
    if arr.shape[0] != n_users:
        raise ValueError(f"truth has {arr.shape[0]} users, ranked has {n_users}")
    if (arr < -1).any():
        bad = int(arr[arr < -1][0])
        raise ValueError(f"truth holds id {bad}; item ids are >= 0 and -1 is padding")
    arr = np.sort(arr, axis=1)
    arr[:, 1:][arr[:, 1:] == arr[:, :-1]] = -1  # a relevant item counts once
    return np.sort(arr, axis=1)  # rows stay sorted for the packed keys in _match


def _match(ranked: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find each ranked item in its own user's truth row.

    Args:
        ranked: (U, K) int64 with -1 for empty slots.
        truth: (U, T) int64 with -1 padding, no duplicate ids in a row.

    Returns:
        hits: (U, K) bool. where: (U, K) int64 flat index into ``truth`` of the matched entry
        (meaningful only where hits is True).
    """
    n_users, width = truth.shape
    hits = np.zeros(ranked.shape, dtype=bool)
    where = np.zeros(ranked.shape, dtype=np.int64)
    if width == 0 or ranked.size == 0:
        return hits, where
    max_id = int(max(ranked.max(), truth.max()))
    stride = max_id + 2
    if n_users * stride < 2**62:
        # One sorted key per (user, item): rows are in user order and each row is sorted, so
        # the flattened keys are sorted and one searchsorted serves every user at once.
        rows = np.arange(n_users, dtype=np.int64)[:, None]
        truth_keys = (rows * stride + truth + 1).reshape(-1)
        ranked_keys = (rows * stride + ranked + 1).reshape(-1)
        pos = np.searchsorted(truth_keys, ranked_keys)
        pos = np.minimum(pos, truth_keys.size - 1)
        found = truth_keys[pos] == ranked_keys
        hits = found.reshape(ranked.shape)
        where = pos.reshape(ranked.shape)
    else:  # ids too large for packed keys: compare by broadcasting, (U, K, T) memory
        eq = ranked[:, :, None] == truth[:, None, :]
        hits = eq.any(axis=2)
        where = np.argmax(eq, axis=2) + np.arange(n_users)[:, None] * width
    hits &= ranked >= 0  # an empty slot never hits, even against padding (C05)
    return hits, where


def _check_k(k: int, n_cols: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n_cols:
        raise ValueError(
            f"k={k} exceeds the {n_cols} columns of ranked; pad the lists with -1 to evaluate @k"
        )


def _prepare(ranked: Any, truth: Truth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ranked, hits (U, K) and number of relevant items per user (U,)."""
    r = _ranked_array(ranked)
    t = _truth_array(truth, r.shape[0])
    hits, _ = _match(r, t)
    return r, hits, (t >= 0).sum(axis=1)


def _nan_where_no_relevant(values: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return np.where(n_relevant > 0, values, np.nan)


def hits_at_k(ranked: Any, truth: Truth) -> np.ndarray:
    """Which recommended items are relevant.

    Args:
        ranked: (U, K) int item ids, best first; -1 marks an empty slot (never a hit, C05).
        truth: relevant items per user: int array (U, T) padded with -1, or a sequence of U
            iterables of int ids. Repeated ids count once; -1 is padding.

    Returns:
        (U, K) bool array, True where ``ranked[u, j]`` is one of user u's relevant items.

    Raises:
        ValueError: ranked not 2-D or not integer, ids < -1 in ranked or truth, an item listed
            twice in one ranked row, or truth with a different number of users.
    """
    _, hits, _ = _prepare(ranked, truth)
    return hits


def recall_at_k(ranked: Any, truth: Truth, k: int) -> np.ndarray:
    """Recall@k per user: hits in the top k divided by the number of relevant items.

    This is RecBole's definition (denominator n_relevant, not min(k, n_relevant)), so a user
    with more than k relevant items cannot reach 1.

    Args:
        ranked: (U, K) int item ids, -1 for empty slots; K >= k.
        truth: (U, T) int array padded with -1, or a sequence of U iterables of item ids.
        k: cutoff, 1 <= k <= K.

    Returns:
        (U,) float64 in [0, 1]; NaN for users with no relevant items.

    Raises:
        ValueError: as ``hits_at_k``, or k not an integer in [1, K].
    """
    r, hits, n_rel = _prepare(ranked, truth)
    _check_k(k, r.shape[1])
    n_hit = hits[:, :k].sum(axis=1)
    return _nan_where_no_relevant(n_hit / np.maximum(n_rel, 1), n_rel)


def hit_rate_at_k(ranked: Any, truth: Truth, k: int) -> np.ndarray:
    """HR@k per user: 1.0 if any of the top k items is relevant, else 0.0.

    Args:
        ranked: (U, K) int item ids, -1 for empty slots; K >= k.
        truth: (U, T) int array padded with -1, or a sequence of U iterables of item ids.
        k: cutoff, 1 <= k <= K.

    Returns:
        (U,) float64 of 0.0/1.0; NaN for users with no relevant items.

    Raises:
        ValueError: as ``hits_at_k``, or k not an integer in [1, K].
    """
    r, hits, n_rel = _prepare(ranked, truth)
    _check_k(k, r.shape[1])
    return _nan_where_no_relevant(hits[:, :k].any(axis=1).astype(np.float64), n_rel)


def mrr_at_k(ranked: Any, truth: Truth, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant item within the top k, else 0.

    Args:
        ranked: (U, K) int item ids, -1 for empty slots; K >= k.
        truth: (U, T) int array padded with -1, or a sequence of U iterables of item ids.
        k: cutoff, 1 <= k <= K.

    Returns:
        (U,) float64: 1/rank (1-based) of the first hit in the top k, 0.0 if none; NaN for
        users with no relevant items.

    Raises:
        ValueError: as ``hits_at_k``, or k not an integer in [1, K].
    """
    r, hits, n_rel = _prepare(ranked, truth)
    _check_k(k, r.shape[1])
    top = hits[:, :k]
    first = np.argmax(top, axis=1)  # 0 when there is no hit; masked below
    rr = np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return _nan_where_no_relevant(rr, n_rel)


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for 1-based ranks 1..k; float64 (k,)."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _check_unit_interval(values: np.ndarray, name: str) -> np.ndarray:
    """Raise AssertionError if a finite value leaves [0, 1]; clip rounding noise."""
    finite = values[np.isfinite(values)]
    if finite.size and (
        finite.min() < -_UNIT_INTERVAL_TOL or finite.max() > 1.0 + _UNIT_INTERVAL_TOL
    ):
        raise AssertionError(
            f"{name} outside [0, 1] (min {finite.min()}, max {finite.max()}): the DCG and the "
            "ideal DCG are not truncated to the same k (CASES.md C04)"
        )
    return np.where(np.isfinite(values), np.clip(values, 0.0, 1.0), values)


def _gains_arrays(gains: Sequence[Mapping[Any, float]], n_users: int):
    """Padded (U, T) item ids (-1 padding) and float64 gains (0 padding) from per-user dicts."""
    gains = list(gains)
    if len(gains) != n_users:
        raise ValueError(f"gains has {len(gains)} users, ranked has {n_users}")
    items_rows, gain_rows = [], []
    for i, g in enumerate(gains):
        if not isinstance(g, Mapping):
            raise ValueError(f"gains[{i}] must be a mapping item -> gain, got {type(g).__name__}")
        items_rows.append(_ids_1d(list(g.keys()), f"gains[{i}] keys"))
        gain_rows.append(np.asarray(list(g.values()), dtype=np.float64))
    items = _pad_ragged(items_rows, -1, np.int64)
    values = _pad_ragged(gain_rows, 0.0, np.float64)
    lengths = np.array([len(row) for row in items_rows], dtype=np.int64)
    filled = np.arange(items.shape[1]) < lengths[:, None]
    if (items[filled] < 0).any():
        raise ValueError(f"gains keys must be item ids >= 0, found {int(items[filled].min())}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("gains must be finite and >= 0")
    # Sort each row by item id so the packed keys in _match are sorted; keep gains aligned.
    order = np.argsort(items, axis=1, kind="stable")
    return np.take_along_axis(items, order, axis=1), np.take_along_axis(values, order, axis=1)


def ndcg_at_k(
    ranked: Any,
    truth: Truth | None,
    k: int,
    gains: Sequence[Mapping[Any, float]] | None = None,
) -> np.ndarray:
    """NDCG@k per user with linear gain and discount 1/log2(rank + 1) (Järvelin & Kekäläinen).

    DCG@k sums gain / log2(rank + 1) over the top k slots of ``ranked`` (rank 1-based, empty
    slots gain 0). IDCG@k is the same sum over the top k gains of the user's ideal order, so
    both sides are truncated to k (CASES.md C04) and the result lies in [0, 1].

    Args:
        ranked: (U, K) int item ids, -1 for empty slots; K >= k.
        truth: binary relevance: (U, T) int array padded with -1, or a sequence of U iterables
            of item ids (gain 1 each). Must be None when ``gains`` is given.
        k: cutoff, 1 <= k <= K.
        gains: graded relevance, a sequence of U mappings {item id: gain >= 0}; items not in a
            user's mapping have gain 0.

    Returns:
        (U,) float64 in [0, 1]; NaN for users whose ideal DCG is 0 (no relevant item).

    Raises:
        ValueError: as ``hits_at_k``; k not an integer in [1, K]; both or neither of truth and
            gains given; gains negative, non-finite or keyed by ids < 0.
        AssertionError: a value outside [0, 1] (a truncation bug, C04).
    """
    if (truth is None) == (gains is None):
        raise ValueError("give exactly one of truth (binary relevance) or gains (graded)")
    r = _ranked_array(ranked)
    _check_k(k, r.shape[1])
    if gains is None:
        t = _truth_array(truth, r.shape[0])
        g = (t >= 0).astype(np.float64)
    else:
        t, g = _gains_arrays(gains, r.shape[0])
    hits, where = _match(r[:, :k], t)
    disc = _discounts(k)
    gain_at = np.where(hits, g.reshape(-1)[where] if g.size else 0.0, 0.0)
    dcg = gain_at @ disc
    ideal = -np.sort(-g, axis=1)[:, :k]
    idcg = ideal @ disc[: ideal.shape[1]]
    ndcg = np.divide(dcg, idcg, out=np.full(len(dcg), np.nan), where=idcg > 0)
    return _check_unit_interval(ndcg, f"NDCG@{k}")


def mean_over_users(values: Any) -> MeanResult:
    """Average a per-user metric, leaving out NaN entries (users with no relevant items).

    Args:
        values: (U,) float per-user values, NaN where the metric is undefined.

    Returns:
        MeanResult(value, n_users, n_excluded); value is NaN when every entry is NaN or U = 0.

    Raises:
        ValueError: values not 1-D, not numeric, or holding +-inf.
    """
    v = _as_1d(values, "values")
    _check_numeric(v, "values")
    v = v.astype(np.float64)
    if np.isinf(v).any():
        raise ValueError("values hold +-inf; only NaN marks an excluded user")
    keep = ~np.isnan(v)
    n_users = int(keep.sum())
    value = float(v[keep].mean()) if n_users else float("nan")
    return MeanResult(value, n_users, int(len(v) - n_users))


# --------------------------------------------------------------------------- single-target ranks


def metrics_from_ranks(ranks: Any, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """Leave-one-out metrics from the rank of each user's single held-out item.

    With one relevant item per user at 0-based rank r: HR@k = Recall@k = [r < k], NDCG@k =
    1/log2(r + 2) if r < k else 0 (the ideal DCG is 1), MRR@k = 1/(r + 1) if r < k else 0, and
    MRR = 1/(r + 1) with no cutoff.

    Tie rule (tie-aware expected rank, McSherry and Najork, ECIR 2008): a row ``[g, e]`` says
    ``g`` items score above the target and ``e`` other items score exactly as it does. Its
    position is then uniform over ``g .. g + e`` (a random order of the tied items), and each
    metric is its expectation over those ``e + 1`` positions. So a scorer that gives every item
    the same score gets HR@k = k / n_items for any target, whatever its id or position in the
    input: no tie is ever broken by item id or order.

    Args:
        ranks: int (U,) ranks with no ties, or int (U, 2) rows ``[g, e]`` (``e = 0``: no tie).
            :data:`MISS_RANK` marks a target that cannot be ranked.
        ks: cutoffs, positive integers.

    Returns:
        Dict of Python floats averaged over users, keys ``hr@k``, ``recall@k``, ``ndcg@k``,
        ``mrr@k`` for each k in ks (in that order), then ``mrr``.

    Raises:
        ValueError: empty input, a shape other than (U,) / (U, 2), non-integer dtype, negative
            values, or a k that is not a positive integer.
    """
    arr = _to_numpy(ranks)
    if arr.ndim == 2 and arr.shape[1] == 2:
        g, e = arr[:, 0], arr[:, 1]
    elif arr.ndim == 1:
        g, e = arr, np.zeros_like(arr)
    else:
        raise ValueError(f"ranks must be (U,) or (U, 2) [greater, ties], got {arr.shape}")
    _check_integer(arr, "ranks")
    if g.size == 0:
        raise ValueError("empty input: ranks holds no users")
    if (arr < 0).any():
        raise ValueError(f"ranks must be >= 0 (0 = top), found {int(arr[arr < 0][0])}")
    if (arr > MISS_RANK).any():
        raise ValueError(f"ranks must be <= MISS_RANK (2**62), found {int(arr.max())}")
    g, e = g.astype(np.int64), e.astype(np.int64)
    if ((g + e >= MISS_RANK) & (e > 0)).any():
        raise ValueError("a tied row [g, e] must have g + e < MISS_RANK (a miss has no ties)")
    n = e + 1.0  # positions a tied target may take
    tied = e > 0
    out: dict[str, float] = {}
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"every k must be a positive integer, got {k!r}")
        lo, hi = np.minimum(g, k), np.minimum(g + e + 1, k)  # positions g..g+e inside the top k
        r = np.arange(k, dtype=np.float64)
        disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(r + 2.0))])
        recip = np.concatenate([[0.0], np.cumsum(1.0 / (r + 1.0))])
        hr = float(((hi - lo) / n).mean())
        out[f"hr@{k}"] = hr
        out[f"recall@{k}"] = hr
        out[f"ndcg@{k}"] = float(((disc[hi] - disc[lo]) / n).mean())
        out[f"mrr@{k}"] = float(((recip[hi] - recip[lo]) / n).mean())
    mrr = 1.0 / (g.astype(np.float64) + 1.0)
    if tied.any():
        # mean of 1/(p + 1) over p = g..g+e: (H(g + e + 1) - H(g)) / (e + 1), with the
        # harmonic number H(m) = digamma(m + 1) + Euler's gamma (no array of size g)
        gt = torch.from_numpy(g[tied].astype(np.float64))
        et = torch.from_numpy(e[tied].astype(np.float64))
        diff = torch.special.digamma(gt + et + 2.0) - torch.special.digamma(gt + 1.0)
        mrr[tied] = (diff / (et + 1.0)).numpy()
    out["mrr"] = float(mrr.mean())
    return out


# --------------------------------------------------------------------------- counting


def count_ids(ids: Any, num_ids: int) -> np.ndarray:
    """Occurrences of each id, with repeated ids counted every time (CASES.md C07).

    Uses ``np.bincount``; ``counts[ids] += 1`` would count a repeated id once per batch, so
    counts would depend on batch composition.

    Args:
        ids: int ids of any shape (flattened), each in [0, num_ids).
        num_ids: size of the id space, >= 0.

    Returns:
        (num_ids,) int64 counts.

    Raises:
        ValueError: non-integer ids, num_ids < 0, or an id outside [0, num_ids) (named).
    """
    if isinstance(num_ids, bool) or not isinstance(num_ids, int | np.integer) or num_ids < 0:
        raise ValueError(f"num_ids must be a non-negative integer, got {num_ids!r}")
    arr = _to_numpy(ids).reshape(-1)
    if arr.size == 0:
        return np.zeros(num_ids, dtype=np.int64)
    _check_integer(arr, "ids")
    bad = (arr < 0) | (arr >= num_ids)
    if bad.any():
        raise ValueError(f"id {int(arr[bad][0])} is outside [0, {num_ids})")
    return np.bincount(arr.astype(np.int64), minlength=num_ids).astype(np.int64)


def count_ids_torch(ids: torch.Tensor, num_ids: int) -> torch.Tensor:
    """Torch twin of ``count_ids``: ``torch.bincount`` on the ids' device (CASES.md C07).

    Args:
        ids: integer tensor of any shape (flattened), each in [0, num_ids).
        num_ids: size of the id space, >= 0.

    Returns:
        (num_ids,) torch.int64 counts on ``ids.device``.

    Raises:
        ValueError: non-integer or non-tensor ids, num_ids < 0, or an id outside [0, num_ids)
            (named). The range check reads one value back from the device.
    """
    if isinstance(num_ids, bool) or not isinstance(num_ids, int | np.integer) or num_ids < 0:
        raise ValueError(f"num_ids must be a non-negative integer, got {num_ids!r}")
    if not isinstance(ids, torch.Tensor):
        raise ValueError(f"ids must be a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"ids must have an integer dtype, got {ids.dtype}")
    flat = ids.reshape(-1).long()
    if flat.numel() == 0:
        return torch.zeros(num_ids, dtype=torch.int64, device=ids.device)
    bad = (flat < 0) | (flat >= num_ids)
    if bool(bad.any()):
        first = int(flat[bad][0])
        raise ValueError(f"id {first} is outside [0, {num_ids})")
    return torch.bincount(flat, minlength=int(num_ids)).to(torch.int64)


#: rank given to targets that cannot be ranked (out of vocabulary): beyond every cutoff.
MISS_RANK = 2**62


def check_targets(targets: torch.Tensor, num_items: int) -> None:
    """Refuse target item indices outside ``{-1} U 1..num_items``.

    Args:
        targets: int64 (B,) item indices; -1 marks an out-of-vocabulary target (a miss).
        num_items: V, the catalogue size (item indices 1..V; 0 is padding).

    Raises:
        ValueError: a target that is 0, below -1 or above V (names V).
    """
    if bool(((targets > num_items) | ((targets < 1) & (targets != -1))).any()):
        raise ValueError(f"targets must be -1 or in 1..{num_items}")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target among items 1..V, with its ties (the rule of
    :func:`metrics_from_ranks`).

    Args:
        scores: float (B, V + 1); column 0 is ignored. -inf marks an item taken out of the
            ranking (a masked history item): it never ties with a finite target score.
        targets: int64 (B,), item index in 1..V, or -1 for out of vocabulary.

    Returns:
        int64 (B, 2) rows ``[g, e]``: g items score above the target, e other items score
        exactly as it does. ``[MISS_RANK, 0]`` for out-of-vocabulary targets and for targets
        whose own score is -inf (masked).

    Raises:
        ValueError: NaN scores, shape mismatch or targets outside {-1} U 1..V.
    """
    greater, equal = _ranks_in_chunk(scores[:, 1:], targets, offset=1)
    return finish_ranks(greater, equal, targets, _target_scores(scores, targets))


def _target_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """float (B,) score of each target (any value for -1 targets)."""
    return scores.gather(1, targets.clamp(min=1).unsqueeze(1)).squeeze(1)


def finish_ranks(
    greater: torch.Tensor, equal: torch.Tensor, targets: torch.Tensor, target_scores: torch.Tensor
) -> torch.Tensor:
    """int64 (B, 2) ``[g, e]`` rows from counts over the whole catalogue: ``equal`` includes
    the target itself; out-of-vocabulary and -inf (masked) targets become ``[MISS_RANK, 0]``."""
    miss = (targets < 1) | torch.isneginf(target_scores)
    g = torch.where(miss, torch.full_like(greater, MISS_RANK), greater)
    e = torch.where(miss, torch.zeros_like(equal), (equal - 1).clamp(min=0))
    return torch.stack([g, e], 1)


def _ranks_in_chunk(
    scores: torch.Tensor,
    targets: torch.Tensor,
    offset: int,
    target_scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts over one chunk of items (``offset`` = index of its first column): int64 (B,)
    items scoring above each target's score, and int64 (B,) items scoring exactly as it does
    (the target itself included when it lies in the chunk)."""
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(
            f"scores (B, N) and targets (B,) expected, got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if target_scores is None:
        check_targets(targets, scores.shape[1])
        target_scores = scores.gather(1, (targets.clamp(min=1) - offset).unsqueeze(1)).squeeze(1)
    ts = target_scores.unsqueeze(1)
    return (scores > ts).sum(1), (scores == ts).sum(1)
