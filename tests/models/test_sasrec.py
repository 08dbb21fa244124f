"""SASRec tiny-config tests (odd sizes): shapes, loss, gradients, overfit, causality, padding
invariance, determinism; and the popularity baseline's counting (CASES.md C07)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import assert_gradients_reach_every_parameter, overfit

from reelrec.models.base import NextItemBatch
from reelrec.models.popularity import Popularity
from reelrec.models.sasrec import SASRec, SASRecConfig

V, B, L = 13, 3, 7


def _model(**kw) -> SASRec:
    torch.manual_seed(0)
    cfg = SASRecConfig(
        max_len=L, hidden=16, layers=2, heads=2, inner=24, dropout=0.0, attn_dropout=0.0, **kw
    )
    return SASRec(V, cfg).eval()


def _batch():
    items = torch.tensor([[0, 0, 3, 5, 7, 2, 9], [1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 11, 13]])
    return items[:, :-1], items[:, 1:]


def test_shapes_and_padding_column():
    m = _model()
    inp, _ = _batch()
    assert m(inp).hidden.shape == (B, L - 1, 16)
    scores = m.score_all(inp)
    assert scores.shape == (B, V + 1)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_loss_finite_and_gradients_reach_every_parameter(loss):
    m = _model(loss=loss).train()
    out = m.loss(NextItemBatch(*_batch(), generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(out.loss) and loss in out.parts
    out.loss.backward()
    assert_gradients_reach_every_parameter(m)


def test_overfits_one_batch():
    m = _model().train()
    inp, tgt = _batch()
    first, last = overfit(m, NextItemBatch(inp, tgt))
    assert last < 0.1 * first
    m.eval()
    preds = m(inp).hidden @ m.item_emb.weight.T
    keep = (tgt > 0) & (inp > 0)
    assert (preds.argmax(-1)[keep] == tgt[keep]).float().mean() == 1.0


def test_causality_future_items_do_not_change_the_past():
    m = _model()
    a = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    b = a.clone()
    b[0, 4:] = torch.tensor([9, 10, 11])
    ha, hb = m(a).hidden, m(b).hidden
    torch.testing.assert_close(ha[:, :4], hb[:, :4])
    assert not torch.allclose(ha[:, 4:], hb[:, 4:])


def test_padding_invariance():
    m = _model()
    short = torch.tensor([[4, 8, 2]])
    padded = torch.tensor([[0, 0, 0, 0, 4, 8, 2]])
    torch.testing.assert_close(m(short).hidden, m(padded).hidden[:, 4:], rtol=1e-5, atol=1e-6)
    assert (m(padded).hidden[:, :4] == 0).all()


def test_seeded_determinism():
    a, b = _model(), _model()
    inp, _ = _batch()
    assert torch.equal(a.score_all(inp), b.score_all(inp))


def test_rejects_bad_inputs():
    m = _model()
    with pytest.raises(ValueError, match="max_len"):
        m(torch.ones(1, L + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="item ids"):
        m(torch.tensor([[0, V + 1]]))
    with pytest.raises(ValueError, match="divisible"):
        SASRec(V, SASRecConfig(hidden=10, heads=3))


def test_c07_popularity_counts_repeats_and_is_batch_invariant():
    ids = torch.tensor([3, 3, 3, 5, 7, 7])
    full = Popularity.from_items(ids, num_items=8).counts
    assert full[[3, 5, 7]].tolist() == [3, 1, 2]
    for bs in (1, 2, 6):
        parts = [Popularity.from_items(ids[i : i + bs], 8).counts for i in range(0, 6, bs)]
        assert torch.equal(torch.stack(parts).sum(0), full)
    scores = Popularity(np.array([0, 5, 20, 9])).score_all(torch.zeros(2, 4, dtype=torch.long))
    assert scores.shape == (2, 4) and torch.isinf(scores[:, 0]).all()
    assert scores[0, 1:].tolist() == [5, 20, 9]


def test_post_ln_variant_is_causal_and_trains():
    m = _model(norm_first=False)
    a = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    b = a.clone()
    b[0, 5:] = torch.tensor([9, 10])
    torch.testing.assert_close(m(a).hidden[:, :5], m(b).hidden[:, :5])
    out = m.train().loss(NextItemBatch(*_batch()))
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_prefix_training_trains_the_same_targets_with_the_same_contexts():
    """``prefixes=True`` (RecBole's augmentation): one window per prefix, trained at its last
    position only. Without dropout, on sequences that fit one window, the mean loss over all
    prefix windows equals the mean loss of the every-position training (same targets, same
    causal contexts), and each target is presented once."""
    from reelrec.data.sequences import _left_pad, windows
    from reelrec.training.trainsets import WindowTrainSet

    seqs = [np.array([3, 5, 7, 2, 9]), np.array([1, 2, 3, 4, 5, 6, 7]), np.array([11, 13])]
    full = torch.from_numpy(_left_pad([w for s in seqs for w in windows(s, L)], L + 1))
    pre = torch.from_numpy(_left_pad([w for s in seqs for w in windows(s, L, 1)], L + 1))
    assert len(pre) == sum(len(s) - 1 for s in seqs)  # one window per target
    assert sorted(pre[:, -1].tolist()) == sorted(int(i) for s in seqs for i in s[1:])
    assert WindowTrainSet(pre, last=1).tokens == len(pre)
    assert WindowTrainSet(full).tokens == len(pre)
    every = _model().loss(NextItemBatch.of_windows(full)).loss
    last = _model(prefixes=True).loss(NextItemBatch.of_windows(pre)).loss
    torch.testing.assert_close(last, every)
    # the prefix model ignores every column but the last: changing earlier targets is a no-op
    batch = NextItemBatch.of_windows(pre)
    noisy = NextItemBatch(batch.inputs, torch.where(batch.inputs > 0, 1, batch.targets))
    noisy.targets[:, -1] = batch.targets[:, -1]
    torch.testing.assert_close(_model(prefixes=True).loss(noisy).loss, last)


def test_prefixes_make_the_retrieval_task_build_one_window_per_prefix():
    import copy

    from reelrec.tasks.registry import PRESETS, RETRIEVAL

    cfg = copy.deepcopy(PRESETS["sasrec"])
    assert RETRIEVAL.window_step(cfg) is None and RETRIEVAL.trained_positions(cfg) is None
    cfg.sasrec.prefixes = True
    assert RETRIEVAL.window_step(cfg) == 1 and RETRIEVAL.trained_positions(cfg) == 1
