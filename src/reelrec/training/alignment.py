"""What the two alignment methods share: IPA/DPO (:mod:`reelrec.training.preference`) and
ECPO (:mod:`reelrec.training.rl`) both import from here, and neither imports the other's
internals back (``preference`` -> ``rl`` -> ``alignment``: no import cycle).

The alignment term itself, what the policy's ``loss`` scores, is a model-side type:
:class:`reelrec.models.base.AlignmentTerm` inside an :class:`reelrec.models.base.AlignmentBatch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reelrec.config import check_section


@dataclass
class PreferenceConfig:
    """Settings of the alignment presets ``ipa`` and ``ecpo`` (section ``preference``)."""

    init: str = "onerec"  # RUN/models/<init>: the trained generator (onerec, onerec-v2, tiger)
    reward: str = "pscore"  # RUN/models/<reward>: the trained reward model (preset pscore)
    fraction: float = 0.25  # share of each batch's samples that get generated candidates,
    # in (0, 1] (IPA's r_DPO)
    candidates: int = 8  # IPA: N beam-search candidates per sample; ECPO: group size G (>= 2)
    beta: float = 0.1  # DPO temperature beta (> 0)
    weight: float = 1.0  # weight of the DPO / ECPO loss beside the next-token loss (> 0)
    ntp_weight: float = 1.0  # weight of the next-token loss (>= 0; 0 = alignment loss only)
    clip: float = 0.2  # ECPO: PPO clipping range epsilon (> 0)
    delta: float = 0.1  # ECPO: early clipping of negative advantages at ratio 1 + clip + delta
    # (> 0)
    refresh_steps: int = 4  # ECPO: the old policy that samples groups is refreshed every
    # this many optimizer steps (>= 1; 1 = fully on-policy, the ratio is 1 at every step;
    # with train.grad_accum > 1 it counts micro-batches)
    dropout: float = 0.0  # dropout of the policy during alignment, in [0, 1)
    illegal: str = "drop"  # ECPO outputs that are no item: "drop" (no update, the report's
    # format handling) or "penalize" (reward 0, the lowest P-Score; an ablation)

    def validate(self, section: str = "preference") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key.
        """
        check_section(check_preference_config, self)


def check_preference_config(cfg: PreferenceConfig) -> None:
    """Raise ValueError naming the first invalid ``preference.*`` value."""
    rules = [
        (cfg.init.strip() != "", "init", "a model folder name"),
        (cfg.reward.strip() != "", "reward", "a model folder name"),
        (0 < cfg.fraction <= 1, "fraction", "in (0, 1]"),
        (2 <= cfg.candidates <= 1024, "candidates", "in 2..1024 (a pair or a group)"),
        (math.isfinite(cfg.beta) and 0 < cfg.beta <= 100, "beta", "in (0, 100]"),
        (math.isfinite(cfg.weight) and 0 < cfg.weight <= 100, "weight", "in (0, 100]"),
        (math.isfinite(cfg.ntp_weight) and 0 <= cfg.ntp_weight <= 100, "ntp_weight", "in [0, 100]"),
        (math.isfinite(cfg.clip) and 0 < cfg.clip <= 10, "clip", "in (0, 10]"),
        (math.isfinite(cfg.delta) and 0 < cfg.delta <= 10, "delta", "in (0, 10]"),
        (cfg.refresh_steps >= 1, "refresh_steps", ">= 1"),
        (0 <= cfg.dropout < 1, "dropout", "in [0, 1)"),
        (cfg.illegal in ("drop", "penalize"), "illegal", "'drop' or 'penalize'"),
    ]
    for ok, key, rule in rules:
        if not ok:
            raise ValueError(f"preference.{key} must be {rule}, got {getattr(cfg, key)!r}")
