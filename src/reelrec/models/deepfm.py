"""DeepFM, a ranking baseline.

Huifeng Guo, Ruiming Tang, Yunming Ye, Zhenguo Li, Xiuqiang He, "DeepFM: A Factorization-Machine
based Neural Network for CTR Prediction", IJCAI 2017, arXiv 1703.04247. Implements section 2.1:
the FM component (first-order weights plus pairwise inner products of the field embeddings,
computed by the sum-square identity of eq. 2) and the deep component (an MLP over the
concatenated field embeddings), sharing one embedding per field.

Deviations, and why:
    * Multi-task: the deep component feeds reelrec's multi-task structure (``ranking.multitask``:
      shared bottom, MMoE or PLE) and one output per task (:mod:`reelrec.models.ctr`); each task
      has its own first-order weights and a learned scale on the shared second-order FM term
      (initialised to 1, so a single task is exactly DeepFM).
    * Behaviour sequences (which DeepFM does not model) are mean-pooled into one extra field each;
      bag features (VQ codes) are mean-pooled into one field each.
"""

from __future__ import annotations

import torch
from torch import nn

from reelrec.data.ctr import CTRBatch
from reelrec.models.ctr import CTRSchema, RankingConfig, RankingModel


class DeepFM(RankingModel):
    """DeepFM over the sparse fields, pooled sequences and bags; see the module docstring.

    Input: :class:`reelrec.data.ctr.CTRBatch`. Output of ``forward``: (B, T) raw outputs.
    """

    def __init__(self, schema: CTRSchema, cfg: RankingConfig) -> None:
        super().__init__(schema, cfg)
        n_tasks = len(schema.tasks)
        self.first_order = nn.ModuleList(
            nn.Embedding(v, n_tasks, padding_idx=0) for v in schema.vocab
        )
        for emb in self.first_order:
            nn.init.zeros_(emb.weight)
        self.fm_scale = nn.Parameter(torch.ones(n_tasks))
        n_fields = len(schema.fields) + len(schema.sequences) + len(schema.bags)
        self.build_heads(n_fields * cfg.embed_dim)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        """Raw outputs (B, T): deep part + first-order weights + scale_t * sum_{i<j} <e_i, e_j>."""
        e = self.pooled_field_embeddings(batch)  # (B, F + S + Bf, D)
        deep = self.multitask(e.flatten(1))
        second = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)
        first = sum(t(batch.sparse[:, j]) for j, t in enumerate(self.first_order))
        return deep + first + second * self.fm_scale
