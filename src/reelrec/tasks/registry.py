"""The one explicit model table (name -> task, config sections, builder) and the presets.

Nothing is discovered by file names or reflection: a model exists when it has a row in
:data:`MODELS`. Adding a model of an existing family is its model file, one row here and one
preset.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reelrec.config import ConfigError
from reelrec.data.ctr import FeatureConfig
from reelrec.models.can import CAN, CANConfig
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.deepfm import DeepFM
from reelrec.models.din import DIN, DINConfig
from reelrec.models.elastic import Elastic, ElasticConfig
from reelrec.models.gru4rec import GRU4Rec, GRU4RecConfig
from reelrec.models.multitask import EmbeddingMLP
from reelrec.models.onerec import OneRecConfig
from reelrec.models.popularity import Popularity, PopularityConfig
from reelrec.models.reward import PScoreModel, RewardConfig
from reelrec.models.sasrec import SASRec, SASRecConfig
from reelrec.models.segment_interest import SegmentConfig, SegmentInterest
from reelrec.tasks.alignment import AlignmentTask
from reelrec.tasks.base import ModelEntry, Task, check_folder_name
from reelrec.tasks.config import (
    DataSection,
    experiment_config_class,
    load_config_file,
    override,
)
from reelrec.tasks.ranking import RankingTask
from reelrec.tasks.retrieval import GenerativeTask, RetrievalTask, build_generative
from reelrec.tasks.segment import SegmentTask
from reelrec.training.loop import TrainConfig
from reelrec.training.preference import PreferenceConfig

#: one instance per family
RETRIEVAL, GENERATIVE, RANKING = RetrievalTask(), GenerativeTask(), RankingTask()
SEGMENT, ALIGNMENT = SegmentTask(), AlignmentTask()
TASKS: tuple[Task, ...] = (RETRIEVAL, GENERATIVE, ALIGNMENT, RANKING, SEGMENT)

#: every model section: its name in configs (``--<name>.key=value``) -> its config class
SECTIONS: dict[str, type] = {
    "sasrec": SASRecConfig,
    "popularity": PopularityConfig,
    "onerec": OneRecConfig,  # onerec, onerec-v2 (and tiger); the generator of ipa / ecpo
    "elastic": ElasticConfig,
    "gru4rec": GRU4RecConfig,
    "features": FeatureConfig,  # can, din, deepfm, mmoe, ple, pscore
    "ranking": RankingConfig,  # can, din, deepfm, mmoe, ple, pscore
    "din": DINConfig,  # din, can
    "can": CANConfig,
    "segment": SegmentConfig,  # segment-interest
    "reward": RewardConfig,  # pscore
    "preference": PreferenceConfig,  # ipa, ecpo
}

#: the experiment config: data, train, eval and every section above (a model uses its own)
ExperimentConfig = experiment_config_class(SECTIONS)

MODELS: dict[str, ModelEntry] = {
    "popularity": ModelEntry(
        RETRIEVAL,
        ("popularity",),
        lambda cfg, data, run: Popularity(data.train_counts),
        "most popular items in train (no parameters)",
        trainable=False,
    ),
    "sasrec": ModelEntry(
        RETRIEVAL,
        ("sasrec",),
        lambda cfg, data, run: SASRec(data.vocab.size, cfg.sasrec),
        "SASRec self-attentive sequential recommender (Kang & McAuley, ICDM 2018)",
    ),
    "elastic": ModelEntry(
        RETRIEVAL,
        ("elastic",),
        lambda cfg, data, run: Elastic(data.vocab.size, cfg.elastic),
        "ELASTIC linear dispatcher attention + interest memory (arXiv 2408.09380)",
    ),
    "gru4rec": ModelEntry(
        RETRIEVAL,
        ("gru4rec",),
        lambda cfg, data, run: GRU4Rec(data.vocab.size, cfg.gru4rec),
        "GRU4Rec recurrent sequential recommender (Hidasi et al., ICLR 2016)",
    ),
    "onerec": ModelEntry(
        GENERATIVE,
        ("onerec",),
        build_generative,
        "OneRec encoder-decoder generating semantic IDs (arXiv 2506.13695)",
    ),
    "onerec-v2": ModelEntry(
        GENERATIVE,
        ("onerec",),
        build_generative,
        "OneRec-V2 lazy decoder-only generator of semantic IDs (arXiv 2508.20900)",
    ),
    "can": ModelEntry(
        RANKING,
        ("features", "ranking", "din", "can"),
        lambda cfg, data, run: CAN(CTRSchema.of(data), cfg.ranking, cfg.din, cfg.can),
        "CAN co-action network, multi-task ranking (arXiv 2011.05625)",
    ),
    "din": ModelEntry(
        RANKING,
        ("features", "ranking", "din"),
        lambda cfg, data, run: DIN(CTRSchema.of(data), cfg.ranking, cfg.din),
        "DIN deep interest network, multi-task ranking (arXiv 1706.06978)",
    ),
    "deepfm": ModelEntry(
        RANKING,
        ("features", "ranking"),
        lambda cfg, data, run: DeepFM(CTRSchema.of(data), cfg.ranking),
        "DeepFM, multi-task ranking (arXiv 1703.04247)",
    ),
    # mmoe and ple: one ranker (field embeddings concatenated) whose ranking.multitask the row
    # fixes; deepfm, din and can take any structure with --ranking.multitask
    "mmoe": ModelEntry(
        RANKING,
        ("features", "ranking"),
        lambda cfg, data, run: EmbeddingMLP(CTRSchema.of(data), cfg.ranking),
        "MMoE multi-gate mixture of experts over the field embeddings, multi-task ranking "
        "(Ma et al., KDD 2018)",
        fixed=(("ranking.multitask", "mmoe"),),
    ),
    "ple": ModelEntry(
        RANKING,
        ("features", "ranking"),
        lambda cfg, data, run: EmbeddingMLP(CTRSchema.of(data), cfg.ranking),
        "PLE progressive layered extraction over the field embeddings, multi-task ranking "
        "(Tang et al., RecSys 2020)",
        fixed=(("ranking.multitask", "ple"),),
    ),
    "pscore": ModelEntry(
        RANKING,
        ("features", "ranking", "reward"),
        lambda cfg, data, run: PScoreModel(CTRSchema.of(data), cfg.ranking, cfg.reward),
        "OneRec reward model: objective towers + P-Score head (arXiv 2506.13695)",
        fixed=(("ranking.multitask", "shared_bottom"),),  # its towers read u, v and c
    ),
    "segment-interest": ModelEntry(
        SEGMENT,
        ("segment",),
        lambda cfg, data, run: SegmentInterest(data.n_users, data.n_videos, cfg.segment),
        "SegMM segment-level interest, video-skip prediction (arXiv 2504.04237)",
    ),
    "ipa": ModelEntry(
        ALIGNMENT,
        ("onerec", "preference"),
        lambda cfg, data, run: ALIGNMENT.load(cfg, run)[0],
        "OneRec Iterative Preference Alignment (DPO) of a trained generator (arXiv 2502.18965)",
    ),
    "ecpo": ModelEntry(
        ALIGNMENT,
        ("onerec", "preference"),
        lambda cfg, data, run: ALIGNMENT.load(cfg, run)[0],
        "OneRec ECPO reinforcement learning of a trained generator (arXiv 2506.13695)",
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

#: the generative presets with the causal context (every window position a target)
_CAUSAL_TRAIN = replace(_GEN_TRAIN, batch_size=128, warmup_steps=200)

#: optimisation shared by the alignment presets (a short fine-tuning of the SFT generator)
_ALIGN_TRAIN = TrainConfig(
    optimizer="adamw",
    lr=1e-4,
    epochs=4,
    patience=2,
    batch_size=128,
    grad_clip=1.0,
    metric="pscore_mean@10",
    mfu=False,  # beam generation and reward scoring dominate a step: MFU would mislead here
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
    # GRU4Rec with RecBole's defaults (embedding 64, GRU 128, dropout 0.3, CE over all items)
    "gru4rec": ExperimentConfig(model="gru4rec"),
    # OneRec with the causal context: every position of a window is a target in one pass, so
    # a step holds ~8x the targets of a one-target step (Beauty): 128 windows per step and a
    # 200-step warmup; early stopping on the exact validation NDCG@10 of 5,000 users
    "onerec": ExperimentConfig(
        model="onerec", train=replace(_CAUSAL_TRAIN), onerec=OneRecConfig(context="causal")
    ),
    # OneRec-V2 with OneRec's pathways, one target per training prefix: on Beauty it beat the
    # causal context on both protocols (test NDCG@10 0.0387 vs 0.0258 unmasked) and reached
    # the causal run's best validation score in about the same seconds, though a causal epoch
    # costs 2.1x less (docs/results.md); --onerec.context=causal with --train.batch_size=128
    # --train.warmup_steps=200 gives the causal variant
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
    # MMoE (4 experts) and PLE (2 levels of 4 shared and 1 per-task expert), experts of the
    # ranking.mlp widths, untuned
    "mmoe": ExperimentConfig(
        model="mmoe", train=replace(_RANK_TRAIN), ranking=RankingConfig(multitask="mmoe")
    ),
    "ple": ExperimentConfig(
        model="ple", train=replace(_RANK_TRAIN), ranking=RankingConfig(multitask="ple")
    ),
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
    # TIGER's size (arXiv 2305.05065 section 4.1: 4 encoder + 4 decoder layers, 6 heads of 64
    # at width 128, feed-forward 1024, dropout 0.1; 4.6M parameters here) over one code token
    # per semantic-ID code, causal context; TIGER's hashed user token is not implemented
    "tiger": ExperimentConfig(
        model="onerec",
        name="tiger",
        train=replace(_CAUSAL_TRAIN),
        onerec=OneRecConfig(
            semantic_ids="tokenizer-rq-vae",
            item_tokens="flat",
            context="causal",
            positive_len=0,
            lifelong_clusters=0,
            experts=0,
            hidden=128,
            heads=6,
            kv_heads=6,
            head_dim=64,
            encoder_layers=4,
            decoder_layers=4,
            inner=1024,
        ),
    ),
}


def task_of(cfg: ExperimentConfig) -> Task:
    """The family of ``cfg.model``.

    Raises:
        ConfigError: an unknown model.
    """
    if cfg.model not in MODELS:
        raise ConfigError(f"model: unknown {cfg.model!r}; known: {', '.join(MODELS)}")
    return MODELS[cfg.model].task


def resolve_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """A preset name or a YAML path, with ``--a.b=c`` overrides applied, validated.

    Raises:
        ConfigError: unknown preset/file, unknown keys (including another model's section),
            bad values or an unknown model.
    """
    if spec in PRESETS:
        cfg = replace(PRESETS[spec])
    elif Path(spec).suffix in (".yaml", ".yml"):
        cfg = load_config_file(Path(spec))
    else:
        raise ConfigError(
            f"unknown config {spec!r}: give a preset ({', '.join(PRESETS)}) or a .yaml file"
        )
    cfg = override(cfg, list(overrides))
    validate(cfg)
    return cfg


def validate(cfg: ExperimentConfig) -> None:
    """Check each section the model reads (its ``validate()``), then the rules of the model's
    family that span sections (``task.validate``), before anything is built or written.

    Raises:
        ConfigError: naming the first invalid key, its rule and its value.
    """
    task = task_of(cfg)
    if cfg.name:
        check_folder_name("name", cfg.name)
    own = MODELS[cfg.model].sections
    for section in ("data", "train", "eval", *own):
        getattr(cfg, section).validate(section)  # each section's own ranges
    for key, value in MODELS[cfg.model].fixed:
        section, name = key.split(".")
        got = getattr(getattr(cfg, section), name)
        if got != value:
            raise ConfigError(
                f"{key} must be {value!r} for model {cfg.model!r} (the model fixes it), got {got!r}"
            )
    for section, cls in SECTIONS.items():  # e.g. a YAML's sasrec section under --model=gru4rec
        if section not in own and getattr(cfg, section) != cls():
            raise ConfigError(
                f"{section}: set, but model {cfg.model!r} does not read it (its sections: "
                f"{', '.join(('data', 'train', 'eval', *own))})"
            )
    task.validate(cfg)


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
    "eval.batch_size",
)
