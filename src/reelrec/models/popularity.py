"""Most-popular baseline: every user gets the items ranked by their number of train positives.

Counts use ``bincount`` so repeated ids in one batch are all counted (CASES.md C07, RecBole #2198).
Ties in count are broken by the ranking's rule (lower item index first, :mod:`reelrec.eval.ranking`).

The scores are written as inner products, a user vector of one 1 and item "embeddings" that are
the counts (exact in float32 up to 2^24), so the model declares
:class:`~reelrec.models.base.EmbeddingScorer` and full ranking is chunked over the catalogue like
SASRec's; nothing is trained (no ``loss``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from reelrec.models.base import EmbeddingScorer


@dataclass
class PopularityConfig:
    """The popularity baseline has no hyper-parameters; the section exists for uniformity."""

    def validate(self, section: str = "popularity") -> None:
        """Nothing to check (no hyper-parameters)."""


class Popularity(nn.Module, EmbeddingScorer):
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

    def user_representation(self, history: torch.Tensor) -> torch.Tensor:
        """float (B, 1) of ones: every user gets the same scores.

        Args:
            history: int64 (B, L); only its batch size is used.
        """
        return torch.ones(history.shape[0], 1, device=self.counts.device)

    def item_embeddings(self) -> torch.Tensor:
        """float32 (V + 1, 1): the counts (row 0, padding, is never ranked)."""
        return self.counts.to(torch.float32).unsqueeze(1)

    def score_all(self, history: torch.Tensor) -> torch.Tensor:
        """float (B, V + 1) scores (the counts, same for every user); column 0 is -inf.

        Args:
            history: int64 (B, L); only its batch size is used.
        """
        scores = self.counts.to(torch.float32).expand(history.shape[0], -1).clone()
        scores[:, 0] = float("-inf")
        return scores
