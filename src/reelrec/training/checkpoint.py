"""Checkpoints that hold only tensors and plain data: safetensors + JSON/YAML, never pickle.

``torch.load`` is never called, so a checkpoint cannot execute code and needs no
``weights_only=False`` (RecBole #2212 under torch >= 2.6, CASES.md C20). Layout of a resumable
checkpoint folder::

    model.safetensors       model weights
    optimizer.safetensors   optimizer state tensors, keys "state.<param index>.<name>"
    rng.safetensors         torch CPU RNG state (uint8), and the CUDA RNG state of every
                            visible GPU ("torch_cuda_<i>"), so dropout continues identically
    trainer_state.json      epoch, best metric, history, optimizer scalars and param groups

A folder is written under a temp name and renamed into place (the previous one is moved to
``<name>.old`` first and deleted last), so a crash never leaves a half-written checkpoint: a
process killed between the two renames leaves ``<name>.old``, which
:func:`resumable_checkpoint` then resumes from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from reelrec.io import atomic_path, json_safe


class CheckpointError(ValueError):
    """A checkpoint file is not a valid safetensors/JSON checkpoint (names the file)."""


def save_model(model: nn.Module, path: Path) -> None:
    """Write ``model.state_dict()`` to ``path`` (safetensors, atomically)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file.

    Raises:
        FileNotFoundError: missing file.
        CheckpointError: the file is not safetensors (e.g. a pickle); it is never executed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a safetensors file ({exc}); reelrec never unpickles checkpoints"
        ) from None


def load_model(model: nn.Module, path: Path) -> nn.Module:
    """Load weights from ``path`` into ``model`` (strict: names and shapes must match).

    Raises:
        CheckpointError: not safetensors, or keys/shapes differ from the model's.
    """
    state = load_tensors(path)
    check_matches(model, state, path)
    model.load_state_dict(state, strict=True)
    return model


def check_matches(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`CheckpointError` in one line when ``state``'s names or shapes differ from
    ``model``'s (counts, and the first difference)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or shapes:
        first = (shapes or [f"missing {k}" for k in missing] or [f"unexpected {k}" for k in extra])[
            0
        ]
        raise CheckpointError(
            f"{path}: does not match the model ({len(shapes)} shape differences, "
            f"{len(missing)} missing and {len(extra)} unexpected tensors; first: {first}); "
            "the data or config changed since it was written: rerun with --no-resume"
        )


def save_training_state(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler_state: dict[str, Any] | None,
    trainer: dict[str, Any],
) -> None:
    """Write a resumable checkpoint folder (see module docstring), replacing any old one."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(model, tmp / "model.safetensors")
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in opt["state"].items():
        for name, value in st.items():
            key = f"state.{idx}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / "rng.safetensors"))
    state = {
        "trainer": trainer,
        "optimizer_scalars": scalars,
        "param_groups": opt["param_groups"],
        "scheduler": scheduler_state,
    }
    (tmp / "trainer_state.json").write_text(json.dumps(json_safe(state), indent=2), "utf-8")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)


def load_training_state(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Restore model, optimizer and RNG from a checkpoint folder.

    Returns:
        ``(trainer, scheduler_state)`` as saved.

    Raises:
        FileNotFoundError: a file of the folder is missing.
        CheckpointError: a file is corrupt or does not match the model/optimizer.
    """
    folder = Path(folder)
    load_model(model, folder / "model.safetensors")
    state_path = folder / "trainer_state.json"
    if not state_path.exists():
        raise FileNotFoundError(f"{state_path}: missing")
    try:
        meta = json.loads(state_path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{state_path}: invalid JSON ({exc})") from None
    tensors = load_tensors(folder / "optimizer.safetensors")
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["optimizer_scalars"].items()):
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder}: optimizer state does not match: {exc}") from None
    rng = load_tensors(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[f"torch_cuda_{i}"] for i in range(len(rng) - 1) if f"torch_cuda_{i}" in rng]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return meta["trainer"], meta.get("scheduler")


def resumable_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint to resume from: ``folder`` when it holds a trainer state, else
    ``<folder>.old`` when a save was interrupted between its two renames, else None."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "trainer_state.json").exists():
            return candidate
    return None
