"""Segment-level samples for video-skip prediction (SegMM, He et al., SIGIR 2025, arXiv 2504.04237).

Each logged view becomes one sample: a video of S = ceil(duration / 5 s) segments (the SegMM
label array: 1 watched, 0 the segment where the user left, -1 never reached), the user, and the
user's earlier views as history. A view played to the end has no 0 (no skip segment): it carries
no skip target, so it stays out of the skip loss and of the skip metrics (as the authors'
evaluation does), but it is still part of later views' histories.

Split by time within each user (the SIGIR paper splits each user's views chronologically): the
first ``train_share`` of a user's views are train, the next ``valid_share`` validation, the rest
test; views with the same timestamp stay in one split (the sample logs most views at a time
shared with other views of the user, in no known order) and are not in each other's history.
Vocabularies are fitted on train.

Arrays (n views, S_max = 40 segments, H history views):

* ``user`` int64 (n,), ``video`` int64 (n,) (0 padding, 1 unknown, 2.. known),
  ``segments`` int64 (n,) S, ``labels`` int8 (n, S_max) padded with -2,
  ``skip`` int64 (n,) the skip segment (-1: played to the end);
* history (left-padded, newest last): ``hist_video`` int64 (n, H), ``hist_segments`` int64
  (n, H) (0 = padding), ``hist_watched`` float32 (n, H) watched fraction (segments watched / S),
  ``hist_skipped`` float32 (n, H) 1 when that view had a skip;
* ``split`` int8 (n,), ``groups`` int64 (n,) raw user ids, ``time`` int64 (n,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from reelrec.data.ctr import fit_vocab

#: longest video of SegMM: 200 s = 40 segments of 5 s
MAX_SEGMENTS = 40
PAD_LABEL = -2


@dataclass
class SegmentData:
    """Views with segment labels and history; see the module docstring for the arrays."""

    user: torch.Tensor
    video: torch.Tensor
    segments: torch.Tensor
    labels: torch.Tensor
    skip: torch.Tensor
    hist_video: torch.Tensor
    hist_segments: torch.Tensor
    hist_watched: torch.Tensor
    hist_skipped: torch.Tensor
    split: np.ndarray
    groups: np.ndarray
    time: np.ndarray
    n_users: int
    n_videos: int

    def __len__(self) -> int:
        return len(self.user)

    def rows(self, split: int, skipped_only: bool = False) -> np.ndarray:
        """Row indices of a split (0 train, 1 valid, 2 test); ``skipped_only``: views with a
        skip segment only (the ones skip metrics are defined on)."""
        ok = self.split == split
        if skipped_only:
            ok &= self.skip.numpy() >= 0
        return np.flatnonzero(ok)

    def batch(self, idx) -> SegmentBatch:
        """The views at ``idx`` (int64 indices) as a :class:`SegmentBatch`."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return SegmentBatch(*(getattr(self, k)[idx] for k in SegmentBatch._fields))


class SegmentBatch(NamedTuple):
    """A batch of B views, the typed input of the segment models' ``forward`` and ``loss``.

    Attributes (S_max = 40 segments, H history views; as the arrays of :class:`SegmentData`):
        user, video: int64 (B,). segments: int64 (B,) S in 1..40. labels: int8 (B, S_max).
        skip: int64 (B,) the skip segment, -1 when played to the end.
        hist_video, hist_segments: int64 (B, H) (0 = padding). hist_watched, hist_skipped:
        float32 (B, H).
    """

    user: torch.Tensor
    video: torch.Tensor
    segments: torch.Tensor
    labels: torch.Tensor
    skip: torch.Tensor
    hist_video: torch.Tensor
    hist_segments: torch.Tensor
    hist_watched: torch.Tensor
    hist_skipped: torch.Tensor

    def to(self, device: torch.device | str) -> SegmentBatch:
        """The batch on ``device``."""
        return SegmentBatch(*(t.to(device) for t in self))


class SegmentTrainSet:
    """Training views with a skip segment, as :func:`reelrec.training.loop.fit` consumes them
    (views played to the end have no skip loss term, so they are not batched)."""

    def __init__(self, data: SegmentData) -> None:
        self.data = data
        self.rows = torch.as_tensor(data.rows(0, skipped_only=True), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Row indices in random order, cut into batches of ``batch_size`` (the last smaller)."""
        perm = self.rows[torch.randperm(len(self.rows), generator=gen)]
        return list(torch.split(perm, batch_size))

    def batch(self, idx: torch.Tensor, gen: torch.Generator, device) -> SegmentBatch:
        """The views ``idx`` (int64 row indices) as a :class:`SegmentBatch` on ``device``
        (``gen`` is unused: the skip loss draws nothing)."""
        return self.data.batch(idx).to(device)


def skip_position(label: np.ndarray) -> int:
    """Index of the 0 in a SegMM label array, or -1 when the view was played to the end.

    Raises:
        ValueError: more than one 0, or a 1 after the 0 (not a SegMM label array).
    """
    zeros = np.flatnonzero(label == 0)
    if len(zeros) == 0:
        if np.any(label != 1):
            raise ValueError(f"label array without a skip segment must be all 1, got {label}")
        return -1
    k = int(zeros[0])
    if len(zeros) > 1 or np.any(label[:k] != 1) or np.any(label[k + 1 :] != -1):
        raise ValueError(f"not a SegMM label array (1..1 0 -1..-1): {label}")
    return k


def split_by_user_time(users: np.ndarray, train: float, valid: float) -> np.ndarray:
    """Per user (rows sorted by user, time): the first ``train`` share of the user's rows are 0,
    the next ``valid`` share 1, the rest 2; each split keeps at least one row when the user has
    three or more."""
    if not (0 < train < 1 and 0 <= valid < 1 and train + valid < 1):
        raise ValueError(
            f"split shares must satisfy 0 < train, 0 <= valid, train + valid < 1; got {train}, {valid}"
        )
    split = np.zeros(len(users), dtype=np.int8)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        n = b - a
        n_test = max(1, int(round(n * (1 - train - valid)))) if n >= 3 else 0
        n_valid = min(max(1, int(round(n * valid))) if n >= 3 and valid > 0 else 0, n - n_test - 1)
        split[b - n_test - n_valid : b - n_test] = 1
        split[b - n_test : b] = 2
    return split


def build_segments(
    inter: pd.DataFrame,
    max_history: int = 20,
    train_share: float = 0.8,
    valid_share: float = 0.1,
) -> SegmentData:
    """Segment samples from SegMM interactions (``reelrec.data.segmm`` canonical columns).

    Args:
        inter: columns user_id, item_id, timestamp_ms, label_1d (any order; sorted here by user
            then time, stably).
        max_history: H, earlier views kept per sample (>= 1).
        train_share, valid_share: per-user chronological split.

    Raises:
        ValueError: a label array that is not SegMM's, or longer than 40 segments (names the row).
    """
    for col in ("user_id", "item_id", "timestamp_ms", "label_1d"):
        if col not in inter.columns:
            raise ValueError(f"build_segments: column {col!r} missing (have {list(inter.columns)})")
    if len(inter) == 0:
        raise ValueError("build_segments: no views")
    for col in ("user_id", "item_id", "timestamp_ms"):
        values = pd.to_numeric(inter[col], errors="coerce")
        bad = values.isna() | (values != np.floor(values))
        if bad.any():
            raise ValueError(
                f"build_segments: row {bad.idxmax()!r}, column {col!r}: not an integer"
            )
    inter = inter.sort_values(["user_id", "timestamp_ms"], kind="stable")
    rows = inter.index.to_numpy()  # the caller's row labels, for error messages
    inter = inter.reset_index(drop=True)
    n = len(inter)
    users = inter["user_id"].to_numpy(dtype=np.int64)
    time = inter["timestamp_ms"].to_numpy(dtype=np.int64)
    labels = np.full((n, MAX_SEGMENTS), PAD_LABEL, dtype=np.int8)
    skip = np.empty(n, dtype=np.int64)
    seg = np.empty(n, dtype=np.int64)
    for i, value in enumerate(inter["label_1d"]):
        where = f"row {rows[i]} (user {users[i]})"
        raw = np.asarray(value if value is not None else [], dtype=object).ravel()
        if not 1 <= len(raw) <= MAX_SEGMENTS or not all(
            isinstance(x, int | np.integer) and x in (-1, 0, 1) for x in raw
        ):
            raise ValueError(
                f"{where}: label_1d must be 1..40 integers in {{-1, 0, 1}}, got {value!r:.60}"
            )
        arr = raw.astype(np.int8)
        try:
            skip[i] = skip_position(arr)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        labels[i, : len(arr)] = arr
        seg[i] = len(arr)
    split = split_by_user_time(users, train_share, valid_share)
    # views logged at the same ms (in the SegMM sample most views share a timestamp with another
    # view of the same user) stay in the split of the group's first view: no split boundary
    # falls inside a tie group
    first = np.r_[True, (users[1:] != users[:-1]) | (time[1:] != time[:-1])]
    split = split[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    train = split == 0
    u, n_users = fit_vocab(users, train)
    # videos seen once in train map to "unknown", so that its embedding is trained on the rare
    # videos that most test views show (93% of the sample's 9,123 videos appear once)
    v, n_videos = fit_vocab(inter["item_id"].to_numpy(dtype=np.int64), train, min_count=2)
    watched = np.where(skip < 0, seg, skip) / seg  # segments watched through / S
    # history: the user's views strictly earlier in time, newest last
    h_idx = np.full((n, max_history), -1, dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    steps = np.arange(max_history)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        cnt = np.searchsorted(time[a:b], time[a:b], side="left")  # rows with a smaller time
        idx = cnt[:, None] - max_history + steps[None, :]
        h_idx[a:b] = np.where(idx >= 0, a + idx, -1)
    ok = h_idx >= 0
    take = np.where(ok, h_idx, 0)
    return SegmentData(
        user=torch.from_numpy(u),
        video=torch.from_numpy(v),
        segments=torch.from_numpy(seg),
        labels=torch.from_numpy(labels),
        skip=torch.from_numpy(skip),
        hist_video=torch.from_numpy(np.where(ok, v[take], 0)),
        hist_segments=torch.from_numpy(np.where(ok, seg[take], 0)),
        hist_watched=torch.from_numpy(np.where(ok, watched[take], 0.0).astype(np.float32)),
        hist_skipped=torch.from_numpy(np.where(ok, skip[take] >= 0, False).astype(np.float32)),
        split=split,
        groups=users,
        time=time,
        n_users=n_users,
        n_videos=n_videos,
    )


def segment_ctr(data: SegmentData, interest: np.ndarray | None = None):
    """The views as ranking samples for the CTR models (the SegMM paper's downstream task with a
    CAN backbone): task ``finish`` (the view was played to the end).

    Fields: ``user_id``, ``video_id``, ``length`` (S); sequences ``hist_video`` and
    ``hist_length`` (the user's earlier views); with ``interest`` (int (n, F) buckets, from
    :func:`reelrec.models.segment_interest.interest_features`) the fields ``interest_0..``.

    Returns:
        :class:`reelrec.data.ctr.CTRData` with the same rows, splits and user groups.
    """
    from reelrec.data.ctr import CTRData

    fields = ["user_id", "video_id", "length"]
    cols = [data.user.numpy(), data.video.numpy(), data.segments.numpy() + 1]
    vocab = [data.n_users, data.n_videos, MAX_SEGMENTS + 2]
    if interest is not None:
        for j in range(interest.shape[1]):
            fields.append(f"interest_{j}")
            cols.append(interest[:, j].astype(np.int64) + 2)
            vocab.append(int(interest[:, j].max()) + 3)
    hist_len = torch.where(data.hist_segments > 0, data.hist_segments + 1, 0)
    out = CTRData(
        fields=fields,
        vocab=vocab,
        sparse=torch.from_numpy(np.stack(cols, 1)),
        sequences=["hist_video", "hist_length"],
        seq_target=[1, 2],
        history=torch.stack([data.hist_video, hist_len], 1),
        bags=[],
        bag_vocab=[],
        bag=torch.zeros((len(data), 0, 1), dtype=torch.long),
        tasks=["finish"],
        labels=(data.skip < 0).float()[:, None],
        groups=data.groups,
        split=data.split,
        source="segmm",
    )
    out.check()
    return out
