"""Throughput and model-FLOPs utilisation (MFU) of a training run, measured without side effects.

The model FLOPs of one forward + backward are counted once per process, on the first batch the
process trains (``torch.utils.flop_counter``), and divided by that batch's work units
(:func:`reelrec.training.trainsets.work_of`); the peak FLOP/s of the device is measured once
per process and dtype (:func:`reelrec.training.distributed.peak_flops`). Per epoch the meter
reports ``samples_per_s``, ``tokens_per_s``, ``flops_per_sample`` and ``mfu`` (OneRec Technical
Report's measure, ``achieved FLOP/s / peak FLOP/s``).

Measuring must not change training: a run resumed in a fresh process measures on another
epoch's batch than the uninterrupted run did, and ``train.mfu`` may be on or off. So the
measurement (:func:`isolated`) restores everything a training step could read afterwards: the
global CPU and CUDA RNG states (``torch.random.fork_rng``), the states of the generators the
batch holds (the epoch's generator draws sampled negatives), the model's buffers (the MoE
routing bias and load counts, BatchNorm statistics) and its gradients. The peak benchmark draws
its matrices from a private generator. The FLOPs are counted on the very batch the step then
trains on, built once, so a training set's own state (the alignment set's generation and
refresh counters) is never advanced by the meter.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from reelrec.training import distributed as D

#: side of the square matrices of the peak benchmark
PEAK_MATRIX = 2048
#: measured peak FLOP/s per (device, dtype), once per process
_PEAK: dict[tuple[str, str], float] = {}


@contextlib.contextmanager
def isolated(
    model: nn.Module, device: torch.device, generators: Sequence[torch.Generator] = ()
) -> Iterator[None]:
    """Run the body, then restore what it may have changed of the training state.

    Restored on exit: the global CPU RNG, the CUDA RNG of ``device`` (when CUDA), the state of
    each of ``generators``, every buffer of ``model`` (values copied back in place) and every
    parameter's ``.grad`` (the same tensor object, or None, with its values).
    """
    gen_states = [g.get_state() for g in generators]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, p.grad) for p in model.parameters()]
    saved_grads = [None if g is None else g.detach().clone() for _, g in grads]
    cuda = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            yield
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
            for (p, grad), saved in zip(grads, saved_grads, strict=True):
                if grad is not None:
                    grad.copy_(saved)
                p.grad = grad
        for g, state in zip(generators, gen_states, strict=True):
            g.set_state(state)


def peak(device: torch.device, dtype: torch.dtype) -> float:
    """Peak FLOP/s of ``device`` in ``dtype`` (measured once per process; no RNG touched)."""
    key = (str(device), str(dtype))
    if key not in _PEAK:
        _PEAK[key] = D.peak_flops(dtype, device, PEAK_MATRIX)
    return _PEAK[key]


class ThroughputMeter:
    """Samples/s, tokens/s, FLOPs per sample and MFU per epoch (see the module docstring).

    Args:
        enabled: ``train.mfu``; when False :meth:`measure` does nothing and :meth:`stats` is {}.
        device: the training device. amp: bfloat16 autocast on (the peak is measured in the
            training dtype). world: ranks (each does the same work per step).
    """

    def __init__(self, enabled: bool, device: torch.device, amp: bool, world: int = 1) -> None:
        self.enabled, self.device, self.amp, self.world = enabled, device, amp, world
        self.flops_per_unit = 0.0
        self.peak = 0.0
        self.seconds = 0.0  # time spent measuring since the last :meth:`take_seconds`

    @property
    def needs_measure(self) -> bool:
        """True until the FLOPs were counted (and only when enabled)."""
        return self.enabled and not self.flops_per_unit

    def measure(
        self,
        model: nn.Module,
        batch: Any,
        units: int,
        generators: Sequence[torch.Generator] = (),
    ) -> None:
        """Count the FLOPs of ``model.loss(batch)`` forward + backward on the eager model, per
        work unit (``units`` of ``batch``), and the device's peak; training state unchanged
        (:func:`isolated`; ``generators``: those ``batch`` draws from).
        """
        if not self.needs_measure:
            return
        t0 = time.perf_counter()

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                out = model.loss(batch)
            out.loss.backward()

        with isolated(model, self.device, generators):
            flops = D.count_flops(step)
            self.peak = peak(self.device, torch.bfloat16 if self.amp else torch.float32)
        self.flops_per_unit = flops / max(units, 1)
        self.seconds += time.perf_counter() - t0

    def take_seconds(self) -> float:
        """Seconds spent measuring since the last call (not training time); resets them."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def stats(self, units: int, seconds: float, samples: int, tokens: int) -> dict[str, float]:
        """Throughput of an epoch.

        Args:
            units: work units this rank trained. seconds: training time (measuring excluded).
            samples: samples of the epoch (all ranks). tokens: predicted positions (all ranks).

        Returns:
            ``samples_per_s``, ``tokens_per_s``, ``flops_per_sample``, ``mfu``; {} when disabled
            or nothing was measured.
        """
        if not (self.enabled and self.flops_per_unit and seconds > 0):
            return {}
        flops = self.flops_per_unit * units * self.world  # this rank's work x ranks
        return {
            "samples_per_s": samples / seconds,  # global samples, all ranks
            "tokens_per_s": tokens / seconds,
            "flops_per_sample": flops / max(samples, 1),
            "mfu": flops / seconds / (self.peak * self.world),
        }
