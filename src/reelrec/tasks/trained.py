"""Loading a trained model folder ``RUN/models/NAME``: every check done once, in one place.

:func:`load_trained` checks that the folder exists and holds finished weights, reads its config
(old files with every section load too), checks that the semantic IDs / code files it was
trained on are unchanged, builds the model through its task, checks every weight's name and
shape, and loads them. Every failure is one :class:`reelrec.tasks.base.RunError` whose message
says what to run; a bug inside a model constructor is not turned into one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from reelrec.config import ConfigError
from reelrec.data.readers import DataFormatError
from reelrec.models.base import RecommendsTopK, ScoresAllItems
from reelrec.tasks.base import RunError, RunFolder, Task
from reelrec.tasks.config import load_saved_config
from reelrec.training.checkpoint import CheckpointError, check_matches, load_model, load_tensors

if TYPE_CHECKING:
    from reelrec.tasks.registry import ExperimentConfig


@dataclass
class Loaded:
    """A trained model and what it was trained with.

    Attributes:
        name: its folder name under ``RUN/models``.
        folder: ``RUN/models/<name>``.
        cfg: its saved config.
        task: its family.
        model: the module with the saved weights, in eval mode.
        data: the dataset it was trained on (its task's ``data``).
    """

    name: str
    folder: Path
    cfg: ExperimentConfig
    task: Task
    model: nn.Module
    data: Any


def trained_names(run: RunFolder) -> list[str]:
    """Folder names under ``RUN/models`` that hold a ``config.yaml``, sorted."""
    return sorted(p.parent.name for p in (run.path / "models").glob("*/config.yaml"))


def saved_config(run: RunFolder, name: str) -> ExperimentConfig:
    """The config of ``RUN/models/<name>``.

    Raises:
        RunError: no such model folder, or its config cannot be read (says how to retrain).
    """
    folder = run.model_dir(name)
    if not run.path.is_dir():
        raise RunError(
            f"{run.path}: no such run folder; make it with Run.prepare(path, dataset) "
            f"(`reelrec prepare --dataset NAME --out {run.path}`)"
        )
    if not name or not (folder / "config.yaml").exists():
        known = trained_names(run)
        raise RunError(
            f"{folder}: no trained model {name!r} in this run"
            + (f" (it holds {', '.join(known)})" if known else " (it holds none)")
            + "; a model is kept under RUN/models/<its model name, or --name>: train it with "
            f"Run.train(PRESET) or `{train_command(run, 'PRESET')}`"
        )
    try:
        return load_saved_config(folder / "config.yaml")
    except ConfigError as exc:
        raise RunError(str(exc)) from None


def train_command(run: RunFolder, preset: str, name: str = "") -> str:
    """The ``reelrec train`` command line that trains ``preset`` into this run (with the run's
    dataset, and ``--name`` when the folder name is not the model's)."""
    import json

    meta = run.path / "run.json"
    dataset = json.loads(meta.read_text()).get("dataset", "") if meta.exists() else ""
    cmd = f"reelrec train {preset} --run {run.path}"
    if dataset and dataset != "kuairand":
        cmd += f" --data.dataset={dataset}"
    if name and name != preset:
        cmd += f" --name={name}"
    return cmd


def retrain_command(run: RunFolder, name: str) -> str:
    """The command that retrains ``RUN/models/<name>`` from scratch with the config it was
    trained with (its own ``config.yaml``: overrides, ``--name`` and dataset included)."""
    return f"reelrec train {run.model_dir(name) / 'config.yaml'} --run {run.path} --no-resume"


def check_digest(run: RunFolder, name: str, cfg: ExperimentConfig, task: Task) -> None:
    """The semantic IDs / codes a model was trained on are still those of the run.

    Raises:
        RunError: they changed since (re-tokenized): says to retrain.
    """
    digest_file = run.model_dir(name) / "semantic_ids.sha256"
    try:
        recorded = digest_file.read_text(encoding="ascii").strip() if digest_file.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{digest_file}: unreadable ({exc}); retrain the model") from None
    if digest_file.exists() and recorded != task.digest(cfg, run):
        raise RunError(
            f"{run.model_dir(name)} was trained on other semantic IDs (or codes) than "
            f"{task.describe_digest(cfg, run)} holds now (re-tokenized?): retrain it "
            f"(`{retrain_command(run, name)}`, or resume=False)"
        )


def load_weights(model: nn.Module, path: Path, cfg: ExperimentConfig, run: RunFolder) -> None:
    """Load ``path`` into ``model`` after checking every name and shape.

    Raises:
        RunError: the file is not a valid checkpoint or does not fit the model.
    """
    try:
        check_matches(model, load_tensors(path), path)
        load_model(model, path)
    except CheckpointError as exc:
        raise RunError(
            f"{exc} -- retrain it (`{retrain_command(run, cfg.run_name)}`, or resume=False)"
        ) from None


def load_trained(run: RunFolder, name: str) -> Loaded:
    """``RUN/models/<name>`` built by its task with its saved weights, in eval mode.

    Raises:
        RunError: the model is missing or unfinished, its config or weights are unreadable or
            do not fit, its semantic IDs changed, or the inputs it needs are gone.
    """
    from reelrec.tasks.registry import MODELS

    cfg = saved_config(run, name)
    folder = run.model_dir(name)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise RunError(
            f"{folder} has no model.safetensors: no epoch has finished yet; rerun the same "
            "`reelrec train` command to resume it"
        )
    task = MODELS[cfg.model].task
    check_digest(run, name, cfg, task)
    try:
        model, data = task.load(cfg, run)
    except (FileNotFoundError, DataFormatError, ConfigError) as exc:
        raise RunError(f"{name}: {exc}") from None
    load_weights(model, weights, cfg, run)
    return Loaded(name, folder, cfg, task, model.eval(), data)


class TrainedModel:
    """A trained model of a run, loaded once (``Run.trained(name)``).

    Attributes:
        name, folder, cfg, task, model, data: as :class:`Loaded`.
    """

    def __init__(self, loaded: Loaded, run: RunFolder) -> None:
        self.name, self.folder, self.cfg = loaded.name, loaded.folder, loaded.cfg
        self.task, self.model, self.data = loaded.task, loaded.model, loaded.data
        self._run = run

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, model={self.cfg.model!r})"

    def metrics(self) -> dict[str, Any]:
        """Its ``metrics.json`` ({} when training did not finish)."""
        from reelrec.data.prepare import read_json

        path = self.folder / "metrics.json"
        return read_json(path) if path.exists() else {}


class TrainedRetriever(TrainedModel):
    """A next-item model (SASRec, ELASTIC, popularity, OneRec, OneRec-V2, TIGER, IPA, ECPO)."""

    @property
    def max_len(self) -> int:
        """History length the model reads (longer histories keep their most recent items)."""
        return int(self.data.test.history.shape[1])

    def recommend(
        self, history: Sequence[int], k: int = 10, exclude_history: bool = False
    ) -> list[int]:
        """The ``k`` next items for a history, best first, as raw item ids.

        Full-ranking models rank every item of the vocabulary (ties: lower item index first);
        generative models return their trie-constrained beam's items (fewer than ``k`` when
        the beam holds fewer legal items). A history with no item the model knows (empty, or
        only ids unseen in training) gets the most popular training items instead: a model
        has nothing to condition on, and its all-equal scores would otherwise list the
        lowest item ids.

        Args:
            history: raw item ids, oldest first; ids the model never saw are ignored.
            k: list length (>= 1).
            exclude_history: leave the history's items out of the list.

        Raises:
            ValueError: ``k`` < 1.
        """
        import numpy as np
        import torch

        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vocab = self.data.vocab
        idx = vocab.encode(np.asarray(list(history), dtype=np.int64))
        idx = idx[idx > 0][-self.max_len :]
        if len(idx) == 0:  # cold start: the most popular training items
            counts = np.asarray(self.data.train_counts, dtype=np.int64)[1:]
            top = (np.argsort(-counts, kind="stable") + 1)[:k]
            return [int(x) for x in vocab.decode(top)]
        row = torch.zeros(1, self.max_len, dtype=torch.long)
        if len(idx):
            row[0, -len(idx) :] = torch.from_numpy(idx)
        seen = set(idx.tolist()) if exclude_history else set()
        with torch.no_grad():
            if isinstance(self.model, ScoresAllItems) and not isinstance(
                self.model, RecommendsTopK
            ):
                scores = self.model.score_all(row)[0].clone()
                scores[0] = float("-inf")
                if seen:
                    scores[list(seen)] = float("-inf")
                order = torch.sort(scores, descending=True, stable=True).indices
                top = [int(i) for i in order[: k + len(seen)] if torch.isfinite(scores[i])]
            else:
                top = [int(i) for i in self.model.recommend(row, k + len(seen))[0] if int(i) > 0]
        top = [i for i in top if i not in seen][:k]
        return [int(x) for x in vocab.decode(np.asarray(top, dtype=np.int64))]


class TrainedRanker(TrainedModel):
    """A ranking model (CAN, DIN, DeepFM, P-Score): scores (user, item, time) requests with the
    features it was trained on (:class:`reelrec.data.ctr.RequestFeatures`)."""

    @property
    def tasks(self) -> list[str]:
        """The prediction tasks, in the column order of :meth:`score`."""
        return list(self.cfg.ranking.tasks)

    @property
    def features(self) -> Any:
        """The :class:`reelrec.data.ctr.RequestFeatures` of this ranker (built once)."""
        from reelrec.data.ctr import RequestFeatures

        if getattr(self, "_features", None) is None:  # built once per loaded ranker
            self._features = RequestFeatures(
                self.data, self._run.prep.interactions, self.cfg.features
            )
        return self._features

    def score(self, requests: Any) -> Any:
        """Predicted probabilities (watch ratio: the predicted ratio) per request and task.

        Args:
            requests: a mapping or DataFrame with int64 columns ``user_id``, ``item_id`` (raw
                ids) and ``timestamp_ms`` (request time; counters and histories use rows
                strictly earlier), optionally ``hour`` (0..23, Beijing; derived from
                ``timestamp_ms`` when absent) and ``tab`` (the scenario id, for models trained
                with the scenario feature on kuairand-pure; absent: the most frequent training
                scenario, which scores differ from the logged scenario's).

                Users and videos unseen in training get the "unknown" embedding (and, for
                users, no profile), as new ones do in the test days.

        Returns:
            float32 ndarray (n, len(tasks)); (0, len(tasks)) for no request.

        Raises:
            ValueError: a column is missing, not integer, of another length than the others,
                or an hour outside 0..23 (the message names it).
        """
        import numpy as np
        import torch

        cols = {}
        for col in ("user_id", "item_id", "timestamp_ms", "hour", "tab"):
            if col not in requests:
                if col in ("hour", "tab"):
                    continue
                raise ValueError(
                    f"requests lack the column {col!r} (user_id, item_id, timestamp_ms)"
                )
            values = np.atleast_1d(np.asarray(requests[col]))
            if values.ndim != 1 or not (
                np.issubdtype(values.dtype, np.integer) or len(values) == 0
            ):
                raise ValueError(
                    f"requests[{col!r}] must be a 1-D column of integers, got dtype {values.dtype}"
                    f" and shape {values.shape}"
                )
            cols[col] = values.astype(np.int64)
        lengths = {c: len(v) for c, v in cols.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"requests' columns differ in length: {lengths}")
        t = cols["timestamp_ms"]
        hours = cols["hour"] if "hour" in cols else ((t // 3_600_000) + 8) % 24  # Beijing, UTC+8
        if len(hours) and (hours.min() < 0 or hours.max() > 23):
            raise ValueError("requests['hour'] must be in 0..23 (Beijing time)")
        if len(t) == 0:
            return np.zeros((0, len(self.tasks)), dtype=np.float32)
        batch = self.features.batch(cols["user_id"], cols["item_id"], t, hours, cols.get("tab"))
        with torch.no_grad():
            return self.model.predict(batch).float().numpy()


def wrap(loaded: Loaded, run: RunFolder) -> TrainedModel:
    """The :class:`TrainedModel` kind of a loaded model, as its task declares it."""
    if loaded.task.ranks_items:
        return TrainedRetriever(loaded, run)
    if loaded.task.scores_requests:
        return TrainedRanker(loaded, run)
    return TrainedModel(loaded, run)
