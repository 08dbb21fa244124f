"""ECPO: Early Clipped GRPO, the reinforcement learning of the OneRec Technical Report.

Source: OneRec Technical Report (arXiv 2506.13695) section 2.4.1 (ECPO) and 2.4.2 (format
reward); GRPO (DeepSeekMath, arXiv 2402.03300) for the group-normalised advantage.

For a user u the old policy produces a group of G outputs o_1..o_G (here: the top G of an
*unconstrained* beam search, so the model may write semantic IDs that are no item). The
reward model scores the legal ones; advantages are normalised within the group,
``A_i = (r_i - mean(r)) / std(r)``. The objective, maximised, is

    J = mean_i min(ratio_i * A_i, clip(ratio_i, 1 - eps, 1 + eps) * A_i),
    ratio_i = pi(o_i | u) / pi'_old(o_i | u),
    pi'_old(o_i | u) = max(sg(pi(o_i | u)) / (1 + eps + delta), pi_old(o_i | u))  if A_i < 0
                       pi_old(o_i | u)                                            otherwise.

For a negative advantage PPO's min() does not bound the ratio from above, so a sample whose
old probability was tiny can give an exploding gradient; raising the denominator caps the
ratio at 1 + eps + delta while keeping its gradient (the max is taken on a stopped-gradient
copy). There is no KL term: the next-token loss trained jointly keeps the policy close to the
logs. Format reward (section 2.4.2, as our issue states it): outputs that are not valid
semantic IDs are dropped from the update (no advantage, no gradient) rather than penalised,
and the legal-ID rate is tracked. ``preference.illegal=penalize`` is the ablation that gives
them reward 0 (the lowest P-Score) inside the group instead.

Deviations, and why:
    * The group is the top G of a beam search (as the issue asks), not G samples from the
      policy's distribution: deterministic and cheap on a CPU; the advantage is normalised over
      the legal members of the group (a group with fewer than 2 legal members, or with equal
      rewards, has zero advantages).
    * The old policy is a frozen copy refreshed every ``preference.refresh_steps`` optimizer
      steps (the production system samples with the deployed model, minutes to hours old).
    * Ratios of whole semantic IDs (products over the codes), as GRPO does for sequences.
"""

from __future__ import annotations

import math

import torch

from reelrec.models.base import AlignmentTerm
from reelrec.training.alignment import PreferenceConfig


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised advantages ``(r - mean) / std`` over the members in ``mask``.

    Args:
        rewards: float (B, G) (values outside ``mask`` are ignored, NaN allowed there).
        mask: bool (B, G) legal members of each group.
        eps: added to the standard deviation (population std over the legal members).

    Returns:
        float (B, G); 0 outside ``mask`` and in groups with fewer than 2 members or equal rewards.
    """
    m = mask.to(rewards.dtype)
    r = torch.where(mask, rewards, torch.zeros_like(rewards))
    n = m.sum(1, keepdim=True)
    mean = r.sum(1, keepdim=True) / n.clamp(min=1)
    var = ((r - mean) ** 2 * m).sum(1, keepdim=True) / n.clamp(min=1)
    std = var.sqrt()
    adv = (r - mean) / (std + eps)
    ok = mask & (n >= 2) & (std > 0)
    return torch.where(ok, adv, torch.zeros_like(adv))


def ecpo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    delta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The negated ECPO objective (to minimise), averaged over the members in ``mask``.

    Args:
        logp: float (B, G) log pi(o | u) of the policy being trained (with gradient).
        logp_old: float (B, G) log pi_old(o | u) of the policy that produced the group.
        advantages: float (B, G). mask: bool (B, G) members that enter the update (legal
            outputs); the others contribute neither value nor gradient.
        clip: epsilon (> 0). delta: early-clipping margin (> 0).

    Returns:
        ``(loss scalar, parts)``; parts: ``ecpo`` (loss), ``clip_fraction`` (share of members
        whose ratio lies outside [1 - eps, 1 + eps]), ``early_clipped`` (share of negative-
        advantage members whose denominator was raised).
    """
    if not bool(mask.any()):
        return logp.sum() * 0.0, {"ecpo": 0.0, "clip_fraction": 0.0, "early_clipped": 0.0}
    neg = advantages < 0
    raised = logp.detach() - math.log1p(clip + delta)  # log(sg(pi) / (1 + eps + delta))
    old = torch.where(neg, torch.maximum(raised, logp_old), logp_old)
    ratio = torch.exp(torch.where(mask, logp - old, torch.zeros_like(logp)))
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    n = mask.sum()
    loss = -torch.where(mask, surrogate, torch.zeros_like(surrogate)).sum() / n
    with torch.no_grad():
        outside = ((ratio < 1 - clip) | (ratio > 1 + clip)) & mask
        early = neg & mask & (raised > logp_old)
        n_neg = int((neg & mask).sum())
    return loss, {
        "ecpo": float(loss.detach()),
        "clip_fraction": float(outside.sum() / n),
        "early_clipped": float(early.sum()) / max(n_neg, 1),
    }


def ecpo_term(
    hist: torch.Tensor, out, rewards: torch.Tensor, cfg: PreferenceConfig
) -> AlignmentTerm:
    """The ECPO part of one step.

    Args:
        hist: int64 (B, L) histories the group was generated for.
        out: the old policy's unconstrained :class:`reelrec.models.generative.Generation`
            (items, logp, codes for G outputs per user).
        rewards: float (B, G) P-Scores (NaN for illegal outputs).
        cfg: ``illegal``, ``clip``, ``delta``, ``weight``.

    Returns:
        :class:`~reelrec.models.base.AlignmentTerm` whose pure objective is
        :func:`ecpo_loss` (parts ``ecpo``, ``clip_fraction``, ``early_clipped``).
    """
    legal = out.legal & ~torch.isnan(rewards)
    if cfg.illegal == "penalize":  # ablation: illegal outputs get reward 0 and enter the update
        member = torch.isfinite(out.logp)
        rewards = torch.where(legal, rewards, torch.zeros_like(rewards))
    else:
        member = legal
    adv = group_advantages(rewards, member)
    logp_old = out.logp.to(rewards.dtype)

    def objective(logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return ecpo_loss(logp, logp_old, adv, member, cfg.clip, cfg.delta)

    return AlignmentTerm(hist, out.codes.clamp(min=0), objective, cfg.weight)
