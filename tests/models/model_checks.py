"""Checks shared by the tiny-config model tests (STYLE.md: gradients reach every parameter, a
few steps overfit one batch)."""

from __future__ import annotations

import torch


def assert_gradients_reach_every_parameter(model: torch.nn.Module) -> None:
    """After a backward pass: every parameter has a non-zero gradient (names the ones that don't)."""
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def overfit(model, batch, steps: int = 150, lr: float = 1e-2):
    """Adam steps on one typed batch of ``model.loss(batch)``; returns (first, last) loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = float(model.loss(batch).loss.detach())
    for _ in range(steps):
        opt.zero_grad()
        model.loss(batch).loss.backward()
        opt.step()
    return first, float(model.loss(batch).loss.detach())


def assert_ranker_trains(model, batch, tasks) -> None:
    """A ranker's loss on ``batch`` is finite with one part per task of ``tasks``, its
    gradient reaches every parameter, and 150 Adam steps cut the loss below 20% of the first."""
    out = model.loss(batch)
    assert torch.isfinite(out.loss) and set(out.parts) == set(tasks)
    out.loss.backward()
    assert_gradients_reach_every_parameter(model)
    first, last = overfit(model, batch)
    assert last < 0.2 * first
