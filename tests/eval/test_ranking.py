"""Full-ranking helpers: exact ranks, the tie rule, chunk invariance (CASES.md C21), OOV misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reelrec.eval.ranking import (
    MISS_RANK,
    evaluate_next_item,
    target_ranks,
    target_ranks_chunked,
    topk_chunked,
)


def _brute_rank(scores: np.ndarray, t: int) -> int:
    order = sorted(range(1, len(scores)), key=lambda i: (-scores[i], i))
    return order.index(t)


def test_target_ranks_match_sorting_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (20, 9), generator=g).float()  # many ties
    targets = torch.randint(1, 9, (20,), generator=g)
    ranks = target_ranks(scores, targets)
    for r, s, t in zip(ranks.tolist(), scores.numpy(), targets.tolist(), strict=True):
        assert r == _brute_rank(s, t)


def test_oov_target_is_a_miss_and_padding_never_ranked():
    scores = torch.tensor(
        [[100.0, 0.1, 0.2, 0.3]]
    )  # column 0 is padding, even if its score is high
    assert target_ranks(scores, torch.tensor([3])).tolist() == [0]
    assert target_ranks(scores, torch.tensor([-1])).tolist() == [MISS_RANK]
    with pytest.raises(ValueError, match="targets"):
        target_ranks(scores, torch.tensor([4]))
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[0.0, float("nan")]]), torch.tensor([1]))


def _c21_embeddings():
    # dot products with user vector [1, 0] reproduce the C21 scores; item row 0 is padding
    u0 = [0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5, 0.05]
    u1 = [0.1, 0.2, 0.3, 0.8, 0.2, 0.1, 0.8, 0.6, 0.5, 0.05]
    items = torch.zeros(11, 2)
    items[1:, 0] = torch.tensor(u0)
    items[1:, 1] = torch.tensor(u1)
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return users, items


@pytest.mark.parametrize("chunk", [1, 3, 4, 10])
def test_c21_chunked_topk_equals_one_shot_with_tie_rule(chunk):
    users, items = _c21_embeddings()
    top = topk_chunked(users, items, k=3, item_chunk=chunk)
    # catalogue items are 1-based here: C21's items 1, 3, 5 (0-based) are indices 2, 4, 6
    assert top[0].tolist() == [2, 4, 6]
    assert top[1, :2].tolist() == [4, 7]  # C21 items 3 and 6 tie at 0.8: lower id first


@pytest.mark.parametrize("chunk", [1, 3, 4, 10])
def test_chunked_ranks_equal_one_shot(chunk):
    g = torch.Generator().manual_seed(1)
    users = torch.randn(6, 4, generator=g).round(decimals=1)
    items = torch.randn(12, 4, generator=g).round(decimals=1)
    items[3] = items[5]  # exact ties
    targets = torch.tensor([1, 3, 5, 11, -1, 7])
    one_shot = target_ranks(users @ items.T, targets)
    assert (
        target_ranks_chunked(users, items, targets, item_chunk=chunk).tolist() == one_shot.tolist()
    )


def test_topk_pads_with_minus_one_when_catalogue_is_small():
    users, items = torch.ones(1, 2), torch.randn(3, 2)
    assert topk_chunked(users, items, k=4)[0, 2:].tolist() == [-1, -1]


def test_evaluate_next_item_hand_values():
    # 2 instances over 4 items: target ranked 1st, and an OOV target (a miss)
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.2, 0.3], [0.0, 0.9, 0.1, 0.2, 0.3]])
    hist = torch.zeros(2, 3, dtype=torch.long)
    metrics, ranks = evaluate_next_item(
        lambda h: scores[: len(h)], hist, torch.tensor([1, -1]), ks=(1, 5)
    )
    assert ranks.tolist() == [0, MISS_RANK]
    # k = 5 exceeds the 4 items: the OOV target must still be a miss
    assert metrics["hr@1"] == 0.5 and metrics["ndcg@5"] == 0.5 and metrics["oov_targets"] == 1
    assert metrics["mrr"] == pytest.approx(0.5)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_by_length_batching_returns_ranks_in_input_order(batch_size):
    """Scoring in order of history length with padding columns cut equals plain scoring for a
    scorer that ignores left padding (here: counts of each item in the history, a fixture
    built in code), whatever the batch size."""
    g = torch.Generator().manual_seed(0)
    n, width, items = 11, 9, 6
    lengths = torch.randint(0, width + 1, (n,), generator=g)
    hist = torch.randint(1, items + 1, (n, width), generator=g)
    hist[torch.arange(width).unsqueeze(0) < (width - lengths).unsqueeze(1)] = 0
    targets = torch.randint(1, items + 1, (n,), generator=g)

    def score_all(h: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(len(h), items + 1).scatter_add_(1, h, torch.ones(h.shape))
        counts[:, 0] = float("-inf")
        return counts + torch.arange(items + 1) * 1e-3  # no ties

    plain, r1 = evaluate_next_item(score_all, hist, targets, (1, 5), batch_size)
    fast, r2 = evaluate_next_item(score_all, hist, targets, (1, 5), batch_size, by_length=True)
    assert r1.tolist() == r2.tolist() and plain == fast


def test_elastic_evaluation_by_length_equals_padded():
    from reelrec.eval.ranking import evaluate_model
    from reelrec.models.elastic import Elastic, ElasticConfig

    torch.manual_seed(0)
    cfg = ElasticConfig(
        max_len=30,
        hidden=16,
        heads=2,
        inner=16,
        experts=2,
        chunk=4,
        memory_size=16,
        memory_dim=4,
        dropout=0.0,
        attn_dropout=0.0,
    )
    model = Elastic(12, cfg).eval()
    g = torch.Generator().manual_seed(1)
    hist = torch.randint(1, 13, (7, 30), generator=g)
    for i, keep in enumerate([30, 1, 5, 12, 29, 3, 8]):
        hist[i, : 30 - keep] = 0
    targets = torch.randint(1, 13, (7,), generator=g)
    _, fast = evaluate_model(model, hist, targets, (5, 10), batch_size=3)
    _, plain = evaluate_next_item(model.score_all, hist, targets, (5, 10), 3)
    assert fast.tolist() == plain.tolist()
