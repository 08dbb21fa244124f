"""Running the training loop on several processes, and model-FLOPs utilisation (MFU).

Scale-out uses PyTorch's own engine, never a home-made one. ``torchrun --nproc_per_node N``
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, and :func:`setup` then joins the process group:
NCCL on CUDA, gloo on CPU. :func:`wrap` puts the model's loss behind
``DistributedDataParallel``, which averages gradients across ranks in backward, or behind
``FullyShardedDataParallel`` (``train.strategy=fsdp``, GPUs only: PyTorch's FSDP has no CPU
backend, so this path is not exercised by the CPU test suite) for models that do not fit one
device.
Each global batch of ``train.batch_size`` samples is split into ``WORLD_SIZE`` equal parts
(:func:`shard`), so a rank reads only its own rows. Every rank evaluates (retrieval models rank
their share of the instances and gather the ranks: ``reelrec.tasks.retrieval.gathered_evaluate``);
rank 0's metrics decide early stopping for all, and rank 0 alone writes files. With losses that are means over samples of
equal-sized shards, N ranks take the same step as one process on the whole batch (tested).

MFU (the OneRec Technical Report's measure of how well a recommender uses its hardware):
``achieved FLOP/s / peak FLOP/s``, where the model FLOPs per sample are counted once on a
training batch by ``torch.utils.flop_counter`` (forward + backward) and the peak is measured once
on this machine by a large matrix product of the training dtype (:func:`peak_flops`); the
measurement itself (:mod:`reelrec.training.meter`) restores every RNG and buffer it touches.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from reelrec.models.base import LossOutput, MayLeaveParametersUnused


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world`` processes, its ``device``, the
    ``backend`` ("" when not distributed)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def main(self) -> bool:
        """True on the process that writes files and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup() -> DistEnv:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a
    single-process environment. Idempotent. CUDA ranks use device ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return current()
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return current()


def current() -> DistEnv:
    """The environment of an already joined process group (single process if none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistEnv()
    backend = dist.get_backend()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if backend == "nccl"
        else torch.device("cpu")
    )
    return DistEnv(dist.get_rank(), dist.get_world_size(), device, backend)


def shard(idx: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This rank's part of a global batch of row indices (contiguous, equal up to one row)."""
    return torch.tensor_split(idx, env.world)[env.rank] if env.distributed else idx


def broadcast(obj, env: DistEnv):
    """``obj`` from rank 0 on every rank (pickled by torch.distributed; small objects only)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, env: DistEnv) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process;
    pickled by torch.distributed, small objects only)."""
    if not env.distributed:
        return [obj]
    parts: list = [None] * env.world
    dist.all_gather_object(parts, obj)
    return parts


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in a single process)."""
    if env.distributed:
        dist.barrier()


class LossModule(nn.Module):
    """``forward(batch) = model.loss(batch)``: lets DDP/FSDP see the loss as a forward pass.

    ``model`` declares :class:`~reelrec.models.base.Trainable` (one typed batch in, a
    :class:`~reelrec.models.base.LossOutput` out).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch) -> LossOutput:
        return self.model.loss(batch)


class LossProxy:
    """An object whose ``.loss(batch)`` runs the wrapped (DDP/FSDP or compiled) loss module,
    so it stands where the model's ``loss`` is called. With a ``fallback``, a failure of the
    first call (torch.compile compiles lazily) is logged and the fallback is used from then on."""

    def __init__(self, module: nn.Module, fallback: nn.Module | None = None, log=print) -> None:
        self.module, self.fallback, self.log = module, fallback, log

    def loss(self, batch) -> LossOutput:
        """The wrapped module's ``model.loss(batch)``."""
        if self.fallback is None:
            return self.module(batch)
        try:
            out = self.module(batch)
        except Exception as exc:  # noqa: BLE001 - any compiler/backend failure
            self.log(f"warning: torch.compile failed ({type(exc).__name__}); training eagerly")
            self.module = self.fallback
            out = self.module(batch)
        self.fallback = None  # the first call succeeded (or fell back): no more checks
        return out


def wrap(model: nn.Module, env: DistEnv, strategy: str = "ddp") -> nn.Module:
    """The model's loss behind DDP (``strategy="ddp"``) or FSDP (``"fsdp"``) when
    distributed, else the plain :class:`LossModule`.

    Raises:
        ValueError: an unknown strategy.
    """
    module = LossModule(model)
    if not env.distributed:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        # models whose steps may leave parameters without gradient (MoE experts, tasks without
        # labels) declare it; the others skip DDP's extra graph traversal
        unused = isinstance(model, MayLeaveParametersUnused)
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=unused)
    if strategy == "fsdp":
        if env.device.type != "cuda":
            raise ValueError(
                "train.strategy=fsdp needs GPUs (PyTorch's FSDP has no CPU backend); use ddp"
            )
        from torch.distributed.fsdp import FullyShardedDataParallel

        dev = env.device if env.device.type == "cuda" else None
        return FullyShardedDataParallel(module, device_id=dev, use_orig_params=True)
    raise ValueError(f"train.strategy must be 'ddp' or 'fsdp', got {strategy!r}")


def peak_flops(
    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", n: int = 2048
) -> float:
    """Measured FLOP/s of an ``n x n`` matrix product in ``dtype`` on ``device`` (best of 5).

    The matrices come from a private generator: no global RNG (CPU or CUDA) is drawn from, so
    measuring never changes what training draws next (dropout, sampling).
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    best = float("inf")
    for _ in range(6):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def count_flops(step) -> float:
    """FLOPs of one call of ``step()`` (forward + backward inside it), by
    ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())
