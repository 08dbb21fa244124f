"""Per-user item sequences for sequential retrieval models (SASRec, and later OneRec/ELASTIC).

Items are re-indexed by an :class:`ItemVocab` fitted on the train split's positive rows:
index 0 is padding, real items are 1..V (CASES.md C05: no real item ever maps to the padding
id). Items never seen in train are out of vocabulary: dropped from histories and, as targets,
encoded as -1 so they count as misses in full ranking (never silently removed).

Training data are windows of a user's train sequence: for a sequence of length n, windows end at
n, n - max_len, n - 2*max_len, ... and hold up to ``max_len + 1`` items, so every train item is
a next-item target exactly once (no item is dropped from long ML-1M histories, unlike a single
last-``max_len`` crop). Evaluation instances are one per positive row of the validation or test
split, with the history rule of :mod:`reelrec.data.splits`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from reelrec.data.splits import TEST, TRAIN, VALID, Protocol, positive_mask

PAD = 0


@dataclass(frozen=True)
class ItemVocab:
    """Raw item id <-> index map; index 0 is padding, items are 1..V in ascending raw-id order.

    Attributes:
        raw_ids: int64 array (V,) of sorted unique raw item ids.
    """

    raw_ids: np.ndarray

    @classmethod
    def fit(cls, items: np.ndarray) -> ItemVocab:
        """Vocabulary of the unique ids in ``items`` (int64 array, any shape)."""
        return cls(np.unique(np.asarray(items, dtype=np.int64)))

    @property
    def size(self) -> int:
        """V, the number of real items (the index range is 0..V)."""
        return int(len(self.raw_ids))

    def encode(self, raw: np.ndarray, oov: int = -1) -> np.ndarray:
        """Map raw ids (int64 array) to indices 1..V; unknown ids become ``oov``."""
        raw = np.asarray(raw, dtype=np.int64)
        pos = np.searchsorted(self.raw_ids, raw)
        pos_c = np.minimum(pos, max(self.size - 1, 0))
        found = (
            (pos < self.size) & (self.raw_ids[pos_c] == raw)
            if self.size
            else np.zeros_like(raw, bool)
        )
        return np.where(found, pos_c + 1, oov).astype(np.int64)

    def decode(self, idx: np.ndarray) -> np.ndarray:
        """Map indices 1..V back to raw ids; 0 and negatives (empty slots) become -1."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.full(idx.shape, -1, dtype=np.int64)
        ok = (idx >= 1) & (idx <= self.size)
        out[ok] = self.raw_ids[idx[ok] - 1]
        return out


@dataclass
class EvalInstances:
    """Next-item evaluation instances.

    Attributes:
        user_ids: int64 array (n,), raw user id per instance.
        history: LongTensor (n, max_len), item indices, left-padded with 0.
        target: LongTensor (n,), item index of the held-out item; -1 if out of vocabulary.
    """

    user_ids: np.ndarray
    history: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)


@dataclass
class SequenceData:
    """Everything a sequential retrieval model trains and evaluates on.

    Attributes:
        vocab: the item vocabulary (fitted on train positives).
        train_windows: LongTensor (n_windows, max_len + 1), left-padded with 0.
        train_counts: int64 array (V + 1,), train positives per item index (popularity).
        valid, test: evaluation instances.
        max_len: history length L.
    """

    vocab: ItemVocab
    train_windows: torch.Tensor
    train_counts: np.ndarray
    valid: EvalInstances
    test: EvalInstances
    max_len: int


def _left_pad(seqs: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, width - len(s) :] = s[-width:]
    return out


def windows(seq: np.ndarray, max_len: int, step: int | None = None) -> list[np.ndarray]:
    """Split one sequence into training windows of up to ``max_len + 1`` items (see module doc).

    Windows end every ``step`` items from the newest (default ``max_len``: every item is a
    target of exactly one window position; ``1``: one window per prefix, for models that train
    only the last position of a window: OneRec's pathways context, SASRec with ``prefixes``).

    Returns windows with at least two items, newest first.
    """
    step = max_len if step is None else step
    if step < 1:
        raise ValueError(f"window step must be >= 1, got {step}")
    out = []
    end = len(seq)
    while end >= 2:
        out.append(seq[max(0, end - max_len - 1) : end])
        end -= step
    return out


def build_sequences(
    interactions: pd.DataFrame, protocol: Protocol, max_len: int, step: int | None = None
) -> SequenceData:
    """Build training windows and evaluation instances from prepared interactions.

    Args:
        interactions: output of :func:`reelrec.data.prepare.prepare` (sorted by user and time,
            with a ``split`` column).
        protocol: the protocol (positive column, history rule).
        max_len: history length L (>= 1).
        step: window step (see :func:`windows`); default ``max_len``.

    Raises:
        ValueError: ``max_len < 1`` or no positive train rows.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    pos = interactions.loc[positive_mask(interactions, protocol)]
    split = pos["split"].to_numpy()
    raw_items = pos["item_id"].to_numpy()
    if not (split == TRAIN).any():
        raise ValueError("no positive rows in the train split: nothing to train on")
    vocab = ItemVocab.fit(raw_items[split == TRAIN])
    items = vocab.encode(raw_items)
    users = pos["user_id"].to_numpy()
    ts = pos["timestamp_ms"].to_numpy(dtype="float64", na_value=np.nan)
    # a temporal protocol's history is what came strictly earlier in time (ties excluded);
    # without timestamps (TikTok's given split) row order is the clock, as in leave-one-out
    strict_time = protocol.kind == "temporal" and not np.isnan(ts).any()

    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    train_windows: list[np.ndarray] = []
    inst: dict[int, tuple[list, list, list]] = {VALID: ([], [], []), TEST: ([], [], [])}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        it, sp = items[a:b], split[a:b]
        train_windows.extend(windows(it[sp == TRAIN], max_len, step))
        for code in (VALID, TEST):
            for j in np.flatnonzero(sp == code):
                end = int(np.searchsorted(ts[a:b], ts[a + j], side="left")) if strict_time else j
                hist = it[:end]
                uids, hists, targets = inst[code]
                uids.append(users[a])
                hists.append(hist[hist > 0][-max_len:])
                targets.append(it[j])

    def to_instances(code: int) -> EvalInstances:
        uids, hists, targets = inst[code]
        return EvalInstances(
            np.asarray(uids, dtype=np.int64),
            torch.from_numpy(_left_pad(hists, max_len)),
            torch.as_tensor(np.asarray(targets, dtype=np.int64)),
        )

    counts = np.bincount(items[(split == TRAIN)], minlength=vocab.size + 1).astype(np.int64)
    return SequenceData(
        vocab=vocab,
        train_windows=torch.from_numpy(_left_pad(train_windows, max_len + 1)),
        train_counts=counts,
        valid=to_instances(VALID),
        test=to_instances(TEST),
        max_len=max_len,
    )


#: interaction columns averaged per item into side features, when a dataset has them (KuaiRand)
SIDE_COLUMNS = ("watch_ratio", "click", "long_view", "like", "follow", "comment", "forward")


def item_side_features(interactions: pd.DataFrame, vocab: ItemVocab) -> np.ndarray:
    """Item-level side features from the train split, standardised per column.

    For each item index: log(1 + duration in seconds) (when ``duration_ms`` exists) and the train
    mean of each column of :data:`SIDE_COLUMNS` present (watch ratio clipped to [0, 5]), over all
    train rows of the item (not only positives). Missing values become the column mean (0 after
    standardising). Row 0 (padding) is 0.

    Args:
        interactions: prepared interactions with a ``split`` column.
        vocab: the item vocabulary.

    Returns:
        float32 (V + 1, F); F = 0 when the dataset has none of these columns (Amazon, MovieLens).
    """
    train = interactions.loc[interactions["split"].to_numpy() == TRAIN]
    cols = []
    idx = vocab.encode(train["item_id"].to_numpy())
    keep = idx > 0
    if "duration_ms" in train.columns:
        train = train.assign(_dur=np.log1p(train["duration_ms"].astype("float64") / 1000.0))
        cols.append("_dur")
    cols += [c for c in SIDE_COLUMNS if c in train.columns]
    out = np.zeros((vocab.size + 1, len(cols)), dtype=np.float32)
    for j, c in enumerate(cols):
        v = train[c].to_numpy(dtype="float64", na_value=np.nan)
        if c == "watch_ratio":
            v = np.clip(v, 0.0, 5.0)
        ok = keep & np.isfinite(v)
        total = np.bincount(idx[ok], weights=v[ok], minlength=vocab.size + 1)
        count = np.bincount(idx[ok], minlength=vocab.size + 1)
        col = np.where(count > 0, total / np.maximum(count, 1), np.nan)[1:]
        mean = np.nanmean(col) if np.isfinite(col).any() else 0.0
        col = np.where(np.isfinite(col), col, mean)
        std = col.std()
        out[1:, j] = (col - mean) / std if std > 0 else 0.0
    return out
