"""The library API: a run folder and what can be done with it.

>>> run = Run.prepare("runs/k", "kuairand")          # RUN/data/*.parquet, run.json
>>> run.train("sasrec-kuairand", ["--train.epochs=5"]) # RUN/models/sasrec/
>>> run.trained("sasrec").recommend([4021, 77], k=10)  # raw video ids
>>> run.evaluate()                                     # RUN/metrics.json, RUN/report.md

Every stage of DESIGN.md is a method here or a function beside it; ``reelrec`` (the CLI), the
HTTP service and the benchmarks are layers over this module. Which family a model belongs to is
asked of its task (:mod:`reelrec.tasks`), never tested here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from reelrec.config import ConfigError, differences
from reelrec.data.prepare import Prepared, prepare_own_log_run, prepare_run
from reelrec.data.readers import DataFormatError
from reelrec.io import atomic_write_json, atomic_write_text, run_metadata
from reelrec.tasks.base import RunError, RunFolder
from reelrec.tasks.config import load_saved_config, override, save_config
from reelrec.tasks.registry import (
    MODELS,
    RESUMABLE_CHANGES,
    TASKS,
    ExperimentConfig,
    resolve_config,
    validate,
)
from reelrec.tasks.trained import (
    TrainedModel,
    TrainedRanker,
    TrainedRetriever,
    load_trained,
    trained_names,
    wrap,
)
from reelrec.training import distributed as D
from reelrec.training import loop
from reelrec.training.checkpoint import check_matches, load_tensors, resumable_checkpoint

__all__ = [
    "ExperimentConfig",
    "Run",
    "RunError",
    "TrainedModel",
    "TrainedRanker",
    "TrainedRetriever",
    "resolve_config",
]

Log = Callable[[str], None]


class Run:
    """A run folder: prepared data, trained models, metrics and report.

    Args:
        path: the run folder (``RUN``); it need not exist until :meth:`prepare` or
            :meth:`train` writes it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.folder = RunFolder(self.path)
        self._trained: dict[str, TrainedModel] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def forget(self) -> None:
        """Drop every loaded model, the prepared data and the datasets built from it (they are
        read again on next use)."""
        self._trained.clear()
        self.folder.forget()

    # -- data ------------------------------------------------------------------------------
    @classmethod
    def prepare(
        cls,
        path: str | Path,
        dataset: str,
        protocol: str = "",
        data_dir: str = "",
        log: Log = print,
    ) -> Run:
        """Load, clean and split ``dataset`` into ``path/data`` (``reelrec prepare``).

        Raises:
            ConfigError: the folder is a file or holds models of another dataset.
            DatasetNotFound, DataFormatError: missing or malformed raw files.
        """
        prepare_run(Path(path), dataset, protocol, data_dir, log=log)
        return cls(path)

    @classmethod
    def prepare_own_log(
        cls,
        path: str | Path,
        interactions: str | Path,
        columns: str | Path,
        items: str | Path | None = None,
        users: str | Path | None = None,
        name: str = "own-log",
        protocol: str = "leave-one-out",
        log: Log = print,
    ) -> Run:
        """Prepare a user's own log (``reelrec prepare --interactions``): files in any column
        naming, mapped by the YAML ``columns`` map (:mod:`reelrec.data.own_log`).

        >>> run = Run.prepare_own_log("runs/mine", "log.csv", "columns.yaml", items="videos.csv")
        >>> run.train("sasrec")  # trains on dataset "own-log", as recorded in run.json

        Raises:
            ConfigError: a bad ``name`` or run folder.
            FileNotFoundError, DataFormatError: a missing file, a bad map or a bad value
                (the message names the file, line and column).
        """
        prepare_own_log_run(
            Path(path), interactions, columns, items, users, name, protocol, log=log
        )
        return cls(path)

    @property
    def prep(self) -> Prepared:
        """``RUN/data`` (read once).

        Raises:
            FileNotFoundError: the run is not prepared (says which command prepares it).
        """
        return self.folder.prep

    def models(self) -> list[str]:
        """Names of the model folders under ``RUN/models``."""
        return trained_names(self.folder)

    # -- content and semantic IDs ---------------------------------------------------------
    def encode(self, encoder: str = "auto", log: Log = print, **options: Any) -> dict[str, Any]:
        """Embed the run's items (``reelrec encode``): ``RUN/content/item_embeddings.npy``.

        Args:
            encoder: a name of :data:`reelrec.content.stage.ENCODERS`, or ``auto`` (titles with
                e5-small when the dataset has them, else item2vec over training behaviour).
            options: ``dim``, ``seed``, ``missing_text`` of
                :func:`reelrec.content.stage.encode_run`, or the fields of
                :class:`reelrec.content.stage.EncoderOptions` (``model_path``, ``device``, ...).

        Returns:
            What ``RUN/content/encoder.json`` records.

        Raises:
            ConfigError: unknown encoder or an encoder the dataset has no input for.
            FileNotFoundError: the run is not prepared, or local weights are missing.
        """
        from dataclasses import fields

        from reelrec.content.stage import EncoderOptions, encode_run

        names = {f.name for f in fields(EncoderOptions)}
        opts = EncoderOptions(**{k: v for k, v in options.items() if k in names})
        rest = {k: v for k, v in options.items() if k not in names}
        unknown = set(rest) - {"dim", "seed", "missing_text"}
        if unknown:
            raise ConfigError(f"Run.encode: unknown option(s) {sorted(unknown)}")
        if "dim" in options:
            rest["dim"] = options["dim"]
        self.forget()  # what was loaded may rest on the files this stage rewrites
        return encode_run(self.path, encoder, log=log, options=opts, **rest)

    def align(self, overrides: Sequence[str] = (), log: Log = print) -> dict[str, Any]:
        """QARM item alignment (``reelrec align``): ``RUN/content/aligned_embeddings.npy``.

        Args:
            overrides: ``--align.KEY=VALUE`` strings.

        Raises:
            ConfigError: an unknown key or bad value. FileNotFoundError: no item embeddings.
        """
        from reelrec.config import apply_overrides
        from reelrec.tokenizer.align_stage import AlignStage, align_run

        self.forget()  # what was loaded may rest on the files this stage rewrites
        return align_run(self.path, apply_overrides(AlignStage(), list(overrides)), log=log)

    def tokenize(
        self,
        method: str = "",
        out: str | Path | None = None,
        overrides: Sequence[str] = (),
        log: Log = print,
    ) -> dict[str, Any]:
        """Semantic IDs or VQ codes of the run's items (``reelrec tokenize``).

        Args:
            method: a tokenizer method ("" = the config's default, balanced RQ-Kmeans).
            out: output folder (default ``RUN/tokenizer``).
            overrides: ``--tokenizer.KEY=VALUE`` strings.

        Returns:
            The tokenizer's statistics (``stats.json``).

        Raises:
            ConfigError: an unknown key or bad value. FileNotFoundError: no embeddings.
        """
        from reelrec.config import apply_overrides
        from reelrec.tokenizer.stage import TokenizeStage, tokenize_run

        cfg = apply_overrides(TokenizeStage(), list(overrides))
        if method:
            cfg.tokenizer.method = method
        self.forget()  # what was loaded may rest on the files this stage rewrites
        return tokenize_run(self.path, cfg, Path(out) if out else None, log=log)

    # -- training --------------------------------------------------------------------------
    def train(
        self,
        cfg: ExperimentConfig | str,
        overrides: Sequence[str] = (),
        resume: bool = True,
        log: Log = print,
    ) -> dict[str, Any]:
        """Train one model and write ``RUN/models/NAME/`` (``reelrec train``).

        Args:
            cfg: an :class:`ExperimentConfig`, a preset name or a YAML path. A preset trains on
                the dataset the run was prepared for unless ``overrides`` name another.
            overrides: ``--section.key=value`` strings applied to a preset or YAML.
            resume: continue from ``RUN/models/NAME/checkpoint`` when it exists.
            log: receives progress lines.

        Returns:
            The model's ``metrics.json`` content ({} on ranks other than 0 under torchrun).

        Raises:
            ConfigError: an invalid config, a run prepared for another dataset, or a checkpoint
                trained with another config or other semantic IDs.
            RunError: a model this one starts from is missing or unusable (alignment).
            FileNotFoundError, DatasetNotFound, DataFormatError: missing or malformed data.
        """
        if isinstance(overrides, str):
            raise ConfigError(
                f"overrides must be a list of strings, got one string {overrides!r}: "
                f"write [{overrides!r}]"
            )
        if isinstance(cfg, str):
            cfg = resolve_config(cfg, self.with_run_dataset(cfg, overrides))
        elif overrides:
            cfg = override(cfg, list(overrides))
        validate(cfg)
        env = D.current()  # under torchrun: rank 0 prepares and writes, every rank trains
        if env.main and not (self.path / "data" / "interactions.parquet").exists():
            log(f"{self.path / 'data'} not found: preparing {cfg.data.dataset} first")
            prepare_run(self.path, cfg.data.dataset, cfg.data.protocol, cfg.data.data_dir, log=log)
            self.folder.forget()
        D.barrier(env)
        prepared_for = self.prep.report.get("dataset")
        if prepared_for and prepared_for != cfg.data.dataset:
            raise ConfigError(
                f"{self.path} was prepared for dataset {prepared_for!r} but the config says "
                f"data.dataset={cfg.data.dataset!r}; use another --run or --data.dataset={prepared_for}"
            )
        task = MODELS[cfg.model].task
        torch.manual_seed(cfg.train.seed)  # initialisation; the loop seeds shuffling per epoch
        cfg, model, data = task.prepare_train(cfg, self.folder, log)
        if MODELS[cfg.model].trainable:  # config.yaml records the warmup that really runs
            clamped, warning = loop.clamp_warmup(cfg.train, task.train_size(data))
            if warning:
                log(warning)
            cfg = replace(cfg, train=clamped)
        out = self.folder.model_dir(cfg.run_name)
        ckpt = resumable_checkpoint(out / "checkpoint") if resume else None
        self._check_resume(cfg, out, ckpt, model, task, task.train_size(data))
        digest = task.digest(cfg, self.folder)
        if env.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").unlink(missing_ok=True)  # the run is unfinished until it ends
            if ckpt is None:  # starting over: nothing of an older training may stay beside
                # the new config.yaml (weights of another config would load under it)
                for folder in ("checkpoint", "checkpoint.old"):
                    shutil.rmtree(out / folder, ignore_errors=True)
                for name in ("model.safetensors", "history.json"):
                    (out / name).unlink(missing_ok=True)
            save_config(cfg, out / "config.yaml")
            if digest:
                atomic_write_text(out / "semantic_ids.sha256", digest + "\n")
        D.barrier(env)
        self._trained.pop(cfg.run_name, None)
        return task.fit(cfg, self.folder, model, data, out, resume, log)

    def with_run_dataset(self, spec: str, overrides: Sequence[str]) -> list[str]:
        """``overrides`` with ``--data.dataset=`` the dataset this run was prepared for, when
        ``spec`` is a preset and the overrides name none: ``Run.prepare(p, "ml-100k")
        .train("sasrec")`` (and ``reelrec train sasrec --run p``) train on ML-100K. A YAML file
        names its own dataset."""
        import json

        from reelrec.tasks.registry import PRESETS

        meta = self.path / "run.json"
        named = any(o.lstrip("-").startswith("data.dataset=") for o in overrides)
        if spec not in PRESETS or named or not meta.exists():
            return list(overrides)
        dataset = json.loads(meta.read_text(encoding="utf-8")).get("dataset")
        return [f"--data.dataset={dataset}", *overrides] if dataset else list(overrides)

    def _check_resume(
        self, cfg: ExperimentConfig, out: Path, ckpt: Path | None, model, task, n_train: int
    ) -> None:
        """Refuse to resume the checkpoint ``ckpt`` (``checkpoint/``, or ``checkpoint.old``
        left by a save interrupted between its renames) of another config, other semantic IDs
        or other shapes, before anything of the finished run is touched.

        Raises:
            ConfigError: naming what differs and how to start over.
            CheckpointError: the checkpoint's weights do not fit the model.
        """
        if ckpt is None:
            return
        if (out / "config.yaml").exists():
            old = load_saved_config(out / "config.yaml")
            own = {"model", "name", *(MODELS[cfg.model].sections), "data", "train", "eval"}
            # more epochs move a clamped warmup (half the run) with them: not a change of its own
            clamped = old.train.warmup_steps == loop.total_steps(old.train, n_train) // 2
            follows = clamped and old.train.epochs != cfg.train.epochs
            changed = [
                d
                for d in differences(old, cfg)
                if not d.startswith(RESUMABLE_CHANGES)
                and d.split(" ")[0].split(".")[0] in own
                and not (follows and d.startswith("train.warmup_steps "))
            ]
            if changed:
                raise ConfigError(
                    f"{out} holds a checkpoint trained with another config: {'; '.join(changed)}. "
                    "Rerun with the same settings to resume, or add --no-resume to start over."
                )
        digest_file = out / "semantic_ids.sha256"
        if digest_file.exists() and digest_file.read_text().strip() != task.digest(
            cfg, self.folder
        ):
            raise ConfigError(
                f"{out} was trained on other semantic IDs (or VQ codes) than "
                f"{task.describe_digest(cfg, self.folder)} holds now (re-tokenized?); add "
                "--no-resume to train from scratch on the new ones"
            )
        weights = ckpt / "model.safetensors"
        if weights.exists():
            check_matches(model, load_tensors(weights), weights)

    def data(self, cfg: ExperimentConfig | str, overrides: Sequence[str] = ()) -> Any:
        """The dataset ``cfg``'s model trains and is evaluated on (its task's data: sequences,
        impressions or segments), built once per run and settings.

        Raises:
            ConfigError: an invalid config. FileNotFoundError: the run is not prepared.
        """
        if isinstance(cfg, str):
            cfg = resolve_config(cfg, list(overrides))
        return MODELS[cfg.model].task.data(self.folder, cfg)

    def build(self, cfg: ExperimentConfig | str, overrides: Sequence[str] = ()) -> tuple[Any, Any]:
        """A freshly initialised model of ``cfg`` over this run's data, and that data (what
        :meth:`train` would start from; seeded by ``train.seed``).

        Raises:
            ConfigError: an invalid config. FileNotFoundError: missing data or semantic IDs.
        """
        if isinstance(cfg, str):
            cfg = resolve_config(cfg, list(overrides))
        data = self.data(cfg)
        torch.manual_seed(cfg.train.seed)
        return MODELS[cfg.model].build(cfg, data, self.folder), data

    # -- trained models --------------------------------------------------------------------
    def trained(self, name: str) -> TrainedModel:
        """The trained model ``RUN/models/<name>``, loaded once and kept.

        Returns:
            a :class:`TrainedRetriever` (``recommend(history, k)``: raw item ids) for retrieval
            and generative models, a :class:`TrainedRanker` (``score(requests)``) for rankers,
            else a :class:`TrainedModel`.

        Raises:
            RunError: missing, unfinished, trained on other semantic IDs, or its weights do
                not fit its config (the message says what to run).
        """
        if name not in self._trained:
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise RunError(f"{name!r}: a model folder name under {self.path / 'models'}")
            loaded = load_trained(self.folder, name)
            if not (loaded.folder / "metrics.json").exists():
                import warnings

                warnings.warn(
                    f"{loaded.folder}: its training did not finish (no metrics.json); these are "
                    "the best weights so far. Rerun the same train call to resume it.",
                    stacklevel=2,
                )
            self._trained[name] = wrap(loaded, self.folder)
        return self._trained[name]

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, log: Log = print) -> dict[str, Any]:
        """Score every trained model on the test split from its saved weights and write
        ``RUN/metrics.json`` and ``RUN/report.md`` (+ plots) (``reelrec evaluate``).

        A model that cannot be loaded (unfinished, re-tokenized, its generator gone) is
        skipped with a warning that says why.

        Returns:
            ``{"dataset", "protocol", "models": {name: {metric: value}}, "version", "commit"}``.

        Raises:
            FileNotFoundError: no prepared data, or no model could be evaluated.
        """
        from reelrec.eval.report import write_report

        prep = self.prep
        names = self.models()
        if not names:
            raise FileNotFoundError(
                f"{self.path / 'models'}: no trained model; run `reelrec train` first"
            )
        per_task: dict[Any, dict[str, Any]] = {}
        models: dict[str, dict[str, float]] = {}
        for name in names:
            try:
                t = self.trained(name)
            except RunError as exc:
                log(f"warning: skipping {name}: {exc}")
                continue
            try:
                ev = t.task.evaluate(t.cfg, t.model, t.data, t.folder, log)
            except (DataFormatError, ConfigError) as exc:  # e.g. a damaged metrics.json
                log(f"warning: skipping {name}: {exc}")
                continue
            models[name] = ev.summary
            per_task.setdefault(t.task, {})[name] = ev
        if not models:
            raise FileNotFoundError(
                f"{self.path / 'models'}: no model could be evaluated (none has finished an epoch, "
                "or each was skipped: see the warnings above); run `reelrec train` first"
            )
        metrics = {
            "dataset": prep.report.get("dataset", ""),
            "protocol": prep.protocol.name,
            "models": models,
            **run_metadata(),
        }
        atomic_write_json(self.path / "metrics.json", metrics)
        ordered = [(task, per_task[task]) for task in TASKS if task in per_task]
        report = write_report(self.path, metrics, ordered, prep.report, self.folder)
        log(f"wrote {self.path / 'metrics.json'} and {report}")
        return metrics
