"""The P-Score reward model on the tiny ranking samples of ``test_ranking_models.py`` (built in
code), and its request features on real KuaiRand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import assert_gradients_reach_every_parameter, overfit
from test_ranking_models import TASKS, tiny_data

from reelrec.eval.ctr import pscore_metrics
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.reward import PScoreModel, RewardConfig, is_user_field

CFG = RankingConfig(embed_dim=6, mlp=[10, 5], tower=[4], dropout=0.0, tasks=TASKS)


def build(**reward) -> tuple[PScoreModel, object]:
    data = tiny_data()
    torch.manual_seed(0)
    return PScoreModel(CTRSchema.of(data), CFG, RewardConfig(pscore_mlp=[3], **reward)), data


def test_shapes_and_probabilities():
    model, data = build()
    batch = data.batch(np.arange(7))
    assert model(batch).shape == (7, len(TASKS))
    p = model.pscore(batch)
    assert p.shape == (7,) and bool(((p > 0) & (p < 1)).all()) and not p.requires_grad
    assert model.user_fields == [0, 2] and model.item_fields == [1]  # user_id, hour | video_id
    assert is_user_field("user_active_degree") and not is_user_field("video_views")


def test_every_parameter_learns_and_the_model_overfits():
    model, data = build()
    batch = data.batch(np.arange(30))
    model.loss(batch).loss.backward()
    assert_gradients_reach_every_parameter(model)
    model.zero_grad()
    first, last = overfit(model, batch, steps=150, lr=0.03)
    assert last < 0.5 * first


def test_pscore_target_is_the_weighted_mean_label():
    """The P-Score loss equals BCE against sum_t w_t y_t / sum_t w_t (watch ratio / clip)."""
    model, data = build(pscore_weights=[1.0, 3.0, 2.0], pscore_loss_weight=1.0)
    batch = data.batch(np.arange(14))
    out, logit = model.outputs_and_pscore(batch)
    y = model.pscore_targets(batch.labels)
    assert torch.allclose(y[:, 2], (batch.labels[:, 2] / CFG.watch_ratio_clip).clamp(0, 1))
    w = torch.tensor([1.0, 3.0, 2.0]) * ~torch.isnan(y)
    soft = (w * y.nan_to_num(0)).sum(1) / w.sum(1)
    expect = torch.nn.functional.binary_cross_entropy_with_logits(logit, soft)
    assert model.loss(batch).parts["pscore"] == pytest.approx(float(expect.detach()), rel=1e-5)


def test_pscore_loss_weight_zero_leaves_the_head_untrained():
    model, data = build(pscore_loss_weight=0.0)
    model.loss(data.batch(np.arange(20))).loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.pscore_head.parameters())


@pytest.mark.parametrize("weights", [[1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 1.0]])
def test_bad_pscore_weights_are_refused(weights):
    with pytest.raises(ValueError, match="pscore_weights"):
        build(pscore_weights=weights)


def test_empty_tower_is_refused():
    data = tiny_data()
    with pytest.raises(ValueError, match="ranking.tower"):
        PScoreModel(CTRSchema.of(data), RankingConfig(tasks=TASKS), RewardConfig())


def test_pscore_metrics_score_one_column_against_every_binary_task():
    model, data = build()
    m = pscore_metrics(model, data, 1)
    assert set(m) == {"click", "like"}  # the watch ratio is not a binary task
    labelled = int((~torch.isnan(data.labels[data.rows(1), 1])).sum())
    assert 0 <= m["click"]["auc"] <= 1 and m["like"]["n"] == labelled


def test_request_features_reproduce_the_logged_impressions(kuairand_prepared):
    """For every logged KuaiRand row, the features rebuilt from (user, video, time, hour) are the
    ones kuairand_ctr gave that row: the reward model sees generated videos as it saw logs."""
    from reelrec.data.ctr import FeatureConfig, RequestFeatures, kuairand_ctr
    from reelrec.data.prepare import load_prepared

    prep = load_prepared(kuairand_prepared("kuairand-request-features"))
    cfg = FeatureConfig()
    data = kuairand_ctr(prep.interactions, prep.users, cfg)
    feats = RequestFeatures(data, prep.interactions, cfg)
    inter = prep.interactions.reset_index(drop=True)
    rows = np.arange(0, len(inter), 3)  # a third of the 35,623 rows, every split
    b = feats.batch(
        inter["user_id"].to_numpy()[rows],
        inter["item_id"].to_numpy()[rows],
        inter["timestamp_ms"].to_numpy(dtype=np.int64)[rows],
        inter["hourmin"].to_numpy()[rows] // 100,
    )
    assert torch.equal(b.sparse, data.sparse[rows])
    assert torch.equal(b.history, data.history[rows])
    assert b.history[:, 0].gt(0).any(1).float().mean() > 0.9  # histories are not empty
    # an unseen user and video fall back to "unknown" (1), without profile or history
    u = feats.batch(np.array([-5]), np.array([-7]), np.array([2**50]), np.array([3]))
    assert u.sparse[0, data.fields.index("user_id")] == 1
    assert u.sparse[0, data.fields.index("video_id")] == 1
    assert int(u.history.sum()) == 0
