"""OneRec-V2: the lazy decoder-only generative retriever.

Source: OneRec-V2 Technical Report (arXiv 2508.20900) section 2.2. There is no encoder: a
*context processor* maps the user context (here the same pathway tokens as OneRec,
:class:`~reelrec.models.onerec.UserContext`) once to ``S_kv x L_kv`` key/value sets of
``G_kv`` heads (eq. 1-3: one linear map to ``S_kv * L_kv * G_kv * d_head`` per context token,
split, RMSNorm per set; with ``S_kv = 1`` keys and values are tied). Decoder block ``l`` uses set
``floor(l * L_kv / N_layers)``, so consecutive blocks share keys/values. Its cross-attention has
no K/V projections ("lazy"); self-attention over ``[BOS, s1..sL]`` uses grouped-query attention
with ``kv_heads`` groups; blocks run cross-attention, then causal self-attention, then the (MoE)
feed-forward (section 2.2.2).

Deviations, and why:
    * Many targets per pass (``context="causal"``, an option; the ``onerec-v2`` preset keeps
      the pathways, which scored higher on Beauty): the context tokens are one per
      history item after a static token, and the decoder of target ``t`` sees the items up to
      ``t`` only through a causal, relative-distance-biased cross-attention mask
      (:mod:`reelrec.models.onerec`); the paper trains one target per sample. The keys and
      values are still made once per window by the context processor.
    * Context tokens (``context="pathways"``) are built by OneRec's pathway module (one learned static token, short-term,
      positive-feedback, lifelong QFormer); V2 concatenates user profile and behaviour
      features, which the public benchmark sets do not have.
    * One shared output normalisation instead of a position-specific RMSNorm per code level.
    * Defaults: ``kv_groups`` (L_kv) 1 and ``kv_split`` (S_kv) 1, the paper's default setting.

Interface: OneRec's (:class:`~reelrec.models.onerec.GenerativeRetriever`): ``loss(NextItemBatch |
AlignmentBatch) -> LossOutput``, beam-search ``recommend``, MoE ``epoch_stats``.
"""

from __future__ import annotations

import torch
from torch import nn

from reelrec.models.generative import SemanticIDTable
from reelrec.models.onerec import GenerativeRetriever, OneRecConfig


class OneRecV2(GenerativeRetriever):
    """Lazy decoder-only OneRec-V2 (see the module docstring).

    Args:
        table: semantic IDs of the vocabulary. cfg: hyper-parameters (``onerec`` section;
            ``encoder_layers`` is ignored, ``kv_groups``/``kv_split``/``kv_heads`` apply).
        side: float (V + 1, F) item side features, or None.
    """

    lazy_cross = True
    cross_first = True

    def __init__(
        self, table: SemanticIDTable, cfg: OneRecConfig, side: torch.Tensor | None = None
    ) -> None:
        super().__init__(table, cfg, side)
        self.head_dim = cfg.head_dim or cfg.hidden // cfg.heads
        self.sets = cfg.kv_split * cfg.kv_groups
        self.processor = nn.Linear(cfg.hidden, self.sets * cfg.kv_heads * self.head_dim)
        self.kv_norms = nn.ModuleList(
            nn.RMSNorm(cfg.kv_heads * self.head_dim) for _ in range(self.sets)
        )
        self.processor.apply(self._init)

    def context_kv(
        self, z: torch.Tensor, key_pos: torch.Tensor | None, key_valid: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys/values of every decoder layer from one projection of the context tokens
        (no encoder: ``key_pos`` and ``key_valid`` only shape the cross-attention mask)."""
        b, s, _ = z.shape
        chunks = self.processor(z).chunk(self.sets, -1)
        cfg = self.cfg

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, S, G*hd) -> (B, G, S, hd)
            return x.view(b, s, cfg.kv_heads, self.head_dim).transpose(1, 2)

        sets = []
        for g in range(cfg.kv_groups):
            k = heads(self.kv_norms[g * cfg.kv_split](chunks[g * cfg.kv_split]))
            v = (
                heads(self.kv_norms[g * cfg.kv_split + 1](chunks[g * cfg.kv_split + 1]))
                if cfg.kv_split == 2
                else k
            )
            sets.append((k, v))
        n = cfg.decoder_layers
        return [sets[layer * cfg.kv_groups // n] for layer in range(n)]
