"""A tiny two-field, two-task ranking dataset built in code, shared by the training tests."""

from __future__ import annotations

import numpy as np
import torch

from reelrec.data.ctr import CTRData


def tiny_ctr_data(n_train: int = 8, missing_like: bool = False) -> CTRData:
    """``n_train`` training rows and 4 validation rows of (user_id, video_id) with labels click
    (video_id odd) and like (random); ``missing_like``: row 1 has no like label (NaN)."""
    g = np.random.default_rng(0)
    n = n_train + 4
    sparse = np.stack([g.integers(2, 7, n), g.integers(2, 9, n)], 1)
    labels = np.stack([sparse[:, 1] % 2, g.integers(0, 2, n)], 1).astype(np.float32)
    if missing_like:
        labels[1, 1] = np.nan
    return CTRData(
        fields=["user_id", "video_id"],
        vocab=[7, 9],
        sparse=torch.from_numpy(sparse),
        sequences=[],
        seq_target=[],
        history=torch.zeros((n, 0, 1), dtype=torch.long),
        bags=[],
        bag_vocab=[],
        bag=torch.zeros((n, 0, 1), dtype=torch.long),
        tasks=["click", "like"],
        labels=torch.from_numpy(labels),
        groups=np.zeros(n, dtype=np.int64),
        split=np.array([0] * n_train + [1] * 4, dtype=np.int8),
    )
