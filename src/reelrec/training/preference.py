"""Preference alignment of a trained semantic-ID generator with a reward model: IPA (DPO).

Sources: OneRec (arXiv 2502.18965) section 3.3 (Iterative Preference Alignment: for a fraction
``r_DPO`` of the training users, beam-search N candidates with the current model M_t, let the
reward model pick the best (chosen) and worst (rejected), and train M_{t+1} with the next-token
loss plus ``lambda * L_DPO``, M_t being the reference); DPO (Rafailov et al., arXiv 2305.18290,
eq. 7). The reinforcement-learning variant (ECPO) is :mod:`reelrec.training.rl`; both share
the samples, the reward lookup and the training set defined here, and the settings of
:mod:`reelrec.training.alignment` (imports flow preference -> rl -> alignment, no cycle).

What one training step does (``reelrec train ipa``):
    * The batch holds training samples of the SFT generator: a user's history of liked videos
      before a liked video, the user, and the time and hour of that impression.
    * Next-token loss on every sample (the SFT loss, so the generator keeps fitting the logs).
    * For the first ``ceil(preference.fraction * B)`` samples of the (shuffled) batch: N =
      ``preference.candidates`` items by trie-constrained beam search with the reference model,
      scored by the reward model's P-Score for that user at that time; the best and worst
      become a DPO pair: ``L_DPO = -log sigmoid(beta * ((log pi(w) - log ref(w)) - (log pi(l)
      - log ref(l))))`` with whole-sequence log-probabilities (the sum over the semantic ID's
      codes). Users whose candidates all score the same give no pair.
    * Loss = ``ntp_weight * L_NTP + weight * L_DPO``.
    * A round of IPA is one epoch: the reference model is a frozen copy of the policy taken at
      the start of each epoch (the previous round's model).

Deviations, and why:
    * Point-wise: one item per sample (OneRec v1 generates sessions of 5 items and compares
      sessions); the SFT generator here is trained point-wise.
    * The reward model is our P-Score model (:mod:`reelrec.models.reward`), not OneRec v1's
      session reward model with swt/vtr/wtr/ltr towers.
    * Dropout of the policy is ``preference.dropout`` (default 0) during alignment, so that the
      policy and its reference compare the same deterministic network.

Interface: :class:`AlignmentTrainSet` builds one :class:`~reelrec.models.base.AlignmentBatch`
per (micro-)batch (generation and rewards happen there, once); the policy's
``loss(AlignmentBatch)`` scores the term. The loss parts (``dpo``, ``dpo_margin``; ECPO's
``ecpo``, ``clip_fraction``, ``early_clipped``) reach the history as ``loss_<part>``; the
generation statistics (``reward_mean``, ``reward_chosen``, ``reward_rejected``,
``legal_rate``) as epoch statistics.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from reelrec.data.sequences import ItemVocab, _left_pad, windows
from reelrec.models.base import (
    AlignmentBatch,
    AlignmentTerm,
    GeneratesSemanticIDs,
    ReportsEpochStats,
)
from reelrec.models.generative import generate
from reelrec.training.alignment import PreferenceConfig, check_preference_config
from reelrec.training.rl import ecpo_term
from reelrec.training.trainsets import CountsWork, length_bucketed_batches, trim_left_padding

# the settings and the term are defined in reelrec.training.alignment / reelrec.models.base;
# importable from here as before
__all__ = [
    "AlignmentSamples",
    "AlignmentTerm",
    "AlignmentTrainSet",
    "PreferenceConfig",
    "RewardFn",
    "alignment_samples",
    "check_preference_config",
    "dpo_loss",
    "frozen_copy",
    "set_dropout",
]


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Mean DPO loss (arXiv 2305.18290 eq. 7) over pairs.

    Args:
        logp_chosen, logp_rejected: float (n,) policy log-probabilities of the chosen and
            rejected sequences (with gradient). ref_chosen, ref_rejected: float (n,) the
            reference model's (no gradient). beta: temperature (> 0).

    Returns:
        Scalar ``mean(-log sigmoid(beta * ((lp_w - ref_w) - (lp_l - ref_l))))``; 0 for n = 0.
    """
    if logp_chosen.numel() == 0:
        return logp_chosen.new_zeros(())
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


@dataclass
class AlignmentSamples:
    """Training samples of the generator with who and when (for the reward model).

    Attributes:
        windows: int64 (n, L + 1) left-padded item indices: the history then the target.
        users: int64 (n,) raw user ids. times: int64 (n,) the target impression's time (ms).
        hours: int64 (n,) its hour of day (Beijing time).
    """

    windows: torch.Tensor
    users: np.ndarray
    times: np.ndarray
    hours: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)


def alignment_samples(
    inter: pd.DataFrame, positive: np.ndarray, vocab: ItemVocab, max_len: int, step: int = 1
) -> AlignmentSamples:
    """The training windows of the SFT generator (:func:`reelrec.data.sequences.windows` with
    ``step``, ``onerec.window_step``: 1 = one per training positive with an earlier positive),
    with the user, time and hour of each window's last item.

    Args:
        inter: prepared interactions (sorted by user, time; ``split``, ``timestamp_ms``,
            ``hourmin``). positive: bool (n,) the protocol's positive rows.
        vocab: the generator's item vocabulary (train positives). max_len: history length L.
        step: window step (>= 1).
    """
    train = positive & (inter["split"].to_numpy() == 0)
    rows = inter.loc[train]
    users = rows["user_id"].to_numpy(dtype=np.int64)
    items = vocab.encode(rows["item_id"].to_numpy())
    times = rows["timestamp_ms"].to_numpy(dtype=np.int64)
    hours = rows["hourmin"].to_numpy(dtype=np.int64) // 100
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    wins, who = [], []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        ws = windows(items[a:b], max_len, step)  # newest first: window k ends at b-1-k*step
        wins.extend(ws)
        who.extend(range(b - 1, b - 1 - len(ws) * step, -step))
    who_arr = np.asarray(who, dtype=np.int64)
    return AlignmentSamples(
        torch.from_numpy(_left_pad(wins, max_len + 1)),
        users[who_arr],
        times[who_arr],
        hours[who_arr],
    )


class RewardFn:
    """P-Score of generated items for the samples' users at the samples' times.

    Args:
        model: a trained :class:`reelrec.models.reward.PScoreModel` (eval mode is set here).
        features: :class:`reelrec.data.ctr.RequestFeatures` of the reward model's data.
        vocab: the generator's item vocabulary (indices -> raw video ids).
    """

    def __init__(self, model: nn.Module, features, vocab: ItemVocab) -> None:
        self.model, self.features, self.vocab = model.eval(), features, vocab

    def __call__(
        self, items: torch.Tensor, users: np.ndarray, times: np.ndarray, hours: np.ndarray
    ) -> torch.Tensor:
        """items int64 (B, N) indices (<= 0: none) -> P-Score float (B, N), NaN for none."""
        b, n = items.shape
        ok = (items > 0).cpu().numpy()
        out = torch.full((b, n), float("nan"))
        if not ok.any():
            return out
        r, c = np.nonzero(ok)
        raw = self.vocab.decode(items.cpu().numpy()[r, c])
        batch = self.features.batch(users[r], raw, times[r], hours[r])
        device = next(self.model.parameters()).device
        scores = self.model.pscore(batch.to(device)).float().cpu()
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(
                "the reward model gave a non-finite P-Score for "
                f"{int((~torch.isfinite(scores)).sum())} of {len(scores)} generated videos "
                "(diverged or damaged weights?): retrain it with `reelrec train pscore`"
            )
        out[r, c] = scores
        return out


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Set the probability of every dropout layer of ``model`` to ``p`` (returns model)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
    return model


def frozen_copy(model: nn.Module) -> nn.Module:
    """A no-gradient eval-mode copy of ``model`` (reference or old policy)."""
    snap = copy.deepcopy(model).eval()
    for p in snap.parameters():
        p.requires_grad_(False)
    return snap


class AlignmentTrainSet(CountsWork, ReportsEpochStats):
    """Samples, generation and rewards of IPA or ECPO as :func:`reelrec.training.loop.fit`
    consumes them (``batches``, ``batch``).

    Args:
        kind: "ipa" or "ecpo". policy: the generator being trained (its weights change); it
            must declare :class:`~reelrec.models.base.GeneratesSemanticIDs`.
        samples: :func:`alignment_samples`. reward: :class:`RewardFn`. cfg: preference settings.

    Raises:
        ValueError: an unknown kind. TypeError: a policy that is no semantic-ID generator.
    """

    def __init__(
        self,
        kind: str,
        policy: nn.Module,
        samples: AlignmentSamples,
        reward: RewardFn,
        cfg: PreferenceConfig,
    ) -> None:
        if kind not in ("ipa", "ecpo"):
            raise ValueError(f"kind must be 'ipa' or 'ecpo', got {kind!r}")
        if not isinstance(policy, GeneratesSemanticIDs):
            raise TypeError(
                f"{type(policy).__name__} is no semantic-ID generator (declares no "
                "reelrec.models.base.GeneratesSemanticIDs): it cannot be aligned"
            )
        self.kind, self.policy, self.samples = kind, policy, samples
        self.reward, self.cfg = reward, cfg
        self.lengths = (samples.windows > 0).sum(1)
        self.snapshot: nn.Module | None = None  # IPA: reference; ECPO: the old policy
        self.calls = 0
        self.stats: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def tokens(self) -> int:
        """Samples per epoch (one target item each)."""
        return len(self.samples)

    def batches(self, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Shuffled batches; IPA starts a new round here (the reference is the policy now)."""
        if self.kind == "ipa" or self.snapshot is None:
            self.snapshot = frozen_copy(self.policy)
        self.calls = 0
        return length_bucketed_batches(self.lengths, batch_size, gen)

    def work(self, idx: torch.Tensor) -> int:
        """Rows x trimmed width, as :class:`reelrec.training.trainsets.WindowTrainSet`."""
        return int(len(idx) * int(self.lengths[idx].max()))

    def term(self, idx: torch.Tensor, device) -> AlignmentTerm | None:
        """Generate for the first ``fraction`` of ``idx`` and build the DPO or ECPO term
        (None when no sample gives a pair / group)."""
        cfg = self.cfg
        if self.kind == "ecpo" and (self.snapshot is None or self.calls % cfg.refresh_steps == 0):
            self.snapshot = frozen_copy(self.policy)
        self.calls += 1
        sel = idx[: max(1, math.ceil(cfg.fraction * len(idx)))]
        s = self.samples
        hist = trim_left_padding(s.windows[sel][:, :-1]).to(device)
        rows = sel.numpy()
        users, times, hours = s.users[rows], s.times[rows], s.hours[rows]
        snap = self.snapshot
        trie = snap.trie
        if trie.children[0].device != hist.device:
            trie.to(hist.device)
        with torch.no_grad():
            out = generate(snap, hist, trie, cfg.candidates, constrained=self.kind == "ipa")
        rewards = self.reward(out.items, users, times, hours).to(device)
        if not bool(torch.isnan(rewards).all()):
            self._note("reward_mean", float(rewards.nanmean()))
        if self.kind == "ecpo":  # IPA's candidates are trie-constrained: always legal
            self._note("legal_rate", float(out.legal.float().mean()))
            return ecpo_term(hist, out, rewards, cfg)
        return self._ipa_term(hist, out, rewards, snap)

    def _ipa_term(self, hist, out, rewards, ref) -> AlignmentTerm | None:
        r = rewards.nan_to_num(float("nan"))
        valid = ~torch.isnan(r)
        best = r.masked_fill(~valid, -math.inf).argmax(1)
        worst = r.masked_fill(~valid, math.inf).argmin(1)
        spread = r.masked_fill(~valid, -math.inf).amax(1) - r.masked_fill(~valid, math.inf).amin(1)
        keep = (valid.sum(1) >= 2) & (spread > 0)
        if not bool(keep.any()):
            return None
        rows = keep.nonzero().squeeze(1)
        pair = torch.stack([best[rows], worst[rows]], 1)  # (n, 2)
        codes = out.codes[rows.unsqueeze(1), pair]  # (n, 2, levels)
        h = hist[rows]
        with torch.no_grad():
            ref_logp = ref.sequence_logp(h, codes)
        self._note("reward_chosen", float(r[rows, pair[:, 0]].mean()))
        self._note("reward_rejected", float(r[rows, pair[:, 1]].mean()))
        beta = self.cfg.beta

        def objective(logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            # pure: the parts are logged by the training loop (``loss_dpo``, ...)
            loss = dpo_loss(logp[:, 0], logp[:, 1], ref_logp[:, 0], ref_logp[:, 1], beta)
            margin = (logp[:, 0] - ref_logp[:, 0]) - (logp[:, 1] - ref_logp[:, 1])
            return loss, {"dpo": float(loss.detach()), "dpo_margin": float(margin.detach().mean())}

        return AlignmentTerm(h, codes, objective, self.cfg.weight)

    def _note(self, key: str, value: float) -> None:
        self.stats.setdefault(key, []).append(value)

    def epoch_stats(self) -> dict[str, float]:
        """Means of the per-step generation statistics since the last call (legal rate,
        rewards)."""
        out = {k: float(np.mean(v)) for k, v in self.stats.items() if v}
        self.stats = {}
        return out

    def batch(self, idx: torch.Tensor, gen: torch.Generator, device) -> AlignmentBatch:
        """The windows ``idx`` (leading padding trimmed) with the alignment term of their first
        ``fraction`` (generated now, once per call), as an
        :class:`~reelrec.models.base.AlignmentBatch` on ``device`` (``gen`` is unused)."""
        term = self.term(idx, device)
        windows = trim_left_padding(self.samples.windows[idx]).to(device, torch.long)
        return AlignmentBatch(windows[:, :-1], windows[:, 1:], term, self.cfg.ntp_weight)
