"""Video-skip prediction metrics (SegMM, arXiv 2504.04237, section 5: HR@k and NDCG@k).

For each view with a skip segment, the video's S segments are ranked by predicted interest,
lowest first (the segment a user leaves in is the least interesting one); the skip segment is
the one relevant item. HR@k is 1 when it is among the first k, NDCG@k is ``1 / log2(rank + 1)``
then (one relevant item, so the ideal DCG is 1). Segments with equal scores are in random order:
the metrics are the exact expectation over that order, so a constant scorer gets HR@1 = 1/S and
no row order or tie-break rule changes a value (the authors' code draws one random permutation).
Padded positions (beyond S) are never ranked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from reelrec.data.segments import SegmentData


def skip_ranking_metrics(
    scores: np.ndarray, segments: np.ndarray, skip: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """HR@k and NDCG@k of the skip segment, averaged over views.

    Args:
        scores: float (n, S_max) interest scores (higher = more interest); only the first
            ``segments[i]`` entries of row i are used.
        segments: int (n,) S per view, 1 <= S <= S_max.
        skip: int (n,) skip segment per view, 0 <= skip < S (views without one must be left out).
        ks: cutoffs.

    Returns:
        ``{"hr@k": .., "ndcg@k": .., "n": views}``.

    Raises:
        ValueError: shapes disagree, a skip outside its video, NaN scores, or no view.
    """
    scores = np.asarray(scores, dtype=np.float64)
    segments, skip = np.asarray(segments), np.asarray(skip)
    if scores.ndim != 2 or segments.ndim != 1 or skip.ndim != 1:
        raise ValueError(
            f"scores must be (n, S_max) and segments, skip (n,), got shapes {scores.shape}, "
            f"{segments.shape}, {skip.shape}"
        )
    for name, arr in (("segments", segments), ("skip", skip)):
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"cutoffs must be >= 1, got {list(ks)}")
    segments, skip = segments.astype(np.int64), skip.astype(np.int64)
    n, s_max = scores.shape
    if len(segments) != n or len(skip) != n:
        raise ValueError(f"scores has {n} rows, segments {len(segments)}, skip {len(skip)}")
    if n == 0:
        raise ValueError("no view with a skip segment to evaluate")
    if (
        np.any(segments < 1)
        or np.any(segments > s_max)
        or np.any(skip < 0)
        or np.any(skip >= segments)
    ):
        raise ValueError("each skip must satisfy 0 <= skip < segments <= scores.shape[1]")
    valid = np.arange(s_max)[None, :] < segments[:, None]
    if np.isnan(scores[valid]).any():
        raise ValueError("scores hold NaN inside a video")
    target = scores[np.arange(n), skip][:, None]
    lower = ((scores < target) & valid).sum(1)
    tied = ((scores == target) & valid).sum(1)  # includes the skip segment itself
    r0 = lower + 1  # the skip segment's rank is uniform on r0 .. r0 + tied - 1
    out: dict[str, float] = {"n": int(n)}
    for k in ks:
        span = np.clip(np.minimum(k, r0 + tied - 1) - r0 + 1, 0, None)
        out[f"hr@{k}"] = float((span / tied).mean())
        ranks = r0[:, None] + np.arange(s_max)[None, :]  # r0 .. r0 + S_max - 1
        use = (np.arange(s_max)[None, :] < tied[:, None]) & (ranks <= k)
        out[f"ndcg@{k}"] = float(((use / np.log2(ranks + 1)).sum(1) / tied).mean())
    return out


def evaluate_segments(
    model: torch.nn.Module, data: SegmentData, split: int, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """:func:`skip_ranking_metrics` of ``model``'s interest scores (B, 40) on the views of
    ``split`` that have a skip segment (model in eval mode, no gradients)."""
    rows = data.rows(split, skipped_only=True)
    model.eval()
    with torch.no_grad():
        scores = model(data.batch(rows)).float().cpu().numpy()
    return skip_ranking_metrics(scores, data.segments[rows].numpy(), data.skip[rows].numpy(), ks)
