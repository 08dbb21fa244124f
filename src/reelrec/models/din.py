"""DIN, a ranking baseline (and the base network of reelrec's CAN).

Guorui Zhou, Chengru Song, Xiaoqiang Zhu, et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018, arXiv 1706.06978. Implements section 4.3: a local activation unit scores
each behaviour against the target item, the behaviours are sum-pooled with these weights (no
softmax normalisation, so the pooled vector keeps the intensity of the user's interest), and the
result is concatenated with the other field embeddings and fed to an MLP.

Deviations, and why:
    * The activation unit's input is ``[h, t, h - t, h * t]`` (the element-wise product stands
      for the paper's outer product, as in the authors' later code and DeepCTR) and its hidden
      layers use PReLU instead of Dice; the MLP uses ReLU.
    * Multi-task: the MLP is reelrec's multi-task structure (``ranking.multitask``: the shared
      bottom by default, MMoE or PLE) with one output per task (:mod:`reelrec.models.ctr`).
    * Padded behaviours get weight 0 (masked), which the paper's formulation implies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from reelrec.config import ConfigError
from reelrec.data.ctr import CTRBatch
from reelrec.models.ctr import CTRSchema, RankingConfig, RankingModel, mlp


@dataclass
class DINConfig:
    """DIN's activation unit (section ``din``; also used by CAN)."""

    attention_mlp: list[int] = field(default_factory=lambda: [64, 32])  # hidden widths of the
    # local activation unit (each >= 1)

    def validate(self, section: str = "din") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key.
        """
        if not (len(self.attention_mlp) > 0 and min(self.attention_mlp) >= 1):
            raise ConfigError(
                f"{section}.attention_mlp must be widths >= 1, got {self.attention_mlp!r}"
            )


class ActivationUnit(nn.Module):
    """DIN's local activation unit with masked sum pooling.

    Input: behaviours ``h`` (B, L, E), target ``t`` (B, E), mask (B, L) bool. Output: (B, E),
    ``sum_j a(h_j, t) * h_j`` over unmasked j.
    """

    def __init__(self, dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.net = nn.Sequential(mlp([4 * dim, *hidden], 0.0, nn.PReLU), nn.Linear(hidden[-1], 1))

    def weights(self, h: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Activation weights (B, L), 0 at masked positions."""
        t = t.unsqueeze(1).expand_as(h)
        a = self.net(torch.cat([h, t, h - t, h * t], -1)).squeeze(-1)
        return a * mask.to(a.dtype)

    def forward(self, h: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bl,ble->be", self.weights(h, t, mask), h)


class DIN(RankingModel):
    """DIN over :class:`reelrec.data.ctr.CTRBatch`; see the module docstring.

    Representation: field embeddings (B, F*D), bag embeddings (B, Bf*D) and the activated
    pooling of the behaviour sequences (B, S*D), concatenated.
    """

    def __init__(self, schema: CTRSchema, cfg: RankingConfig, din: DINConfig) -> None:
        super().__init__(schema, cfg)
        d, s = cfg.embed_dim, len(schema.sequences)
        self.attention = ActivationUnit(s * d, din.attention_mlp) if s else None
        self.din_dim = (len(schema.fields) + len(schema.bags) + s) * d
        if type(self) is DIN:
            self.build_heads(self.din_dim)

    def din_representation(self, batch: CTRBatch) -> torch.Tensor:
        """(B, (F + Bf + S) * D): fields, bags and the activated history pooling."""
        parts = [
            self.field_embeddings(batch.sparse).flatten(1),
            self.bag_embeddings(batch.bag).flatten(1),
        ]
        if self.attention is not None:
            h, mask = self.history_embeddings(batch.history)
            parts.append(self.attention(h, self.target_embedding(batch.sparse), mask))
        return torch.cat(parts, 1)

    def represent(self, batch: CTRBatch) -> torch.Tensor:
        """See :meth:`din_representation`."""
        return self.din_representation(batch)
