"""What every model family shares: the run folder a task works in, the :class:`Task` contract,
and one row of the model table.

A :class:`Task` is one model family (sequential retrieval, generative retrieval, ranking,
segment-level interest, preference alignment). It knows the data its models train on, how to
train and evaluate them, what they put in ``metrics.json`` and which section of the report
shows them. Nothing above ``tasks/`` (the ``Run`` API, the CLI, the service) tests which family
a model belongs to: it asks the model's task.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from reelrec.config import ConfigError
from reelrec.data.prepare import Prepared, load_prepared

if TYPE_CHECKING:
    from reelrec.tasks.registry import ExperimentConfig

Log = Callable[[str], None]


class RunError(Exception):
    """A trained model cannot be used as asked: missing, unfinished, of another kind, trained
    on other semantic IDs, or its weights do not fit its config. The message says what to do."""


def check(ok: bool, key: str, rule: str, value: object) -> None:
    """Raise :class:`ConfigError` ``"<key> must be <rule>, got <value>"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def check_folder_name(key: str, value: str) -> None:
    """``value`` is a plain folder name (letters, digits, . _ -).

    Raises:
        ConfigError: naming ``key``.
    """
    check(
        re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", value) is not None,
        key,
        "a plain folder name (letters, digits, . _ -)",
        value,
    )


class RunFolder:
    """A run folder as the tasks see it: its path, its prepared data (read once) and a cache
    of the datasets built from it, so that evaluating several models of one family builds
    their data once.

    Args:
        path: the run folder (``RUN``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._prep: Prepared | None = None
        self._cache: dict[Any, Any] = {}

    @property
    def prep(self) -> Prepared:
        """``RUN/data`` (read on first use).

        Raises:
            FileNotFoundError: the run has no prepared data (says which command makes it).
        """
        if self._prep is None:
            self._prep = load_prepared(self.path)
        return self._prep

    def forget(self) -> None:
        """Drop the prepared data and every cached dataset (after ``RUN/data`` changed)."""
        self._prep, self._cache = None, {}

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per ``key``."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def model_dir(self, name: str) -> Path:
        """``RUN/models/<name>``."""
        return self.path / "models" / name


@dataclass(frozen=True)
class ModelEntry:
    """One row of the model table.

    Attributes:
        task: the family that trains, evaluates and reports the model.
        sections: the config sections the model reads besides ``data``, ``train``, ``eval``.
        build: ``(cfg, data, run) -> nn.Module`` (``data``: what ``task.data`` returned).
        description: one line for ``--help``.
        trainable: False for models fitted by counting (no epochs, no checkpoint).
        fixed: ``(section.key, value)`` pairs the model fixes (its preset sets them): the
            registry's ``validate`` refuses a config with another value, before anything is
            built, so a saved config always says what was trained (e.g. ``mmoe`` is the
            embedding ranker with ``ranking.multitask`` fixed to ``"mmoe"``).
    """

    task: Task
    sections: tuple[str, ...]
    build: Callable[[ExperimentConfig, Any, RunFolder], nn.Module]
    description: str
    trainable: bool = True
    fixed: tuple[tuple[str, Any], ...] = ()


@dataclass
class Evaluation:
    """What a task's evaluation of one trained model gives the run.

    Attributes:
        summary: the model's entry of ``RUN/metrics.json["models"]`` (metric -> float).
        detail: the model's full record for the report (its ``metrics.json`` with ``test``
            replaced by this evaluation).
        history: its epoch rows (``history.json``), [] for untrained models.
    """

    summary: dict[str, float]
    detail: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


class Task:
    """One model family. Subclasses override what differs; the defaults are noted.

    Attributes:
        name: the family name (``retrieval``, ``generative``, ``ranking``, ``segment``,
            ``alignment``).
        ranks_items: its models answer ``recommend(history, k)`` and are shown in the report's
            full-ranking test table.
        scores_requests: its models answer ``score(requests)`` (rankers).
    """

    name = "task"
    ranks_items = False
    scores_requests = False

    # -- configuration ---------------------------------------------------------------------
    def validate(self, cfg: ExperimentConfig) -> None:
        """Check the family's rules across sections (each section checks its own values).

        Raises:
            ConfigError: naming the first invalid key.
        """

    # -- data and model ----------------------------------------------------------------------
    def data(self, run: RunFolder, cfg: ExperimentConfig) -> Any:
        """The dataset ``cfg``'s model trains and is evaluated on (cached per run)."""
        raise NotImplementedError

    def digest(self, cfg: ExperimentConfig, run: RunFolder) -> str:
        """SHA-256 of the semantic-ID / code files the model reads ("" when none); kept beside
        the model so that a re-tokenized run is never silently reused."""
        return ""

    def describe_digest(self, cfg: ExperimentConfig, run: RunFolder) -> str:
        """Where the files of :meth:`digest` live (for error messages)."""
        return str(run.path / "tokenizer")

    def build(self, cfg: ExperimentConfig, run: RunFolder) -> tuple[nn.Module, Any]:
        """A freshly initialised model of ``cfg`` and its data.

        Raises:
            FileNotFoundError, ValueError: missing or invalid inputs (semantic IDs ...).
        """
        from reelrec.tasks.registry import MODELS

        data = self.data(run, cfg)
        return MODELS[cfg.model].build(cfg, data, run), data

    def load(self, cfg: ExperimentConfig, run: RunFolder) -> tuple[nn.Module, Any]:
        """The model a saved ``cfg`` describes, before its weights are loaded, and its data
        (default: :meth:`build`).

        Raises:
            RunError, FileNotFoundError, DataFormatError: inputs it needs are missing.
        """
        return self.build(cfg, run)

    def prepare_train(
        self, cfg: ExperimentConfig, run: RunFolder, log: Log
    ) -> tuple[ExperimentConfig, nn.Module, Any]:
        """The config that will really run, the model to train and its data (alignment starts
        from a trained generator; the others from a fresh initialisation)."""
        model, data = self.build(cfg, run)
        return cfg, model, data

    def train_size(self, data: Any) -> int:
        """Training samples per epoch (for the learning-rate schedule)."""
        return len(data.train_windows)

    # -- training and evaluation -------------------------------------------------------------
    def fit(
        self,
        cfg: ExperimentConfig,
        run: RunFolder,
        model: nn.Module,
        data: Any,
        out: Path,
        resume: bool,
        log: Log,
    ) -> dict[str, Any]:
        """Train ``model``, evaluate it and write ``out/metrics.json``; return its content."""
        raise NotImplementedError

    def evaluate(
        self, cfg: ExperimentConfig, model: nn.Module, data: Any, folder: Path, log: Log
    ) -> Evaluation:
        """Test metrics of a trained model reloaded from ``folder``."""
        raise NotImplementedError

    def report_section(self, run: RunFolder, evaluations: dict[str, Evaluation]) -> list[str]:
        """Markdown lines of this family's part of ``RUN/report.md`` ([] for none)."""
        return []


def read_details(folder: Path, log: Log, default: dict[str, Any] | None = None) -> dict[str, Any]:
    """``folder/metrics.json``, or ``default`` with a warning when training did not finish."""
    from reelrec.data.prepare import read_json

    if (folder / "metrics.json").exists():
        return read_json(folder / "metrics.json")
    log(f"warning: {folder.name} has no metrics.json: its training did not finish")
    return dict(default or {"best_epoch": "unfinished"})


def read_history(folder: Path) -> list[dict[str, Any]]:
    """``folder/history.json`` ([] when the model was not trained by epochs)."""
    from reelrec.data.prepare import read_json

    path = folder / "history.json"
    rows = read_json(path) if path.exists() else []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        from reelrec.data.readers import DataFormatError

        raise DataFormatError(f"{path}: expected a list of epoch rows")
    return rows


def parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def fit_summary(result: Any) -> dict[str, Any]:
    """The fields of a model's ``metrics.json`` that describe its training (a ``FitResult``)."""
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        # wall time of all epochs (training + validation), across resumed sessions
        "train_seconds": round(sum(h["seconds"] for h in result.history), 2),
    }
