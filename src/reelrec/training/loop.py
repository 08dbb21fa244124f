"""A plain, readable training loop for every model family.

One epoch = one pass over the training set in batches (in a seeded random order: the batches of
epoch e depend only on ``seed`` and ``e``), Adam or AdamW updates (with an optional linear
warmup + cosine decay of the learning rate, per step), then an evaluation on the validation
split. The best epoch by ``TrainConfig.metric`` (validation NDCG@10 by default) is kept in
``model.safetensors``; training stops after ``patience`` epochs without improvement, after
``epochs``, or when ``max_minutes`` is spent (noted in the history). A resumable checkpoint
(model, optimizer, RNG, history) is written after every epoch, so an interrupted run -- killed
at any point, resumed in a fresh process -- ends exactly as an uninterrupted one.

The pieces, each small enough to read on its own:

* :func:`clamp_warmup` and :func:`lr_multiplier`: the learning-rate schedule. Callers clamp
  before they save the config, so the saved config is the one that runs; :func:`fit` refuses
  an unclamped one.
* :class:`EarlyStopping`: the best epoch, its metrics, and the patience counter.
* :class:`Checkpointer`: resuming, the best weights, the per-epoch checkpoint and history
  (rank 0 writes; under FSDP the full parameters are gathered first).
* :class:`Stepper`: the optimizer steps of one epoch (gradient accumulation, DDP ``no_sync``,
  the divergence check), with the mean loss and the mean of every loss part.
* :class:`reelrec.training.meter.ThroughputMeter`: samples/s and MFU, measured without
  touching anything training reads.
* :func:`fit`: the epoch loop that joins them.

Every history row holds ``epoch``, ``loss``, one ``loss_<part>`` per named term of the
model's :class:`~reelrec.models.base.LossOutput` (per-task losses of the rankers:
``loss_click``, ``loss_like`` ...; epoch means, over the steps where the term was present),
``seconds``, ``lr``, the statistics of a model or training set that declares
:class:`~reelrec.models.base.ReportsEpochStats` (OneRec's MoE load, alignment rewards), the
throughput (``train.mfu``) and ``valid_<metric>``. Under DDP the loss and its parts are means
over the ranks.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reelrec.io import atomic_write_json
from reelrec.models.base import ReportsEpochStats, Trainable
from reelrec.progress import progress
from reelrec.training import distributed as D
from reelrec.training.checkpoint import (
    load_model,
    load_training_state,
    resumable_checkpoint,
    save_model,
    save_training_state,
)
from reelrec.training.meter import ThroughputMeter
from reelrec.training.trainsets import (
    TrainSet,
    WindowTrainSet,
    length_bucketed_batches,
    tokens_of,
    trim_left_padding,
    work_of,
)

# the training sets live in reelrec.training.trainsets; importable from here as before
__all__ = [
    "Checkpointer",
    "EarlyStopping",
    "EpochResult",
    "FitResult",
    "Stepper",
    "TrainConfig",
    "WindowTrainSet",
    "clamp_warmup",
    "fit",
    "length_bucketed_batches",
    "lr_multiplier",
    "total_steps",
    "trim_left_padding",
]


@dataclass
class TrainConfig:
    """Optimisation and early-stopping settings."""

    epochs: int = 200  # maximum number of epochs (>= 1)
    batch_size: int = 256  # training windows per step (>= 1)
    lr: float = 1e-3  # Adam learning rate (> 0)
    weight_decay: float = 0.0  # Adam L2 weight decay (>= 0)
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    patience: int = 10  # epochs without validation improvement before stopping (>= 1)
    metric: str = "ndcg@10"  # validation metric for early stopping and model selection
    eval_batch_size: int = 1024  # unused (eval.batch_size sets this); kept so old configs load
    seed: int = 2024  # seed for initialisation, shuffling and dropout
    max_minutes: float = 0.0  # wall-clock budget for training in minutes; 0 = none
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    progress: bool = True  # show a progress bar per epoch
    optimizer: str = "adam"  # "adam" (L2 weight decay) or "adamw" (decoupled weight decay)
    warmup_steps: int = 0  # linear learning-rate warmup over this many steps (>= 0)
    schedule: str = "constant"  # "constant" or "cosine" (decay to 0 over `epochs` epochs)
    amp: bool = True  # bfloat16 autocast on CUDA devices that support it (ignored on CPU)
    strategy: str = "ddp"  # under torchrun: "ddp" (replicated model) or "fsdp" (sharded)
    grad_accum: int = 1  # micro-batches per optimizer step (each rank's batch is split; >= 1)
    compile: bool = False  # torch.compile the loss; falls back to eager if compilation fails
    mfu: bool = True  # count model FLOPs once and log samples/s and MFU per epoch (the first
    # epoch of a compiled run includes the compilation)

    def validate(self, section: str = "train") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key, its rule and its value.
        """
        from reelrec.config import ConfigError

        f = math.isfinite
        rules = [
            (self.epochs >= 1, "epochs", ">= 1"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (f(self.lr) and self.lr > 0, "lr", "a finite number > 0"),
            (f(self.weight_decay) and self.weight_decay >= 0, "weight_decay", ">= 0"),
            (f(self.grad_clip) and self.grad_clip >= 0, "grad_clip", ">= 0"),
            (self.patience >= 1, "patience", ">= 1"),
            (f(self.max_minutes) and self.max_minutes >= 0, "max_minutes", ">= 0"),
            (self.threads >= 0, "threads", ">= 0"),
            (self.eval_batch_size >= 1, "eval_batch_size", ">= 1"),
            (self.strategy in ("ddp", "fsdp"), "strategy", "'ddp' or 'fsdp'"),
            (self.grad_accum >= 1, "grad_accum", ">= 1"),
            (self.optimizer in ("adam", "adamw"), "optimizer", "'adam' or 'adamw'"),
            (self.warmup_steps >= 0, "warmup_steps", ">= 0"),
            (self.schedule in ("constant", "cosine"), "schedule", "'constant' or 'cosine'"),
            (0 <= self.seed < 2**63, "seed", "in 0..2**63-1"),
        ]
        for ok, key, rule in rules:
            if not ok:
                raise ConfigError(f"{section}.{key} must be {rule}, got {getattr(self, key)!r}")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        best_epoch: 1-based epoch of the kept weights (0 if no epoch ran).
        best_valid: validation metrics of that epoch.
        history: one dict per epoch: epoch, loss, loss_<part>, seconds, lr, statistics,
            valid_<metric> (see the module docstring).
        stopped: why training ended ("patience", "epochs", "time budget").
        seconds: training wall time in this process.
    """

    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    seconds: float = 0.0


# --- learning-rate schedule -------------------------------------------------------------------
def total_steps(cfg: TrainConfig, n_samples: int) -> int:
    """Optimizer steps of a run: ``ceil(n_samples / batch_size) * epochs``.

    Raises:
        ValueError: ``batch_size`` < 1.
    """
    if cfg.batch_size < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {cfg.batch_size}")
    return math.ceil(n_samples / cfg.batch_size) * cfg.epochs


def clamp_warmup(cfg: TrainConfig, n_samples: int) -> tuple[TrainConfig, str]:
    """The config that will really run on ``n_samples`` training samples.

    A warmup longer than half of the run's steps (:func:`total_steps`) is clamped to half, so
    that short runs (tests, smoke runs of a preset made for a large dataset) still reach the
    peak learning rate. Call it before saving the config: :func:`fit` refuses an unclamped one.

    Args:
        cfg: the requested settings. n_samples: ``len(train_set)``.

    Returns:
        ``(config, warning)``: ``cfg`` itself and ``""`` when nothing changes, else a copy
        with ``warmup_steps = total // 2`` and a one-line warning naming both numbers.

    Raises:
        ValueError: ``batch_size`` < 1.
    """
    total = total_steps(cfg, n_samples)
    if cfg.warmup_steps <= total // 2:
        return cfg, ""
    warning = (
        f"warning: train.warmup_steps={cfg.warmup_steps} is more than half of the "
        f"{total} steps of this run; warming up over {total // 2} steps"
    )
    return replace(cfg, warmup_steps=total // 2), warning


def lr_multiplier(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per optimizer step: linear warmup over ``cfg.warmup_steps`` steps,
    then constant or cosine decay to 0 at ``total_steps`` (``cfg.schedule``)."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule != "cosine":
            return 1.0
        span = max(total_steps - cfg.warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min((step - cfg.warmup_steps) / span, 1.0)))

    return factor


# --- early stopping ---------------------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Model selection on one validation metric (higher is better).

    Attributes:
        metric: the key of the validation metrics that decides. patience: epochs without
            improvement before stopping (>= 1).
        best: best value so far (-inf before the first epoch). best_epoch: its epoch (0 =
            none). bad: epochs since it. best_valid: all metrics of that epoch.
    """

    metric: str
    patience: int
    best: float = -math.inf
    best_epoch: int = 0
    bad: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)

    def check(self, valid: dict[str, float], epoch: int) -> None:
        """Raise ValueError when ``valid`` lacks the metric or it is NaN (names both)."""
        if self.metric not in valid:
            raise ValueError(f"validation metrics lack {self.metric!r}: {sorted(valid)}")
        if math.isnan(valid[self.metric]):
            raise ValueError(
                f"validation {self.metric} is NaN at epoch {epoch} (undefined on this "
                "validation split, e.g. a task with one class only): choose another train.metric"
            )

    def update(self, valid: dict[str, float], epoch: int) -> bool:
        """Record epoch ``epoch``'s metrics; True when it is the new best (the first epoch
        always is, even at -inf)."""
        self.check(valid, epoch)
        improved = valid[self.metric] > self.best or self.best_epoch == 0
        if improved:
            self.best, self.best_epoch, self.bad = valid[self.metric], epoch, 0
            self.best_valid = dict(valid)
        else:
            self.bad += 1
        return improved

    @property
    def exhausted(self) -> bool:
        """``patience`` epochs in a row without improvement."""
        return self.bad >= self.patience

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps (``best`` -inf is saved as JSON null)."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "bad": self.bad,
        }

    def load(self, trainer: dict[str, Any]) -> None:
        """Restore from a checkpoint's trainer state."""
        best = trainer["best"]
        self.best = -math.inf if best is None else best  # JSON keeps -inf as null
        self.best_epoch, self.bad = trainer["best_epoch"], trainer["bad"]
        self.best_valid = trainer["best_valid"]


# --- files of a run ---------------------------------------------------------------------------
class Checkpointer:
    """The files :func:`fit` writes in ``out_dir``: ``model.safetensors`` (best weights),
    ``history.json`` and ``checkpoint/`` (resumable, :mod:`reelrec.training.checkpoint`).

    Rank 0 writes; under FSDP every rank first gathers the full parameters (a collective).

    Args:
        out_dir: the run folder (created). env: the process group. module: the wrapped loss
            module. fsdp: the module is FSDP-sharded.
    """

    def __init__(self, out_dir: Path, env: D.DistEnv, module: nn.Module, fsdp: bool) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.folder = self.out_dir / "checkpoint"
        self.best_path = self.out_dir / "model.safetensors"
        self.env, self.module, self.fsdp = env, module, fsdp

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler
    ) -> dict[str, Any] | None:
        """Load the last complete checkpoint into model, optimizer, scheduler and the RNG;
        its trainer state (epoch, history, early stopping, stopped), or None when there is none.

        Raises:
            CheckpointError: a corrupt checkpoint, or one that does not match the model.
        """
        folder = resumable_checkpoint(self.folder)
        if folder is None:
            return None
        trainer, sched_state = load_training_state(folder, model, optimizer)
        if sched_state:
            scheduler.load_state_dict(sched_state)
        return trainer

    def save_best(self, model: nn.Module) -> None:
        """Write ``model.safetensors``."""
        with _full_params(self.module, self.fsdp):
            if self.env.main:
                save_model(model, self.best_path)

    def save(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        trainer: dict[str, Any],
    ) -> None:
        """Write the resumable checkpoint (atomically) and ``history.json``."""
        with _full_params(self.module, self.fsdp):
            if self.env.main:  # checkpoints are written once, by rank 0
                save_training_state(self.folder, model, optimizer, scheduler.state_dict(), trainer)
                atomic_write_json(self.out_dir / "history.json", trainer["history"])

    def load_best(self, model: nn.Module) -> None:
        """Load ``model.safetensors`` into ``model`` (every rank)."""
        with _full_params(self.module, self.fsdp):
            load_model(model, self.best_path)


def _full_params(module: nn.Module, fsdp: bool):
    """Under FSDP, every rank gathers the full parameters (a collective) so that rank 0 can
    evaluate or save the plain model; otherwise nothing."""
    if not fsdp:
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(module, writeback=False)


# --- one epoch of optimizer steps ---------------------------------------------------------------
@dataclass
class EpochResult:
    """What :meth:`Stepper.epoch` returns.

    Attributes:
        loss: mean training loss over the epoch's steps (all ranks).
        parts: mean of each named loss term over the steps where it was present (all ranks).
        steps: optimizer steps taken. units: work units this rank trained (for MFU).
        seconds: training time, throughput measurement excluded.
    """

    loss: float
    parts: dict[str, float]
    steps: int
    units: int
    seconds: float


class _PartMeans:
    """Running weighted sums of named floats: ``add(parts, w)``, ``means()``."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, parts: dict[str, float], weight: float = 1.0) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value) * weight
            self.weights[key] = self.weights.get(key, 0.0) + weight

    def merge(self, other: _PartMeans) -> None:
        for key, value in other.sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.weights[key] = self.weights.get(key, 0.0) + other.weights[key]

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}


class Stepper:
    """The optimizer steps of :func:`fit`: model, wrapped loss, optimizer, schedule, meter.

    Args:
        model: a :class:`~reelrec.models.base.Trainable`. cfg: settings (clamped, see
            :func:`clamp_warmup`). n_samples: ``len(train_set)``. env: the process group.
        log: warnings (compilation fallback).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        n_samples: int,
        env: D.DistEnv,
        log: Callable[[str], None],
    ) -> None:
        self.model, self.cfg, self.env = model, cfg, env
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = total_steps(cfg, n_samples)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(cfg, steps)
        )
        self.module = D.wrap(model, env, cfg.strategy)
        self.fsdp = env.distributed and cfg.strategy == "fsdp"
        compiled = _compile(self.module, log) if cfg.compile else None
        self.proxy = (
            D.LossProxy(compiled, self.module, log)
            if compiled is not None
            else D.LossProxy(self.module)
        )
        self.device = next(model.parameters()).device
        self.amp = cfg.amp and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.meter = ThroughputMeter(cfg.mfu, self.device, self.amp, env.world)

    def epoch(self, train: TrainSet, epoch: int, checkpoint_dir: Path) -> EpochResult:
        """Train one epoch: the seeded batches of ``epoch``, each split over the ranks and into
        ``grad_accum`` micro-batches.

        Raises:
            ValueError: a non-finite loss (names the epoch, step and ``checkpoint_dir``), or no
                step taken (no batch with a row per rank).
        """
        cfg, env = self.cfg, self.env
        self.model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        batches = train.batches(cfg.batch_size, gen)
        # off a terminal no bar: the loop logs one line per epoch itself
        bar = progress(
            batches, f"epoch {epoch}", "batch", enabled=cfg.progress, lines=0, leave=False
        )
        t0, total, steps, units = time.perf_counter(), 0.0, 0, 0
        parts = _PartMeans()
        for idx in bar:
            if len(idx) < env.world:  # a last batch smaller than the number of ranks:
                continue  # every rank skips it (a rank without rows would stall DDP)
            idx = D.shard(idx, env)  # this rank's rows of the global batch
            units += work_of(train, idx)
            step_loss, step_parts = self._step(train, idx, gen, epoch, steps + 1, checkpoint_dir)
            total += step_loss
            parts.add(step_parts.means())
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        if steps == 0:
            raise ValueError(f"epoch {epoch} took no training step (no batch of >= 1 row per rank)")
        seconds = time.perf_counter() - t0 - self.meter.take_seconds()
        loss, means = self._across_ranks(total, steps, parts)
        return EpochResult(loss, means, steps, units, seconds)

    def _step(
        self,
        train: TrainSet,
        idx: torch.Tensor,
        gen: torch.Generator,
        epoch: int,
        step: int,
        checkpoint_dir: Path,
    ) -> tuple[float, _PartMeans]:
        """One optimizer step on this rank's rows ``idx``: (loss, its parts weighted by rows)."""
        cfg, env = self.cfg, self.env
        micro = [m for m in torch.tensor_split(idx, cfg.grad_accum) if len(m)]
        self.optimizer.zero_grad(set_to_none=True)
        step_loss, parts = 0.0, _PartMeans()
        for j, m in enumerate(micro):
            batch = train.batch(m, gen, self.device)
            if self.meter.needs_measure:  # once per process, on the batch trained next
                self.meter.measure(self.model, batch, work_of(train, m), generators=[gen])
            sync = j == len(micro) - 1 or not env.distributed or self.fsdp
            with contextlib.nullcontext() if sync else self.module.no_sync():
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                    out = self.proxy.loss(batch)
                if not torch.isfinite(out.loss):
                    raise ValueError(
                        f"training loss is {float(out.loss.detach())} at epoch {epoch}, step "
                        f"{step}: the weights diverged; lower train.lr or set train.grad_clip "
                        f"(the last good epoch is kept in {checkpoint_dir})"
                    )
                (out.loss * (len(m) / len(idx))).backward()
            step_loss += float(out.loss.detach()) * len(m) / len(idx)
            parts.add(out.parts, len(m) / len(idx))
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return step_loss, parts

    def _across_ranks(
        self, total: float, steps: int, parts: _PartMeans
    ) -> tuple[float, dict[str, float]]:
        """Mean loss and part means over every rank's steps (this rank's alone when single)."""
        if not self.env.distributed:
            return total / steps, parts.means()
        merged, loss_sum, n = _PartMeans(), 0.0, 0
        for r_total, r_steps, r_sums, r_weights in D.gather(
            (total, steps, parts.sums, parts.weights), self.env
        ):
            loss_sum, n = loss_sum + r_total, n + r_steps
            other = _PartMeans()
            other.sums, other.weights = r_sums, r_weights
            merged.merge(other)
        return loss_sum / max(n, 1), merged.means()

    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.scheduler.get_last_lr()[0]


def _compile(module: nn.Module, log: Callable[[str], None]) -> nn.Module | None:
    """``torch.compile(module)``, or None (eager) with a warning when compiling fails."""
    try:
        return torch.compile(module)
    except Exception as exc:  # noqa: BLE001 - any backend failure falls back to eager
        log(f"warning: torch.compile failed ({type(exc).__name__}: {exc}); training eagerly")
        return None


def _epoch_stats(model: nn.Module, train: Any) -> dict[str, float]:
    """Statistics of the model and the training set that declare
    :class:`~reelrec.models.base.ReportsEpochStats` (MoE load; alignment rewards)."""
    stats: dict[str, float] = {}
    for source in (model, train):
        if isinstance(source, ReportsEpochStats):
            stats.update(source.epoch_stats())
    return stats


# --- the loop ---------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    train_set: TrainSet | torch.Tensor,
    evaluate: Callable[[nn.Module], dict[str, float]],
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = True,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` with early stopping on validation.

    Args:
        model: a :class:`~reelrec.models.base.Trainable` (``loss(batch) -> LossOutput``).
        train_set: a training set (:class:`~reelrec.training.trainsets.TrainSet`:
            :class:`WindowTrainSet`, :class:`reelrec.data.ctr.CTRTrainSet`,
            :class:`reelrec.data.segments.SegmentTrainSet`,
            :class:`reelrec.training.preference.AlignmentTrainSet`), or int64 (n, L + 1)
            left-padded next-item windows (taken as a :class:`WindowTrainSet`).
        evaluate: ``model -> validation metrics`` (must contain ``cfg.metric``); called in eval mode.
        cfg: settings, already passed through :func:`clamp_warmup`.
        out_dir: receives ``model.safetensors`` (best), ``history.json`` and ``checkpoint/``.
        resume: continue from ``out_dir/checkpoint`` when it exists.
        log: receives one line per epoch.

    Returns:
        :class:`FitResult`; ``model`` holds the best weights on return.

    Raises:
        TypeError: ``model`` does not declare :class:`~reelrec.models.base.Trainable`.
        ValueError: no training samples, a warmup longer than :func:`clamp_warmup` allows,
            ``evaluate`` lacks ``cfg.metric`` or returns NaN for it, a diverged loss, or fewer
            samples per global batch than ranks.
        CheckpointError: a checkpoint to resume from is corrupt or does not match the model.
    """
    train = WindowTrainSet(train_set) if isinstance(train_set, torch.Tensor) else train_set
    if len(train) == 0:
        raise ValueError("no training windows")
    if not isinstance(model, Trainable):
        raise TypeError(
            f"{type(model).__name__} does not declare reelrec.models.base.Trainable "
            "(loss(batch) -> LossOutput): nothing to train"
        )
    _, warning = clamp_warmup(cfg, len(train))
    if warning:
        raise ValueError(
            f"{warning.removeprefix('warning: ')}: pass the config through "
            "reelrec.training.loop.clamp_warmup (and save the result) before fit"
        )
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    env = D.current()
    stepper = Stepper(model, cfg, len(train), env, log)
    files = Checkpointer(out_dir, env, stepper.module, stepper.fsdp)
    stopping = EarlyStopping(cfg.metric, cfg.patience)
    history: list[dict[str, Any]] = []
    start_epoch = 1
    trainer = files.restore(model, stepper.optimizer, stepper.scheduler) if resume else None
    if trainer is not None:
        history, start_epoch = trainer["history"], trainer["epoch"] + 1
        stopping.load(trainer)
        log(f"resumed from {files.folder} after epoch {trainer['epoch']}")
        if trainer.get("stopped") == "patience" or trainer["epoch"] >= cfg.epochs:
            # finished; a time-budget stop, or more epochs asked for, continues training
            files.load_best(model)
            return FitResult(
                stopping.best_epoch, stopping.best_valid, history, trainer["stopped"], 0.0
            )
    t0 = time.perf_counter()
    if env.world > cfg.batch_size:
        raise ValueError(
            f"train.batch_size={cfg.batch_size} is smaller than the {env.world} ranks: each "
            "global batch is split across them"
        )
    stopped = "epochs"
    for epoch in range(start_epoch, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        result = stepper.epoch(train, epoch, files.folder)
        stats = _epoch_stats(model, train)
        stats.update(
            stepper.meter.stats(result.units, result.seconds, len(train), tokens_of(train))
        )
        model.eval()
        with _full_params(stepper.module, stepper.fsdp):  # every rank evaluates (shard-aware
            valid = evaluate(model)  # evaluations gather across ranks); rank 0's result decides
        valid = D.broadcast(valid, env)
        improved = stopping.update(valid, epoch)
        row = {
            "epoch": epoch,
            "loss": result.loss,
            **{f"loss_{k}": v for k, v in result.parts.items()},
            "seconds": time.perf_counter() - t_epoch,
            "lr": stepper.lr(),
            **stats,
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        history.append(row)
        if improved:
            files.save_best(model)
        if env.main:
            log(
                f"epoch {epoch:3d}  loss {row['loss']:.4f}  valid {cfg.metric} "
                f"{valid[cfg.metric]:.4f}{'  *' if improved else ''}  ({row['seconds']:.1f}s)"
                + "".join(_fmt(k, v) for k, v in stats.items() if not k.startswith(_HISTORY_ONLY))
            )
        done = ""
        if stopping.exhausted:
            done = "patience"
        elif cfg.max_minutes > 0 and D.broadcast(
            (time.perf_counter() - t0) / 60 >= cfg.max_minutes, env
        ):
            done = "time budget"
        elif epoch == cfg.epochs:
            done = "epochs"
        state = {"epoch": epoch, **stopping.state(), "history": history, "stopped": done}
        files.save(model, stepper.optimizer, stepper.scheduler, state)
        D.barrier(env)
        if done:
            stopped = done
            break
    D.barrier(env)
    files.load_best(model)
    return FitResult(
        stopping.best_epoch, stopping.best_valid, history, stopped, time.perf_counter() - t0
    )


#: statistics too many to print on the epoch line: they go to history.json only
_HISTORY_ONLY = ("gate_weight_",)


def _fmt(key: str, value: float) -> str:
    if key == "samples_per_s":
        return f"  {value:,.0f} samples/s"
    if key == "tokens_per_s":
        return f"  {value:,.0f} tokens/s"
    if key == "flops_per_sample":
        return f"  {value / 1e6:,.1f} MFLOP/sample"
    return f"  {key} {value:.3f}"
