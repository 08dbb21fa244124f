"""Multi-task structures of the rankers (shared bottom, MMoE, PLE) and the MMoE / PLE models.

Sources:
    * Jiaqi Ma, Zhe Zhao, Xinyang Yi, Jilin Chen, Lichan Hong, Ed H. Chi, "Modeling Task
      Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018,
      doi 10.1145/3219819.3220007 (no arXiv version). Section 4.2: ``n`` expert networks
      ``f_i`` shared by every task; per task ``k`` a gate ``g^k(x) = softmax(W_gk x)`` over the
      experts, the task's input ``f^k(x) = sum_i g^k(x)_i f_i(x)`` and its tower
      ``y_k = h^k(f^k(x))``. The shared-bottom model it compares against (section 3.1) is
      ``y_k = h^k(f(x))`` with one network ``f``.
    * Hongyan Tang, Junning Liu, Ming Zhao, Xudong Gong, "Progressive Layered Extraction (PLE):
      A Novel Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
      doi 10.1145/3383313.3412236. Section 4.1, Customized Gate Control (CGC): ``m_s`` shared
      experts and ``m_k`` experts of each task ``k``; task k's gate mixes its own experts and
      the shared ones, ``g^k(x) = softmax(W_g^k x) S^k(x)`` with ``S^k(x)`` the stacked outputs
      ``[E_(k,1) .. E_(k,m_k), E_(s,1) .. E_(s,m_s)]``, then ``y^k = t^k(g^k(x))``. Section
      4.2, PLE: ``N`` extraction levels of CGC; at level ``j`` the experts and the gate of a
      branch read that branch's output of level ``j - 1``, ``g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x))
      S^{k,j}(x)``, and a shared gate over every expert of the level gives the shared branch's
      input to level ``j + 1``; the last level has no shared gate; ``y^k = t^k(g^{k,N}(x))``.

Every structure maps the representation (B, H) to the input of the task towers: (B, H') shared by
every task (:class:`SharedBottom`) or (B, T, H') one per task (:class:`MMoE`, :class:`PLE`);
:class:`reelrec.models.ctr.TaskTowers` is ``h^k`` / ``t^k``. A ranker chooses its structure with
``ranking.multitask`` (:meth:`reelrec.models.ctr.RankingModel.build_heads`); DeepFM, DIN and CAN
accept all three. The models ``mmoe`` and ``ple`` of the model table are :class:`EmbeddingMLP`
(the input the FuxiCTR MMoE / PLE use: every field embedding, concatenated) with the structure
fixed to theirs.

Deviations, and why:
    * The experts are MLPs ``in -> ranking.expert_mlp`` (default ``ranking.mlp``) with ReLU and
      dropout after every layer, as reelrec's shared bottom, so that one expert is the shared
      bottom exactly (tested); the papers' experts are ReLU MLPs of their own sizes.
    * The towers are ``ranking.tower`` (default [] = one linear output per task), not the papers'
      MLP towers: the same default as the shared bottom, so the structures compare alone.
    * PLE's joint loss optimisation (section 4.3: task weights that change during training) is
      not implemented: the task weights are fixed (``ranking.task_weights``). Rows without a
      label for a task are left out of that task's loss, as in that section.
    * ``ranking.task_experts = 0`` is allowed (the papers always have task experts): a PLE level
      then has shared experts only, and one level is MMoE.
    * MMoE / PLE models: behaviour sequences and bags enter as mean-pooled embeddings (as in
      reelrec's DeepFM); the papers' industrial inputs are not published.

Gates are watched (shared/cases/CASES.md C27: experts initialised alike stay alike, and the
gates then stay uniform, which makes MMoE/PLE a costlier shared bottom with no error): every
expert and gate is initialised independently (PyTorch's default ``nn.Linear`` init, tested), and
in training mode each gate's weights are accumulated by a :class:`GateMonitor` (non-persistent
buffers: checkpoints are unchanged), whose
per-epoch statistics (:meth:`MMoE.gate_stats`, :meth:`PLE.gate_stats`) the training log reports:
per task, the gate entropy and the mean weight of each expert, with a ``RuntimeWarning`` when a
gate stayed exactly uniform on every row or one expert took more than 0.95 of a gate's weight on
every row (collapse).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from reelrec.config import ConfigError
from reelrec.data.ctr import CTRBatch
from reelrec.models.ctr import MULTITASK, CTRSchema, RankingConfig, RankingModel, mlp


class GateMonitor(nn.Module):
    """Running statistics of one softmax gate over ``experts`` experts, over the training rows
    seen since the last :meth:`take`.

    The accumulators are non-persistent buffers: they follow the model's device, are left out of
    checkpoints (``state_dict``), and are restored with the other buffers after the throughput
    measurement of the training loop, so its extra batch is not counted. :meth:`add` reads no
    value back to the host (no device sync, no graph break under ``torch.compile``); under DDP
    each forward broadcasts rank 0's buffers, so the statistics are rank 0's rows.

    Args:
        experts: E, the gate's width (>= 1; a gate of one expert is never counted).
    """

    #: a gate is "uniform" when no weight of any row is further than this from 1/E (or twice the
    #: machine epsilon of a half-precision gate)
    UNIFORM_ATOL = 1e-6
    #: a gate has "collapsed" when one expert's weight is above this on every row
    COLLAPSE = 0.95

    def __init__(self, experts: int) -> None:
        super().__init__()
        self.experts = experts
        self.register_buffer("weight_sum", torch.zeros(experts), persistent=False)
        self.register_buffer("entropy_sum", torch.zeros(()), persistent=False)
        self.register_buffer("rows", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("deviation", torch.zeros(()), persistent=False)
        self.register_buffer("above", torch.ones(experts, dtype=torch.bool), persistent=False)

    def add(self, w: torch.Tensor) -> None:
        """Accumulate gate weights ``w`` float (B, E), rows summing to 1."""
        if self.experts < 2 or w.shape[0] == 0:
            return
        tol = max(self.UNIFORM_ATOL, 2 * torch.finfo(w.dtype).eps)
        with torch.no_grad():
            w = w.detach().to(self.weight_sum.dtype)
            self.weight_sum += w.sum(0)
            self.entropy_sum += -(w * torch.log2(w.clamp_min(1e-30))).sum()
            self.rows += w.shape[0]
            # torch.maximum keeps a NaN (max() would drop it and call a NaN gate uniform)
            dev = (w - 1.0 / self.experts).abs().amax() / tol
            self.deviation.copy_(torch.maximum(self.deviation, dev))
            self.above &= (w > self.COLLAPSE).all(0)

    def take(self) -> dict | None:
        """``{"weights": mean weight per expert (list of E floats), "entropy": mean entropy in
        bits, "uniform": bool, "collapsed": bool, "finite": bool, "rows": int}``, or None when
        no row was counted; then resets."""
        rows = int(self.rows)
        out = None
        if rows:
            weights = (self.weight_sum / rows).tolist()
            out = {
                "weights": weights,
                "entropy": float(self.entropy_sum) / rows,
                "uniform": bool(self.deviation <= 1.0),
                "collapsed": bool(self.above.any()),
                "finite": all(math.isfinite(x) for x in weights),
                "rows": rows,
            }
        with torch.no_grad():
            for buf in (self.weight_sum, self.entropy_sum, self.rows, self.deviation):
                buf.zero_()
            self.above.fill_(True)
        return out


def gate_epoch_stats(gates: dict[str, dict | None]) -> dict[str, float]:
    """The training log's entries for :meth:`GateMonitor.take` outputs (CASES.md C27), warning
    (``RuntimeWarning``) about gates that gave non-finite weights, stayed exactly uniform or
    collapsed.

    Args:
        gates: gate name (a task's name, ``<task>_l<j>`` at PLE level j > 0, ``shared`` /
            ``shared_l<j>``) -> :meth:`GateMonitor.take` output (None: no row, skipped).

    Returns:
        Per gate, ``gate_entropy_<name>`` (bits; log2 E is uniform) and
        ``gate_weight_<name>_<i>`` (mean weight of expert i, in [0, 1]).
    """
    out: dict[str, float] = {}
    for key, g in gates.items():
        if g is None:
            continue
        out[f"gate_entropy_{key}"] = g["entropy"]
        for i, w in enumerate(g["weights"]):
            out[f"gate_weight_{key}_{i}"] = w
        e = len(g["weights"])
        if not g["finite"]:
            warnings.warn(
                f"the gate {key} gave non-finite weights during the epoch",
                RuntimeWarning,
                stacklevel=2,
            )
        elif g["uniform"]:
            warnings.warn(
                f"the gate {key} stayed exactly uniform (1/{e} per expert, entropy "
                f"{math.log2(e):.3f} bits) on all {g['rows']:,} rows of the epoch: its experts "
                "are probably identical, so this is a shared bottom (CASES.md C27)",
                RuntimeWarning,
                stacklevel=2,
            )
        elif g["collapsed"]:
            warnings.warn(
                f"the gate {key} gave one expert more than {GateMonitor.COLLAPSE} of its weight "
                f"on all {g['rows']:,} rows of the epoch (collapsed; mean weights "
                f"{[round(w, 3) for w in g['weights']]})",
                RuntimeWarning,
                stacklevel=2,
            )
    return out


class SharedBottom(nn.Sequential):
    """One MLP shared by every task, ``dim -> widths`` (Linear, ReLU, dropout per layer):
    (B, dim) -> (B, widths[-1]) float, the input of every task's tower.

    Its layers are those of :func:`reelrec.models.ctr.mlp` (same names, same initialisation
    order), so the rankers' shared-bottom checkpoints load unchanged.
    """

    def __init__(self, dim: int, widths: list[int], dropout: float) -> None:
        super().__init__(*mlp([dim, *widths], dropout))
        self.out_dim = widths[-1]


class MMoE(nn.Module):
    """Multi-gate mixture of experts (MMoE section 4.2): (B, dim) -> (B, T, widths[-1]) float,
    task t's input ``sum_i g^t(x)_i f_i(x)``.

    Args:
        dim: H, the representation width. widths: each expert's layer widths (>= 1 each).
        experts: n (>= 1). tasks: T (>= 1). dropout: after every expert layer, in [0, 1).

    Raises:
        ValueError: ``experts``, ``tasks`` or ``widths`` empty / < 1.
    """

    def __init__(
        self, dim: int, widths: list[int], experts: int, tasks: int, dropout: float
    ) -> None:
        super().__init__()
        if experts < 1 or tasks < 1 or not widths or min(widths) < 1:
            raise ValueError(
                f"MMoE needs experts >= 1, tasks >= 1 and widths >= 1, got {experts}, {tasks}, "
                f"{widths}"
            )
        self.experts = nn.ModuleList(mlp([dim, *widths], dropout) for _ in range(experts))
        self.gates = nn.ModuleList(nn.Linear(dim, experts, bias=False) for _ in range(tasks))
        self.out_dim = widths[-1]
        self.monitors = nn.ModuleList(GateMonitor(experts) for _ in range(tasks))

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Each task's softmax weights over the experts, float (B, T, experts); rows sum to 1."""
        return torch.stack([F.softmax(g(x), -1) for g in self.gates], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.stack([f(x) for f in self.experts], 1)  # (B, experts, H')
        w = self.gate_weights(x)
        if self.training:
            for t, monitor in enumerate(self.monitors):
                monitor.add(w[:, t])
        return torch.einsum("bte,beh->bth", w, e)

    def gate_stats(self, tasks: list[str]) -> dict[str, float]:
        """:func:`gate_epoch_stats` of the rows trained on since the last call; ``tasks`` (T
        names) name the gates."""
        return gate_epoch_stats({t: m.take() for t, m in zip(tasks, self.monitors, strict=True)})


class ExtractionLevel(nn.Module):
    """One PLE extraction level; alone (one level) it is CGC (PLE sections 4.1-4.2).

    Input (B, T + 1, dim) float: the input of each task's branch, then the shared branch's.
    Output (B, T + 1, widths[-1]) with a shared gate, (B, T, widths[-1]) without (last level):
    task t's gate mixes its ``task_experts`` experts and the ``shared`` experts, each reading its
    branch's input; the shared gate mixes every expert of the level.

    Args:
        dim: input width. widths: each expert's layer widths. shared: shared experts (>= 1).
        task_experts: experts of each task (>= 0). tasks: T. dropout: after every expert
        layer. shared_gate: whether the level gives the shared branch an output.

    Raises:
        ValueError: ``shared`` < 1, ``task_experts`` < 0, ``tasks`` < 1 or bad ``widths``.
    """

    def __init__(
        self,
        dim: int,
        widths: list[int],
        shared: int,
        task_experts: int,
        tasks: int,
        dropout: float,
        shared_gate: bool,
    ) -> None:
        super().__init__()
        if shared < 1 or task_experts < 0 or tasks < 1 or not widths or min(widths) < 1:
            raise ValueError(
                f"PLE needs shared experts >= 1, task experts >= 0, tasks >= 1 and widths >= 1, "
                f"got {shared}, {task_experts}, {tasks}, {widths}"
            )
        self.shared = nn.ModuleList(mlp([dim, *widths], dropout) for _ in range(shared))
        self.task = nn.ModuleList(
            nn.ModuleList(mlp([dim, *widths], dropout) for _ in range(task_experts))
            for _ in range(tasks)
        )
        self.gates = nn.ModuleList(
            nn.Linear(dim, task_experts + shared, bias=False) for _ in range(tasks)
        )
        self.shared_gate = (
            nn.Linear(dim, tasks * task_experts + shared, bias=False) if shared_gate else None
        )
        self.monitors = nn.ModuleList(GateMonitor(task_experts + shared) for _ in range(tasks))
        self.shared_monitor = GateMonitor(tasks * task_experts + shared) if shared_gate else None

    def gate_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Softmax weights, rows summing to 1: the tasks' (B, T, task_experts + shared) (own
        experts first) and the shared gate's (B, T * task_experts + shared) (task 0's experts,
        task 1's, ..., then the shared ones), None at the last level."""
        tasks = torch.stack([F.softmax(g(x[:, t]), -1) for t, g in enumerate(self.gates)], 1)
        shared = None if self.shared_gate is None else F.softmax(self.shared_gate(x[:, -1]), -1)
        return tasks, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_tasks, w_shared = self.gate_weights(x)
        if self.training:
            for t, monitor in enumerate(self.monitors):
                monitor.add(w_tasks[:, t])
            if self.shared_monitor is not None and w_shared is not None:
                self.shared_monitor.add(w_shared)
        shared = [e(x[:, -1]) for e in self.shared]
        own = [[e(x[:, t]) for e in experts] for t, experts in enumerate(self.task)]
        out = [
            torch.einsum("be,beh->bh", w_tasks[:, t], torch.stack([*own[t], *shared], 1))
            for t in range(len(self.task))
        ]
        if w_shared is not None:
            every = torch.stack([*(e for o in own for e in o), *shared], 1)
            out.append(torch.einsum("be,beh->bh", w_shared, every))
        return torch.stack(out, 1)


class PLE(nn.Module):
    """Progressive layered extraction (PLE section 4.2): ``levels`` :class:`ExtractionLevel`,
    (B, dim) -> (B, T, widths[-1]) float, task t's input ``g^{t,N}(x)``.

    Level 1 reads the representation in every branch; level j > 1 reads level j - 1's outputs
    (width ``widths[-1]``); every level but the last has a shared gate.

    Args:
        dim: H. widths: each expert's layer widths. shared: shared experts per level (>= 1).
        task_experts: experts of each task per level (>= 0). levels: N (>= 1). tasks: T.
        dropout: after every expert layer.

    Raises:
        ValueError: ``levels`` < 1 or a bad value of :class:`ExtractionLevel`.
    """

    def __init__(
        self,
        dim: int,
        widths: list[int],
        shared: int,
        task_experts: int,
        levels: int,
        tasks: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"PLE needs levels >= 1, got {levels}")
        self.levels = nn.ModuleList(
            ExtractionLevel(
                dim if j == 0 else widths[-1],
                widths,
                shared,
                task_experts,
                tasks,
                dropout,
                shared_gate=j < levels - 1,
            )
            for j in range(levels)
        )
        self.tasks, self.out_dim = tasks, widths[-1]

    def branch_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input of each level, float (B, T + 1, width): the representation (B, H) repeated
        for the T task branches and the shared one at level 1, then each level's output."""
        inputs = [x.unsqueeze(1).expand(-1, self.tasks + 1, -1)]
        for level in self.levels[:-1]:
            inputs.append(level(inputs[-1]))
        return inputs

    def gate_weights(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per level, :meth:`ExtractionLevel.gate_weights` on that level's input."""
        return [
            level.gate_weights(h)
            for level, h in zip(self.levels, self.branch_inputs(x), strict=True)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels[-1](self.branch_inputs(x)[-1])

    def gate_stats(self, tasks: list[str]) -> dict[str, float]:
        """:func:`gate_epoch_stats` of every level's gates since the last call: the first
        level's gates are named by ``tasks`` (T names) and ``shared``, level j's by
        ``<task>_l<j>`` and ``shared_l<j>``."""
        gates: dict[str, dict | None] = {}
        for j, level in enumerate(self.levels):
            sfx = f"_l{j}" if j else ""
            for t, m in zip(tasks, level.monitors, strict=True):
                gates[t + sfx] = m.take()
            if level.shared_monitor is not None:
                gates["shared" + sfx] = level.shared_monitor.take()
        return gate_epoch_stats(gates)


def multitask_bottom(dim: int, cfg: RankingConfig, tasks: int) -> SharedBottom | MMoE | PLE:
    """The structure ``cfg.multitask`` over a (B, ``dim``) representation for ``tasks`` tasks.

    Raises:
        ConfigError: an unknown ``cfg.multitask``.
        ValueError: a value out of range (see the classes).
    """
    widths = cfg.expert_mlp or cfg.mlp
    if cfg.multitask == "shared_bottom":
        return SharedBottom(dim, cfg.mlp, cfg.dropout)
    if cfg.multitask == "mmoe":
        return MMoE(dim, widths, cfg.experts, tasks, cfg.dropout)
    if cfg.multitask == "ple":
        return PLE(dim, widths, cfg.experts, cfg.task_experts, cfg.levels, tasks, cfg.dropout)
    raise ConfigError(
        f"ranking.multitask must be {' or '.join(map(repr, MULTITASK))}, got {cfg.multitask!r}"
    )


class EmbeddingMLP(RankingModel):
    """The embedding-and-MLP ranker under the models ``mmoe`` and ``ple``: every field embedding
    concatenated, then ``ranking.multitask`` and the task towers (see the module docstring).

    Input: :class:`reelrec.data.ctr.CTRBatch`. Representation (B, (F + S + Bf) * D): the sparse
    fields, each behaviour sequence mean-pooled over its unpadded positions and the bags (the
    input of DeepFM's deep part). Output of ``forward``: (B, T) raw outputs.

    Raises:
        ConfigError, ValueError: see :func:`multitask_bottom`.
    """

    def __init__(self, schema: CTRSchema, cfg: RankingConfig) -> None:
        super().__init__(schema, cfg)
        n_fields = len(schema.fields) + len(schema.sequences) + len(schema.bags)
        self.build_heads(n_fields * cfg.embed_dim)

    def represent(self, batch: CTRBatch) -> torch.Tensor:
        """See the class docstring."""
        return self.pooled_field_embeddings(batch).flatten(1)
