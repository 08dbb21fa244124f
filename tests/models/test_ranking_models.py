"""CAN, DIN and DeepFM on tiny samples built in code (odd sizes: B=5, L=7, D=6): the FM special
case of the co-action unit, masking of padded history, gradients, overfitting, the options of
the paper's ablations, and the per-task metric columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_checks import assert_ranker_trains

from reelrec.data.ctr import CTRBatch, CTRData, CTRTrainSet
from reelrec.eval.ctr import evaluate_ctr, task_metrics
from reelrec.models.can import CAN, CANConfig, CoActionUnit, resolve_pairs
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.deepfm import DeepFM
from reelrec.models.din import DIN, ActivationUnit, DINConfig

TASKS = ["click", "like", "watch_ratio"]


def tiny_data(n: int = 60, seed: int = 0) -> CTRData:
    """Random samples (fixture made in code): 3 fields (user 9, video 13, hour 6), one history
    of videos (L=7, left-padded), one bag of 4 codes; click follows the video's parity, like
    whether the video is in the history, watch ratio a value per video."""
    g = np.random.default_rng(seed)
    sparse = np.stack([g.integers(2, 9, n), g.integers(2, 13, n), g.integers(2, 6, n)], 1)
    lengths = g.integers(0, 8, n)
    hist = np.zeros((n, 1, 7), dtype=np.int64)
    for i, k in enumerate(lengths):
        if k:
            hist[i, 0, 7 - k :] = g.integers(2, 13, k)
    bag = np.zeros((n, 1, 4), dtype=np.int64)
    bag[:, 0, :3] = g.integers(1, 10, (n, 3))
    video = sparse[:, 1]
    labels = np.stack([video % 2, (hist[:, 0] == video[:, None]).any(1), video / 13.0], 1).astype(
        np.float32
    )
    labels[::7, 1] = np.nan  # some rows without a like label
    split = np.zeros(n, dtype=np.int8)
    split[n // 2 :] = 1
    return CTRData(
        fields=["user_id", "video_id", "hour"],
        vocab=[9, 13, 6],
        sparse=torch.from_numpy(sparse),
        sequences=["hist_video"],
        seq_target=[1],
        history=torch.from_numpy(hist),
        bags=["vq_codes"],
        bag_vocab=[10],
        bag=torch.from_numpy(bag),
        tasks=TASKS,
        labels=torch.from_numpy(labels),
        groups=g.integers(0, 4, n),
        split=split,
    )


CFG = RankingConfig(embed_dim=6, mlp=[10, 5], dropout=0.0, tasks=TASKS)


def build(name: str, data: CTRData, **can) -> torch.nn.Module:
    torch.manual_seed(0)
    schema = CTRSchema.of(data)
    if name == "deepfm":
        return DeepFM(schema, CFG)
    if name == "din":
        return DIN(schema, CFG, DINConfig(attention_mlp=[5]))
    return CAN(
        schema, CFG, DINConfig(attention_mlp=[5]), CANConfig(feed_dim=3, layers=[4, 2], **can)
    )


def test_coaction_unit_with_one_linear_order_1_layer_is_the_fm_inner_product():
    unit = CoActionUnit(
        CANConfig(orders=1, layers=[1], feed_dim=5, bias=False, activation="none", pooling="sum")
    )
    assert unit.param_dim == 5 and unit.out_dim == 1
    g = torch.Generator().manual_seed(1)
    p_a, p_b = torch.randn(4, 5, generator=g), torch.randn(4, 7, 5, generator=g)
    mask = torch.rand(4, 7, generator=g) > 0.4
    expected = torch.einsum("bld,bd->b", p_b * mask.unsqueeze(-1), p_a)
    torch.testing.assert_close(unit(p_a, p_b, mask).squeeze(1), expected)


def test_coaction_unit_matches_a_hand_built_micro_mlp_per_order():
    cfg = CANConfig(orders=2, layers=[3, 2], feed_dim=4, order_independent=True, pooling="sum")
    unit = CoActionUnit(cfg)
    assert unit.per_order == 4 * 3 + 3 + 3 * 2 + 2 and unit.param_dim == 2 * unit.per_order
    g = torch.Generator().manual_seed(2)
    p_a, p_b = torch.randn(3, unit.param_dim, generator=g), torch.randn(3, 5, 4, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    got = unit(p_a, p_b, mask)
    b, c = 1, 2  # sample 1, order 2: second block of weights on p_b ** 2
    w = p_a[b, unit.per_order :]
    w1, b1 = w[:12].view(4, 3), w[12:15]
    w2, b2 = w[15:21].view(3, 2), w[21:23]
    h1 = torch.tanh(p_b[b].pow(c) @ w1 + b1)
    h2 = torch.tanh(h1 @ w2 + b2)
    # outputs: [order1 layer1 (3), order1 layer2 (2), order2 layer1 (3), order2 layer2 (2)]
    torch.testing.assert_close(got[b, 5:8], h1.sum(0))
    torch.testing.assert_close(got[b, 8:10], h2.sum(0))


def test_mean_pooling_divides_the_masked_sum_by_the_real_positions():
    g = torch.Generator().manual_seed(4)
    summed = CoActionUnit(CANConfig(orders=2, layers=[3], feed_dim=4, pooling="sum"))
    mean = CoActionUnit(CANConfig(orders=2, layers=[3], feed_dim=4, pooling="mean"))
    p_a, p_b = torch.randn(3, summed.param_dim, generator=g), torch.randn(3, 6, 4, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1] * 6], dtype=torch.bool)
    n = mask.sum(1, keepdim=True).clamp_min(1)
    torch.testing.assert_close(mean(p_a, p_b, mask), summed(p_a, p_b, mask) / n)
    assert mean(p_a, p_b, mask)[1].abs().sum() == 0  # no history: zeros


def test_shared_order_weights_use_one_block_for_every_order():
    unit = CoActionUnit(CANConfig(orders=3, layers=[2], feed_dim=2, order_independent=False))
    assert unit.param_dim == unit.per_order == 2 * 2 + 2


@pytest.mark.parametrize("unit_kind", ["coaction", "din"])
def test_padded_history_positions_are_ignored(unit_kind):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3, 6, 4, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1], [1] * 6], dtype=torch.bool)
    if unit_kind == "coaction":
        unit = CoActionUnit(CANConfig(orders=2, layers=[3], feed_dim=4))
        args = (torch.randn(3, unit.param_dim, generator=g),)
    else:
        unit = ActivationUnit(4, [5])
        args = (torch.randn(3, 4, generator=g),)
    before = unit(*args[:1], h, mask) if unit_kind == "coaction" else unit(h, args[0], mask)
    h2 = h.clone()
    h2[~mask] = torch.randn(int((~mask).sum()), 4, generator=g) * 100  # garbage where padded
    after = unit(*args[:1], h2, mask) if unit_kind == "coaction" else unit(h2, args[0], mask)
    torch.testing.assert_close(before, after)


@pytest.mark.parametrize("name", ["deepfm", "din", "can"])
def test_extra_left_padding_does_not_change_predictions(name):
    data = tiny_data()
    model = build(name, data).eval()
    batch = data.batch(np.arange(10))
    longer = torch.cat([torch.zeros(10, 1, 5, dtype=torch.long), batch.history], 2)
    wide = CTRBatch(batch.sparse, longer, batch.bag, batch.labels)
    torch.testing.assert_close(model.predict(batch), model.predict(wide))


@pytest.mark.parametrize("name", ["deepfm", "din", "can"])
def test_tiny_config_gradients_and_overfit(name):
    data = tiny_data()
    model = build(name, data)
    assert_ranker_trains(model, data.batch(np.arange(30)), TASKS)


def test_task_towers_give_each_task_its_own_mlp():
    data = tiny_data()
    schema = CTRSchema.of(data)
    torch.manual_seed(0)
    model = DeepFM(
        schema, RankingConfig(embed_dim=6, mlp=[10], dropout=0.0, tasks=TASKS, tower=[4])
    )
    assert len(model.heads.towers) == 3 and model.heads.linear is None
    batch = data.batch(np.arange(8))
    out = model(batch)
    with torch.no_grad():  # changing the like tower moves only the like output
        model.heads.towers[1][-1].bias += 1.0
    diff = model(batch) - out
    assert torch.allclose(diff[:, 1], torch.ones(8)) and diff[:, [0, 2]].abs().max() == 0


def test_rows_without_a_label_do_not_enter_that_tasks_loss():
    data = tiny_data()
    model = build("din", data)
    batch = data.batch(np.arange(30))
    changed = batch.labels.clone()
    nan_rows = torch.isnan(changed[:, 1])
    assert nan_rows.any()
    base = model.loss(batch).parts["like"]
    changed[nan_rows, 0] = 1 - changed[nan_rows, 0]  # another task's labels do matter
    assert (
        model.loss(CTRBatch(batch.sparse, batch.history, batch.bag, changed)).parts["like"] == base
    )


def test_independence_options_change_the_parameter_count():
    data = tiny_data()
    pairs = ["video_id:hist_video", "video_id:user_id"]
    full = build("can", data, pairs=pairs)
    shared = build("can", data, pairs=pairs, pair_independent=False, order_independent=False)
    assert len(full.induction) == 2 and len(shared.induction) == 1
    assert full.unit.param_dim == 3 * shared.unit.param_dim
    n = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in shared.parameters())
    assert n == 13 * full.unit.param_dim * 2 - 13 * shared.unit.param_dim


def test_bad_pairs_are_refused_with_the_known_names():
    schema = CTRSchema.of(tiny_data())
    with pytest.raises(ValueError, match="neither a sequence"):
        resolve_pairs(schema, CANConfig(pairs=["video_id:nope"]))
    with pytest.raises(ValueError, match="induction_field:feed"):
        resolve_pairs(schema, CANConfig(pairs=["nope:hist_video"]))
    assert resolve_pairs(schema, CANConfig()) == [(1, "seq", 0)]


def test_task_metrics_score_each_prediction_column_against_its_own_label_column():
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float64)
    preds = np.array([[0.9, 0.8], [0.1, 0.3], [0.8, 0.7], [0.2, 0.2]])
    m = task_metrics(["click", "like"], [True, True], labels, preds, np.zeros(4))
    assert m["click"]["auc"] == 1.0 and m["like"]["auc"] == 0.0
    # log loss by hand for column 0
    expected = -np.mean(np.log([0.9, 0.9, 0.8, 0.8]))
    assert m["click"]["logloss"] == pytest.approx(expected)


def test_a_task_with_one_class_reports_nan_auc_and_says_why():
    labels = np.array([[0.0], [0.0], [0.0]])
    m = task_metrics(["follow"], [True], labels, np.array([[0.1], [0.2], [0.3]]), np.arange(3))
    assert np.isnan(m["follow"]["auc"]) and "one class" in m["follow"]["note"]


def test_evaluate_ctr_reports_each_task_and_the_mean_auc():
    data = tiny_data()
    model = build("deepfm", data)
    r = evaluate_ctr(model, data, 1)
    assert set(r["tasks"]) == set(TASKS)
    assert set(r["tasks"]["watch_ratio"]) == {"mae", "rmse", "n"}
    aucs = [r["tasks"][t]["auc"] for t in ("click", "like")]
    assert r["auc"] == pytest.approx(np.mean(aucs)) and r["n"] == 30


def test_training_set_batches_cover_the_train_rows_once():
    data = tiny_data()
    ts = CTRTrainSet(data)
    idx = torch.cat(ts.batches(7, torch.Generator().manual_seed(0)))
    assert sorted(idx.tolist()) == list(range(30))
