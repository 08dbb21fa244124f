"""The experiment config that ``Run.train`` (and ``reelrec train``) reads, and its saved form.

An ``ExperimentConfig`` (:data:`reelrec.tasks.registry.ExperimentConfig`, built by
:func:`experiment_config_class` from the model table's sections) names one model and holds the
sections every model shares (``data``, ``train``, ``eval``) plus that model's own sections,
which its row of :data:`reelrec.tasks.registry.MODELS` lists. The dataclass keeps a default for
every model section so that overrides can be parsed by type, but only the chosen model's
sections exist
for the user: a key of another model's section, in a YAML file or as an ``--a.b=c`` override,
is an unknown-key error, and ``config.yaml`` is written with the chosen model's sections only.
Config files written before this rule (every section saved) still load: sections the model
does not read are dropped when a *saved* config is read back (:func:`load_saved_config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from reelrec.tasks.registry import ExperimentConfig

from reelrec.config import ConfigError, apply_overrides, from_dict, to_dict
from reelrec.training.loop import TrainConfig


@dataclass
class DataSection:
    """Which data a run uses."""

    dataset: str = "kuairand"  # dataset name (`reelrec datasets` lists them)
    protocol: str = ""  # evaluation protocol; "" = the dataset's default
    data_dir: str = ""  # data root; "" = $REELREC_DATA_DIR, else ~/.cache/reelrec

    def validate(self, section: str = "data") -> None:
        """Nothing to check here: the dataset and protocol names are checked when the run is
        prepared (with the list of known ones)."""


@dataclass
class EvalConfig:
    """Full-ranking evaluation settings."""

    ks: list[int] = field(default_factory=lambda: [5, 10, 20])  # cutoffs K for @K metrics
    batch_size: int = 1024  # instances scored at once (>= 1)
    # protocol flag: take each user's own history items out of its ranking (RecBole's sequential
    # default is False; public TIGER reproductions and the MicroLens paper mask). Early stopping
    # and `test` use this setting; metrics.json also holds the test split under both settings.
    mask_history: bool = False
    # how semantic-ID generators are ranked: "exact" (every item by its sequence
    # log-probability, true full ranking) or "beam" (the beam's list; serving's path)
    ranking: str = "exact"
    # final validation and test metrics on a fixed random subset of at most this many users
    # (seeded by train.seed; every item still ranked); 0 = every user. n_instances says how many
    max_users: int = 0

    def validate(self, section: str = "eval") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key.
        """
        if not (len(self.ks) > 0 and all(k >= 1 for k in self.ks)):
            raise ConfigError(
                f"{section}.ks must be a non-empty list of cutoffs >= 1, got {self.ks!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"{section}.batch_size must be >= 1, got {self.batch_size!r}")
        if self.ranking not in ("exact", "beam"):
            raise ConfigError(f"{section}.ranking must be 'exact' or 'beam', got {self.ranking!r}")
        if self.max_users < 0:
            raise ConfigError(f"{section}.max_users must be >= 0 (0 = all), got {self.max_users!r}")


#: sections every model has
SHARED = ("model", "name", "data", "train", "eval")


def experiment_config_class(model_sections: dict[str, type]) -> type:
    """The experiment config dataclass: ``model``, ``name``, ``data``, ``train``, ``eval`` and
    one field per model section of the model table (``reelrec.tasks.registry.SECTIONS``),
    each defaulting to its class's defaults.

    An ``ExperimentConfig`` is everything one training run needs; it is saved as
    ``RUN/models/NAME/config.yaml`` with the shared sections and the model's own only
    (:func:`save_config`). ``run_name`` is the folder under ``RUN/models``: ``name``, or the
    model's name.
    """
    fields = [
        ("model", str, field(default="sasrec")),  # a key of reelrec.tasks.registry.MODELS
        ("name", str, field(default="")),  # run sub-folder under RUN/models; "" = the model
        ("data", DataSection, field(default_factory=DataSection)),
        ("train", TrainConfig, field(default_factory=TrainConfig)),
        ("eval", EvalConfig, field(default_factory=EvalConfig)),
    ]
    fields += [(name, cls, field(default_factory=cls)) for name, cls in model_sections.items()]

    def run_name(self) -> str:
        """Folder name under RUN/models."""
        return self.name or self.model

    cls = dataclasses.make_dataclass(
        "ExperimentConfig",
        fields,
        namespace={"run_name": property(run_name), "__doc__": experiment_config_class.__doc__},
    )
    cls.__module__ = "reelrec.tasks.registry"
    return cls


def _experiment_config() -> type:
    from reelrec.tasks.registry import ExperimentConfig

    return ExperimentConfig


def _model_sections() -> tuple[str, ...]:
    from reelrec.tasks.registry import SECTIONS

    return tuple(SECTIONS)


def sections(model: str) -> tuple[str, ...]:
    """The top-level sections a config of ``model`` holds (shared + the model's own).

    Raises:
        ConfigError: an unknown model.
    """
    from reelrec.tasks.registry import MODELS

    if model not in MODELS:
        raise ConfigError(f"model: unknown {model!r}; known: {', '.join(MODELS)}")
    return (*SHARED, *MODELS[model].sections)


def _check_sections(model: str, keys: list[str], where: str) -> None:
    own = sections(model)
    for key in map(str, keys):
        top = key.split(".")[0].replace("-", "_")
        if top in _model_sections() and top not in own:
            raise ConfigError(
                f"{where}unknown config key {key!r} for model {model!r}: its sections are "
                f"{', '.join(s for s in own if s not in ('model', 'name'))}"
            )


def config_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain-data form of ``cfg`` with the shared sections and the model's own only."""
    full = to_dict(cfg)
    return {k: full[k] for k in sections(cfg.model)}


def config_text(cfg: ExperimentConfig) -> str:
    """YAML text of :func:`config_dict`."""
    return yaml.safe_dump(config_dict(cfg), sort_keys=False, allow_unicode=True)


def save_config(cfg: ExperimentConfig, path: Path) -> None:
    """Write ``cfg`` as YAML to ``path`` (temp file, then rename)."""
    from reelrec.io import atomic_write_text

    atomic_write_text(Path(path), config_text(cfg))


def config_from_dict(
    data: dict[str, Any], where: str = "", saved: bool = False
) -> ExperimentConfig:
    """Build a config from a mapping (a YAML file's content).

    Args:
        data: top-level mapping; ``model`` defaults to ``sasrec``.
        where: prefix of error messages (the file name and ": ").
        saved: True for a ``config.yaml`` written by reelrec: sections the model does not read
            are dropped (files written before per-model sections held every section).

    Raises:
        ConfigError: an unknown model, a section of another model (``saved=False``), an unknown
            key or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}expected a mapping at the top level")
    model = data.get("model", "sasrec")
    if not isinstance(model, str):
        raise ConfigError(f"{where}model: expected a string, got {model!r}")
    try:
        own = sections(model)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    if saved:
        data = {k: v for k, v in data.items() if k not in _model_sections() or k in own}
    else:
        _check_sections(model, list(data), where)
    try:
        return from_dict(_experiment_config(), data)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file") from None


def load_config_file(path: Path) -> ExperimentConfig:
    """A user's experiment YAML (strict: another model's section is an unknown key).

    Raises:
        ConfigError: missing file, invalid YAML, unknown keys or bad values (names the file).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    return config_from_dict(_read_yaml(path), f"{path}: ")


def load_saved_config(path: Path) -> ExperimentConfig:
    """The ``config.yaml`` of a trained model folder (old files with every section load too).

    Raises:
        ConfigError: the file is empty, not YAML, or does not describe a model of this
            version (the message says how to retrain).
    """
    path = Path(path)
    data = _read_yaml(path)
    if not data:
        raise ConfigError(f"{path} is empty: retrain that model")
    try:
        return config_from_dict(data, f"{path}: ", saved=True)
    except ConfigError as exc:
        name = path.parent.name
        raise ConfigError(
            f"{exc} -- this model folder was written by another reelrec version; retrain it "
            f"with `reelrec train CONFIG --run {path.parent.parent.parent} --name={name} "
            "--no-resume`"
        ) from None


def override(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """``cfg`` with ``--a.b=c`` overrides applied; a key of another model's section is refused.

    Raises:
        ConfigError: a malformed override, an unknown key, or a bad value.
    """
    out = apply_overrides(cfg, overrides)
    keys = [(o[2:] if o.startswith("--") else o).split("=", 1)[0] for o in overrides]
    _check_sections(out.model, keys, "")
    return out
