"""Segment-level user interest (SegMM) and the video-skip baselines.

Zhiyu He, Zhixin Ling, Jiayu Li, et al., "Short Video Segment-level User Dynamic Interests
Modeling in Personalized Recommendation", SIGIR 2025, arXiv 2504.04237. Implements the three
parts of section 4:

* **Hybrid user and video representation** (4.1): each segment token is the sum of the video's
  id embedding, the segment's position embedding and the video-length embedding; the user is
  their id embedding plus the pooled history.
* **User-video encoder** (4.2): cross-attention from the video's segments (queries) to the
  user's earlier views (keys/values: video id, length, watched fraction and whether it was
  skipped), with a residual feed-forward block.
* **Segment interest decoder** (4.3): a bilinear fusion of each encoded segment with the user
  vector plus a learned position bias gives one interest score per segment; the segment a user
  leaves in should score lowest.
* **Intra-video loss** (4.4): a pairwise hinge that puts the skip segment below the other
  segments of the same video by a margin (``loss="pairwise"``); ``loss="softmax"`` (the ablation)
  is a cross-entropy over the video's segments with logits ``-score`` and the skip segment as
  target. Views played to the end have no skip segment and no loss term.

Deviations, and why:
    * No frame/CLIP features: the public SegMM sample has none, so the "multi-modal" encoder
      sees ids, lengths and watch history only.
    * ``pairs="all"`` (default) compares the skip segment with every other segment of the
      video, watched or never reached, as the authors' ``compute_interest_BPR_all`` does; the
      paper's text pairs it with the watched ones (``pairs="watched"``), which gives views that
      end in their first segment (53% of the sample's skips) no training signal.
    * One cross-attention layer (the sample has 37 users).

Interface (:mod:`reelrec.models.base`): ``forward(SegmentBatch)`` returns interest scores
float (B, S_max); the trained models declare ``Trainable`` with ``loss(SegmentBatch) ->
LossOutput`` (part ``pairwise`` or ``softmax``, the configured skip loss). ``forward`` also
takes the dict of :meth:`reelrec.data.segments.SegmentData.batch` (same keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reelrec.config import check_section
from reelrec.data.segments import MAX_SEGMENTS, SegmentBatch
from reelrec.models.base import LossOutput, Trainable


@dataclass
class SegmentConfig:
    """Segment-interest settings (section ``segment``)."""

    dim: int = 32  # D: width of every embedding (>= 1, divisible by heads)
    heads: int = 2  # attention heads of the user-video cross-attention (>= 1)
    dropout: float = 0.1  # dropout in the encoder, in [0, 1)
    loss: str = "pairwise"  # "pairwise" (the paper's intra-video hinge) or "softmax"
    margin: float = 1.0  # hinge margin of the pairwise loss (> 0)
    pairs: str = "all"  # skip segment against "all" other segments or the "watched" ones

    def validate(self, section: str = "segment") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key.
        """
        check_section(check_segment_config, self)


def check_segment_config(cfg: SegmentConfig) -> None:
    """Raise ``ValueError`` naming the first invalid field of ``cfg``."""
    if cfg.loss not in ("pairwise", "softmax"):
        raise ValueError(f"segment.loss must be 'pairwise' or 'softmax', got {cfg.loss!r}")
    if cfg.pairs not in ("all", "watched"):
        raise ValueError(f"segment.pairs must be 'all' or 'watched', got {cfg.pairs!r}")
    if not cfg.margin > 0:
        raise ValueError(f"segment.margin must be > 0, got {cfg.margin!r}")
    if cfg.dim < 1 or cfg.heads < 1 or cfg.dim % cfg.heads:
        raise ValueError(
            f"segment.dim ({cfg.dim}) must be >= 1 and divisible by heads ({cfg.heads})"
        )
    if not 0 <= cfg.dropout < 1:
        raise ValueError(f"segment.dropout must be in [0, 1), got {cfg.dropout!r}")


def valid_mask(segments: torch.Tensor, width: int = MAX_SEGMENTS) -> torch.Tensor:
    """(B,) lengths S -> (B, width) bool, True on the first S positions."""
    return torch.arange(width, device=segments.device)[None, :] < segments[:, None]


def intra_video_loss(
    scores: torch.Tensor,
    segments: torch.Tensor,
    skip: torch.Tensor,
    kind: str = "pairwise",
    margin: float = 1.0,
    pairs: str = "all",
) -> torch.Tensor:
    """The skip loss over the views that have a skip segment (the others are ignored).

    Args:
        scores: float (B, S_max) interest scores. segments: int (B,) S. skip: int (B,) the skip
            segment or -1.
        kind: "pairwise": mean over views of the mean over pairs (j, skip) of
            ``relu(margin - (score_j - score_skip))``, j over the other segments (``pairs="all"``)
            or the watched ones before the skip (``"watched"``); a view without such a j adds 0.
            "softmax": mean cross-entropy of ``softmax(-scores)`` over the S segments.

    Returns:
        A scalar (0 when no view has a skip).
    """
    if scores.dim() != 2 or segments.shape != skip.shape or len(segments) != len(scores):
        raise ValueError(
            f"scores must be (B, S_max) with segments and skip (B,), got "
            f"{tuple(scores.shape)}, {tuple(segments.shape)}, {tuple(skip.shape)}"
        )
    if bool(((segments < 1) | (segments > scores.shape[1])).any()):
        raise ValueError(f"segments must be in 1..{scores.shape[1]}")
    if bool(((skip < -1) | (skip >= segments)).any()):
        raise ValueError("skip must be -1 (played to the end) or a segment index below S")
    check_segment_config(SegmentConfig(loss=kind, margin=margin, pairs=pairs))
    has = skip >= 0
    if not bool(has.any()):
        return scores.sum() * 0.0
    s, seg, k = scores[has], segments[has], skip[has]
    valid = valid_mask(seg, s.shape[1])
    target = s.gather(1, k[:, None])
    if kind == "softmax":
        logits = (-s).masked_fill(~valid, float("-inf"))
        return F.cross_entropy(logits, k)
    pos = torch.arange(s.shape[1], device=s.device)[None, :]
    other = valid & (pos != k[:, None])
    if pairs == "watched":
        other &= pos < k[:, None]
    hinge = torch.where(other, F.relu(margin - (s - target)), 0.0)  # padding may hold inf
    per_view = hinge.sum(1) / other.sum(1).clamp_min(1)
    return per_view.mean()


class SkipLoss(Trainable[SegmentBatch]):
    """Mixin declaring ``Trainable``: ``loss(batch)`` is :func:`intra_video_loss` of
    ``self(batch)`` with ``self.cfg``."""

    cfg: SegmentConfig

    def loss(self, batch: SegmentBatch) -> LossOutput:
        """The configured skip loss of a batch.

        Args:
            batch: :class:`~reelrec.data.segments.SegmentBatch` of B views.

        Returns:
            :class:`~reelrec.models.base.LossOutput`; parts ``{cfg.loss: value}``.

        Raises:
            ValueError: as :func:`intra_video_loss`.
        """
        cfg = self.cfg
        b = batch
        scores = self(b)  # type: ignore[operator]
        loss = intra_video_loss(scores, b.segments, b.skip, cfg.loss, cfg.margin, cfg.pairs)
        return LossOutput(loss, {cfg.loss: float(loss.detach())})


class SegmentInterest(nn.Module, SkipLoss):
    """The SegMM segment-interest model; see the module docstring.

    ``forward(batch)`` (a :class:`~reelrec.data.segments.SegmentBatch`) returns interest
    scores (B, S_max) float, meaningful on the first S positions of each row.
    """

    def __init__(self, n_users: int, n_videos: int, cfg: SegmentConfig) -> None:
        super().__init__()
        check_segment_config(cfg)
        d = cfg.dim
        self.cfg = cfg
        self.user = nn.Embedding(n_users, d, padding_idx=0)
        self.video = nn.Embedding(n_videos, d, padding_idx=0)
        self.position = nn.Embedding(MAX_SEGMENTS, d)
        self.length = nn.Embedding(MAX_SEGMENTS + 1, d, padding_idx=0)
        self.watch = nn.Linear(2, d)
        self.no_history = nn.Parameter(torch.zeros(1, 1, d))  # always-present key
        self.attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.drop = nn.Dropout(cfg.dropout)
        self.bilinear = nn.Bilinear(d, d, 1)
        self.position_bias = nn.Parameter(torch.zeros(MAX_SEGMENTS))

    def history(self, b: SegmentBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """History tokens (B, 1 + H, D) (the first is the learned "no history" key) and their
        padding mask (B, 1 + H) bool, True = padded."""
        h = (
            self.video(b.hist_video)
            + self.length(b.hist_segments)
            + self.watch(torch.stack([b.hist_watched, b.hist_skipped], -1))
        )
        pad = b.hist_segments == 0
        h = h * (~pad).unsqueeze(-1)
        tokens = torch.cat([self.no_history.expand(len(h), 1, -1), h], 1)
        mask = torch.cat([torch.zeros_like(pad[:, :1]), pad], 1)
        return tokens, mask

    def forward(self, batch: SegmentBatch) -> torch.Tensor:
        """:class:`~reelrec.data.segments.SegmentBatch` -> float (B, S_max)."""
        b = batch
        seg = b.segments
        x = (
            self.position.weight[None, :, :]
            + self.length(seg)[:, None, :]
            + self.video(b.video)[:, None, :]
        )
        hist, pad = self.history(b)
        a, _ = self.attn(x, hist, hist, key_padding_mask=pad, need_weights=False)
        x = self.norm1(x + self.drop(a))
        x = self.norm2(x + self.drop(self.ffn(x)))
        real = (~pad[:, 1:]).unsqueeze(-1).to(x.dtype)
        u = self.user(b.user) + (hist[:, 1:] * real).sum(1) / real.sum(1).clamp_min(1.0)
        scores = self.bilinear(x, u[:, None, :].expand_as(x).contiguous()).squeeze(-1)
        return scores + self.position_bias[None, :]


class PositionPrior(nn.Module):
    """Baseline: for the video's length S, the segments ordered by how often train views of that
    length were left there (most frequent skip segment first); lengths unseen in train fall back
    to all lengths. No parameters are learned by gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(MAX_SEGMENTS + 1, MAX_SEGMENTS))

    def fit(self, segments: torch.Tensor, skip: torch.Tensor) -> PositionPrior:
        """Count skip positions per length (views with a skip only).

        Raises:
            ValueError: a length outside 1..40 or a skip outside -1..S-1.
        """
        if bool(
            ((segments < 1) | (segments > MAX_SEGMENTS) | (skip < -1) | (skip >= segments)).any()
        ):
            raise ValueError("PositionPrior.fit: need 1 <= S <= 40 and -1 <= skip < S")
        has = skip >= 0
        flat = segments[has] * MAX_SEGMENTS + skip[has]
        c = torch.bincount(flat, minlength=(MAX_SEGMENTS + 1) * MAX_SEGMENTS).float()
        self.counts = c.view(MAX_SEGMENTS + 1, MAX_SEGMENTS)
        return self

    def forward(self, batch: SegmentBatch) -> torch.Tensor:
        """:class:`~reelrec.data.segments.SegmentBatch` -> float (B, S_max)."""
        by_length = self.counts[batch.segments]
        overall = self.counts.sum(0)[None, :].expand_as(by_length)
        seen = by_length.sum(1, keepdim=True) > 0
        return -torch.where(seen, by_length, overall)  # more skips = less interest


class DurationPosition(nn.Module, SkipLoss):
    """Baseline: a learned score per (video length, segment position) plus one per relative
    position decile (shares strength across lengths), trained with the skip loss."""

    def __init__(self, cfg: SegmentConfig) -> None:
        super().__init__()
        check_segment_config(cfg)
        self.cfg = cfg
        self.table = nn.Embedding((MAX_SEGMENTS + 1) * MAX_SEGMENTS, 1)
        self.relative = nn.Embedding(10, 1)
        self.position = nn.Embedding(MAX_SEGMENTS, 1)
        for e in (self.table, self.relative, self.position):
            nn.init.zeros_(e.weight)

    def forward(self, batch: SegmentBatch) -> torch.Tensor:
        """:class:`~reelrec.data.segments.SegmentBatch` -> float (B, S_max)."""
        seg = batch.segments[:, None]
        pos = torch.arange(MAX_SEGMENTS, device=seg.device)[None, :]
        rel = torch.clamp(pos * 10 // seg.clamp_min(1), max=9)
        cell = (seg * MAX_SEGMENTS + pos).clamp(max=self.table.num_embeddings - 1)
        return (self.table(cell) + self.relative(rel) + self.position(pos.expand_as(cell))).squeeze(
            -1
        )


class SegmentMLP(nn.Module, SkipLoss):
    """Baseline: an MLP on (length, position, relative position, and the user's history
    statistics: mean watched fraction, skip rate, number of earlier views) per segment."""

    def __init__(self, cfg: SegmentConfig) -> None:
        super().__init__()
        check_segment_config(cfg)
        self.cfg = cfg
        self.net = nn.Sequential(
            nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)
        )

    def features(self, batch: SegmentBatch) -> torch.Tensor:
        """(B, S_max, 6) float features."""
        b = batch
        seg = b.segments[:, None].float()
        pos = torch.arange(MAX_SEGMENTS, device=seg.device)[None, :].float()
        real = (b.hist_segments > 0).float()
        n = real.sum(1, keepdim=True)
        watched = (b.hist_watched * real).sum(1, keepdim=True) / n.clamp_min(1)
        skipped = (b.hist_skipped * real).sum(1, keepdim=True) / n.clamp_min(1)
        shape = (len(seg), MAX_SEGMENTS)
        return torch.stack(
            [
                (seg / MAX_SEGMENTS).expand(shape),
                (pos / MAX_SEGMENTS).expand(shape),
                (pos / seg).expand(shape),
                watched.expand(shape),
                skipped.expand(shape),
                (n / 20).expand(shape),
            ],
            -1,
        )

    def forward(self, batch: SegmentBatch) -> torch.Tensor:
        """:class:`~reelrec.data.segments.SegmentBatch` -> float (B, S_max)."""
        return self.net(self.features(batch)).squeeze(-1)


def interest_features(
    scores: torch.Tensor, segments: torch.Tensor, buckets: int = 10
) -> torch.Tensor:
    """Segment-interest features for a ranker, from interest scores (B, S_max) and lengths (B,).

    The predicted skip distribution is ``softmax(-scores)`` over the video's S segments. Returns
    int64 (B, 2) buckets (0..buckets-1): the expected watched fraction ``sum_s p_s * s / S`` and
    the probability that the user leaves in the first segment.
    """
    valid = valid_mask(segments, scores.shape[1])
    p = torch.softmax((-scores).masked_fill(~valid, float("-inf")), 1)
    pos = torch.arange(scores.shape[1], device=scores.device)[None, :].float()
    watched = (p * pos).sum(1) / segments.float()
    first = p[:, 0]
    to_bucket = lambda x: torch.clamp((x * buckets).long(), 0, buckets - 1)  # noqa: E731
    return torch.stack([to_bucket(watched), to_bucket(first)], 1)
