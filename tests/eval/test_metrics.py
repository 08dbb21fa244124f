"""Tests for reelrec.eval.metrics: CASES.md values, hand-computed examples, sklearn cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import ndcg_score, roc_auc_score

from reelrec.eval import metrics
from reelrec.eval.metrics import (
    GAUCResult,
    MeanResult,
    auc,
    count_ids,
    count_ids_torch,
    gauc,
    hit_rate_at_k,
    hits_at_k,
    log_loss,
    mean_over_users,
    metrics_from_ranks,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)

# CASES.md C01: one row per impression (user, label, score).
C01_USERS = np.array(["A", "A", "A", "B", "B", "B", "B", "C", "C"])
C01_LABELS = np.array([1, 0, 0, 0, 1, 0, 1, 1, 1])
C01_SCORES = np.array([0.5, 0.5, 0.1, 0.2, 0.7, 0.7, 0.9, 0.3, 0.6])

# CASES.md C02.
C02_USERS = np.array(["U1"] * 3 + ["U2"] * 2 + ["U3"] * 3 + ["U4"] * 2)
C02_LABELS = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 1])
C02_SCORES = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.6, 0.4, 0.5, 0.8, 0.3])


def _gauc_reference(users, labels, scores) -> tuple[float, int, int, int]:
    """Plain per-user loop with sklearn's AUC, impression-weighted."""
    total, weight, n_used, n_ex_users, n_ex_rows = 0.0, 0, 0, 0, 0
    for u in np.unique(users):
        m = users == u
        if len(np.unique(labels[m])) < 2:
            n_ex_users += 1
            n_ex_rows += int(m.sum())
            continue
        total += m.sum() * roc_auc_score(labels[m], scores[m])
        weight += int(m.sum())
        n_used += 1
    value = total / weight if weight else float("nan")
    return value, n_used, n_ex_users, n_ex_rows


# --------------------------------------------------------------------------- C01


def test_c01_per_user_auc_counts_tied_pair_as_half():
    a, b = C01_USERS == "A", C01_USERS == "B"
    assert auc(C01_LABELS[a], C01_SCORES[a]) == pytest.approx(0.75, abs=1e-12)
    assert auc(C01_LABELS[b], C01_SCORES[b]) == pytest.approx(0.875, abs=1e-12)
    # GAUC over one user is that user's AUC.
    assert gauc(C01_USERS[a], C01_LABELS[a], C01_SCORES[a]).value == pytest.approx(0.75)
    assert gauc(C01_USERS[b], C01_LABELS[b], C01_SCORES[b]).value == pytest.approx(0.875)


def test_c01_gauc_is_impression_weighted_and_excludes_single_class_user():
    res = gauc(C01_USERS, C01_LABELS, C01_SCORES)
    assert isinstance(res, GAUCResult)
    assert res.value == pytest.approx(0.8214, abs=1e-4)
    assert res.value == pytest.approx((3 * 0.75 + 4 * 0.875) / 7, abs=1e-12)
    assert res.value != pytest.approx(0.8125, abs=1e-4)  # the unweighted mean
    assert (res.n_users, res.n_excluded_users, res.n_excluded_impressions) == (2, 1, 2)


def test_c01_global_auc():
    assert auc(C01_LABELS, C01_SCORES) == pytest.approx(0.75, abs=1e-12)
    assert auc(C01_LABELS, C01_SCORES) == pytest.approx(roc_auc_score(C01_LABELS, C01_SCORES))


def test_c01_shuffling_rows_changes_nothing():
    base_gauc = gauc(C01_USERS, C01_LABELS, C01_SCORES)
    base_auc = auc(C01_LABELS, C01_SCORES)
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.permutation(len(C01_LABELS))
        assert gauc(C01_USERS[p], C01_LABELS[p], C01_SCORES[p]) == base_gauc
        assert auc(C01_LABELS[p], C01_SCORES[p]) == base_auc
        a = C01_USERS[p] == "A"
        assert auc(C01_LABELS[p][a], C01_SCORES[p][a]) == 0.75


def test_c01_user_ids_may_be_ints_strings_or_tensors():
    int_users = np.unique(C01_USERS, return_inverse=True)[1] + 100
    by_str = gauc(C01_USERS, C01_LABELS, C01_SCORES)
    by_int = gauc(int_users, C01_LABELS, C01_SCORES)
    by_tensor = gauc(
        torch.from_numpy(int_users),
        torch.from_numpy(C01_LABELS).bool(),
        torch.from_numpy(C01_SCORES).float(),
    )
    assert by_int == by_str
    assert by_tensor.value == pytest.approx(by_str.value, abs=1e-12)


# --------------------------------------------------------------------------- C02


def test_c02_gauc_excludes_and_counts_single_class_users():
    res = gauc(C02_USERS, C02_LABELS, C02_SCORES)
    assert res.value == pytest.approx(0.6, abs=1e-12)
    assert res.n_users == 2
    assert res.n_excluded_users == 2
    assert res.n_excluded_impressions == 5


@pytest.mark.parametrize("user", ["U1", "U2"])
def test_c02_global_auc_on_one_class_raises(user):
    m = np.equal(C02_USERS, user)
    with pytest.raises(ValueError, match="all labels are one class"):
        auc(C02_LABELS[m], C02_SCORES[m])


def test_c02_gauc_with_no_usable_user_is_nan():
    m = np.isin(C02_USERS, ["U1", "U2"])
    res = gauc(C02_USERS[m], C02_LABELS[m], C02_SCORES[m])
    assert math.isnan(res.value)
    assert (res.n_users, res.n_excluded_users, res.n_excluded_impressions) == (0, 2, 5)


# --------------------------------------------------------------------------- C04

# Items A, B, C are ids 0, 1, 2 with gains 3, 5, 4.
C04_GAINS = [{0: 3.0, 1: 5.0, 2: 4.0}]


def test_c04a_ideal_dcg_is_truncated_to_k():
    value = ndcg_at_k(np.array([[0, 1]]), None, 2, gains=C04_GAINS)
    assert value[0] == pytest.approx(0.8180, abs=1e-4)
    expected = (3 + 5 / math.log2(3)) / (5 + 4 / math.log2(3))
    assert value[0] == pytest.approx(expected, abs=1e-12)
    assert value[0] == pytest.approx(
        ndcg_score([[3, 5, 4]], [[3.0, 2.0, 1.0]], k=2), abs=1e-12
    )  # sklearn agrees (scores put A first, B second)


def test_c04b_recommendation_list_is_truncated_to_k():
    value = ndcg_at_k(np.array([[1, 2, 0]]), None, 2, gains=C04_GAINS)
    assert value[0] == pytest.approx(1.0, abs=1e-12)
    assert value[0] <= 1.0


def test_c04_values_outside_unit_interval_fail_an_assertion():
    with pytest.raises(AssertionError, match="outside"):
        metrics._check_unit_interval(np.array([1.1994]), "NDCG@2")


def test_ndcg_needs_exactly_one_of_truth_and_gains():
    with pytest.raises(ValueError, match="exactly one"):
        ndcg_at_k(np.array([[0, 1]]), [[0]], 2, gains=C04_GAINS)
    with pytest.raises(ValueError, match="exactly one"):
        ndcg_at_k(np.array([[0, 1]]), None, 2)
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k(np.array([[0, 1]]), None, 2, gains=[{0: -1.0}])


# --------------------------------------------------------------------------- C05


def test_c05_empty_slot_is_never_a_hit():
    ranked = np.array([[5, 2, -1]])
    truth = [{0}]
    assert hit_rate_at_k(ranked, truth, 3)[0] == 0.0
    assert ndcg_at_k(ranked, truth, 3)[0] == 0.0
    assert mrr_at_k(ranked, truth, 3)[0] == 0.0
    assert recall_at_k(ranked, truth, 3)[0] == 0.0


def test_c05_padding_in_truth_is_not_an_item():
    ranked = np.array([[5, 2, -1]])
    for truth in ([{-1}], np.array([[-1]]), np.array([[-1, -1]])):
        assert not hits_at_k(ranked, truth).any()
        assert math.isnan(hit_rate_at_k(ranked, truth, 3)[0])  # no relevant item at all
        assert math.isnan(ndcg_at_k(ranked, truth, 3)[0])
    # padding next to a real item: -1 is dropped, the item still counts
    assert hits_at_k(np.array([[5, -1, 7]]), np.array([[-1, 7]])).tolist() == [[False, False, True]]


def test_c05_ranked_ids_below_minus_one_raise():
    with pytest.raises(ValueError, match="-2"):
        hits_at_k(np.array([[5, -2, 1]]), [{1}])


# --------------------------------------------------------------------------- C07


def test_c07_repeated_ids_are_all_counted():
    ids = np.array([3, 3, 3, 5, 7, 7])
    counts = count_ids(ids, 8)
    assert counts.dtype == np.int64
    assert counts.tolist() == [0, 0, 0, 3, 0, 1, 0, 2]
    for batch in (1, 2, 6):
        summed = sum(count_ids(ids[i : i + batch], 8) for i in range(0, len(ids), batch))
        np.testing.assert_array_equal(summed, counts)


def test_c07_torch_counts_match():
    ids = torch.tensor([3, 3, 3, 5, 7, 7])
    counts = count_ids_torch(ids, 8)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [0, 0, 0, 3, 0, 1, 0, 2]
    for batch in (1, 2, 6):
        summed = sum(count_ids_torch(b, 8) for b in ids.split(batch))
        assert torch.equal(summed, counts)


def test_count_ids_names_the_bad_id():
    with pytest.raises(ValueError, match="id 8 "):
        count_ids(np.array([3, 8]), 8)
    with pytest.raises(ValueError, match="id -1 "):
        count_ids_torch(torch.tensor([0, -1]), 8)
    with pytest.raises(ValueError, match="integer"):
        count_ids(np.array([0.5]), 8)


# --------------------------------------------------------------------------- hand-computed


def test_ndcg_binary_hits_at_rank_one_and_three():
    ranked = np.array([[10, 11, 12, 13]])
    value = ndcg_at_k(ranked, [{10, 12}], 3)
    assert value[0] == pytest.approx(1.5 / (1 + 1 / math.log2(3)), abs=1e-12)


def test_recall_hr_mrr_with_three_relevant_items():
    ranked = np.array([[10, 11, 12, 13, 14]])
    truth = [[11, 14, 99]]
    assert recall_at_k(ranked, truth, 2)[0] == pytest.approx(1 / 3)
    assert recall_at_k(ranked, truth, 5)[0] == pytest.approx(2 / 3)  # not 2 / min(5, 3)
    assert hit_rate_at_k(ranked, truth, 1)[0] == 0.0
    assert hit_rate_at_k(ranked, truth, 2)[0] == 1.0
    assert mrr_at_k(ranked, truth, 1)[0] == 0.0
    assert mrr_at_k(ranked, truth, 5)[0] == pytest.approx(0.5)


def test_repeated_truth_items_count_once_and_repeated_ranked_items_raise():
    ranked = np.array([[10, 11, 12]])
    assert recall_at_k(ranked, [[11, 11, 12]], 3)[0] == pytest.approx(1.0)
    assert recall_at_k(ranked, np.array([[12, 11, 11, -1]]), 3)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="more than once"):
        recall_at_k(np.array([[10, 11, 10]]), [[10]], 3)


def test_k_is_validated():
    ranked = np.array([[1, 2]])
    with pytest.raises(ValueError, match="exceeds"):
        recall_at_k(ranked, [[1]], 3)
    with pytest.raises(ValueError, match="positive integer"):
        ndcg_at_k(ranked, [[1]], 0)


def test_mean_over_users_skips_nan_and_counts_it():
    res = mean_over_users(np.array([1.0, np.nan, 0.0, 0.5]))
    assert res == MeanResult(0.5, 3, 1)
    empty = mean_over_users(np.array([np.nan]))
    assert math.isnan(empty.value)
    assert (empty.n_users, empty.n_excluded) == (0, 1)


def test_metrics_from_ranks_hand_values():
    out = metrics_from_ranks(np.array([0, 4, 9, 20]), ks=(5, 10))
    assert out["hr@5"] == pytest.approx(0.5)
    assert out["hr@10"] == pytest.approx(0.75)
    assert out["recall@5"] == out["hr@5"]
    assert out["recall@10"] == out["hr@10"]
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(11)) / 4)
    assert out["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert out["mrr@5"] == pytest.approx((1 + 1 / 5) / 4)
    assert out["mrr"] == pytest.approx((1 + 1 / 5 + 1 / 10 + 1 / 21) / 4)
    assert all(isinstance(v, float) for v in out.values())


def test_metrics_from_ranks_rejects_bad_input():
    with pytest.raises(ValueError, match=">= 0"):
        metrics_from_ranks(np.array([0, -1]))
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks(np.array([], dtype=np.int64))


def test_metrics_from_ranks_agrees_with_list_metrics():
    rng = np.random.default_rng(3)
    n_users, n_items, k_max = 40, 30, 10
    ranks = rng.integers(0, n_items, size=n_users)
    targets = rng.integers(0, 1000, size=n_users)
    # A ranked list of distinct filler ids (>= 1000) with the target at its rank.
    ranked = 1000 + np.arange(k_max)[None, :].repeat(n_users, axis=0)
    inside = ranks < k_max
    ranked[inside, ranks[inside]] = targets[inside]
    truth = targets[:, None]
    out = metrics_from_ranks(ranks, ks=(5, 10))
    for k in (5, 10):
        assert out[f"hr@{k}"] == pytest.approx(hit_rate_at_k(ranked, truth, k).mean())
        assert out[f"recall@{k}"] == pytest.approx(recall_at_k(ranked, truth, k).mean())
        assert out[f"ndcg@{k}"] == pytest.approx(ndcg_at_k(ranked, truth, k).mean())
        assert out[f"mrr@{k}"] == pytest.approx(mrr_at_k(ranked, truth, k).mean())


# --------------------------------------------------------------------------- input errors


def test_auc_and_log_loss_reject_bad_input():
    with pytest.raises(ValueError, match="length mismatch"):
        auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0 or 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        auc([], [])
    with pytest.raises(ValueError, match="length mismatch"):
        gauc([1, 1], [0, 1], [0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log_loss([0, 1], [0.2, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        log_loss([0, 1], [0.2, np.nan])


def test_log_loss_clips_confident_mistakes():
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    assert log_loss([0, 1], [0.0, 1.0]) == pytest.approx(-math.log(1 - 1e-7))


# --------------------------------------------------------------------------- cross-checks


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # about 14 distinct values
    expected = roc_auc_score(labels, scores)
    assert auc(labels, scores) == pytest.approx(expected, abs=1e-12)
    assert auc(labels.astype(float), scores.astype(np.float32)) == pytest.approx(expected)
    assert auc(torch.from_numpy(labels), torch.from_numpy(scores)) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_gauc_matches_per_user_loop(seed):
    rng = np.random.default_rng(seed)
    n = 600
    users = rng.integers(0, 60, size=n)
    labels = (rng.random(n) < rng.random(60)[users]).astype(int)  # some users one class
    scores = np.round(rng.random(n), 1)
    ref_value, ref_used, ref_ex_users, ref_ex_rows = _gauc_reference(users, labels, scores)
    res = gauc(users, labels, scores)
    assert res.value == pytest.approx(ref_value, abs=1e-12)
    assert (res.n_users, res.n_excluded_users, res.n_excluded_impressions) == (
        ref_used,
        ref_ex_users,
        ref_ex_rows,
    )
    p = rng.permutation(n)
    assert gauc(users[p], labels[p], scores[p]) == res


@pytest.mark.parametrize("seed", range(3))
def test_log_loss_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=200)
    probs = rng.uniform(0.01, 0.99, size=200)
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_graded_ndcg_matches_sklearn_on_full_ranking(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 6, 12
    y_true = rng.integers(0, 4, size=(n_users, n_items)).astype(float)
    y_true[:, 0] = np.maximum(y_true[:, 0], 1.0)  # every user has a positive gain
    y_score = np.stack([rng.permutation(n_items) for _ in range(n_users)]).astype(float)
    ranked = np.argsort(-y_score, axis=1)  # no ties, so the order is defined
    gains = [{int(i): float(g) for i, g in enumerate(row) if g > 0} for row in y_true]
    for k in (1, 3, 5, n_items):
        ours = ndcg_at_k(ranked, None, k, gains=gains)
        theirs = [ndcg_score(y_true[u : u + 1], y_score[u : u + 1], k=k) for u in range(n_users)]
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


def _list_metrics_reference(ranked, truth_sets, k):
    """Per-user loop: (recall, hr, mrr, binary ndcg), NaN for users with no relevant item."""
    out = []
    for row, rel in zip(ranked, truth_sets, strict=True):
        rel = {t for t in rel if t >= 0}
        if not rel:
            out.append((np.nan,) * 4)
            continue
        top = [x for x in row[:k]]
        hit = [x >= 0 and x in rel for x in top]
        dcg = sum(1 / math.log2(i + 2) for i, h in enumerate(hit) if h)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(rel))))
        first = next((i for i, h in enumerate(hit) if h), None)
        out.append(
            (
                sum(hit) / len(rel),
                float(any(hit)),
                0.0 if first is None else 1 / (first + 1),
                dcg / idcg,
            )
        )
    return np.array(out)


@pytest.mark.parametrize("seed", range(4))
def test_list_metrics_match_python_reference(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, big_k = 30, 25, 8
    ranked = np.stack([rng.permutation(n_items)[:big_k] for _ in range(n_users)])
    n_valid = rng.integers(0, big_k + 1, size=n_users)
    ranked[np.arange(big_k)[None, :] >= n_valid[:, None]] = -1  # short lists, -1 padded
    truth_sets = [
        set(rng.choice(n_items, size=rng.integers(0, 6), replace=False).tolist())
        for _ in range(n_users)
    ]
    width = max(len(s) for s in truth_sets) + 2
    padded = np.full((n_users, width), -1)
    for u, s in enumerate(truth_sets):
        padded[u, : len(s)] = sorted(s, reverse=True)
    for k in (1, 3, big_k):
        ref = _list_metrics_reference(ranked, truth_sets, k)
        for truth in (truth_sets, padded, torch.from_numpy(padded)):
            np.testing.assert_allclose(recall_at_k(ranked, truth, k), ref[:, 0], atol=1e-12)
            np.testing.assert_allclose(hit_rate_at_k(ranked, truth, k), ref[:, 1], atol=1e-12)
            np.testing.assert_allclose(mrr_at_k(ranked, truth, k), ref[:, 2], atol=1e-12)
            np.testing.assert_allclose(ndcg_at_k(ranked, truth, k), ref[:, 3], atol=1e-12)
    np.testing.assert_array_equal(hits_at_k(ranked, truth_sets), hits_at_k(ranked, padded))


def test_binary_ndcg_matches_sklearn():
    rng = np.random.default_rng(7)
    n_items = 10
    y_true = (rng.random((5, n_items)) < 0.3).astype(float)
    y_true[:, 3] = 1.0
    y_score = np.stack([rng.permutation(n_items) for _ in range(5)]).astype(float)
    ranked = np.argsort(-y_score, axis=1)
    truth = [np.flatnonzero(row) for row in y_true]
    for k in (2, 5):
        theirs = [ndcg_score(y_true[u : u + 1], y_score[u : u + 1], k=k) for u in range(5)]
        np.testing.assert_allclose(ndcg_at_k(ranked, truth, k), theirs, atol=1e-12)


def test_module_docstring_cites_conventions():
    doc = metrics.__doc__
    assert "1/2" in doc
    assert "1706.06978" in doc
    assert "Järvelin" in doc and "2002" in doc


def test_huge_item_ids_give_the_same_metrics():
    # Ids near 2**61 cannot be packed into one int64 key per (user, item); the metrics must not
    # change when the ids are relabelled.
    rng = np.random.default_rng(11)
    ranked = np.stack([rng.permutation(12)[:6] for _ in range(20)])
    ranked[0, 4:] = -1
    truth = [set(rng.choice(12, size=4, replace=False).tolist()) for _ in range(20)]
    gains = [{i: float(rng.integers(1, 10)) for i in sorted(s)} for s in truth]
    offset = 2**61
    big_ranked = np.where(ranked >= 0, ranked + offset, -1)
    big_truth = [{i + offset for i in s} for s in truth]
    big_gains = [{i + offset: g for i, g in d.items()} for d in gains]
    np.testing.assert_array_equal(hits_at_k(big_ranked, big_truth), hits_at_k(ranked, truth))
    np.testing.assert_allclose(ndcg_at_k(big_ranked, big_truth, 4), ndcg_at_k(ranked, truth, 4))
    np.testing.assert_allclose(
        ndcg_at_k(big_ranked, None, 4, gains=big_gains), ndcg_at_k(ranked, None, 4, gains=gains)
    )
    assert hits_at_k(ranked, truth).any()
