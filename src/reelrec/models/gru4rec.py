"""GRU4Rec: session-based recommendation with recurrent neural networks.

Balázs Hidasi, Alexandros Karatzoglou, Linas Baltrunas and Domonkos Tikk, "Session-based
Recommendations with Recurrent Neural Networks", ICLR 2016, arXiv 1511.06939. Implements
section 3.1: item embeddings fed to a GRU (eq. 1-4), the hidden state after each item scoring
every next item. A classic sequential baseline beside SASRec (RecBole's GRU4Rec has the same
layout and defaults: embedding 64, GRU hidden 128, one layer, dropout 0.3).

Deviations from the paper, and why:
    * Full-softmax cross-entropy over all items at every position (RecBole's ``loss_type=CE``),
      not the paper's session-parallel mini-batches with TOP1 / BPR ranking losses over
      in-batch negatives: the same objective as our SASRec, so the two compare directly.
    * Item embedding input (the paper found one-hot input slightly better; embeddings are what
      RecBole and every later comparison use) and a dense layer from the GRU width back to the
      embedding width, so scores are inner products with the input item table (shared).
    * Left-padded windows are packed, so padding never enters the recurrence: outputs do not
      depend on how much padding precedes a history (declared ``PaddingInvariant``).

Interface (:mod:`reelrec.models.base`): ``loss(NextItemBatch) -> LossOutput``; scores are
``user_representation(history) @ item_embeddings().T`` (:class:`EmbeddingScorer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from reelrec.config import ConfigError
from reelrec.models.base import (
    EmbeddingScorer,
    LossOutput,
    NextItemBatch,
    PaddingInvariant,
    Trainable,
)


@dataclass
class GRU4RecConfig:
    """GRU4Rec hyper-parameters (defaults: RecBole's GRU4Rec)."""

    max_len: int = 50  # history length L, items (>= 1)
    hidden: int = 64  # item embedding width D (>= 1)
    gru_hidden: int = 128  # GRU state width (>= 1)
    layers: int = 1  # stacked GRU layers (>= 1)
    dropout: float = 0.3  # dropout on the item embeddings, in [0, 1)

    def validate(self, section: str = "gru4rec") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key, its rule and its value.
        """
        rules = [
            (self.max_len >= 1, "max_len", ">= 1"),
            (self.hidden >= 1, "hidden", ">= 1"),
            (self.gru_hidden >= 1, "gru_hidden", ">= 1"),
            (self.layers >= 1, "layers", ">= 1"),
            (0 <= self.dropout < 1, "dropout", "in [0, 1)"),
        ]
        for ok, key, rule in rules:
            if not ok:
                raise ConfigError(f"{section}.{key} must be {rule}, got {getattr(self, key)!r}")


class GRU4Rec(nn.Module, Trainable[NextItemBatch], EmbeddingScorer, PaddingInvariant):
    """GRU4Rec over an item vocabulary 1..V (index 0 is padding).

    Args:
        num_items: V, the number of real items.
        cfg: hyper-parameters.
    """

    def __init__(self, num_items: int, cfg: GRU4RecConfig) -> None:
        super().__init__()
        self.cfg, self.num_items = cfg, num_items
        self.item_emb = nn.Embedding(num_items + 1, cfg.hidden, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.hidden, cfg.gru_hidden, cfg.layers, batch_first=True, bias=False)
        self.dense = nn.Linear(cfg.gru_hidden, cfg.hidden)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Hidden state after each item.

        Args:
            items: int64 (B, L) left-padded item indices (0 = padding).

        Returns:
            float (B, L, D); 0 at padding positions.

        Raises:
            ValueError: not a (B, L) tensor, or indices outside 0..V.
        """
        if items.ndim != 2:
            raise ValueError(f"items must be (B, L), got {tuple(items.shape)}")
        if len(items) and (int(items.min()) < 0 or int(items.max()) > self.num_items):
            raise ValueError(f"item indices must be in 0..{self.num_items}")
        b, length = items.shape
        lengths = (items > 0).sum(1)
        pad = length - lengths  # left padding of each row
        # left-padded -> right-padded: row r's position j holds item j + pad[r]
        cols = torch.arange(length, device=items.device)
        src = (cols.unsqueeze(0) + pad.unsqueeze(1)) % length
        right = items.gather(1, src)
        x = self.drop(self.item_emb(right))
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
        h = self.dense(out) * (lengths > 0).view(b, 1, 1)  # rows without items: zeros
        # right-padded -> left-padded: position i holds step i - pad (padding: zeros)
        back = (cols.unsqueeze(0) - pad.unsqueeze(1)) % length
        h = h.gather(1, back.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return h * (items > 0).unsqueeze(-1)

    def user_representation(self, history: torch.Tensor) -> torch.Tensor:
        """float (B, D): the state after the most recent item of each history."""
        return self.forward(history)[:, -1]

    def item_embeddings(self) -> torch.Tensor:
        """float (V + 1, D): the item table (row 0, padding, is never ranked)."""
        return self.item_emb.weight

    def loss(self, batch: NextItemBatch) -> LossOutput:
        """Softmax cross-entropy of the next item over all items, at every position that has
        a history item and a target.

        Args:
            batch: :class:`NextItemBatch` (``inputs``, ``targets`` int64 (B, L)).

        Returns:
            :class:`LossOutput`, parts ``{"ce": ..}``.
        """
        inputs, targets, _ = batch
        hidden = self.forward(inputs)
        keep = (targets > 0) & (inputs > 0)
        logits = hidden[keep] @ self.item_emb.weight[1:].T
        loss = F.cross_entropy(logits, targets[keep] - 1)
        return LossOutput(loss, {"ce": float(loss.detach())})
