"""What the multi-task ranking models (DeepFM, DIN, CAN, MMoE, PLE) share: the field embeddings,
the multi-task structure and task towers, and the loss.

Multi-task learning: one representation per sample from the model, then the structure
``ranking.multitask`` (:mod:`reelrec.models.multitask`) gives each task its input, and per task a
linear output or a small tower of its own (``ranking.tower``). The default structure is the
shared bottom (Caruana 1997; the baseline MMoE, Ma et al., KDD 2018, compares against): one MLP
shared by every task; ``mmoe`` and ``ple`` replace it by gated mixtures of experts. Binary tasks
(click, long_view, like, follow, comment, forward) use binary cross-entropy on logits; the watch
ratio is regressed with squared error on the clipped ratio. Rows without a label for a task (NaN)
are left out of that task's loss. The total loss is ``sum_t task_weight_t * loss_t``;
``loss(CTRBatch)`` returns it as a :class:`~reelrec.models.base.LossOutput` whose parts are the
per-task losses (``{"click": .., "like": ..}``), logged per epoch by the training loop as
``loss_click``, ``loss_like``...
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from reelrec.config import ConfigError
from reelrec.data.ctr import KUAIRAND_TASKS, CTRBatch, CTRData
from reelrec.models.base import (
    LossOutput,
    MayLeaveParametersUnused,
    ReportsEpochStats,
    Trainable,
)

#: the values of ``ranking.multitask``
MULTITASK = ("shared_bottom", "mmoe", "ple")


@dataclass
class RankingConfig:
    """Width, multi-task structure, tower and task settings shared by the rankers (CAN, DIN,
    DeepFM, MMoE, PLE) and the P-Score model (section ``ranking``)."""

    embed_dim: int = 16  # D: embedding width of every sparse field (>= 1)
    mlp: list[int] = field(default_factory=lambda: [256, 128])  # shared-bottom MLP widths
    tower: list[int] = field(default_factory=list)  # hidden widths of each task's own tower
    # on top of the multi-task structure; [] = one linear output per task
    multitask: str = "shared_bottom"  # what gives each task its tower's input: "shared_bottom"
    # (the MLP ``mlp``, shared by every task), "mmoe" (Ma et al., KDD 2018) or "ple" (Tang et al.,
    # RecSys 2020); reelrec.models.multitask. The models mmoe / ple fix it; pscore: shared_bottom
    experts: int = 4  # mmoe: experts shared by the tasks; ple: shared experts per level (>= 1)
    task_experts: int = 1  # ple: experts of each task per level (>= 0)
    levels: int = 2  # ple: extraction levels (>= 1; 1 = CGC, the paper's single-level form)
    expert_mlp: list[int] = field(default_factory=list)  # hidden widths of each expert MLP
    # (mmoe, ple), each >= 1; [] = the widths of ``mlp``
    dropout: float = 0.1  # dropout after each MLP layer, in [0, 1)
    tasks: list[str] = field(default_factory=lambda: list(KUAIRAND_TASKS))  # label columns
    task_weights: list[float] = field(default_factory=list)  # loss weight per task, >= 0;
    # [] = 1 for every task
    watch_ratio_clip: float = 3.0  # watch ratios above this are clipped (> 0)

    def validate(self, section: str = "ranking") -> None:
        """Check every value against its documented range and the task names.

        Raises:
            ConfigError: naming the first invalid key.
        """
        import math

        from reelrec.data.ctr import KUAIRAND_TASKS

        weights = self.task_weights or [1.0] * len(self.tasks)
        binary = [
            t for t, w in zip(self.tasks, weights, strict=False) if t != "watch_ratio" and w > 0
        ]
        unknown = [t for t in self.tasks if t not in KUAIRAND_TASKS]
        rules = [
            (self.embed_dim >= 1, "embed_dim", ">= 1"),
            (len(self.mlp) > 0 and min(self.mlp) >= 1, "mlp", "widths >= 1"),
            (0 <= self.dropout < 1, "dropout", "in [0, 1)"),
            (all(w >= 1 for w in self.tower), "tower", "widths >= 1 (or [])"),
            (self.multitask in MULTITASK, "multitask", " or ".join(map(repr, MULTITASK))),
            (self.experts >= 1, "experts", ">= 1"),
            (self.task_experts >= 0, "task_experts", ">= 0"),
            (self.levels >= 1, "levels", ">= 1"),
            (all(w >= 1 for w in self.expert_mlp), "expert_mlp", "widths >= 1 (or [])"),
            (
                len(self.tasks) > 0 and not unknown and len(set(self.tasks)) == len(self.tasks),
                "tasks",
                f"distinct names from {list(KUAIRAND_TASKS)}",
            ),
            (
                self.task_weights == [] or len(self.task_weights) == len(self.tasks),
                "task_weights",
                f"[] or one weight per task ({len(self.tasks)})",
            ),
            (
                all(math.isfinite(w) and w >= 0 for w in self.task_weights)
                and (sum(self.task_weights) > 0 or not self.task_weights),
                "task_weights",
                "finite weights >= 0, not all 0",
            ),
            (
                len(binary) > 0,
                "tasks",
                "a list with at least one binary task of loss weight > 0 (early stopping uses AUC)",
            ),
            (self.watch_ratio_clip > 0, "watch_ratio_clip", "> 0"),
        ]
        for ok, key, rule in rules:
            if not ok:
                raise ConfigError(f"{section}.{key} must be {rule}, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class CTRSchema:
    """The layout of :class:`reelrec.data.ctr.CTRData` a model is built for."""

    fields: tuple[str, ...]
    vocab: tuple[int, ...]
    sequences: tuple[str, ...]
    seq_target: tuple[int, ...]
    bags: tuple[str, ...]
    bag_vocab: tuple[int, ...]
    tasks: tuple[str, ...]
    binary: tuple[bool, ...]

    @classmethod
    def of(cls, data: CTRData) -> CTRSchema:
        """The schema of ``data``."""
        return cls(
            tuple(data.fields),
            tuple(data.vocab),
            tuple(data.sequences),
            tuple(data.seq_target),
            tuple(data.bags),
            tuple(data.bag_vocab),
            tuple(data.tasks),
            tuple(data.binary),
        )


def mlp(sizes: list[int], dropout: float, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear -> activation -> dropout for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), act(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, L, D) over the positions where ``mask`` (B, L) is True; 0 where none."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class TaskTowers(nn.Module):
    """One tower per task: (B, H) shared by every task, or (B, T, H) one input per task
    (MMoE, PLE) -> (B, T) float.

    With ``hidden == []`` this is a single ``Linear(H, T)``: row t of its weight is task t's
    linear output (applied to task t's input when each task has its own); otherwise each task
    has its own MLP ``H -> hidden... -> 1``.
    """

    def __init__(self, dim: int, hidden: list[int], tasks: int, dropout: float) -> None:
        super().__init__()
        self.towers = (
            nn.ModuleList(
                nn.Sequential(mlp([dim, *hidden], dropout), nn.Linear(([dim, *hidden])[-1], 1))
                for _ in range(tasks)
            )
            if hidden
            else None
        )
        self.linear = None if hidden else nn.Linear(dim, tasks)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 3:  # task t reads h[:, t]
            if self.linear is not None:
                return torch.einsum("bth,th->bt", h, self.linear.weight) + self.linear.bias
            return torch.cat([t(h[:, i]) for i, t in enumerate(self.towers)], 1)
        if self.linear is not None:
            return self.linear(h)
        return torch.cat([t(h) for t in self.towers], 1)


class RankingModel(nn.Module, Trainable[CTRBatch], MayLeaveParametersUnused, ReportsEpochStats):
    """Base class: embedding tables, the multi-task structure and the task towers.

    Subclasses implement :meth:`represent` (batch -> (B, H) float) and call
    :meth:`build_heads` with H once their own modules exist. Declares
    :class:`~reelrec.models.base.Trainable` (``loss(CTRBatch)``),
    :class:`~reelrec.models.base.MayLeaveParametersUnused` (a task without labels in a batch
    leaves its tower without gradient: DDP must know) and
    :class:`~reelrec.models.base.ReportsEpochStats` (MMoE / PLE gate statistics, CASES.md C27).
    """

    def __init__(self, schema: CTRSchema, cfg: RankingConfig) -> None:
        super().__init__()
        self.schema, self.cfg = schema, cfg
        d = cfg.embed_dim
        self.tables = nn.ModuleList(nn.Embedding(v, d, padding_idx=0) for v in schema.vocab)
        self.bag_tables = nn.ModuleList(nn.Embedding(v, d, padding_idx=0) for v in schema.bag_vocab)
        w = cfg.task_weights or [1.0] * len(schema.tasks)
        self.register_buffer("task_weights", torch.tensor(w, dtype=torch.float32))
        self.register_buffer("binary", torch.tensor(schema.binary))
        for emb in [*self.tables, *self.bag_tables]:
            nn.init.normal_(emb.weight, std=0.01)

    def build_heads(self, repr_dim: int) -> None:
        """Create ``self.bottom``, the structure ``cfg.multitask`` over a ``repr_dim``
        representation (the shared-bottom MLP, MMoE's experts and gates, or PLE's extraction
        levels), and ``self.heads``, the task towers (:class:`TaskTowers`) on its output.

        The shared bottom keeps the module names and parameter order of the rankers before
        MMoE/PLE existed (``bottom.*``, ``heads.*``), so their checkpoints load and seeded runs
        are unchanged.

        Raises:
            ConfigError: an unknown ``cfg.multitask``.
        """
        # multitask.py builds its models on this module, so it is imported here
        from reelrec.models.multitask import multitask_bottom

        self.bottom = multitask_bottom(repr_dim, self.cfg, len(self.schema.tasks))
        self.heads = TaskTowers(
            self.bottom.out_dim, self.cfg.tower, len(self.schema.tasks), self.cfg.dropout
        )

    def epoch_stats(self) -> dict[str, float]:
        """The MMoE / PLE gates' entropy and mean expert weights per task since the last call
        (:func:`reelrec.models.multitask.gate_epoch_stats`; warns about uniform or collapsed
        gates); ``{}`` for the shared bottom."""
        # a subclass may build its own head instead of build_heads (no ``bottom``)
        stats = getattr(getattr(self, "bottom", None), "gate_stats", None)
        return stats(list(self.schema.tasks)) if stats is not None else {}

    # --- embeddings -------------------------------------------------------------------------
    def field_embeddings(self, sparse: torch.Tensor) -> torch.Tensor:
        """(B, F) int64 -> (B, F, D)."""
        return torch.stack([t(sparse[:, j]) for j, t in enumerate(self.tables)], 1)

    def history_embeddings(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, L) int64 -> per-position concatenation of the S aligned embeddings (B, L, S*D)
        (each sequence uses its target field's table, as DIN) and the mask (B, L) bool."""
        parts = [self.tables[f](history[:, s]) for s, f in enumerate(self.schema.seq_target)]
        return torch.cat(parts, -1), history[:, 0] > 0

    def target_embedding(self, sparse: torch.Tensor) -> torch.Tensor:
        """The target-side counterpart of :meth:`history_embeddings`: (B, S*D)."""
        return torch.cat([self.tables[f](sparse[:, f]) for f in self.schema.seq_target], -1)

    def pooled_field_embeddings(self, batch: CTRBatch) -> torch.Tensor:
        """Every field as one embedding: the sparse fields, each behaviour sequence mean-pooled
        over its unpadded positions (with its target field's table) and the bags,
        (B, F + S + Bf, D) float."""
        e = [self.field_embeddings(batch.sparse)]
        if self.schema.sequences:
            mask = batch.history[:, 0] > 0
            e.append(
                torch.stack(
                    [
                        masked_mean(self.tables[f](batch.history[:, s]), mask)
                        for s, f in enumerate(self.schema.seq_target)
                    ],
                    1,
                )
            )
        e.append(self.bag_embeddings(batch.bag))
        return torch.cat(e, 1)

    def bag_embeddings(self, bag: torch.Tensor) -> torch.Tensor:
        """(B, Bf, K) int64 -> mean over the non-zero entries of each bag, (B, Bf, D)."""
        if not self.bag_tables:
            return bag.new_zeros((bag.shape[0], 0, self.cfg.embed_dim), dtype=torch.float32)
        return torch.stack(
            [masked_mean(t(bag[:, j]), bag[:, j] > 0) for j, t in enumerate(self.bag_tables)], 1
        )

    # --- outputs ----------------------------------------------------------------------------
    def represent(self, batch: CTRBatch) -> torch.Tensor:
        """Sample representation (B, H); implemented by each model."""
        raise NotImplementedError

    def multitask(self, h: torch.Tensor) -> torch.Tensor:
        """Representation (B, H) float -> raw outputs (B, T) float: the multi-task structure,
        then the task towers."""
        return self.heads(self.bottom(h))

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        """Raw outputs (B, T) float: logits for binary tasks, values for regression tasks."""
        return self.multitask(self.represent(batch))

    def predict(self, batch: CTRBatch) -> torch.Tensor:
        """Predictions (B, T): probabilities for binary tasks, values for regression tasks."""
        out = self(batch)
        return torch.where(self.binary, torch.sigmoid(out), out)

    def score_candidates(self, batch: CTRBatch) -> torch.Tensor:
        """Inference path of the ranking stage: :meth:`predict` without gradients."""
        with torch.no_grad():
            return self.predict(batch)

    def loss(self, batch: CTRBatch) -> LossOutput:
        """Weighted sum of per-task losses over the rows that have a label (see module doc).

        Args:
            batch: :class:`~reelrec.data.ctr.CTRBatch`; labels float (B, T), NaN = unlabelled.

        Returns:
            :class:`~reelrec.models.base.LossOutput`; parts ``{task: loss}`` for the tasks
            with a label in the batch.
        """
        return LossOutput(*self.task_losses(self(batch), batch.labels))

    def task_losses(
        self, out: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(weighted total, {task: loss})`` of outputs ``(B, T)`` against labels ``(B, T)``
        (NaN = unlabelled): BCE on logits for binary tasks, MSE otherwise; tasks without a
        label in the batch are left out."""
        total = out.new_zeros(())
        parts: dict[str, float] = {}
        for t, name in enumerate(self.schema.tasks):
            ok = ~torch.isnan(y[:, t])
            if not bool(ok.any()):
                continue
            if self.schema.binary[t]:
                lt = F.binary_cross_entropy_with_logits(out[ok, t], y[ok, t])
            else:
                lt = F.mse_loss(out[ok, t], y[ok, t])
            total = total + self.task_weights[t] * lt
            parts[name] = float(lt.detach())
        return total, parts
