"""Segment-level interest (SegMM): skip positions, views played to the end, the intra-video loss,
skip metrics with ties, the baselines and a tiny SegMM model (samples built in code, except the
last test, which reads the real SegMM sample)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from model_checks import assert_gradients_reach_every_parameter, overfit

from reelrec.data.segments import (
    MAX_SEGMENTS,
    SegmentBatch,
    build_segments,
    segment_ctr,
    skip_position,
    split_by_user_time,
)
from reelrec.eval.segments import skip_ranking_metrics
from reelrec.models.segment_interest import (
    DurationPosition,
    PositionPrior,
    SegmentConfig,
    SegmentInterest,
    SegmentMLP,
    interest_features,
    intra_video_loss,
)


def views(n_users: int = 3, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Random SegMM-like views (fixture made in code): lengths 1..8, a skip or a full view."""
    g = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t in range(per_user):
            s = int(g.integers(1, 9))
            k = int(g.integers(-1, s))
            lab = [1] * s if k < 0 else [1] * k + [0] + [-1] * (s - k - 1)
            rows.append((u, int(g.integers(0, 15)), 1000 * t, np.array(lab, dtype=np.int8)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_ms", "label_1d"])


def test_skip_position_and_full_views():
    assert skip_position(np.array([1, 1, 0, -1])) == 2
    assert skip_position(np.array([0, -1, -1])) == 0
    assert skip_position(np.array([1, 1, 1])) == -1  # played to the end: no skip segment
    for bad in ([1, 0, 0], [0, 1], [1, -1, 0], [1, -1]):
        with pytest.raises(ValueError):
            skip_position(np.array(bad))


def test_full_views_have_no_loss_and_no_metric_row_but_stay_in_histories():
    d = build_segments(views())
    full = np.flatnonzero(d.skip.numpy() < 0)
    assert len(full) > 0
    assert not set(full) & set(d.rows(0, skipped_only=True))
    b = d.batch(full)
    scores = torch.randn(len(full), MAX_SEGMENTS, requires_grad=True)
    loss = intra_video_loss(scores, b.segments, b.skip)
    loss.backward()
    assert float(loss.detach()) == 0.0 and scores.grad.abs().sum() == 0
    # a full view is in the next view's history (watched fraction 1, not skipped): the views of
    # one user are 1000 ms apart, so the next view of the same user has it as newest history
    nxt = [int(i) for i in full if i + 1 < len(d) and d.groups[i + 1] == d.groups[i]]
    assert nxt
    for i in nxt:
        assert d.hist_watched[i + 1, -1] == 1.0 and d.hist_skipped[i + 1, -1] == 0.0


def test_pairwise_loss_is_zero_when_the_skip_segment_is_lowest_by_the_margin():
    seg, skip = torch.tensor([4]), torch.tensor([2])
    ok = torch.zeros(1, MAX_SEGMENTS)
    ok[0, :4] = torch.tensor([3.0, 2.5, 1.0, 2.0])  # skip 1.0, others >= 1.0 + margin
    assert float(intra_video_loss(ok, seg, skip, margin=1.0)) == 0.0
    bad = ok.clone()
    bad[0, 3] = 1.5  # within the margin: hinge 0.5 on one of 3 pairs
    assert float(intra_video_loss(bad, seg, skip, margin=1.0)) == pytest.approx(0.5 / 3)
    # only the watched segments (0, 1) when pairs="watched": segment 3 no longer counts
    assert float(intra_video_loss(bad, seg, skip, margin=1.0, pairs="watched")) == 0.0
    # padded positions never count, whatever their score
    bad[0, 10] = -50.0
    assert float(intra_video_loss(bad, seg, skip, margin=1.0)) == pytest.approx(0.5 / 3)


def test_softmax_loss_is_cross_entropy_over_the_videos_segments():
    s = torch.zeros(1, MAX_SEGMENTS)
    s[0, :3] = torch.tensor([1.0, 0.0, 2.0])
    got = intra_video_loss(s, torch.tensor([3]), torch.tensor([1]), kind="softmax")
    expected = -torch.log_softmax(-s[0, :3], 0)[1]
    assert float(got) == pytest.approx(float(expected))


def test_skip_metrics_by_hand_and_with_ties():
    scores = np.full((2, 5), 9.0)
    scores[0, :4] = [0.5, 0.1, 0.9, 0.3]  # skip segment 3 (0.3) is second lowest: rank 2
    scores[1, :3] = [0.2, 0.2, 0.2]  # all tied, S = 3: expected HR@1 = 1/3
    m = skip_ranking_metrics(scores, np.array([4, 3]), np.array([3, 1]), ks=(1, 2))
    assert m["hr@1"] == pytest.approx((0 + 1 / 3) / 2)
    assert m["hr@2"] == pytest.approx((1 + 2 / 3) / 2)
    ndcg_tied = (1 + 1 / np.log2(3)) / 3  # ranks 1, 2 (3 is beyond k=2), each with prob 1/3
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + ndcg_tied) / 2)
    # the padding score (9.0) never ranks, and row order does not matter
    flipped = skip_ranking_metrics(scores[::-1], np.array([3, 4]), np.array([1, 3]), ks=(1, 2))
    assert flipped == m
    with pytest.raises(ValueError, match="skip"):
        skip_ranking_metrics(scores, np.array([4, 3]), np.array([4, 1]))


def test_position_prior_ranks_the_most_frequent_skip_segment_first():
    seg = torch.tensor([3, 3, 3, 5])
    skip = torch.tensor([1, 1, 0, -1])
    prior = PositionPrior().fit(seg, skip)
    lengths = torch.tensor([3, 7])  # the prior reads the lengths only
    s = prior(SegmentBatch(*[torch.zeros(2, dtype=torch.long)] * 2, lengths, *[None] * 6))
    assert int(s[0, :3].argmin()) == 1  # length 3: segment 1 was left most often
    assert int(s[1, :7].argmin()) == 1  # length 7 unseen: all lengths together


def test_split_is_chronological_within_each_user():
    split = split_by_user_time(np.array([1] * 10 + [2] * 2), 0.8, 0.1)
    assert split[:10].tolist() == [0] * 8 + [1, 2] and split[10:].tolist() == [0, 0]


@pytest.mark.parametrize("name", ["segmm", "duration-position", "mlp"])
def test_tiny_models_get_gradients_and_overfit(name):
    d = build_segments(views())
    cfg = SegmentConfig(dim=8, heads=2, dropout=0.0)
    torch.manual_seed(0)
    model = {
        "segmm": lambda: SegmentInterest(d.n_users, d.n_videos, cfg),
        "duration-position": lambda: DurationPosition(cfg),
        "mlp": lambda: SegmentMLP(cfg),
    }[name]()
    b = d.batch(d.rows(0, skipped_only=True))
    out = model.loss(b)
    assert set(out.parts) == {"pairwise"} and out.parts["pairwise"] == float(out.loss.detach())
    out.loss.backward()
    assert_gradients_reach_every_parameter(model)
    first, last = overfit(model, b, steps=200, lr=3e-2)
    assert last < (0.3 if name == "segmm" else 0.9) * first


def test_history_is_strictly_earlier_and_padding_invariant():
    d = build_segments(views(n_users=1, per_user=6))
    assert (d.hist_segments[0] == 0).all()  # the first view has no history
    assert d.hist_segments[3, -3:].tolist() == d.segments[:3].tolist()
    model = SegmentInterest(d.n_users, d.n_videos, SegmentConfig(dim=8, dropout=0.0)).eval()
    b = d.batch([4, 5])
    wide = b._replace(
        hist_video=torch.cat([torch.zeros(2, 3, dtype=torch.long), b.hist_video], 1),
        hist_segments=torch.cat([torch.zeros(2, 3, dtype=torch.long), b.hist_segments], 1),
        hist_watched=torch.cat([torch.zeros(2, 3), b.hist_watched], 1),
        hist_skipped=torch.cat([torch.zeros(2, 3), b.hist_skipped], 1),
    )
    torch.testing.assert_close(model(b), model(wide))


def test_interest_features_and_ranking_samples():
    d = build_segments(views())
    scores = torch.zeros(len(d), MAX_SEGMENTS)
    f = interest_features(scores, d.segments)
    # uniform skip distribution: expected watched fraction (S-1)/(2S), first-segment prob 1/S
    s = d.segments.float()
    assert torch.equal(f[:, 0], torch.clamp(((s - 1) / (2 * s) * 10).long(), 0, 9))
    ctr = segment_ctr(d, f.numpy())
    assert ctr.fields == ["user_id", "video_id", "length", "interest_0", "interest_1"]
    assert torch.equal(ctr.labels[:, 0], (d.skip < 0).float())


def test_real_segmm_sample_builds(data_root):
    from reelrec.data.sources import load

    d = build_segments(load("segmm", data_root).interactions)
    assert len(d) == 10000 and int((d.skip >= 0).sum()) == 6669
    assert np.bincount(d.split).tolist() == [8046, 1001, 953]  # tie groups stay in one split


def test_bad_input_gets_clear_errors():
    df = views(n_users=1, per_user=4)
    df.at[2, "label_1d"] = np.array([1, 256, -1])  # would wrap to 0 in int8
    with pytest.raises(ValueError, match=r"row 2 .*label_1d must be 1..40 integers"):
        build_segments(df)
    with pytest.raises(ValueError, match="split shares"):
        split_by_user_time(np.array([1, 1, 1]), 0.0, 0.9)
    with pytest.raises(ValueError, match="skip must be -1"):
        intra_video_loss(torch.zeros(1, MAX_SEGMENTS), torch.tensor([3]), torch.tensor([3]))
    with pytest.raises(ValueError, match="segment.loss"):
        SegmentMLP(SegmentConfig(loss="softmx"))
    with pytest.raises(ValueError, match="cutoffs"):
        skip_ranking_metrics(np.zeros((1, 3)), np.array([3]), np.array([0]), ks=(0,))


def test_views_at_the_same_time_share_a_split_and_never_see_each_other():
    df = pd.DataFrame(
        {
            "user_id": [1] * 10,
            "item_id": range(10),
            "timestamp_ms": [0, 1, 2, 3, 4, 5, 6, 7, 7, 7],  # the last three at one time
            "label_1d": [np.array([0, -1], dtype=np.int8)] * 10,
        }
    )
    d = build_segments(df)
    assert d.split[7:].tolist() == [d.split[7]] * 3  # the tie group is not cut by the split
    assert (d.hist_segments[9] > 0).sum() == 7  # views 7 and 8 are not in view 9's history


def test_inf_padding_does_not_make_the_loss_nan():
    s = torch.randn(1, MAX_SEGMENTS)
    s[0, 5:] = float("-inf")
    assert torch.isfinite(intra_video_loss(s, torch.tensor([5]), torch.tensor([1])))
