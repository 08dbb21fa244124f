"""A plain, readable training loop for next-item models.

One epoch = one pass over the training windows in batches of similar length, in a seeded random
order (the batches of epoch e depend only on ``seed`` and ``e``), Adam or AdamW updates (with an
optional linear warmup + cosine decay of the learning rate, per step), then a
full-ranking evaluation on the validation instances. The best epoch by ``TrainConfig.metric`` (validation NDCG@10 by default)
is kept in ``model.safetensors``; training stops after ``patience`` epochs without improvement,
after ``epochs``, or when ``max_minutes`` is spent (noted in the history). A resumable
checkpoint (model, optimizer, RNG, history) is written after every epoch, so an interrupted run
continues where it stopped and ends exactly as an uninterrupted one. Models that define
``epoch_stats() -> dict`` (the OneRec MoE load statistics) have them logged in the history.
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
from tqdm.auto import tqdm

from reelrec.io import atomic_write_json
from reelrec.training import distributed as D
from reelrec.training.checkpoint import (
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)


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


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        best_epoch: 1-based epoch of the kept weights (0 if no epoch ran).
        best_valid: validation metrics of that epoch.
        history: one dict per epoch: epoch, loss, seconds, valid metrics.
        stopped: why training ended ("patience", "epochs", "time budget").
        seconds: training wall time in this process.
    """

    best_epoch: int
    best_valid: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    seconds: float = 0.0


def _trim_left_padding(batch: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding in every row (positions count from the first real
    item, so the model's outputs do not change)."""
    real = (batch > 0).any(0).nonzero()
    return batch[:, int(real[0]) :] if len(real) else batch


def _length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Batches of windows of similar length, in random order.

    Windows are shuffled, stably sorted by length, cut into batches, and the batch order is
    shuffled: each window is used once per epoch, and padding (hence wasted compute) is small
    for datasets whose sequences are mostly short (Amazon: mean 8.9 items, max len 50).
    """
    perm = torch.randperm(len(lengths), generator=gen)
    order = perm[torch.argsort(lengths[perm], stable=True)]
    batches = list(torch.split(order, batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


class WindowTrainSet:
    """Next-item training windows as :func:`fit` consumes them.

    Any object with ``__len__``, ``batches(batch_size, generator) -> list of index tensors`` and
    ``loss(model, idx, generator, device) -> output with .loss`` can be trained by :func:`fit`
    (the ranking samples: :class:`reelrec.data.ctr.CTRTrainSet`). An optional
    ``work(idx) -> int`` (default: the number of rows) is the unit FLOPs are counted per, so that
    MFU does not depend on which batch was counted.
    """

    def __init__(self, windows: torch.Tensor) -> None:
        self.windows = windows
        self.lengths = (windows > 0).sum(1)
        self.tokens = int((windows[:, 1:] > 0).sum())  # predicted positions per epoch

    def __len__(self) -> int:
        return len(self.windows)

    def batches(self, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Length-bucketed batches in random order (see :func:`_length_bucketed_batches`)."""
        return _length_bucketed_batches(self.lengths, batch_size, gen)

    def work(self, idx: torch.Tensor) -> int:
        """Positions the model computes for the windows ``idx``: rows x the trimmed width (the
        longest window of the batch); FLOPs are counted per such position."""
        return int(len(idx) * int(self.lengths[idx].max()))

    def loss(self, model: nn.Module, idx: torch.Tensor, gen: torch.Generator, device) -> Any:
        """``model.loss(inputs, targets)`` on the windows ``idx`` (leading padding trimmed)."""
        batch = _trim_left_padding(self.windows[idx]).to(device, torch.long)
        return model.loss(batch[:, :-1], batch[:, 1:], generator=gen)


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


def fit(
    model: nn.Module,
    train_windows: torch.Tensor | Any,
    evaluate: Callable[[nn.Module], dict[str, float]],
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool = True,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` on next-item windows with early stopping on validation.

    Args:
        model: module with ``loss(inputs, targets, generator) -> (loss, parts)``.
        train_windows: int64 (n, L + 1) left-padded windows; inputs are ``[:, :-1]``, targets
            ``[:, 1:]``; or any training set with the interface of :class:`WindowTrainSet`.
        evaluate: ``model -> validation metrics`` (must contain ``cfg.metric``); called in eval mode.
        cfg: settings.
        out_dir: receives ``model.safetensors`` (best), ``history.json`` and ``checkpoint/``.
        resume: continue from ``out_dir/checkpoint`` when it exists.
        log: receives one line per epoch.

    Returns:
        :class:`FitResult`; ``model`` holds the best weights on return.

    Raises:
        ValueError: no training windows, or ``evaluate`` lacks ``cfg.metric``.
    """
    if len(train_windows) == 0:
        raise ValueError("no training windows")
    train = train_windows if hasattr(train_windows, "batches") else WindowTrainSet(train_windows)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = math.ceil(len(train) / cfg.batch_size) * cfg.epochs
    if cfg.warmup_steps > total_steps // 2:
        log(
            f"warning: train.warmup_steps={cfg.warmup_steps} is more than half of the "
            f"{total_steps} steps of this run; warming up over {total_steps // 2} steps"
        )
        cfg = replace(cfg, warmup_steps=total_steps // 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, total_steps))
    env = D.current()
    module = D.wrap(model, env, cfg.strategy)
    fsdp = env.distributed and cfg.strategy == "fsdp"
    compiled = _compile(module, log) if cfg.compile else None
    proxy = D.LossProxy(compiled, module, log) if compiled is not None else D.LossProxy(module)
    device = next(model.parameters()).device
    amp = cfg.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ckpt = out_dir / "checkpoint"
    history: list[dict[str, Any]] = []
    best, best_epoch, bad, start_epoch = -math.inf, 0, 0, 1
    best_valid: dict[str, float] = {}
    if resume and (ckpt / "trainer_state.json").exists():
        trainer, sched_state = load_training_state(ckpt, model, optimizer)
        if sched_state:
            scheduler.load_state_dict(sched_state)
        history, best, best_epoch = trainer["history"], trainer["best"], trainer["best_epoch"]
        best = -math.inf if best is None else best  # JSON keeps -inf as null
        bad, start_epoch, best_valid = trainer["bad"], trainer["epoch"] + 1, trainer["best_valid"]
        log(f"resumed from {ckpt} after epoch {trainer['epoch']}")
        finished = trainer.get("stopped") == "patience" or trainer["epoch"] >= cfg.epochs
        if finished:  # a time-budget stop, or more epochs asked for, continues training
            load_model(model, out_dir / "model.safetensors")
            return FitResult(best_epoch, best_valid, history, trainer["stopped"], 0.0)
    t0 = time.perf_counter()
    stopped = "epochs"
    if env.world > cfg.batch_size:
        raise ValueError(
            f"train.batch_size={cfg.batch_size} is smaller than the {env.world} ranks: each "
            "global batch is split across them"
        )
    flops_per_unit, peak = 0.0, 0.0
    work = getattr(train, "work", len)
    for epoch in range(start_epoch, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        batches = train.batches(cfg.batch_size, gen)
        total, steps = 0.0, 0
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}",
            leave=False,
            disable=not cfg.progress,
            unit="batch",
        )
        t_train, units, measuring = time.perf_counter(), 0, 0.0
        for idx in bar:
            if len(idx) < env.world:  # a last batch smaller than the number of ranks:
                continue  # every rank skips it (a rank without rows would stall DDP)
            idx = D.shard(idx, env)  # this rank's rows of the global batch
            if cfg.mfu and not flops_per_unit:
                t_m = time.perf_counter()
                flops, peak = _measure_flops(model, train, idx, device, amp)
                flops_per_unit = flops / max(work(idx), 1)
                measuring = time.perf_counter() - t_m  # not training time
            units += work(idx)
            micro = [m for m in torch.tensor_split(idx, cfg.grad_accum) if len(m)]
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for j, m in enumerate(micro):
                sync = j == len(micro) - 1 or not env.distributed or fsdp
                with contextlib.nullcontext() if sync else module.no_sync():
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        out = train.loss(proxy, m, gen, device)
                    if not torch.isfinite(out.loss):
                        raise ValueError(
                            f"training loss is {float(out.loss.detach())} at epoch {epoch}, step "
                            f"{steps + 1}: the weights diverged; lower train.lr or set "
                            f"train.grad_clip (the last good epoch is kept in "
                            f"{out_dir / 'checkpoint'})"
                        )
                    (out.loss * (len(m) / len(idx))).backward()
                step_loss += float(out.loss.detach()) * len(m) / len(idx)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            total += step_loss
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        if steps == 0:
            raise ValueError(f"epoch {epoch} took no training step (no batch of >= 1 row per rank)")
        train_seconds = time.perf_counter() - t_train - measuring
        stats = model.epoch_stats() if hasattr(model, "epoch_stats") else {}
        if hasattr(train, "epoch_stats"):  # e.g. the legal-ID rate and rewards of alignment
            stats = {**stats, **train.epoch_stats()}
        if cfg.mfu and flops_per_unit:
            flops_epoch = flops_per_unit * units * env.world  # this rank's work x ranks
            stats = {
                **stats,
                "samples_per_s": len(train) / train_seconds,  # global samples, all ranks
                "tokens_per_s": getattr(train, "tokens", len(train)) / train_seconds,
                "flops_per_sample": flops_epoch / len(train),
                "mfu": flops_epoch / train_seconds / (peak * env.world),
            }
        model.eval()
        with _full_params(module, fsdp):  # every rank evaluates (shard-aware evaluations
            valid = evaluate(model)  # gather across ranks); rank 0's result decides for all
        valid = D.broadcast(valid, env)
        if cfg.metric not in valid:
            raise ValueError(f"validation metrics lack {cfg.metric!r}: {sorted(valid)}")
        if math.isnan(valid[cfg.metric]):
            raise ValueError(
                f"validation {cfg.metric} is NaN at epoch {epoch} (undefined on this validation "
                "split, e.g. a task with one class only): choose another train.metric"
            )
        row = {
            "epoch": epoch,
            "loss": total / max(steps, 1),
            "seconds": time.perf_counter() - t_epoch,
            "lr": scheduler.get_last_lr()[0],
            **stats,
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        history.append(row)
        improved = valid[cfg.metric] > best or best_epoch == 0  # the first epoch is kept
        if improved:
            best, best_epoch, bad, best_valid = valid[cfg.metric], epoch, 0, dict(valid)
            with _full_params(module, fsdp):
                if env.main:
                    save_model(model, out_dir / "model.safetensors")
        else:
            bad += 1
        if env.main:
            log(
                f"epoch {epoch:3d}  loss {row['loss']:.4f}  valid {cfg.metric} "
                f"{valid[cfg.metric]:.4f}{'  *' if improved else ''}  ({row['seconds']:.1f}s)"
                + "".join(_fmt(k, v) for k, v in stats.items())
            )
        done = ""
        if bad >= cfg.patience:
            done = "patience"
        elif cfg.max_minutes > 0 and D.broadcast(
            (time.perf_counter() - t0) / 60 >= cfg.max_minutes, env
        ):
            done = "time budget"
        elif epoch == cfg.epochs:
            done = "epochs"
        trainer = {
            "epoch": epoch,
            "best": best,
            "best_epoch": best_epoch,
            "best_valid": best_valid,
            "bad": bad,
            "history": history,
            "stopped": done,
        }
        with _full_params(module, fsdp):
            if env.main:  # checkpoints are written once, by rank 0
                save_training_state(ckpt, model, optimizer, scheduler.state_dict(), trainer)
                atomic_write_json(out_dir / "history.json", history)
        D.barrier(env)
        if done:
            stopped = done
            break
    D.barrier(env)
    with _full_params(module, fsdp):
        load_model(model, out_dir / "model.safetensors")
    return FitResult(best_epoch, best_valid, history, stopped, time.perf_counter() - t0)


def _fmt(key: str, value: float) -> str:
    if key == "samples_per_s":
        return f"  {value:,.0f} samples/s"
    if key == "tokens_per_s":
        return f"  {value:,.0f} tokens/s"
    if key == "flops_per_sample":
        return f"  {value / 1e6:,.1f} MFLOP/sample"
    return f"  {key} {value:.3f}"


def _full_params(module: nn.Module, fsdp: bool):
    """Under FSDP, every rank gathers the full parameters (a collective) so that rank 0 can
    evaluate or save the plain model; otherwise nothing."""
    if not fsdp:
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(module, writeback=False)


def _compile(module: nn.Module, log: Callable[[str], None]) -> nn.Module | None:
    """``torch.compile(module)``, or None (eager) with a warning when compiling fails."""
    try:
        return torch.compile(module)
    except Exception as exc:  # noqa: BLE001 - any backend failure falls back to eager
        log(f"warning: torch.compile failed ({type(exc).__name__}: {exc}); training eagerly")
        return None


_PEAK: dict[tuple[str, str], float] = {}


def _measure_flops(
    model: nn.Module, train: Any, idx: torch.Tensor, device: torch.device, amp: bool
) -> tuple[float, float]:
    """(model FLOPs of one forward + backward on the batch ``idx``, peak FLOP/s of this device),
    counted once per process on the first batch. RNG states and gradients are restored, so
    training is unchanged by the measurement."""
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = train.loss(model, idx, gen, device)
        out.loss.backward()

    flops = D.count_flops(step)
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    dtype = torch.bfloat16 if amp else torch.float32
    key = (str(device), str(dtype))
    if key not in _PEAK:
        _PEAK[key] = D.peak_flops(dtype, device)
    return flops, _PEAK[key]
