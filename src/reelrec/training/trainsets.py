"""What :func:`reelrec.training.loop.fit` trains on: the training-set interface and the
next-item windows.

A training set (:class:`TrainSet`) is any object with ``__len__`` (samples per epoch),
``batches(batch_size, gen)`` (the epoch's row indices, cut into batches, in an order that
depends only on ``gen``) and ``batch(idx, gen, device)`` (the typed batch of those rows, the
one argument of the model's ``loss``). The implementations: :class:`WindowTrainSet` (next-item
windows, :class:`~reelrec.models.base.NextItemBatch`), :class:`reelrec.data.ctr.CTRTrainSet`,
:class:`reelrec.data.segments.SegmentTrainSet` and
:class:`reelrec.training.preference.AlignmentTrainSet`.

Optional capabilities are declared by inheritance, never probed: :class:`CountsWork` (the unit
FLOPs are counted per, and the tokens of an epoch) and
:class:`~reelrec.models.base.ReportsEpochStats` (statistics logged once per epoch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

import torch

from reelrec.models.base import NextItemBatch


class TrainSet(Protocol):
    """The interface :func:`reelrec.training.loop.fit` calls (see the module docstring)."""

    def __len__(self) -> int:
        """Samples per epoch."""

    def batches(self, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """The epoch's int64 row indices in batches of at most ``batch_size``."""

    def batch(self, idx: torch.Tensor, gen: torch.Generator, device: torch.device) -> Any:
        """The typed batch of the rows ``idx`` on ``device`` (``gen``: the epoch's RNG)."""


class CountsWork(ABC):
    """Declares how much computation a batch is, so that MFU does not depend on which batch
    the FLOPs were counted on (default without it: one unit per row, tokens = samples)."""

    @abstractmethod
    def work(self, idx: torch.Tensor) -> int:
        """Units of computation (e.g. positions) of the rows ``idx``."""

    @property
    @abstractmethod
    def tokens(self) -> int:
        """Predicted positions per epoch (for ``tokens_per_s``)."""


def work_of(train: Any, idx: torch.Tensor) -> int:
    """``train.work(idx)`` when the set declares :class:`CountsWork`, else the rows of ``idx``."""
    return train.work(idx) if isinstance(train, CountsWork) else len(idx)


def tokens_of(train: Any) -> int:
    """``train.tokens`` when the set declares :class:`CountsWork`, else its samples."""
    return train.tokens if isinstance(train, CountsWork) else len(train)


def trim_left_padding(batch: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding (0) in every row of int64 (B, L) windows
    (positions count from the first real item, so the model's outputs do not change)."""
    real = (batch > 0).any(0).nonzero()
    return batch[:, int(real[0]) :] if len(real) else batch


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Batches of windows of similar length, in random order.

    Windows are shuffled, stably sorted by length, cut into batches, and the batch order is
    shuffled: each window is used once per epoch, and padding (hence wasted compute) is small
    for datasets whose sequences are mostly short (Amazon: mean 8.9 items, max len 50).

    Args:
        lengths: int64 (n,) real items per window. batch_size: >= 1. gen: the epoch's RNG.

    Returns:
        int64 index tensors covering 0..n-1 once.
    """
    perm = torch.randperm(len(lengths), generator=gen)
    order = perm[torch.argsort(lengths[perm], stable=True)]
    batches = list(torch.split(order, batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


class WindowTrainSet(CountsWork):
    """Next-item training windows as :func:`reelrec.training.loop.fit` consumes them.

    Args:
        windows: int64 (n, L + 1) left-padded windows; inputs are ``[:, :-1]``, targets
            ``[:, 1:]``.
        last: the model trains only the last ``last`` target positions of each window (1:
            SASRec with ``prefixes``; ``session_items``: the pathways generators); None:
            every target position. Only :attr:`tokens` depends on it.
    """

    def __init__(self, windows: torch.Tensor, last: int | None = None) -> None:
        self.windows = windows
        self.lengths = (windows > 0).sum(1)
        trained = (windows[:, 1:] > 0) & (windows[:, :-1] > 0)  # a target needs a history
        self._tokens = int((trained if last is None else trained[:, -last:]).sum())

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def tokens(self) -> int:
        """Predicted positions per epoch (non-padding targets)."""
        return self._tokens

    def batches(self, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Length-bucketed batches in random order (see :func:`length_bucketed_batches`)."""
        return length_bucketed_batches(self.lengths, batch_size, gen)

    def work(self, idx: torch.Tensor) -> int:
        """Positions the model computes for the windows ``idx``: rows x the trimmed width (the
        longest window of the batch); FLOPs are counted per such position."""
        return int(len(idx) * int(self.lengths[idx].max()))

    def batch(self, idx: torch.Tensor, gen: torch.Generator, device) -> NextItemBatch:
        """The windows ``idx`` (leading padding trimmed) as a
        :class:`~reelrec.models.base.NextItemBatch` on ``device`` whose generator is ``gen``
        (sampled negatives)."""
        windows = trim_left_padding(self.windows[idx]).to(device, torch.long)
        return NextItemBatch.of_windows(windows, gen)
