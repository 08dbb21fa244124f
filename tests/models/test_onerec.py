"""OneRec, OneRec-V2 and the shared generative parts on tiny configs.

Fixtures are built in code: 60 items with random 3-level semantic IDs (5 codes per level) plus
a disambiguation level, and random left-padded histories.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reelrec.eval.ranking import MISS_RANK, ranks_from_topk
from reelrec.models.base import NextItemBatch
from reelrec.models.generative import (
    MoE,
    PrefixTrie,
    SemanticIDTable,
    beam_search,
    greedy_decode,
    moe_stats,
)
from reelrec.models.onerec import OneRec, OneRecConfig
from reelrec.models.onerec_v2 import OneRecV2

V = 60


def make_table(seed: int = 0, v: int = V) -> SemanticIDTable:
    """Random semantic IDs for items 1..v (raw ids 10, 20, ...), made unique by a 4th level."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 5, (v, 3))
    _, inv = np.unique(codes, axis=0, return_inverse=True)
    extra, seen = np.zeros(v, dtype=np.int64), {}
    for i, g in enumerate(inv.ravel()):
        extra[i] = seen.get(g, 0)
        seen[g] = extra[i] + 1
    raw = np.arange(1, v + 1) * 10
    return SemanticIDTable.from_items(raw, raw, np.c_[codes, extra])


def tiny(**kw) -> OneRecConfig:
    base = dict(
        hidden=32,
        heads=4,
        kv_heads=4,
        inner=32,
        max_len=12,
        short_len=5,
        positive_len=8,
        lifelong_clusters=3,
        lifelong_queries=2,
        encoder_layers=1,
        decoder_layers=2,
        experts=4,
        top_k=2,
        dropout=0.0,
    )
    base.update(kw)
    return OneRecConfig(**base)


MODELS = {
    "onerec": lambda t, **kw: OneRec(t, tiny(**kw)),
    "onerec-v2": lambda t, **kw: OneRecV2(t, tiny(kv_heads=2, kv_groups=2, kv_split=2, **kw)),
    "tiger": lambda t, **kw: OneRec(
        t, tiny(item_tokens="flat", positive_len=0, lifelong_clusters=0, experts=0, **kw)
    ),
    # the causal context: every position of a window is a target in one pass
    "onerec-causal": lambda t, **kw: OneRec(t, tiny(context="causal", **kw)),
    "onerec-v2-causal": lambda t, **kw: OneRecV2(
        t, tiny(context="causal", kv_heads=2, kv_groups=2, kv_split=2, **kw)
    ),
    "tiger-causal": lambda t, **kw: OneRec(
        t, tiny(context="causal", item_tokens="flat", experts=0, **kw)
    ),
    # an item-ID embedding beside the semantic-ID codes of each context item
    "onerec-v2-item-embedding": lambda t, **kw: OneRecV2(t, tiny(item_embedding=True, **kw)),
}


def windows(n: int = 8, width: int = 13, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(1, V + 1, (n, width), generator=g)
    for i in range(n):
        w[i, : i % 6] = 0  # various amounts of left padding
    return w


@pytest.mark.parametrize("name", list(MODELS))
def test_loss_is_finite_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = MODELS[name](make_table())
    w = windows()
    out = model.loss(NextItemBatch.of_windows(w))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.parts) == {"ce", "ce_level1", "ce_level2", "ce_level3", "ce_level4"}
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


@pytest.mark.parametrize("name", list(MODELS))
def test_overfits_one_batch(name):
    torch.manual_seed(0)
    model = MODELS[name](make_table())
    w = windows()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    # causal models train every position of the windows (about 9x the targets): more steps
    for _ in range(300 if "causal" in name else 150):
        out = model.loss(NextItemBatch.of_windows(w))
        first = first if first is not None else float(out.loss.detach())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert float(out.loss.detach()) < 0.1 * first
    model.eval()
    top = model.recommend(w[:, :-1], 1)[:, 0]
    assert (top == w[:, -1]).float().mean() >= 0.75  # it generates the memorised next items


@pytest.mark.parametrize("name", list(MODELS))
def test_decoder_is_causal(name):
    torch.manual_seed(0)
    model = MODELS[name](make_table()).eval()
    hist = windows()[:, :-1]
    codes = model.table.codes[torch.randint(1, V + 1, (8,))][:, :3]
    changed = codes.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 5
    with torch.no_grad():
        a, b = model(hist, codes), model(hist, changed)
    # positions 0..2 see codes 0..1 only; position 3 sees the changed code
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


@pytest.mark.parametrize("name", list(MODELS))
def test_cached_decoding_equals_full_forward(name):
    torch.manual_seed(0)
    model = MODELS[name](make_table()).eval()
    hist = windows()[:, :-1]
    codes = model.table.codes[torch.randint(1, V + 1, (8,))]
    with torch.no_grad():
        ctx = model.start(hist)
        cached = [model.step_logits(ctx, codes[:, :t], use_cache=True) for t in range(4)]
        full = [model.step_logits(ctx, codes[:, :t], use_cache=False) for t in range(4)]
    for c, f in zip(cached, full, strict=True):
        torch.testing.assert_close(c, f, atol=1e-5, rtol=1e-5)
    # and beam search gives the same beams either way
    i1, s1 = beam_search(model, hist, model.trie, 7, use_cache=True)
    i2, s2 = beam_search(model, hist, model.trie, 7, use_cache=False)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_beams_are_valid_distinct_items_best_first(name):
    torch.manual_seed(1)
    table = make_table(seed=3)
    model = MODELS[name](table).eval()
    items, logp = beam_search(model, windows()[:, :-1], model.trie, 25)
    assert items.shape == (8, 25) and ((items >= 1) & (items <= V)).all()
    for row in items:
        assert len(set(row.tolist())) == 25  # each valid ID once
    assert (logp[:, :-1] >= logp[:, 1:]).all()  # best first
    assert (logp <= 0).all()
    # the beam's log-probability is the sum of the model's code log-probabilities
    with torch.no_grad():
        ctx = model.start(windows()[:1, :-1])
        codes = table.codes[items[0, 0]].unsqueeze(0)
        total = sum(model.step_logits(ctx, codes[:, :t], False)[0, codes[0, t]] for t in range(4))
    assert float(total) == pytest.approx(float(logp[0, 0].detach()), abs=1e-4)


def test_beam_wider_than_the_catalogue_pads_with_minus_one():
    torch.manual_seed(0)
    model = MODELS["onerec"](make_table()).eval()
    items, logp = beam_search(model, windows()[:2, :-1], model.trie, V + 5)
    assert (items[:, :V] >= 1).all() and (items[:, V:] == -1).all()
    assert torch.isinf(logp[:, V:]).all()
    assert sorted(items[0, :V].tolist()) == list(range(1, V + 1))


@pytest.mark.parametrize("name", list(MODELS))
def test_beam_one_is_greedy(name):
    torch.manual_seed(0)
    model = MODELS[name](make_table()).eval()
    hist = windows()[:, :-1]
    greedy = greedy_decode(model, hist, model.trie)
    items, _ = beam_search(model, hist, model.trie, 1)
    assert torch.equal(items[:, 0], greedy)


def test_trie_lists_exactly_the_valid_ids():
    table = make_table()
    trie = PrefixTrie(table)
    valid = {tuple(r) for r in table.codes[1:].tolist()}
    found = {}
    for a in range(5):
        n1 = int(trie.children[0][0, a])
        if n1 < 0:
            continue
        for b in range(5):
            n2 = int(trie.children[1][n1, b])
            if n2 < 0:
                continue
            for c in range(5):
                n3 = int(trie.children[2][n2, c])
                if n3 < 0:
                    continue
                for d in range(trie.sizes[3]):
                    item = int(trie.children[3][n3, d])
                    if item > 0:
                        found[(a, b, c, d)] = item
    assert set(found) == valid
    for codes, item in found.items():
        assert tuple(table.codes[item].tolist()) == codes


def test_semantic_id_table_errors_name_the_problem():
    raw = np.array([10, 20, 30])
    with pytest.raises(ValueError, match="1 of 3 training items have no semantic ID"):
        SemanticIDTable.from_items(raw, np.array([10, 20]), np.array([[0, 0], [0, 1]]))
    with pytest.raises(ValueError, match="share a semantic ID"):
        SemanticIDTable.from_items(raw, raw, np.array([[0, 0], [0, 1], [0, 1]]))
    t = SemanticIDTable.from_items(raw, raw[::-1], np.array([[2, 0], [1, 0], [0, 1]]))
    assert t.codes.tolist() == [[-1, -1], [0, 1], [1, 0], [2, 0]] and t.sizes == [3, 2]


def test_moe_bias_update_moves_load_towards_balance():
    torch.manual_seed(0)
    moe = MoE(dim=16, inner=8, experts=4, top_k=2, rate=0.01)
    x = torch.randn(512, 16)
    x[:, 0] = 3.0  # a feature every token shares ...
    with torch.no_grad():
        moe.router.weight[0, 0] = 2.0  # ... that makes expert 0 every token's favourite
    moe.train()

    def shares(steps: int) -> torch.Tensor:
        for _ in range(steps):
            moe(x)
        return moe.take_load() / (steps * 512 * 2)

    first = shares(1)
    assert first[0] == 0.5  # expert 0 takes one of the two slots of every token
    shares(200)
    last = shares(20)  # mean over 20 steps (the bias keeps nudging around the balance)
    assert float(last.max()) < 0.35 and float(last.min()) > 0.15  # 0.25 = perfect balance
    assert moe.expert_bias[0] < 0 and int(moe.expert_bias.argmin()) == 0  # favourite pushed down
    assert moe_stats(torch.nn.Sequential(moe)) == {}  # nothing routed since the last count


def test_moe_stats_reports_load_shares():
    moe = MoE(dim=8, inner=8, experts=2, top_k=1, rate=0.0)
    moe.train()
    moe(torch.randn(100, 8))
    s = moe_stats(torch.nn.Sequential(moe))
    assert 0.5 <= s["moe_max_load_share"] <= 1.0
    assert s["moe_max_load_share"] + s["moe_min_load_share"] == pytest.approx(1.0)


def test_session_wise_training_covers_m_items():
    torch.manual_seed(0)
    model = OneRec(make_table(), tiny(session_items=3))
    w = windows()
    out = model.loss(NextItemBatch.of_windows(w))
    assert torch.isfinite(out.loss)
    # the loss depends on the 3rd-last target item (a session item), not only the last one
    w2 = w.clone()
    w2[:, -3] = (w2[:, -3] % V) + 1
    assert float(model.loss(NextItemBatch.of_windows(w2)).loss.detach()) != pytest.approx(
        float(out.loss.detach())
    )


def test_ranks_from_topk():
    top = torch.tensor([[5, 3, 9], [1, 2, 4], [7, -1, -1]])
    ranks = ranks_from_topk(top, torch.tensor([3, 8, -1]))
    assert ranks.tolist() == [[1, 0], [MISS_RANK, 0], [MISS_RANK, 0]]  # a list has no ties


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="onerec.top_k"):
        OneRec(make_table(), tiny(top_k=5))
    with pytest.raises(ValueError, match="onerec.kv_heads"):
        OneRec(make_table(), tiny(kv_heads=3))
    with pytest.raises(ValueError, match="onerec.item_embedding"):
        OneRec(make_table(), tiny(item_tokens="flat", item_embedding=True))


def test_item_embedding_tells_items_apart_beyond_their_codes():
    """With ``item_embedding`` an item's context token is its code token plus its own row:
    the gradient of a loss reaches exactly the rows of the history items."""
    torch.manual_seed(0)
    model = OneRecV2(make_table(), tiny(item_embedding=True))
    w = windows()
    model.loss(NextItemBatch.of_windows(w)).loss.backward()
    grad_rows = set(model.items.id_emb.weight.grad.abs().sum(1).nonzero().ravel().tolist())
    history = set(w[:, :-1].unique().tolist()) - {0}
    assert grad_rows <= history | {0}
    assert len(grad_rows - {0}) > 0.9 * len(history)


class FixedScores:
    """A :class:`~reelrec.models.generative.Decodable` whose code scores ignore the history and
    the prefix: ``prefs[level]`` maps code -> score, every other code scores -20."""

    def __init__(self, sizes, prefs):
        self.sizes, self.prefs = sizes, prefs

    def start(self, history):
        return {"n": history.shape[0]}

    def expand(self, ctx, index):
        return {"n": len(index)}

    def step_logits(self, ctx, tokens, use_cache):
        level = tokens.shape[1]
        scores = torch.full((self.sizes[level],), -20.0)
        for code, value in self.prefs[level].items():
            scores[code] = value
        return torch.log_softmax(scores, 0).expand(ctx["n"], -1)


def test_c15_trie_never_emits_an_id_outside_the_catalogue():
    # CASES.md C15: catalogue (1,2,3), (1,4,5), (2,2,5); the model strongly prefers 1 -> 2 -> 5,
    # which a constraint keyed by the last token alone would allow (2 -> 5 occurs in (2,2,5))
    raw = np.array([1, 2, 3])
    table = SemanticIDTable.from_items(raw, raw, np.array([[1, 2, 3], [1, 4, 5], [2, 2, 5]]))
    trie = PrefixTrie(table)
    model = FixedScores(table.sizes, [{1: 0.0, 2: -5.0}, {2: 0.0, 4: -5.0}, {5: 0.0, 3: -1.0}])
    items, logp = beam_search(model, torch.zeros(2, 1, dtype=torch.long), trie, 5)
    assert items[:, 0].tolist() == [1, 1]  # (1,2,3) first, never (1,2,5)
    assert sorted(items[0, :3].tolist()) == [1, 2, 3] and items[0, 3:].tolist() == [-1, -1]
    assert torch.isinf(logp[:, 3:]).all() and torch.isfinite(logp[:, :3]).all()
    assert greedy_decode(model, torch.zeros(1, 1, dtype=torch.long), trie).tolist() == [1]
    # property: for random scores, every returned ID is a catalogue item
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        prefs = [{c: float(torch.randn(1, generator=gen)) for c in range(k)} for k in table.sizes]
        got, _ = beam_search(FixedScores(table.sizes, prefs), torch.zeros(1, 1).long(), trie, 3)
        assert sorted(got[0].tolist()) == [1, 2, 3]


def test_c05_empty_beam_slots_never_count_as_hits():
    from reelrec.eval.metrics import metrics_from_ranks

    # K = 3, the beam found only two valid items [5, 2]; the empty slot is -1, never a real id
    top = torch.tensor([[5, 2, -1]])
    for target in (-1, 3):  # out of vocabulary, or an item the beam did not return
        ranks = ranks_from_topk(top, torch.tensor([target]))
        m = metrics_from_ranks(ranks.numpy(), (3,))
        assert m["hr@3"] == 0.0 and m["ndcg@3"] == 0.0 and m["mrr@3"] == 0.0


def test_session_windows_shorter_than_the_session_train():
    # session_items=3 on 2-item windows (history 1, one real target, two padding targets)
    torch.manual_seed(0)
    model = OneRec(make_table(), tiny(session_items=3))
    w = torch.tensor([[4, 7], [9, 2]])
    out = model.loss(NextItemBatch.of_windows(w))
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_diverged_weights_fail_loudly(tmp_path):
    from reelrec.training.loop import TrainConfig, fit

    torch.manual_seed(0)
    model = OneRec(make_table(), tiny())
    with torch.no_grad():
        model.bos.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN log-probabilities"):
        beam_search(model.eval(), windows()[:, :-1], model.trie, 5)
    cfg = TrainConfig(epochs=1, progress=False, batch_size=4)
    with pytest.raises(ValueError, match="training loss is nan"):
        fit(model, windows(), lambda m: {"ndcg@10": 0.0}, cfg, tmp_path, log=lambda s: None)


def test_bad_semantic_id_tables_are_refused():
    raw = np.array([10, 20])
    with pytest.raises(ValueError, match="exceeds the largest supported codebook"):
        SemanticIDTable.from_items(raw, raw, np.array([[0, 0], [0, 10**7]]))
    with pytest.raises(ValueError, match="several rows"):
        SemanticIDTable.from_items(raw, np.array([10, 20, 20]), np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match="onerec.short_len"):
        OneRec(make_table(), tiny(max_len=4, short_len=10))
    with pytest.raises(ValueError, match=r"top \(B, k\) and targets \(B,\)"):
        ranks_from_topk(torch.tensor([[1, 2, 3]]), torch.tensor([1, 2, 3]))


def test_warmup_then_cosine_learning_rate():
    from reelrec.training.loop import TrainConfig, lr_multiplier

    f = lr_multiplier(TrainConfig(warmup_steps=4, schedule="cosine"), total_steps=14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0)
    assert f(20) == pytest.approx(0.0)  # past the end it stays at 0
    constant = lr_multiplier(TrainConfig(), total_steps=10)
    assert {constant(s) for s in range(12)} == {1.0}  # the SASRec default: plain Adam


def test_lifelong_kmeans_separates_groups_and_ignores_padding():
    from reelrec.models.onerec import _batched_kmeans, _cluster_means

    # one row: 2 padding slots (huge values that must not pull a centre), then two groups
    x = torch.tensor([[[99.0, 99.0], [99.0, 99.0], [0.0, 0.1], [0.1, 0.0], [5.0, 5.1], [5.1, 5.0]]])
    valid = torch.tensor([[False, False, True, True, True, True]])
    assign = _batched_kmeans(x, valid, 2)
    a = assign[0, 2:].tolist()
    assert a[0] == a[1] and a[2] == a[3] and a[0] != a[2]
    means, sizes = _cluster_means(x, assign, valid, 2)
    assert sorted(sizes[0].tolist()) == [2.0, 2.0]
    assert sorted(means[0, :, 0].tolist()) == pytest.approx([0.05, 5.05])


# --- many targets per pass, exact ranking, masking (issue 21) -------------------------------

CAUSAL = ["onerec-causal", "onerec-v2-causal", "tiger-causal"]


@pytest.mark.parametrize("name", CAUSAL)
def test_multi_target_loss_equals_the_sum_of_single_target_losses(name):
    """The causal context trains every position of a window in one pass: its summed loss
    equals the sum of the losses of each target alone, with its history truncated before it
    (so target t never sees items after t). Dense windows take the folded path, the single
    targets the gathered one: both paths agree."""
    torch.manual_seed(0)
    model = MODELS[name](make_table()).eval()
    w = windows()
    inputs, targets = w[:, :-1], w[:, 1:]
    levels = model.levels
    with torch.no_grad():
        n_real = int(((targets > 0) & (inputs > 0)).sum())
        many = float(model.loss(NextItemBatch(inputs, targets)).loss) * n_real * levels
        single = 0.0
        for b in range(len(w)):
            for t in range(inputs.shape[1]):
                if targets[b, t] > 0 and inputs[b, t] > 0:
                    x = torch.zeros_like(inputs[b : b + 1])
                    x[0, -(t + 1) :] = inputs[b, : t + 1]
                    y = torch.zeros_like(x)
                    y[0, -1] = targets[b, t]
                    single += float(model.loss(NextItemBatch(x, y)).loss) * levels
    assert many == pytest.approx(single, rel=1e-5)


@pytest.mark.parametrize("name", ["onerec-v2", *CAUSAL])
def test_exact_scores_are_sequence_log_probabilities_and_the_widest_beam_agrees(name):
    from reelrec.models.base import RanksTargets, ScoresAllItems

    torch.manual_seed(0)
    model = MODELS[name](make_table()).eval()
    # declared as ranking targets exactly, not as scoring every item (too costly to evaluate by)
    assert isinstance(model, RanksTargets) and not isinstance(model, ScoresAllItems)
    hist = windows()[:, :-1]
    with torch.no_grad():
        exact = model.score_all(hist)
        codes = model.table.codes[1:].unsqueeze(0).expand(len(hist), -1, -1)
        assert torch.isneginf(exact[:, 0]).all()
        assert torch.allclose(exact[:, 1:], model.sequence_logp(hist, codes), atol=1e-5)
        # probabilities of all items sum to at most 1 (the softmax also covers unused codes)
        assert float(exact[:, 1:].exp().sum(1).max()) <= 1.0 + 1e-5
        items, logp = beam_search(model, hist, model.trie, V)  # a beam as wide as the catalogue
    assert torch.equal(items[:, 0], exact.argmax(1))
    assert torch.allclose(logp[:, :10], exact.sort(1, descending=True).values[:, :10], atol=1e-5)


@pytest.mark.parametrize("name", ["onerec-v2", "onerec-v2-causal"])
def test_beam_with_history_masking_never_returns_a_history_item(name):
    torch.manual_seed(0)
    model = MODELS[name](make_table()).eval()
    hist = windows()[:, :-1]
    with torch.no_grad():
        top = model.recommend(hist, 10, exclude=hist)
        exact = model.score_all(hist)
    assert (top > 0).all()
    inside = (top.unsqueeze(-1) == hist.unsqueeze(1)) & (hist.unsqueeze(1) > 0)
    assert not inside.any()
    # the masked beam's best item is the best item of the exact ranking outside the history
    masked = exact.scatter(1, hist, float("-inf"))
    assert torch.equal(top[:, 0], masked.argmax(1))


def test_every_training_target_is_presented_once_per_epoch(tmp_path):
    """One epoch of the causal OneRec-V2 over build_sequences-style windows (sequences longer
    than the window included) trains each item of each sequence, but the first, exactly once."""
    from collections import Counter

    from reelrec.data.sequences import _left_pad
    from reelrec.data.sequences import windows as make_windows
    from reelrec.training.loop import TrainConfig, fit

    class Recording(OneRecV2):
        seen: Counter = Counter()

        def _causal_ntp_loss(self, inputs, targets):
            Recording.seen.update(targets[(targets > 0) & (inputs > 0)].tolist())
            return super()._causal_ntp_loss(inputs, targets)

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, V + 1, int(n)) for n in rng.integers(2, 30, 12)]
    max_len = 6
    wins = [w for s in seqs for w in make_windows(s, max_len)]
    data = torch.from_numpy(_left_pad(wins, max_len + 1))
    torch.manual_seed(0)
    cfg_m = tiny(context="causal", max_len=max_len, short_len=max_len, positive_len=max_len)
    model = Recording(make_table(), cfg_m)
    cfg = TrainConfig(epochs=1, batch_size=5, progress=False, mfu=False)
    fit(model, data, lambda m: {"ndcg@10": 0.0}, cfg, tmp_path, log=lambda s: None)
    expected = Counter(int(i) for s in seqs for i in s[1:])
    assert Recording.seen == expected


@pytest.mark.parametrize("name", ["onerec-v2", "onerec-v2-causal", "tiger-causal"])
@pytest.mark.parametrize("max_frontier", [1024, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_exact_target_ranks_equal_full_ranking_below_k(name, max_frontier, masked):
    """The pruned exact ranking (beam check, then threshold search over the trie, or the
    whole trie when a frontier grows past max_frontier) gives every target the rank that
    scoring all items gives it whenever that rank is below k, and a miss otherwise."""
    from reelrec.eval.metrics import target_ranks
    from reelrec.eval.ranking import mask_scores
    from reelrec.models.generative import exact_target_ranks

    torch.manual_seed(0)
    model = MODELS[name](make_table()).eval()
    hist = windows(n=24, seed=2)[:, :-1]
    g = torch.Generator().manual_seed(5)
    targets = torch.randint(1, V + 1, (24,), generator=g)
    targets[:3] = -1 if not masked else targets[:3]
    exclude = hist if masked else None
    with torch.no_grad():
        full = model.score_all(hist)
        if masked:
            full = mask_scores(full.clone(), hist, 0)
        # a third of the targets among each user's exact top 12: ranks below k to check
        top = full.argsort(1, descending=True)[:, :12]
        targets[3:11] = top[3:11].gather(1, torch.arange(8).unsqueeze(1) % 12).squeeze(1)
        targets[11:14] = top[11:14, 9:12].diagonal()
        expected = target_ranks(full, targets)
        k = 10
        expected[expected[:, 0] >= k] = torch.tensor([MISS_RANK, 0])
        lp = model.sequence_logp(hist, model.items.codes[targets.clamp(min=0)].unsqueeze(1))
        got = exact_target_ranks(
            model, hist, targets, model.trie, k, lp.squeeze(1), exclude, max_frontier
        )
    assert got.tolist() == expected.tolist()
    assert (expected[:, 0] < k).sum() >= 3  # the fixture has hits below k to check


def test_exact_evaluation_of_a_batch_without_rankable_targets():
    """A batch whose targets are all out of vocabulary, or all inside their history under
    masking, is all misses (no beam over zero users); a target id outside the catalogue is
    refused."""
    from reelrec.eval.ranking import evaluate_model

    torch.manual_seed(0)
    model = MODELS["onerec-v2-causal"](make_table()).eval()
    hist = windows(n=4)[:, :-1]
    m, _ = evaluate_model(model, hist, torch.full((4,), -1), (5, 10))
    assert m["hr@10"] == 0.0 and m["oov_targets"] == 4
    m, _ = evaluate_model(model, hist, hist[:, -1], (5, 10), mask_history=True)
    assert m["hr@10"] == 0.0 and m["masked_targets"] == 4
    with pytest.raises(ValueError, match="targets must be -1 or in 1..60"):
        model.rank_targets(hist, torch.tensor([1, 2, 3, 61]), 10)
    with pytest.raises(ValueError, match="targets must be -1 or in 1..60"):  # the beam path too
        evaluate_model(model, hist, torch.tensor([1, 2, 3, 61]), (5, 10), ranking="beam")


def test_exact_ranks_refuse_a_non_finite_target_score_and_ignore_foreign_exclude_ids():
    """A NaN target log-probability would rank first: refused. An exclude id outside 1..V is
    ignored (it used to be clamped onto item V and mask it)."""
    from reelrec.models.generative import exact_target_ranks

    torch.manual_seed(0)
    model = MODELS["onerec-v2-causal"](make_table()).eval()
    hist = windows(n=4)[:, :-1]
    targets = torch.tensor([60, 60, 60, 60])
    with torch.no_grad(), pytest.raises(ValueError, match="target_logp must be finite"):
        exact_target_ranks(model, hist, targets, model.trie, 10, torch.full((4,), float("nan")))
    with torch.no_grad():
        plain = model.rank_targets(hist, targets, 100)
        foreign = model.rank_targets(hist, targets, 100, torch.full((4, 1), 65))
    assert foreign.tolist() == plain.tolist()


def test_tokens_count_the_targets_each_context_trains():
    """Pathways windows train their last ``session_items`` targets, the causal context every
    target with a history: ``WindowTrainSet.tokens`` (tokens/s in the log) counts those."""
    import copy

    from reelrec.tasks.registry import GENERATIVE, PRESETS
    from reelrec.training.trainsets import WindowTrainSet

    cfg = copy.deepcopy(PRESETS["onerec-v2"])
    wins = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5], [0, 0, 0, 0, 9]])
    counts = {}
    for context, m in (("pathways", 1), ("pathways", 2), ("causal", 1)):
        cfg.onerec.context, cfg.onerec.session_items = context, m
        counts[context, m] = WindowTrainSet(wins, GENERATIVE.trained_positions(cfg)).tokens
    assert counts == {("pathways", 1): 2, ("pathways", 2): 4, ("causal", 1): 6}
