"""Most-popular baseline: every user gets the items ranked by their number of train positives.

Counts use ``bincount`` so repeated ids in one batch are all counted (CASES.md C07, RecBole #2198).
Ties in count are broken by the ranking's rule (lower item index first, :mod:`reelrec.eval.ranking`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class PopularityConfig:
    """The popularity baseline has no hyper-parameters; the section exists for uniformity."""


class Popularity(nn.Module):
    """Scores each item by its train positive count.

    Args:
        counts: int64 array (V + 1,) of train positives per item index; index 0 is padding.

    Raises:
        ValueError: negative counts or an empty array.
    """

    def __init__(self, counts: np.ndarray) -> None:
        super().__init__()
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or len(counts) < 2 or (counts < 0).any():
            raise ValueError("counts must be a 1-D array of >= 2 non-negative integers")
        self.register_buffer("counts", torch.from_numpy(counts.copy()))

    @classmethod
    def from_items(cls, items: torch.Tensor, num_items: int) -> Popularity:
        """Build from a tensor of item indices (any shape; 0 = padding is ignored)."""
        flat = items.reshape(-1)
        counts = torch.bincount(flat[flat > 0], minlength=num_items + 1)
        return cls(counts.numpy())

    def score_all(self, history: torch.Tensor) -> torch.Tensor:
        """float (B, V + 1) scores (the counts, same for every user); column 0 is -inf.

        Args:
            history: int64 (B, L); only its batch size is used.
        """
        scores = self.counts.to(torch.float32).expand(history.shape[0], -1).clone()
        scores[:, 0] = float("-inf")
        return scores
