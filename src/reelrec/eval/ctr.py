"""Per-task evaluation of the ranking models (CAN, DIN, DeepFM) on one split.

For each binary task: AUC over every labelled row, GAUC per user (impression-weighted, users with
one class excluded and counted: CASES.md C01/C02), LogLoss of the predicted probability; a task
with one class in the split reports NaN AUC/LogLoss-defined values and says so (``note``). For
regression tasks (watch ratio): MAE and RMSE. ``auc`` and ``gauc`` at the top level are the means
over the binary tasks that have both classes (the early-stopping metric ``auc``), or over the
tasks named in ``mean_over``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from reelrec.data.ctr import CTRData
from reelrec.eval.metrics import auc, gauc, log_loss


def predict_rows(
    model: torch.nn.Module, data: CTRData, rows: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """Predictions (len(rows), T) float64 of ``model.predict`` on ``data`` rows, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = data.batch(rows[start : start + batch_size]).to(device)
            out.append(model.predict(batch).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(data.tasks)))


def task_metrics(
    tasks: list[str], binary: list[bool], labels: np.ndarray, preds: np.ndarray, groups: np.ndarray
) -> dict[str, dict[str, float]]:
    """Metrics per task (see module docstring) from labels and predictions (n, T) (NaN = no label).

    Column t of ``preds`` is scored against column t of ``labels`` only (never another task's).
    """
    out: dict[str, dict[str, float]] = {}
    for t, name in enumerate(tasks):
        ok = ~np.isnan(labels[:, t])
        y, p, g = labels[ok, t], preds[ok, t], groups[ok]
        if not binary[t]:
            err = p - y
            out[name] = {
                "mae": float(np.abs(err).mean()) if len(y) else math.nan,
                "rmse": float(np.sqrt((err**2).mean())) if len(y) else math.nan,
                "n": int(len(y)),
            }
            continue
        row: dict[str, float] = {"n": int(len(y)), "positives": int(y.sum())}
        if len(y) and 0 < y.sum() < len(y):
            row["auc"] = auc(y, p)
            row["logloss"] = log_loss(y, p)
        else:
            row["auc"] = row["logloss"] = math.nan
            row["note"] = "one class only in this split: AUC undefined"  # type: ignore[assignment]
        if len(y):
            r = gauc(g, y, p)
            row.update(gauc=r.value, gauc_users=r.n_users, gauc_excluded_users=r.n_excluded_users)
        out[name] = row
    return out


def evaluate_ctr(
    model: torch.nn.Module,
    data: CTRData,
    split: int,
    batch_size: int = 4096,
    mean_over: list[str] | None = None,
) -> dict[str, object]:
    """Evaluate ``model`` on split ``split`` (1 valid, 2 test) of ``data``.

    Args:
        mean_over: tasks whose AUC/GAUC enter the means (default: every binary task); the CLI
            passes the tasks with a loss weight > 0.

    Returns:
        ``{"auc": mean AUC, "gauc": mean GAUC, "n": rows, "tasks": {task: {...}}}``; also the flat
        keys ``"<task>/auc"`` etc. that early stopping may name (``train.metric``).
    """
    rows = data.rows(split)
    preds = predict_rows(model, data, rows, batch_size)
    per_task = task_metrics(
        data.tasks,
        data.binary,
        data.labels[rows].numpy().astype(np.float64),
        preds,
        data.groups[rows],
    )
    chosen = [m for t, m in per_task.items() if mean_over is None or t in mean_over]
    aucs = [m["auc"] for m in chosen if "auc" in m and not math.isnan(m["auc"])]
    gaucs = [m["gauc"] for m in chosen if "gauc" in m and not math.isnan(m["gauc"])]
    flat: dict[str, object] = {
        "auc": float(np.mean(aucs)) if aucs else math.nan,
        "gauc": float(np.mean(gaucs)) if gaucs else math.nan,
        "n": int(len(rows)),
    }
    for name, m in per_task.items():
        for k, v in m.items():
            if isinstance(v, float):
                flat[f"{name}/{k}"] = v
    flat["tasks"] = per_task
    return flat


def pscore_metrics(
    model: torch.nn.Module, data: CTRData, split: int, batch_size: int = 4096
) -> dict[str, dict[str, float]]:
    """How well a reward model's P-Score alone ranks each objective on split ``split``.

    The same P-Score column is scored against every task's labels (AUC, GAUC, LogLoss for the
    binary tasks; for the watch ratio, MAE/RMSE of P-Score x 1 are meaningless and the task is
    left out). ``model`` must have ``pscore(batch) -> (B,)``.

    Returns:
        ``{task: {...}}`` as :func:`task_metrics` for the binary tasks.
    """
    rows = data.rows(split)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = data.batch(rows[start : start + batch_size]).to(device)
        out.append(model.pscore(batch).float().cpu().numpy())
    model.train(was_training)
    p = np.concatenate(out).astype(np.float64) if out else np.zeros(0)
    binary = [t for t, b in zip(data.tasks, data.binary, strict=True) if b]
    cols = [data.tasks.index(t) for t in binary]
    labels = data.labels[rows][:, cols].numpy().astype(np.float64)
    preds = np.repeat(p[:, None], len(cols), 1)
    return task_metrics(binary, [True] * len(binary), labels, preds, data.groups[rows])
