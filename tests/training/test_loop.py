"""The training loop's pieces: the warmup clamp, loss parts in the history for every family,
declared capabilities, and a meter that never changes what training does.

Fixtures are built in code: random next-item windows, the tiny OneRec of
``tests/models/test_onerec.py``, a two-task CTR set, SegMM-style views, and alignment samples
with a hand-written reward.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from ctr_fixture import tiny_ctr_data
from test_onerec import make_table, tiny  # noqa: E402

from reelrec.data.ctr import CTRData, CTRTrainSet  # noqa: E402
from reelrec.data.segments import SegmentTrainSet, build_segments  # noqa: E402
from reelrec.eval.ranking import evaluate_next_item  # noqa: E402
from reelrec.models.base import (  # noqa: E402
    MayLeaveParametersUnused,
    ReportsEpochStats,
    Trainable,
)
from reelrec.models.ctr import CTRSchema, RankingConfig  # noqa: E402
from reelrec.models.deepfm import DeepFM  # noqa: E402
from reelrec.models.onerec import OneRec  # noqa: E402
from reelrec.models.sasrec import SASRec, SASRecConfig  # noqa: E402
from reelrec.models.segment_interest import SegmentConfig, SegmentInterest  # noqa: E402
from reelrec.training import meter  # noqa: E402
from reelrec.training.checkpoint import load_tensors  # noqa: E402
from reelrec.training.loop import TrainConfig, clamp_warmup, fit, total_steps  # noqa: E402
from reelrec.training.preference import (  # noqa: E402
    AlignmentSamples,
    AlignmentTrainSet,
    PreferenceConfig,
)
from reelrec.training.trainsets import WindowTrainSet  # noqa: E402

V, L = 11, 5
QUIET = {"log": lambda s: None}


def _windows(n: int = 24, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(1, V + 1, (n, L + 1), generator=g)
    w[::3, :2] = 0
    return w


def _sasrec(seed: int = 0, **kw) -> SASRec:
    torch.manual_seed(seed)
    cfg = dict(max_len=L, hidden=8, layers=1, heads=2, inner=12, dropout=0.3, attn_dropout=0.3)
    return SASRec(V, SASRecConfig(**{**cfg, **kw}))


def _ranking_eval(m: nn.Module) -> dict[str, float]:
    hist, tgt = _windows(9, seed=4)[:, :-1], _windows(9, seed=4)[:, -1]
    return evaluate_next_item(m.score_all, hist, tgt, ks=(5, 10))[0]


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=5, lr=1e-2, patience=100, progress=False, seed=7)
    return TrainConfig(**{**base, **kw})


# --- warmup -------------------------------------------------------------------------------------


def test_clamp_warmup_returns_the_config_that_runs_and_fit_refuses_an_unclamped_one(tmp_path):
    cfg = _cfg(epochs=2, batch_size=5, warmup_steps=50)  # 24 windows: 5 steps x 2 = 10 steps
    assert total_steps(cfg, 24) == 10
    clamped, warning = clamp_warmup(cfg, 24)
    assert clamped.warmup_steps == 5 and cfg.warmup_steps == 50  # a copy, the input unchanged
    assert warning == (
        "warning: train.warmup_steps=50 is more than half of the 10 steps of this run; "
        "warming up over 5 steps"
    )
    same, none = clamp_warmup(_cfg(warmup_steps=5), 24)
    assert same == _cfg(warmup_steps=5) and none == ""
    with pytest.raises(ValueError, match="clamp_warmup"):
        fit(_sasrec(), _windows(), _ranking_eval, cfg, tmp_path / "a", **QUIET)
    r = fit(_sasrec(), _windows(), _ranking_eval, clamped, tmp_path / "b", **QUIET)
    # linear warmup over the 5 clamped steps: epoch 1 ends at the peak, not at 5/50 of it
    assert r.history[0]["lr"] == pytest.approx(clamped.lr)


# --- loss parts in the history, every family ------------------------------------------------


def _ctr_data(n_train: int = 8) -> CTRData:
    return tiny_ctr_data(n_train, missing_like=True)


def _segment_views() -> pd.DataFrame:
    g = np.random.default_rng(1)
    rows = []
    for u in range(3):
        for t in range(8):
            s = int(g.integers(2, 7))
            k = int(g.integers(-1, s))
            lab = [1] * s if k < 0 else [1] * k + [0] + [-1] * (s - k - 1)
            rows.append((u, int(g.integers(0, 9)), 1000 * t, np.array(lab, dtype=np.int8)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_ms", "label_1d"])


class _Reward:
    """A P-Score stand-in: a fixed score per item index, NaN for no item."""

    def __call__(self, items, users, times, hours) -> torch.Tensor:
        score = ((items * 37) % 11).float() / 11
        return torch.where(items > 0, score, torch.full_like(score, float("nan"))).cpu()


def _alignment_set(kind: str, policy: nn.Module) -> AlignmentTrainSet:
    g = torch.Generator().manual_seed(5)
    w = torch.randint(1, 61, (10, 13), generator=g)
    w[::2, :4] = 0
    n = len(w)
    samples = AlignmentSamples(w, np.arange(n), np.arange(n) * 1000, np.zeros(n, dtype=np.int64))
    cfg = PreferenceConfig(fraction=1.0, candidates=4, refresh_steps=2)
    return AlignmentTrainSet(kind, policy, samples, _Reward(), cfg)


def _family(name: str):
    """(model, training set, evaluate, metric, expected loss part keys)."""
    torch.manual_seed(0)
    if name == "sasrec":
        return _sasrec(), WindowTrainSet(_windows()), _ranking_eval, "ndcg@10", {"loss_ce"}
    if name == "onerec":
        model = OneRec(make_table(), tiny())
        g = torch.Generator().manual_seed(2)
        w = torch.randint(1, 61, (12, 13), generator=g)
        levels = {f"loss_ce_level{j}" for j in range(1, 5)}
        return model, WindowTrainSet(w), lambda m: {"m": 0.0}, "m", {"loss_ce", *levels}
    if name == "ranking":
        data = _ctr_data()
        model = DeepFM(
            CTRSchema.of(data), RankingConfig(embed_dim=4, mlp=[6], dropout=0.0, tasks=data.tasks)
        )
        return model, CTRTrainSet(data), lambda m: {"m": 0.0}, "m", {"loss_click", "loss_like"}
    if name == "segment":
        data = build_segments(_segment_views())
        model = SegmentInterest(data.n_users, data.n_videos, SegmentConfig(dim=8, heads=2))
        return model, SegmentTrainSet(data), lambda m: {"m": 0.0}, "m", {"loss_pairwise"}
    policy = OneRec(make_table(), tiny())
    parts = {"ipa": {"loss_dpo", "loss_dpo_margin"}, "ecpo": {"loss_ecpo", "loss_clip_fraction"}}
    return policy, _alignment_set(name, policy), lambda m: {"m": 0.0}, "m", parts[name]


@pytest.mark.parametrize("name", ["sasrec", "onerec", "ranking", "segment", "ipa", "ecpo"])
def test_every_loss_part_is_logged_per_epoch_in_the_history(name, tmp_path):
    model, train, evaluate, metric, expected = _family(name)
    cfg = _cfg(batch_size=4, metric=metric, mfu=False)
    r = fit(model, train, evaluate, cfg, tmp_path, **QUIET)
    saved = json.loads((tmp_path / "history.json").read_text())
    for row in (*r.history, *saved):
        parts = {k for k in row if k.startswith("loss_")}
        assert expected <= parts, sorted(parts)
        assert all(math.isfinite(row[k]) for k in parts)


def test_the_logged_parts_are_the_epoch_means_of_the_models_parts(tmp_path):
    """One step per epoch, no dropout: epoch 1's loss_click / loss_like are what
    ``model.loss`` reports on the whole training set with the initial weights."""
    data = _ctr_data()
    torch.manual_seed(0)
    model = DeepFM(
        CTRSchema.of(data), RankingConfig(embed_dim=4, mlp=[6], dropout=0.0, tasks=data.tasks)
    )
    with torch.no_grad():
        expected = model.loss(data.batch(data.rows(0))).parts
    cfg = _cfg(batch_size=8, epochs=1, metric="m", mfu=False)
    row = fit(model, CTRTrainSet(data), lambda m: {"m": 0.0}, cfg, tmp_path, **QUIET).history[0]
    assert row["loss_click"] == pytest.approx(expected["click"], rel=1e-6)
    assert row["loss_like"] == pytest.approx(expected["like"], rel=1e-6)  # 7 labelled rows


# --- declared capabilities -----------------------------------------------------------------------


class _Undeclared(nn.Module):
    """Has a ``loss`` method but declares nothing: it must not be taken for a model."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def loss(self, batch):  # pragma: no cover - never called
        raise AssertionError("a probe called an undeclared loss")


def test_capabilities_are_declared_never_probed(tmp_path):
    with pytest.raises(TypeError, match="Trainable"):
        fit(_Undeclared(), _windows(), _ranking_eval, _cfg(), tmp_path, **QUIET)
    assert isinstance(_sasrec(), Trainable) and not isinstance(_sasrec(), ReportsEpochStats)
    onerec = OneRec(make_table(), tiny())
    assert isinstance(onerec, ReportsEpochStats) and isinstance(onerec, MayLeaveParametersUnused)
    assert not isinstance(_sasrec(), MayLeaveParametersUnused)


def test_moe_statistics_and_alignment_statistics_reach_the_history(tmp_path):
    policy = OneRec(make_table(), tiny())
    train = _alignment_set("ecpo", policy)
    cfg = _cfg(batch_size=4, epochs=1, metric="m", mfu=False)
    row = fit(policy, train, lambda m: {"m": 0.0}, cfg, tmp_path, **QUIET).history[0]
    assert {"moe_max_load_share", "legal_rate", "reward_mean"} <= set(row)


# --- the meter never changes training --------------------------------------------------------


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["sasrec-bce", "onerec", "ecpo"])
def test_mfu_on_and_off_train_bit_identical_weights(name, tmp_path, monkeypatch):
    """The FLOP count runs a forward + backward with dropout, the peak benchmark draws random
    matrices, the MoE routing bias moves in every training forward, and the alignment set
    generates per batch: none of it may change the trained weights (the peak cache is cleared,
    so the benchmark really runs in both measuring runs)."""
    monkeypatch.setattr(meter, "PEAK_MATRIX", 64)
    runs = {}
    for mfu in (False, True, True):
        monkeypatch.setattr(meter, "_PEAK", {})
        if name == "sasrec-bce":
            model, train = _sasrec(loss="bce"), WindowTrainSet(_windows())
            evaluate, metric = _ranking_eval, "ndcg@10"
        else:
            model, train, evaluate, metric, _ = _family(name)
        out = tmp_path / f"{mfu}-{len(runs)}"
        r = fit(model, train, evaluate, _cfg(batch_size=4, metric=metric, mfu=mfu), out, **QUIET)
        runs[(mfu, len(runs))] = (
            _weights(model),
            load_tensors(out / "checkpoint" / "model.safetensors"),
        )
        if mfu:
            assert r.history[0]["mfu"] > 0 and r.history[0]["flops_per_sample"] > 0
        else:
            assert "mfu" not in r.history[0]
    (off_best, off_last), *on = runs.values()
    for best, last in on:
        for k in off_last:
            assert torch.equal(off_last[k], last[k]), k
            assert torch.equal(off_best[k], best[k]), k


def test_the_meter_builds_no_extra_alignment_batch(tmp_path):
    """The FLOPs are counted on the batch the step trains on: the alignment set generates once
    per micro-batch, whether the meter is on or off."""
    calls = {}
    for mfu in (False, True):
        policy = OneRec(make_table(), tiny())
        train = _alignment_set("ipa", policy)
        seen = []
        term = train.term
        train.term = lambda idx, device, term=term, seen=seen: (
            seen.append(len(idx)) or term(idx, device)
        )
        cfg = _cfg(batch_size=4, epochs=1, metric="m", mfu=mfu, grad_accum=2)
        fit(policy, train, lambda m: {"m": 0.0}, cfg, tmp_path / str(mfu), **QUIET)
        calls[mfu] = seen
    assert calls[True] == calls[False] and len(calls[True]) == 6  # 3 batches x 2 micro-batches


# --- resuming -------------------------------------------------------------------------------------


def test_a_save_interrupted_between_its_renames_resumes_from_the_old_folder(tmp_path):
    """Killed after the old checkpoint was moved aside and before the new one took its place:
    ``checkpoint.old`` is complete, and resuming from it ends as the uninterrupted run."""
    full = _sasrec()
    fit(full, _windows(), _ranking_eval, _cfg(epochs=3), tmp_path / "a", **QUIET)
    part = tmp_path / "b"
    fit(_sasrec(), _windows(), _ranking_eval, _cfg(epochs=1), part, **QUIET)
    (part / "checkpoint").rename(part / "checkpoint.old")
    torch.manual_seed(99)
    resumed = _sasrec()
    r = fit(resumed, _windows(), _ranking_eval, _cfg(epochs=3), part, **QUIET)
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    assert not (part / "checkpoint.old").exists()
    for k, v in _weights(full).items():
        assert torch.equal(v, _weights(resumed)[k]), k
