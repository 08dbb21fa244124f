"""The reward model of OneRec's preference alignment: per-objective towers and a P-Score head.

Sources: OneRec (arXiv 2502.18965) section 3.3.1 (a reward model that scores a user-item pair
from a user representation, an item representation and per-objective towers: swt, vtr, wtr,
ltr); OneRec Technical Report (arXiv 2506.13695) section 2.4.1 (the P-Score, one preference
score that a network learns from the hidden states of the objective towers together with the
user and item representations, replacing hand-tuned weighted sums of the objectives).

What the model does (``reelrec train pscore``, KuaiRand impressions):
    * User representation ``u`` (B, H): an MLP over the user-side fields (user id, profile,
      the user's real-time counters, hour of the request) and the mean of the embeddings of
      the user's recent liked / long-viewed videos. Item representation ``v`` (B, H): an MLP
      over the video-side fields (video id, duration bucket, the video's counters, semantic-ID
      codes when configured) and bags.
    * A cross representation ``c`` (B, H): an MLP over every field and the pooled sequence at
      once (the shared bottom of DeepFM-style rankers, where user x video crosses are learnt).
    * One tower per objective (click, long_view, like, follow, comment, forward, watch ratio)
      over ``[u, v, u * v, c]``: hidden layers ``ranking.tower`` give the hidden state ``h_t``,
      then a linear output. Binary objectives are trained with BCE, the watch ratio with
      squared error on the clipped ratio, weighted by ``ranking.task_weights``.
    * P-Score head: an MLP over ``[h_1 .. h_T, u, v]`` (``reward.pscore_mlp``) giving one
      logit. It is trained with BCE against every objective at once, weighted by
      ``reward.pscore_weights`` (the watch ratio enters as the soft label ratio / clip):
      ``L_P = sum_t w_t BCE(p, y_t) / sum_t w_t`` over the labelled rows, which is BCE against
      the weighted mean label. The total loss is ``sum_t a_t L_t + reward.pscore_loss_weight
      * L_P``; gradients of L_P flow into the towers and representations.

Deviations, and why:
    * The report does not publish the P-Score network or its training target; the weighted
      multi-objective BCE above is our reading of "learns to combine the objectives", and the
      weights are a config value (default: like and long_view 2, the others 1).
    * KuaiRand has no session watch time (swt); its objectives are the logged labels above.
    * The user representation is a mean over the behaviour sequence (no target attention), so
      a user's representation can be computed once per request and shared by its candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reelrec.config import ConfigError
from reelrec.data.ctr import CTRBatch
from reelrec.models.base import HasPScore, LossOutput
from reelrec.models.ctr import CTRSchema, RankingConfig, RankingModel, masked_mean, mlp


@dataclass
class RewardConfig:
    """P-Score settings (section ``reward``; widths of u, v and towers are in ``ranking``)."""

    pscore_mlp: list[int] = field(default_factory=lambda: [64])  # P-Score head hidden widths
    pscore_weights: list[float] = field(default_factory=list)  # weight of each task of
    # ranking.tasks in the P-Score target, >= 0; [] = like and long_view 2, the others 1
    pscore_loss_weight: float = 1.0  # weight of the P-Score loss beside the towers (>= 0)

    def validate(self, section: str = "reward") -> None:
        """Check the values that do not depend on other sections (the number of
        ``pscore_weights`` is checked against ``ranking.tasks`` by the ranking task).

        Raises:
            ConfigError: naming the first invalid key.
        """
        import math

        w = self.pscore_weights
        rules = [
            (len(self.pscore_mlp) > 0 and min(self.pscore_mlp) >= 1, "pscore_mlp", "widths >= 1"),
            (
                w == [] or (all(math.isfinite(x) and x >= 0 for x in w) and sum(w) > 0),
                "pscore_weights",
                "[] or finite weights >= 0, not all 0",
            ),
            (
                w == [] or all(x == 0 or 1e-6 <= x <= 1e6 for x in w),
                "pscore_weights",
                "weights of 0 or in [1e-6, 1e6]",
            ),
            (
                math.isfinite(self.pscore_loss_weight) and 0 <= self.pscore_loss_weight <= 100,
                "pscore_loss_weight",
                "in [0, 100] (0 leaves the P-Score head untrained: towers only)",
            ),
        ]
        for ok, key, rule in rules:
            if not ok:
                raise ConfigError(f"{section}.{key} must be {rule}, got {getattr(self, key)!r}")


def default_pscore_weights(tasks: list[str] | tuple[str, ...]) -> list[float]:
    """like and long_view 2, every other objective 1 (the ``reward.pscore_weights`` default)."""
    return [2.0 if t in ("like", "long_view") else 1.0 for t in tasks]


def is_user_field(name: str) -> bool:
    """True for the fields that describe the user or the request (user id, profile, the user's
    counters, hour); the others describe the video."""
    return name.startswith("user") or name == "hour"


class PScoreModel(RankingModel, HasPScore):
    """Multi-tower reward model with a P-Score head (see the module docstring).

    Declares :class:`~reelrec.models.base.HasPScore` besides the rankers' ``loss(CTRBatch)``.

    Args:
        schema: layout of the samples. cfg: widths (``embed_dim``, ``mlp`` for u and v,
        ``tower`` for the objective towers, non-empty), tasks, task weights, watch-ratio clip.
        reward: P-Score settings.

    Raises:
        ValueError: ``cfg.tower`` is empty, ``cfg.multitask`` is not ``"shared_bottom"`` (the
            objective towers read u, v and c; there is no MMoE / PLE form), or
            ``reward.pscore_weights`` does not have one weight >= 0 per task with a positive sum.

    Usage::

        model = PScoreModel(CTRSchema.of(data), RankingConfig(tower=[64]), RewardConfig())
        out = model.loss(data.batch(idx))          # towers + P-Score
        p = model.pscore(batch)                    # (B,) P-Score in (0, 1)
    """

    def __init__(self, schema: CTRSchema, cfg: RankingConfig, reward: RewardConfig) -> None:
        super().__init__(schema, cfg)
        if not cfg.tower:
            raise ValueError("ranking.tower must list >= 1 hidden width for the P-Score model")
        if cfg.multitask != "shared_bottom":
            raise ValueError(
                f"ranking.multitask must be 'shared_bottom' for the P-Score model, got "
                f"{cfg.multitask!r}"
            )
        weights = reward.pscore_weights or default_pscore_weights(schema.tasks)
        if len(weights) != len(schema.tasks) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"reward.pscore_weights must be one weight >= 0 per task {list(schema.tasks)} "
                f"with a positive sum, got {reward.pscore_weights}"
            )
        self.reward = reward
        self.register_buffer("pscore_weights", torch.tensor(weights, dtype=torch.float32))
        d = cfg.embed_dim
        self.user_fields = [j for j, f in enumerate(schema.fields) if is_user_field(f)]
        self.item_fields = [j for j, f in enumerate(schema.fields) if not is_user_field(f)]
        hist = len(schema.sequences) * d
        width = cfg.mlp[-1]
        self.user_mlp = mlp([len(self.user_fields) * d + hist, *cfg.mlp], cfg.dropout)
        self.item_mlp = mlp(
            [len(self.item_fields) * d + len(schema.bag_vocab) * d, *cfg.mlp], cfg.dropout
        )
        n_in = len(schema.fields) * d + hist + len(schema.bag_vocab) * d
        self.cross_mlp = mlp([n_in, *cfg.mlp], cfg.dropout)  # every field at once (crosses)
        self.towers = nn.ModuleList(mlp([4 * width, *cfg.tower], cfg.dropout) for _ in schema.tasks)
        self.outputs = nn.ModuleList(nn.Linear(cfg.tower[-1], 1) for _ in schema.tasks)
        head_in = len(schema.tasks) * cfg.tower[-1] + 2 * width
        self.pscore_head = nn.Sequential(
            mlp([head_in, *reward.pscore_mlp], cfg.dropout),
            nn.Linear(([head_in, *reward.pscore_mlp])[-1], 1),
        )

    def represent_pair(self, batch: CTRBatch) -> tuple[torch.Tensor, ...]:
        """User, item and cross representations, float (B, H) each."""
        emb = self.field_embeddings(batch.sparse)  # (B, F, D)
        hist, mask = self.history_embeddings(batch.history)
        pooled = masked_mean(hist, mask)
        bags = self.bag_embeddings(batch.bag).flatten(1)
        user_in = torch.cat([emb[:, self.user_fields].flatten(1), pooled], 1)
        item_in = torch.cat([emb[:, self.item_fields].flatten(1), bags], 1)
        cross = self.cross_mlp(torch.cat([emb.flatten(1), pooled, bags], 1))
        return self.user_mlp(user_in), self.item_mlp(item_in), cross

    def outputs_and_pscore(self, batch: CTRBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw task outputs float (B, T): logits / regression values; P-Score logit (B,))."""
        u, v, cross = self.represent_pair(batch)
        x = torch.cat([u, v, u * v, cross], 1)
        hidden = [tower(x) for tower in self.towers]
        out = torch.cat([o(h) for o, h in zip(self.outputs, hidden, strict=True)], 1)
        p = self.pscore_head(torch.cat([*hidden, u, v], 1)).squeeze(1)
        return out, p

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        """Raw task outputs (B, T) (what :meth:`predict` and the CTR metrics read)."""
        return self.outputs_and_pscore(batch)[0]

    def pscore(self, batch: CTRBatch) -> torch.Tensor:
        """P-Score in (0, 1), float (B,), without gradient (the reward of alignment)."""
        with torch.no_grad():
            return torch.sigmoid(self.outputs_and_pscore(batch)[1])

    def pscore_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels (B, T) as P-Score targets in [0, 1]: the watch ratio divided by its clip."""
        y = labels.clone()
        for t, binary in enumerate(self.schema.binary):
            if not binary:
                y[:, t] = (y[:, t] / self.cfg.watch_ratio_clip).clamp(0, 1)
        return y

    def loss(self, batch: CTRBatch) -> LossOutput:
        """Tower losses (weighted, labelled rows only) plus the P-Score loss (module doc).

        Args:
            batch: :class:`~reelrec.data.ctr.CTRBatch`; labels float (B, T), NaN = unlabelled.

        Returns:
            :class:`~reelrec.models.base.LossOutput`; parts: each labelled task's loss and
            ``pscore`` (when a row has a labelled objective of positive weight).
        """
        out, p = self.outputs_and_pscore(batch)
        y = batch.labels
        total, parts = self.task_losses(out, y)
        target = self.pscore_targets(y)
        known = ~torch.isnan(target)
        w = self.pscore_weights * known  # (B, T): each row's labelled objectives
        bce = F.binary_cross_entropy_with_logits(
            p.unsqueeze(1).expand_as(target), target.nan_to_num(0.0), reduction="none"
        )
        rows = w.sum(1) > 0
        if bool(rows.any()):
            lp = ((bce * w).sum(1)[rows] / w.sum(1)[rows]).mean()
            total = total + self.reward.pscore_loss_weight * lp
            parts["pscore"] = float(lp.detach())
        return LossOutput(total, parts)
