"""The one explicit name -> class table, and the experiment config that `reelrec train` reads.

Nothing is discovered by file names or reflection: a model is usable from the CLI when it has a
row in :data:`MODELS` and a section in :class:`ExperimentConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from reelrec.config import ConfigError, apply_overrides, from_yaml
from reelrec.data.sequences import SequenceData
from reelrec.models.popularity import Popularity, PopularityConfig
from reelrec.models.sasrec import SASRec, SASRecConfig
from reelrec.training.loop import TrainConfig


@dataclass
class DataSection:
    """Which data a run uses."""

    dataset: str = "kuairand"  # dataset name (`reelrec datasets` lists them)
    protocol: str = ""  # evaluation protocol; "" = the dataset's default
    data_dir: str = ""  # data root; "" = $REELREC_DATA_DIR, else ~/.cache/reelrec


@dataclass
class EvalConfig:
    """Full-ranking evaluation settings."""

    ks: list[int] = field(default_factory=lambda: [5, 10, 20])  # cutoffs K for @K metrics
    batch_size: int = 1024  # instances scored at once


@dataclass
class ExperimentConfig:
    """Everything `reelrec train` needs; saved as RUN/models/NAME/config.yaml."""

    model: str = "sasrec"  # a key of MODELS
    name: str = ""  # run sub-folder under RUN/models; "" = the model name
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    popularity: PopularityConfig = field(default_factory=PopularityConfig)

    @property
    def run_name(self) -> str:
        """Folder name under RUN/models."""
        return self.name or self.model

    @property
    def max_len(self) -> int:
        """History length the data must be cut to for this model."""
        return self.sasrec.max_len


@dataclass(frozen=True)
class ModelEntry:
    """How to build a model and whether it is trained by gradient descent."""

    build: Callable[[ExperimentConfig, SequenceData], nn.Module]
    trainable: bool
    description: str


MODELS: dict[str, ModelEntry] = {
    "popularity": ModelEntry(
        build=lambda cfg, data: Popularity(data.train_counts),
        trainable=False,
        description="most popular items in train (no parameters)",
    ),
    "sasrec": ModelEntry(
        build=lambda cfg, data: SASRec(data.vocab.size, cfg.sasrec),
        trainable=True,
        description="SASRec self-attentive sequential recommender (Kang & McAuley, ICDM 2018)",
    ),
}

#: Named presets for `reelrec train NAME`; tuned values say where they were chosen.
PRESETS: dict[str, ExperimentConfig] = {
    "popularity": ExperimentConfig(model="popularity"),
    "sasrec": ExperimentConfig(model="sasrec"),
    # KuaiRand liked-video sequences are short and sparse (1,563 train items, ~37 likes per user):
    # the RecBole defaults (lr 1e-3, dropout 0.5) barely move in 10 epochs; lr 5e-3 with dropout
    # 0.2 was picked on validation NDCG@10 (README "Results").
    "sasrec-kuairand": ExperimentConfig(
        model="sasrec",
        train=TrainConfig(lr=5e-3, epochs=100, patience=10, max_minutes=6.0),
        sasrec=SASRecConfig(dropout=0.2, attn_dropout=0.2),
    ),
}


def resolve_config(spec: str, overrides: list[str]) -> ExperimentConfig:
    """A preset name or a YAML path, with ``--a.b=c`` overrides applied.

    Raises:
        ConfigError: unknown preset/file, unknown keys, bad values or an unknown model.
    """
    if spec in PRESETS:
        cfg = replace(PRESETS[spec])
    elif Path(spec).suffix in (".yaml", ".yml"):
        if not Path(spec).exists():
            raise ConfigError(f"{spec}: config file not found")
        cfg = from_yaml(ExperimentConfig, spec)
    else:
        raise ConfigError(
            f"unknown config {spec!r}: give a preset ({', '.join(PRESETS)}) or a .yaml file"
        )
    cfg = apply_overrides(cfg, overrides)
    if cfg.model not in MODELS:
        raise ConfigError(f"model: unknown {cfg.model!r}; known: {', '.join(MODELS)}")
    return cfg
