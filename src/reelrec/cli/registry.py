"""The one explicit name -> class table, and the experiment config that `reelrec train` reads.

Nothing is discovered by file names or reflection: a model is usable from the CLI when it has a
row in :data:`MODELS` and a section in :class:`ExperimentConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from reelrec.config import ConfigError, apply_overrides, from_yaml
from reelrec.data.ctr import CTRData, FeatureConfig
from reelrec.data.sequences import SequenceData, item_side_features
from reelrec.models.can import CAN, CANConfig
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.deepfm import DeepFM
from reelrec.models.din import DIN, DINConfig
from reelrec.models.elastic import Elastic, ElasticConfig, check_elastic_config
from reelrec.models.onerec import OneRec, OneRecConfig, check_onerec_config
from reelrec.models.popularity import Popularity, PopularityConfig
from reelrec.models.reward import PScoreModel, RewardConfig
from reelrec.models.sasrec import SASRec, SASRecConfig
from reelrec.models.segment_interest import SegmentConfig, SegmentInterest, check_segment_config
from reelrec.training.loop import TrainConfig
from reelrec.training.preference import PreferenceConfig


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
    onerec: OneRecConfig = field(default_factory=OneRecConfig)  # onerec, onerec-v2 (and tiger)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)  # can, din, deepfm
    ranking: RankingConfig = field(default_factory=RankingConfig)  # can, din, deepfm
    din: DINConfig = field(default_factory=DINConfig)  # din, can
    can: CANConfig = field(default_factory=CANConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)  # segment-interest
    reward: RewardConfig = field(default_factory=RewardConfig)  # pscore
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)  # ipa, ecpo

    @property
    def alignment_model(self) -> bool:
        """True for the preference-aligned generators (IPA, ECPO; section ``preference``)."""
        return self.model in ALIGNMENT

    @property
    def segment_model(self) -> bool:
        """True for the SegMM video-skip model (section ``segment``, dataset segmm)."""
        return self.model == "segment-interest"

    @property
    def ranking_model(self) -> bool:
        """True for the multi-task rankers (sections ``features``, ``ranking``, ``din``, ``can``)."""
        return self.model in RANKING

    @property
    def run_name(self) -> str:
        """Folder name under RUN/models."""
        return self.name or self.model

    @property
    def generative(self) -> bool:
        """True for the semantic-ID generators trained from scratch (section ``onerec``)."""
        return self.model in GENERATIVE

    @property
    def max_len(self) -> int:
        """History length the data must be cut to for this model."""
        if self.generative:
            return self.onerec.max_len
        return self.elastic.max_len if self.model == "elastic" else self.sasrec.max_len

    @property
    def window_step(self) -> int | None:
        """Training-window step (None: the default, ``max_len``)."""
        return self.onerec.window_step if self.generative else None


@dataclass(frozen=True)
class ModelEntry:
    """How to build a model and whether it is trained by gradient descent."""

    build: Callable[[ExperimentConfig, SequenceData | CTRData, Path], nn.Module]
    trainable: bool
    description: str


#: models that generate semantic IDs (configured by the ``onerec`` section)
GENERATIVE = ("onerec", "onerec-v2")
#: multi-task rankers trained on impressions (sections ``features``, ``ranking``, ``din``, ``can``)
RANKING = ("can", "din", "deepfm", "pscore")
#: preference alignment of a trained generator with a reward model (section ``preference``)
ALIGNMENT = ("ipa", "ecpo")


def semantic_ids_digest(cfg: ExperimentConfig, run_dir: Path) -> str:
    """SHA-256 of the semantic IDs a generative model reads, or of the semantic-ID / VQ-code
    files a ranking model uses as features ("" for other models or when no file exists); kept
    beside the model so a re-tokenized run is never silently reused."""
    from reelrec.io import sha256_file

    run_dir = Path(run_dir)
    if cfg.alignment_model:  # the semantic IDs of the generator it starts from
        sft = run_dir / "models" / cfg.preference.init / "config.yaml"
        return (
            semantic_ids_digest(from_yaml(ExperimentConfig, sft), run_dir) if sft.exists() else ""
        )
    if cfg.generative:
        path = run_dir / cfg.onerec.semantic_ids / "semantic_ids.parquet"
        return sha256_file(path) if path.exists() else ""
    if cfg.ranking_model:  # codes used as ranking features
        files = [
            run_dir / folder / name
            for folder, name in (
                (cfg.features.semantic_ids, "semantic_ids.parquet"),
                (cfg.features.vq_codes, "vq_codes.parquet"),
            )
            if folder
        ]
        return "+".join(sha256_file(f) for f in files if f.exists())
    return ""


def build_generative(cfg: ExperimentConfig, data: SequenceData, run_dir: Path) -> nn.Module:
    """OneRec or OneRec-V2 over the semantic IDs in ``run_dir/<onerec.semantic_ids>``.

    Raises:
        FileNotFoundError: the run has no semantic IDs (names the command that makes them).
        ValueError: a training item has no semantic ID, or IDs collide.
    """
    from reelrec.cli.common import load_prepared
    from reelrec.models.generative import SemanticIDTable
    from reelrec.models.onerec_v2 import OneRecV2
    from reelrec.tokenizer.semantic_ids import load_semantic_ids

    folder = Path(run_dir) / cfg.onerec.semantic_ids
    if not (folder / "semantic_ids.parquet").exists():
        method = " --method rq-vae" if "rq-vae" in folder.name else ""
        raise FileNotFoundError(
            f"{folder / 'semantic_ids.parquet'} not found: {cfg.run_name} generates semantic IDs "
            f"(onerec.semantic_ids={cfg.onerec.semantic_ids!r}); make them first with "
            f"`reelrec encode --run {run_dir}`, `reelrec align --run {run_dir}` and "
            f"`reelrec tokenize --run {run_dir}{method} --out {folder}`"
        )
    try:
        sid = load_semantic_ids(folder)
        table = SemanticIDTable.from_items(data.vocab.raw_ids, sid.item_ids, sid.semantic_ids)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{folder}: invalid semantic IDs ({exc})") from None
    prep = load_prepared(Path(run_dir))
    side = torch.from_numpy(item_side_features(prep.interactions, data.vocab))
    cls = OneRecV2 if cfg.model == "onerec-v2" else OneRec
    return cls(table, cfg.onerec, side)


MODELS: dict[str, ModelEntry] = {
    "popularity": ModelEntry(
        build=lambda cfg, data, run_dir: Popularity(data.train_counts),
        trainable=False,
        description="most popular items in train (no parameters)",
    ),
    "sasrec": ModelEntry(
        build=lambda cfg, data, run_dir: SASRec(data.vocab.size, cfg.sasrec),
        trainable=True,
        description="SASRec self-attentive sequential recommender (Kang & McAuley, ICDM 2018)",
    ),
    "elastic": ModelEntry(
        build=lambda cfg, data, run_dir: Elastic(data.vocab.size, cfg.elastic),
        trainable=True,
        description="ELASTIC linear dispatcher attention + interest memory (arXiv 2408.09380)",
    ),
    "onerec": ModelEntry(
        build=build_generative,
        trainable=True,
        description="OneRec encoder-decoder generating semantic IDs (arXiv 2506.13695)",
    ),
    "onerec-v2": ModelEntry(
        build=build_generative,
        trainable=True,
        description="OneRec-V2 lazy decoder-only generator of semantic IDs (arXiv 2508.20900)",
    ),
    "can": ModelEntry(
        build=lambda cfg, data, run_dir: CAN(CTRSchema.of(data), cfg.ranking, cfg.din, cfg.can),
        trainable=True,
        description="CAN co-action network, multi-task ranking (arXiv 2011.05625)",
    ),
    "din": ModelEntry(
        build=lambda cfg, data, run_dir: DIN(CTRSchema.of(data), cfg.ranking, cfg.din),
        trainable=True,
        description="DIN deep interest network, multi-task ranking (arXiv 1706.06978)",
    ),
    "segment-interest": ModelEntry(
        build=lambda cfg, data, run_dir: SegmentInterest(data.n_users, data.n_videos, cfg.segment),
        trainable=True,
        description="SegMM segment-level interest, video-skip prediction (arXiv 2504.04237)",
    ),
    "deepfm": ModelEntry(
        build=lambda cfg, data, run_dir: DeepFM(CTRSchema.of(data), cfg.ranking),
        trainable=True,
        description="DeepFM, multi-task ranking (arXiv 1703.04247)",
    ),
    "pscore": ModelEntry(
        build=lambda cfg, data, run_dir: PScoreModel(CTRSchema.of(data), cfg.ranking, cfg.reward),
        trainable=True,
        description="OneRec reward model: objective towers + P-Score head (arXiv 2506.13695)",
    ),
    "ipa": ModelEntry(
        build=lambda cfg, data, run_dir: None,  # built from the SFT generator (cli/align_train)
        trainable=True,
        description="OneRec Iterative Preference Alignment (DPO) of a trained generator "
        "(arXiv 2502.18965)",
    ),
    "ecpo": ModelEntry(
        build=lambda cfg, data, run_dir: None,  # built from the SFT generator (cli/align_train)
        trainable=True,
        description="OneRec ECPO reinforcement learning of a trained generator (arXiv 2506.13695)",
    ),
}

#: optimisation shared by the ranking presets: Adam 1e-3, batches of 512 impressions, early
#: stopping on the mean validation AUC over the binary tasks (KuaiRand overfits after 3-6 epochs)
_RANK_TRAIN = TrainConfig(lr=1e-3, batch_size=512, epochs=30, patience=3, metric="auc")

#: optimisation shared by the generative presets: AdamW, 500 warmup steps, cosine decay
_GEN_TRAIN = TrainConfig(
    optimizer="adamw",
    lr=2e-3,
    weight_decay=0.01,
    warmup_steps=500,
    schedule="cosine",
    epochs=30,
    patience=5,
    batch_size=256,
    grad_clip=1.0,
)

#: optimisation shared by the alignment presets (a short fine-tuning of the SFT generator)
_ALIGN_TRAIN = TrainConfig(
    optimizer="adamw",
    lr=1e-4,
    epochs=4,
    patience=2,
    batch_size=128,
    grad_clip=1.0,
    metric="pscore_mean@10",
    mfu=False,  # the FLOP count would run generation and reward scoring once more
)

#: Named presets for `reelrec train NAME`; tuned values say where they were chosen.
PRESETS: dict[str, ExperimentConfig] = {
    "popularity": ExperimentConfig(model="popularity"),
    "sasrec": ExperimentConfig(model="sasrec"),
    # KuaiRand liked-video sequences are short and sparse (1,563 train items, ~37 likes per user):
    # the RecBole defaults (lr 1e-3, dropout 0.5) barely move in 10 epochs; lr 5e-3 with dropout
    # 0.2 was picked on validation NDCG@10. Validation NDCG@10 (2,885 targets, ~40 hits) is
    # noisy and plateaus between epochs 5 and 20 before rising again, so patience is 25.
    "sasrec-kuairand": ExperimentConfig(
        model="sasrec",
        train=TrainConfig(lr=5e-3, epochs=100, patience=25, max_minutes=6.0),
        sasrec=SASRecConfig(dropout=0.2, attn_dropout=0.2),
    ),
    # ELASTIC with SASRec's RecBole defaults (width 64, 2 blocks, dropout 0.5, CE over all items)
    "elastic": ExperimentConfig(model="elastic"),
    "onerec": ExperimentConfig(model="onerec", train=replace(_GEN_TRAIN)),
    "onerec-v2": ExperimentConfig(model="onerec-v2", train=replace(_GEN_TRAIN)),
    # TIGER (arXiv 2305.05065) as a baseline: RQ-VAE semantic IDs, the last 20 items as one flat
    # sequence of code tokens, dense feed-forward layers, no pathways
    # the target video and its duration bucket each drive a micro-MLP over the history videos
    "can": ExperimentConfig(
        model="can",
        train=replace(_RANK_TRAIN),
        can=CANConfig(pairs=["video_id:hist_video", "duration:hist_video"]),
    ),
    "din": ExperimentConfig(model="din", train=replace(_RANK_TRAIN)),
    "deepfm": ExperimentConfig(model="deepfm", train=replace(_RANK_TRAIN)),
    # the reward model: objective towers of 64 with a P-Score head, early stopping on the mean
    # validation AUC of the towers
    "pscore": ExperimentConfig(
        model="pscore", train=replace(_RANK_TRAIN), ranking=RankingConfig(tower=[64])
    ),
    # preference alignment of RUN/models/onerec with RUN/models/pscore: small constant lr,
    # no dropout (the policy ratios compare the same network), early stopping on the validation
    # P-Score of the generated top 10
    "ipa": ExperimentConfig(model="ipa", train=replace(_ALIGN_TRAIN)),
    # ECPO's loss weight 0.05 beside the next-token loss: at 1.0 the unconstrained legal-ID
    # rate of the KuaiRand OneRec fell from 0.96 to 0.24 in one epoch; 0.1 held 0.988 after 2
    # epochs, 0.02 reached 0.9998 (docs/alignment.md)
    "ecpo": ExperimentConfig(
        model="ecpo", train=replace(_ALIGN_TRAIN), preference=PreferenceConfig(weight=0.05)
    ),
    # SegMM video-skip prediction on the segmm sample; early stopping on validation NDCG@5
    "segment-interest": ExperimentConfig(
        model="segment-interest",
        data=DataSection(dataset="segmm"),
        train=TrainConfig(epochs=60, patience=5, metric="ndcg@5", batch_size=128),
    ),
    "tiger": ExperimentConfig(
        model="onerec",
        name="tiger",
        train=replace(_GEN_TRAIN),
        onerec=OneRecConfig(
            semantic_ids="tokenizer-rq-vae",
            item_tokens="flat",
            positive_len=0,
            lifelong_clusters=0,
            experts=0,
        ),
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
    validate(cfg)
    return cfg


def _check(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


def validate(cfg: ExperimentConfig) -> None:
    """Check every value against its documented range before anything is built or written.

    Raises:
        ConfigError: naming the first invalid key, its rule and its value.
    """
    import math
    import re

    if cfg.model not in MODELS:
        raise ConfigError(f"model: unknown {cfg.model!r}; known: {', '.join(MODELS)}")
    _check(
        cfg.name == "" or re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", cfg.name) is not None,
        "name",
        "a plain folder name (letters, digits, . _ -)",
        cfg.name,
    )
    t, e, m = cfg.train, cfg.eval, cfg.sasrec
    _check(t.epochs >= 1, "train.epochs", ">= 1", t.epochs)
    _check(t.batch_size >= 1, "train.batch_size", ">= 1", t.batch_size)
    _check(math.isfinite(t.lr) and t.lr > 0, "train.lr", "a finite number > 0", t.lr)
    _check(
        math.isfinite(t.weight_decay) and t.weight_decay >= 0,
        "train.weight_decay",
        ">= 0",
        t.weight_decay,
    )
    _check(math.isfinite(t.grad_clip) and t.grad_clip >= 0, "train.grad_clip", ">= 0", t.grad_clip)
    _check(t.patience >= 1, "train.patience", ">= 1", t.patience)
    _check(
        math.isfinite(t.max_minutes) and t.max_minutes >= 0,
        "train.max_minutes",
        ">= 0",
        t.max_minutes,
    )
    _check(t.threads >= 0, "train.threads", ">= 0", t.threads)
    _check(t.eval_batch_size >= 1, "train.eval_batch_size", ">= 1", t.eval_batch_size)
    _check(t.strategy in ("ddp", "fsdp"), "train.strategy", "'ddp' or 'fsdp'", t.strategy)
    _check(t.grad_accum >= 1, "train.grad_accum", ">= 1", t.grad_accum)
    _check(
        len(e.ks) > 0 and all(k >= 1 for k in e.ks),
        "eval.ks",
        "a non-empty list of cutoffs >= 1",
        e.ks,
    )
    _check(e.batch_size >= 1, "eval.batch_size", ">= 1", e.batch_size)
    if cfg.ranking_model:
        _check_ranking(cfg)
        return
    if cfg.alignment_model:
        _check_alignment(cfg)
        return
    if cfg.segment_model:
        skip_metrics = [f"{m}@{k}" for m in ("hr", "ndcg") for k in (1, 5, 10)]
        _check(
            cfg.data.dataset == "segmm",
            "data.dataset",
            "segmm for segment-interest",
            cfg.data.dataset,
        )
        _check(
            t.metric in skip_metrics, "train.metric", f"one of {', '.join(skip_metrics)}", t.metric
        )
        try:
            check_segment_config(cfg.segment)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return
    metric = re.fullmatch(r"(recall|hr|ndcg|mrr)@(\d+)|mrr", t.metric)
    _check(
        metric is not None, "train.metric", "one of recall@K, hr@K, ndcg@K, mrr@K, mrr", t.metric
    )
    if metric is not None and metric.group(2) is not None:
        _check(
            int(metric.group(2)) in e.ks,
            "train.metric",
            f"at a cutoff listed in eval.ks {e.ks}",
            t.metric,
        )
    _check(10 in e.ks, "eval.ks", "a list that includes 10 (reports show recall@10, ndcg@10)", e.ks)
    for section, m in (("sasrec", cfg.sasrec), ("elastic", cfg.elastic)):
        _check_sequence_model(section, m)
    try:
        check_elastic_config(cfg.elastic)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check(t.optimizer in ("adam", "adamw"), "train.optimizer", "'adam' or 'adamw'", t.optimizer)
    _check(t.warmup_steps >= 0, "train.warmup_steps", ">= 0", t.warmup_steps)
    _check(
        t.schedule in ("constant", "cosine"), "train.schedule", "'constant' or 'cosine'", t.schedule
    )
    try:
        check_onerec_config(cfg.onerec)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.generative:
        _check(
            t.metric != "mrr",
            "train.metric",
            "a metric at a cutoff for generative models (ranks beyond the beam are unknown)",
            t.metric,
        )
        _check(
            max(e.ks) <= cfg.onerec.beam,
            "onerec.beam",
            f">= the largest cutoff of eval.ks {e.ks} (the beam's items are the ranking)",
            cfg.onerec.beam,
        )


#: validation metrics of the alignment presets (eval/alignment.py, per user and day)
ALIGNMENT_METRICS = ("pscore_mean@10", "pscore_max@10", "recall@10", "ndcg@10")


def _check_alignment(cfg: ExperimentConfig) -> None:
    """Check the section of the alignment presets (ipa, ecpo)."""
    import re

    from reelrec.training.preference import check_preference_config

    _check(
        cfg.data.dataset == "kuairand",
        "data.dataset",
        "kuairand for ipa / ecpo (the reward model needs logged feedback labels)",
        cfg.data.dataset,
    )
    t = cfg.train
    _check(
        t.metric in ALIGNMENT_METRICS,
        "train.metric",
        f"one of {', '.join(ALIGNMENT_METRICS)}",
        t.metric,
    )
    _check(t.optimizer in ("adam", "adamw"), "train.optimizer", "'adam' or 'adamw'", t.optimizer)
    _check(t.warmup_steps >= 0, "train.warmup_steps", ">= 0", t.warmup_steps)
    _check(
        t.schedule in ("constant", "cosine"), "train.schedule", "'constant' or 'cosine'", t.schedule
    )
    p = cfg.preference
    for key in ("init", "reward"):
        name = getattr(p, key)
        _check(
            re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name) is not None,
            f"preference.{key}",
            "a model folder name under RUN/models",
            name,
        )
    for key in ("init", "reward"):  # the run must not overwrite the models it reads
        _check(
            getattr(p, key) != cfg.run_name,
            f"preference.{key}",
            f"another model than the one being trained (--name={cfg.run_name})",
            getattr(p, key),
        )
    try:
        check_preference_config(p)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_ranking(cfg: ExperimentConfig) -> None:
    """Check the sections of the multi-task rankers."""
    import math

    from reelrec.data.ctr import KUAIRAND_TASKS

    r, f, c, t = cfg.ranking, cfg.features, cfg.can, cfg.train
    _check(
        cfg.data.dataset == "kuairand",
        "data.dataset",
        "kuairand for the ranking models (the other datasets of `reelrec datasets` have no "
        "logged impressions with feedback labels; bench/ranking.py also runs the Taobao, Criteo "
        "and Avazu samples)",
        cfg.data.dataset,
    )
    weights = r.task_weights or [1.0] * len(r.tasks)
    binary = [x for x, w in zip(r.tasks, weights, strict=False) if x != "watch_ratio" and w > 0]
    metrics = ("auc", "gauc", *(f"{x}/{m}" for x in binary for m in ("auc", "gauc")))
    _check(
        len(binary) > 0,
        "ranking.tasks",
        "a list with at least one binary task of loss weight > 0 (early stopping uses AUC)",
        r.tasks,
    )
    _check(t.metric in metrics, "train.metric", f"one of {', '.join(metrics)}", t.metric)
    _check(r.embed_dim >= 1, "ranking.embed_dim", ">= 1", r.embed_dim)
    _check(len(r.mlp) > 0 and min(r.mlp) >= 1, "ranking.mlp", "widths >= 1", r.mlp)
    _check(0 <= r.dropout < 1, "ranking.dropout", "in [0, 1)", r.dropout)
    _check(all(w >= 1 for w in r.tower), "ranking.tower", "widths >= 1 (or [])", r.tower)
    unknown = [x for x in r.tasks if x not in KUAIRAND_TASKS]
    _check(
        len(r.tasks) > 0 and not unknown and len(set(r.tasks)) == len(r.tasks),
        "ranking.tasks",
        f"distinct names from {list(KUAIRAND_TASKS)}",
        r.tasks,
    )
    _check(
        r.task_weights == [] or len(r.task_weights) == len(r.tasks),
        "ranking.task_weights",
        f"[] or one weight per task ({len(r.tasks)})",
        r.task_weights,
    )
    _check(
        all(math.isfinite(w) and w >= 0 for w in r.task_weights)
        and (sum(r.task_weights) > 0 or not r.task_weights),
        "ranking.task_weights",
        "finite weights >= 0, not all 0",
        r.task_weights,
    )
    _check(r.watch_ratio_clip > 0, "ranking.watch_ratio_clip", "> 0", r.watch_ratio_clip)
    _check(1 <= f.max_history <= 1000, "features.max_history", "in 1..1000", f.max_history)
    _check(f.min_count >= 1, "features.min_count", ">= 1", f.min_count)
    for key, folder in (
        ("features.semantic_ids", f.semantic_ids),
        ("features.vq_codes", f.vq_codes),
    ):
        _check(
            folder == "" or (not Path(folder).is_absolute() and ".." not in Path(folder).parts),
            key,
            '"" or a folder inside the run (no absolute path, no ..)',
            folder,
        )
    _check(
        len(f.history_labels) > 0 and all(x in KUAIRAND_TASKS[:-1] for x in f.history_labels),
        "features.history_labels",
        f"a non-empty list of {list(KUAIRAND_TASKS[:-1])}",
        f.history_labels,
    )
    _check(
        len(cfg.din.attention_mlp) > 0 and min(cfg.din.attention_mlp) >= 1,
        "din.attention_mlp",
        "widths >= 1",
        cfg.din.attention_mlp,
    )
    _check(c.orders >= 1, "can.orders", ">= 1", c.orders)
    _check(len(c.layers) > 0 and min(c.layers) >= 1, "can.layers", "widths >= 1", c.layers)
    _check(c.feed_dim >= 1, "can.feed_dim", ">= 1", c.feed_dim)
    _check(c.activation in ("tanh", "none"), "can.activation", "'tanh' or 'none'", c.activation)
    _check(c.pooling in ("sum", "mean"), "can.pooling", "'sum' or 'mean'", c.pooling)
    _check(
        math.isfinite(c.feed_init_std) and c.feed_init_std > 0,
        "can.feed_init_std",
        "a finite number > 0",
        c.feed_init_std,
    )
    _check(all(p.count(":") == 1 for p in c.pairs), "can.pairs", "a list of 'field:feed'", c.pairs)
    if cfg.model == "pscore":
        w = cfg.reward
        _check(len(r.tower) > 0, "ranking.tower", "a non-empty list for pscore", r.tower)
        _check(
            len(w.pscore_mlp) > 0 and min(w.pscore_mlp) >= 1,
            "reward.pscore_mlp",
            "widths >= 1",
            w.pscore_mlp,
        )
        _check(
            w.pscore_weights == []
            or (
                len(w.pscore_weights) == len(r.tasks)
                and all(math.isfinite(x) and x >= 0 for x in w.pscore_weights)
                and sum(w.pscore_weights) > 0
            ),
            "reward.pscore_weights",
            f"[] or one finite weight >= 0 per task ({len(r.tasks)}), not all 0",
            w.pscore_weights,
        )
        _check(
            w.pscore_weights == [] or all(x == 0 or 1e-6 <= x <= 1e6 for x in w.pscore_weights),
            "reward.pscore_weights",
            "weights of 0 or in [1e-6, 1e6]",
            w.pscore_weights,
        )
        _check(
            math.isfinite(w.pscore_loss_weight) and 0 <= w.pscore_loss_weight <= 100,
            "reward.pscore_loss_weight",
            "in [0, 100] (0 leaves the P-Score head untrained: towers only)",
            w.pscore_loss_weight,
        )


def _check_sequence_model(s: str, m: SASRecConfig) -> None:
    """Check a SASRec-style section (``sasrec`` or ``elastic``) named ``s``."""
    _check(m.max_len >= 1, f"{s}.max_len", ">= 1", m.max_len)
    _check(m.hidden >= 1, f"{s}.hidden", ">= 1", m.hidden)
    _check(m.heads >= 1, f"{s}.heads", ">= 1", m.heads)
    _check(
        m.hidden % max(m.heads, 1) == 0,
        f"{s}.hidden",
        f"divisible by {s}.heads={m.heads}",
        m.hidden,
    )
    _check(m.layers >= 1, f"{s}.layers", ">= 1", m.layers)
    _check(m.inner >= 1, f"{s}.inner", ">= 1", m.inner)
    _check(0 <= m.dropout < 1, f"{s}.dropout", "in [0, 1)", m.dropout)
    _check(0 <= m.attn_dropout < 1, f"{s}.attn_dropout", "in [0, 1)", m.attn_dropout)
    _check(m.layer_norm_eps > 0, f"{s}.layer_norm_eps", "> 0", m.layer_norm_eps)
    _check(m.init_std > 0, f"{s}.init_std", "> 0", m.init_std)
    _check(m.loss in ("ce", "bce"), f"{s}.loss", "'ce' or 'bce'", m.loss)


def used_sections(cfg: ExperimentConfig) -> set[str]:
    """Top-level config sections that ``cfg.model`` reads (a change elsewhere cannot change
    what it trained, so it does not block a resume)."""
    own = {
        "sasrec": {"sasrec"},
        "elastic": {"elastic"},
        "popularity": {"popularity"},
        "onerec": {"onerec"},
        "onerec-v2": {"onerec"},
        "deepfm": {"features", "ranking"},
        "din": {"features", "ranking", "din"},
        "can": {"features", "ranking", "din", "can"},
        "segment-interest": {"segment"},
        "pscore": {"features", "ranking", "reward"},
        "ipa": {"preference"},
        "ecpo": {"preference"},
    }
    return {"model", "name", "data", "train", "eval", *own.get(cfg.model, set())}


#: keys that may change when a run resumes (they do not change what was trained so far)
RESUMABLE_CHANGES = (
    "train.epochs",
    "train.max_minutes",
    "train.progress",
    "train.threads",
    "train.patience",
    "train.eval_batch_size",
    "train.mfu",
    "train.compile",
    "train.strategy",
)
