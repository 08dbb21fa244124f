"""Full-ranking helpers: exact ranks, the tie rule, chunk invariance (CASES.md C21), OOV misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reelrec.eval.ranking import (
    MISS_RANK,
    evaluate_next_item,
    mask_scores,
    target_ranks,
    target_ranks_chunked,
    topk_chunked,
)


def _brute_rank(scores: np.ndarray, t: int) -> list[int]:
    """[items scoring above the target, other items tying with it] over items 1..V."""
    others = np.delete(scores[1:], t - 1)
    return [int((others > scores[t]).sum()), int((others == scores[t]).sum())]


def test_target_ranks_count_greater_and_tied_items():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (20, 9), generator=g).float()  # many ties
    targets = torch.randint(1, 9, (20,), generator=g)
    ranks = target_ranks(scores, targets)
    for r, s, t in zip(ranks.tolist(), scores.numpy(), targets.tolist(), strict=True):
        assert r == _brute_rank(s, t)


@pytest.mark.parametrize("n_items", [7, 10, 37])
def test_constant_scorer_gets_the_expected_rank_value_for_any_target(n_items):
    """A tie is never broken by item id or input order: a scorer that scores every item alike
    gets HR@10 = 10 / n_items (NDCG@10 its expectation over a random order) whichever item
    the target is, the first index as the last."""
    hist = torch.zeros(n_items, 3, dtype=torch.long)
    targets = torch.arange(1, n_items + 1)
    constant = lambda h: torch.zeros(len(h), n_items + 1)  # noqa: E731
    m, _ = evaluate_next_item(constant, hist, targets, ks=(10,), batch_size=4)
    k = min(10, n_items)
    assert m["hr@10"] == pytest.approx(k / n_items)
    ndcg = sum(1 / np.log2(r + 2) for r in range(k)) / n_items
    assert m["ndcg@10"] == pytest.approx(ndcg)
    assert m["mrr"] == pytest.approx(sum(1 / (r + 1) for r in range(n_items)) / n_items)
    for t in (1, n_items):  # each target alone: the same value
        one, _ = evaluate_next_item(constant, hist[:1], torch.tensor([t]), ks=(10,))
        assert one["hr@10"] == pytest.approx(k / n_items)


def test_masking_a_hand_example_with_a_repeated_item():
    """Items 1..5 scored 5, 4, 3, 2, 1. A user with history [2, 2, 4] (item 2 twice) and
    target 3: unmasked 3 ranks third (behind 1 and 2); masked, 2 and 4 leave the ranking and 3
    is second. A target that is in its own history (item 4 for the second user) is a miss
    when masked, and counted."""
    scores = torch.tensor([[-1e9, 5.0, 4.0, 3.0, 2.0, 1.0]]).expand(2, -1)
    hist = torch.tensor([[2, 2, 4], [0, 4, 1]])
    targets = torch.tensor([3, 4])
    plain, r = evaluate_next_item(lambda h: scores[: len(h)], hist, targets, ks=(1, 2))
    assert r.tolist() == [[2, 0], [3, 0]] and plain["masked_targets"] == 0
    masked, r = evaluate_next_item(
        lambda h: scores[: len(h)], hist, targets, ks=(1, 2), mask_history=True
    )
    assert r.tolist() == [[1, 0], [MISS_RANK, 0]]
    assert masked["hr@2"] == 0.5 and masked["masked_targets"] == 1
    assert masked["mask_history"] == 1.0 and plain["mask_history"] == 0.0


def test_chunked_masking_equals_one_shot_masking():
    g = torch.Generator().manual_seed(3)
    users = torch.randn(5, 4, generator=g).round(decimals=1)
    items = torch.randn(14, 4, generator=g).round(decimals=1)
    hist = torch.randint(0, 14, (5, 6), generator=g)
    targets = torch.tensor([1, 3, 13, -1, 7])
    scores = users @ items.T
    one_shot = target_ranks(mask_scores(scores.clone(), hist, 0), targets)
    for chunk in (1, 4, 13):
        got = target_ranks_chunked(users, items, targets, chunk, exclude=hist)
        assert got.tolist() == one_shot.tolist()


def test_oov_target_is_a_miss_and_padding_never_ranked():
    scores = torch.tensor(
        [[100.0, 0.1, 0.2, 0.3]]
    )  # column 0 is padding, even if its score is high
    assert target_ranks(scores, torch.tensor([3])).tolist() == [[0, 0]]
    assert target_ranks(scores, torch.tensor([-1])).tolist() == [[MISS_RANK, 0]]
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
    assert ranks.tolist() == [[0, 0], [MISS_RANK, 0]]
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


# --- evaluate_model: chunked full ranking of embedding scorers (CASES.md C21) ----------------


def _sasrec_with_ties(num_items: int, hidden: int = 16, seed: int = 0):
    from reelrec.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(seed)
    cfg = SASRecConfig(max_len=6, hidden=hidden, layers=1, heads=2, inner=16)
    model = SASRec(num_items, cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    src = torch.randint(1, num_items + 1, (num_items // 3,), generator=g)
    dst = torch.randint(1, num_items + 1, (num_items // 3,), generator=g)
    with torch.no_grad():
        model.item_emb.weight[dst] = model.item_emb.weight[src]  # exact ties between items
    return model, dst


def test_inner_product_scores_do_not_depend_on_the_chunk():
    """Every column chunk of the product equals the same columns of the whole product, bit
    for bit (a float32 matmul rounds entries by their place in the kernel's tiles)."""
    from reelrec.models.base import inner_product_scores

    g = torch.Generator().manual_seed(0)
    user, items = torch.randn(37, 24, generator=g), torch.randn(1001, 24, generator=g)
    whole = inner_product_scores(user, items)
    assert whole.dtype == torch.float32
    for chunk in (1, 7, 64, 333):
        for start in range(0, len(items), chunk):
            part = inner_product_scores(user, items[start : start + chunk])
            assert torch.equal(part, whole[:, start : start + chunk]), (chunk, start)
    for rows in (1, 5):  # and on the batch of users
        assert torch.equal(inner_product_scores(user[:rows], items), whole[:rows])


@pytest.mark.parametrize("item_chunk", [1, 7, 64, 1000, 65536])
@pytest.mark.parametrize("batch_size", [3, 50])
def test_chunked_model_evaluation_equals_one_shot_with_ties(item_chunk, batch_size):
    """SASRec with duplicated item vectors (exact ties, half of the targets tied) and
    popularity with equal counts: the chunked path gives the ranks and metrics of
    ``score_all`` ranked in one shot, whatever the chunk and batch sizes."""
    from reelrec.eval.ranking import evaluate_model
    from reelrec.models.popularity import Popularity

    model, tied = _sasrec_with_ties(300)
    g = torch.Generator().manual_seed(2)
    hist = torch.randint(1, 301, (40, 6), generator=g)
    hist[::4, :3] = 0
    targets = torch.cat([tied[:20], torch.randint(1, 301, (19,), generator=g), torch.tensor([-1])])
    counts = np.r_[0, np.random.default_rng(3).integers(0, 4, 300)]  # many equal counts
    for m in (model, Popularity(counts)):
        expected, ranks = evaluate_next_item(m.score_all, hist, targets, (5, 10), batch_size)
        got, chunked = evaluate_model(m, hist, targets, (5, 10), batch_size, item_chunk=item_chunk)
        assert chunked.tolist() == ranks.tolist() and got == expected


def test_chunked_evaluation_never_builds_a_users_by_catalogue_matrix(monkeypatch):
    """200,000 items, 64 users per batch, 2,000 items per chunk: ``score_all`` (the one-shot
    (B, V + 1) matrix) is never called, and no tensor produced while evaluating is larger than
    one chunk of scores, against 12.8 million entries for the one-shot matrix."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from reelrec.eval.ranking import evaluate_model
    from reelrec.models.sasrec import SASRec, SASRecConfig

    class Largest(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.numel = max(self.numel, t.numel())
            return out

    def one_shot(self, history):
        raise AssertionError("score_all was called: a (B, V + 1) score matrix")

    torch.manual_seed(0)
    num_items, users, chunk = 200_000, 64, 2_000
    model = SASRec(num_items, SASRecConfig(max_len=5, hidden=8, layers=1, heads=2, inner=8)).eval()
    monkeypatch.setattr(SASRec, "score_all", one_shot)
    g = torch.Generator().manual_seed(1)
    hist = torch.randint(1, num_items + 1, (2 * users, 5), generator=g)
    targets = torch.randint(1, num_items + 1, (2 * users,), generator=g)
    with Largest() as seen:
        metrics, ranks = evaluate_model(model, hist, targets, (10,), users, item_chunk=chunk)
    assert len(ranks) == 2 * users and 0 <= metrics["hr@10"] <= 1
    assert 0 < seen.numel <= users * chunk < users * (num_items + 1) // 50


def test_a_model_that_declares_no_way_to_rank_is_refused():
    """A method named ``score_all`` is not a declaration (no ``hasattr`` probing)."""
    from reelrec.eval.ranking import evaluate_model

    class Undeclared(torch.nn.Module):
        def score_all(self, history):  # pragma: no cover - must never be called
            raise AssertionError("probed")

    with pytest.raises(
        TypeError, match="declares none of ScoresAllItems, RanksTargets and RecommendsTopK"
    ):
        evaluate_model(Undeclared(), torch.ones(2, 3, dtype=torch.long), torch.tensor([1, 2]))


def test_large_tied_ranks_need_no_memory_and_a_tied_miss_is_refused():
    """The uncut MRR of a tied row is its exact expectation without an array as long as the
    rank (a row [10**9, 1] once built an 8 GB array); a miss cannot have ties."""
    from reelrec.eval.metrics import metrics_from_ranks

    m = metrics_from_ranks(np.array([[10**9, 1], [2, 3]]), ks=(10,))
    exact = (
        0.5 * (1 / (10**9 + 1) + 1 / (10**9 + 2)) + sum(1 / (p + 1) for p in range(2, 6)) / 4
    ) / 2
    assert m["mrr"] == pytest.approx(exact, rel=1e-12)
    assert m["hr@10"] == pytest.approx(0.5)  # the second row: all 4 positions are below 10
    with pytest.raises(ValueError, match="a miss has no ties"):
        metrics_from_ranks(np.array([[MISS_RANK, 1]]), ks=(10,))
    with pytest.raises(ValueError, match="<= MISS_RANK"):
        metrics_from_ranks(np.array([2**63 + 5], dtype=np.uint64), ks=(10,))


def test_both_protocols_leave_the_models_scores_untouched():
    """evaluate_protocols masks a copy: a model that returns its own buffer keeps it, and the
    masked metrics equal evaluate_model's with mask_history."""
    from reelrec.eval.ranking import evaluate_model, evaluate_protocols
    from reelrec.models.base import ScoresAllItems

    class Const(torch.nn.Module, ScoresAllItems):
        def __init__(self):
            super().__init__()
            self.register_buffer("s", torch.zeros(1, 21))

        def score_all(self, history):
            return self.s.expand(len(history), -1)

    model = Const()
    h = torch.tensor([[0, 3, 4], [1, 2, 5], [0, 0, 7], [0, 9, 10]])
    t = torch.tensor([5, 6, 8, 11])
    both = evaluate_protocols(model, h, t, ks=(10,))
    assert torch.equal(model.s, torch.zeros(1, 21))
    masked, _ = evaluate_model(model, h, t, ks=(10,), mask_history=True)
    assert both["masked"]["hr@10"] == pytest.approx(masked["hr@10"])
    unmasked, _ = evaluate_model(model, h, t, ks=(10,))
    assert both["unmasked"]["hr@10"] == pytest.approx(unmasked["hr@10"]) == pytest.approx(0.5)


def test_report_says_how_the_generators_were_ranked():
    """The report's sentence follows each model's metrics.json, not a fixed text."""
    from reelrec.eval.report import generator_rule

    assert "exact log-probability" in generator_rule({"onerec-v2": {"ranking": "exact"}})
    beam = generator_rule({"onerec-v2": {"ranking": "beam"}, "sasrec": {}})
    assert "beam's top-k list" in beam and "exact log-probability" not in beam
    assert "model by model" in generator_rule({"a": {"ranking": "beam"}, "b": {"ranking": "exact"}})
