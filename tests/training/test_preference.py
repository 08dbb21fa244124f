"""DPO (IPA) and ECPO on hand-computed values and tiny generators.

Fixtures are built in code: the tiny OneRec and random semantic-ID table of
``tests/models/test_onerec.py`` (60 items, 3 levels of 5 codes plus a disambiguation level), a
4-item categorical toy policy, and hand-picked log-probabilities.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_onerec import make_table, tiny  # noqa: E402

from reelrec.data.sequences import ItemVocab, windows  # noqa: E402
from reelrec.models.base import AlignmentBatch, NextItemBatch  # noqa: E402
from reelrec.models.generative import generate  # noqa: E402
from reelrec.models.onerec import OneRec  # noqa: E402
from reelrec.training.preference import (  # noqa: E402
    AlignmentTerm,
    PreferenceConfig,
    alignment_samples,
    check_preference_config,
    dpo_loss,
)
from reelrec.training.rl import ecpo_loss, group_advantages  # noqa: E402

# --- DPO ---------------------------------------------------------------------------------


def test_dpo_loss_matches_the_formula():
    lw, ll = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.5])
    rw, rl = torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -2.5])
    beta = 0.5
    # pair 1: margin (-1 + 1.5) - (-3 + 2) = 1.5; pair 2: 0 - 1 = -1
    expect = -(math.log(1 / (1 + math.exp(-0.75))) + math.log(1 / (1 + math.exp(0.5)))) / 2
    assert float(dpo_loss(lw, ll, rw, rl, beta)) == pytest.approx(expect, rel=1e-6)
    assert float(dpo_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0), 1)) == 0


def test_dpo_gradient_moves_probability_from_rejected_to_chosen():
    """A 4-item categorical policy: gradient steps on DPO raise p(chosen), lower p(rejected)."""
    logits = torch.zeros(4, requires_grad=True)
    ref = F.log_softmax(torch.zeros(4), 0).detach()
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(20):
        logp = F.log_softmax(logits, 0)
        loss = dpo_loss(logp[[1]], logp[[3]], ref[[1]], ref[[3]], beta=0.5)
        opt.zero_grad()
        loss.backward()
        if _ == 0:  # first step: the gradient points the right way on the two items
            assert logits.grad[1] < 0 < logits.grad[3]
        opt.step()
    p = F.softmax(logits.detach(), 0)
    assert p[1] > 0.25 > p[3]
    assert p[1] == p.max() and p[3] == p.min()


# --- ECPO --------------------------------------------------------------------------------


def test_group_advantages_normalise_over_legal_members_only():
    r = torch.tensor([[1.0, 2.0, 3.0, float("nan")], [5.0, 5.0, 1.0, 2.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    a = group_advantages(r, mask, eps=0.0)
    std = math.sqrt(2 / 3)  # population std of 1, 2, 3
    assert a[0, :3].tolist() == pytest.approx([-1 / std, 0.0, 1 / std])
    assert a[0, 3] == 0  # the illegal member
    assert a[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # equal rewards among the legal members


def _ecpo(logp_value: float, logp_old: float, adv: float, clip=0.2, delta=0.1):
    logp = torch.tensor([[logp_value]], requires_grad=True)
    loss, parts = ecpo_loss(
        logp, torch.tensor([[logp_old]]), torch.tensor([[adv]]), torch.tensor([[True]]), clip, delta
    )
    loss.backward()
    return float(loss.detach()), float(logp.grad), parts


def test_ecpo_positive_advantage_is_ppo_clipping():
    # ratio 1.5 > 1 + eps: the clipped value (1.2 * A) is the min, and it has no gradient
    loss, grad, parts = _ecpo(math.log(1.5), 0.0, 2.0)
    assert loss == pytest.approx(-2.4) and grad == 0.0 and parts["clip_fraction"] == 1.0
    # ratio 0.9 inside the range: loss -r A, d/dlogp = -r A
    loss, grad, _ = _ecpo(math.log(0.9), 0.0, 2.0)
    assert loss == pytest.approx(-1.8) and grad == pytest.approx(-1.8)


def test_ecpo_negative_advantage_is_clipped_early():
    # pi / pi_old = e^5 ~ 148: PPO keeps min(r A, clip(r) A) = r A = -148 A (gradient explodes);
    # ECPO raises pi_old to pi / (1 + eps + delta): the ratio is 1.3, value -1.3 A, gradient 1.3 A
    loss, grad, parts = _ecpo(0.0, -5.0, -1.0)
    assert loss == pytest.approx(1.3) and grad == pytest.approx(1.3)
    assert parts["early_clipped"] == 1.0
    # a negative advantage whose ratio is already below 1 + eps + delta is untouched (PPO)
    loss, grad, parts = _ecpo(math.log(1.1), 0.0, -1.0)
    assert loss == pytest.approx(1.1) and grad == pytest.approx(1.1)
    assert parts["early_clipped"] == 0.0
    loss, grad, _ = _ecpo(math.log(0.5), 0.0, -1.0)  # ratio 0.5 < 1 - eps: clipped, no gradient
    assert loss == pytest.approx(0.8) and grad == 0.0
    # without early clipping (delta huge) the gradient would be the full ratio
    loss, grad, _ = _ecpo(0.0, -5.0, -1.0, delta=1e9)
    assert grad == pytest.approx(math.exp(5.0), rel=1e-5)


def test_ecpo_masked_members_give_no_value_and_no_gradient():
    logp = torch.tensor([[-1.0, -2.0, -40.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -1.9, -80.0]])
    adv = torch.tensor([[1.0, -1.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    loss, _ = ecpo_loss(logp, old, adv, mask, 0.2, 0.1)
    loss.backward()
    assert logp.grad[0, 2] == 0 and logp.grad[0, :2].abs().sum() > 0
    logp2 = torch.tensor([[-1.0, -2.0, 3.0]], requires_grad=True)  # change the masked member
    loss2, _ = ecpo_loss(logp2, old, torch.tensor([[1.0, -1.0, -9.0]]), mask, 0.2, 0.1)
    assert float(loss2.detach()) == pytest.approx(float(loss.detach()))


# --- the generator side ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OneRec(make_table(), tiny()).eval()


def hist(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(1, 61, (n, 12), generator=g)
    h[0, :5] = 0
    return h


def test_sequence_logp_equals_the_beam_search_scores(model):
    h = hist()
    with torch.no_grad():
        for constrained in (True, False):
            out = generate(model, h, model.trie, 6, constrained=constrained)
            lp = model.sequence_logp(h, out.codes)
            assert torch.allclose(lp, out.logp, atol=1e-5)


def test_unconstrained_generation_flags_illegal_ids(model):
    h = hist()
    with torch.no_grad():
        free = generate(model, h, model.trie, 20, constrained=False)
        cons = generate(model, h, model.trie, 20, constrained=True)
    table = {tuple(c) for c in model.table.codes[1:].tolist()}
    for b in range(len(h)):
        for j in range(20):
            code = tuple(free.codes[b, j].tolist())
            assert bool(free.legal[b, j]) == (code in table)
            if free.legal[b, j]:
                assert model.table.codes[free.items[b, j]].tolist() == list(code)
    assert (~free.legal).any()  # a random model writes IDs that are no item
    assert cons.legal.all()
    assert (free.logp[:, 0] >= cons.logp[:, 0] - 1e-6).all()  # the free search sees more


def test_illegal_members_contribute_no_gradient_through_the_model(model):
    """The ECPO term inside OneRec.loss: rewriting an illegal member's codes (masked out) does
    not change the gradient of any parameter."""
    model.train()
    h = hist(2)
    w = torch.cat([h, torch.randint(1, 61, (2, 1))], 1)
    codes = model.table.codes[torch.tensor([[3, 7, 9], [4, 5, 6]])].clone()
    illegal = torch.tensor([[4, 4, 4, 1], [0, 0, 0, 0]])
    adv = torch.tensor([[1.0, -1.0, 3.0], [0.5, -0.5, -2.0]])  # masked ones must not count
    mask = torch.tensor([[True, True, False], [True, True, False]])
    old = torch.full((2, 3), -5.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def grads(third):
        model.load_state_dict(state)  # training forwards move the MoE routing bias
        c = codes.clone()
        c[:, 2] = third
        term = AlignmentTerm(h, c, lambda lp: ecpo_loss(lp, old, adv, mask, 0.2, 0.1), weight=1.0)
        model.zero_grad()
        model.loss(AlignmentBatch(w[:, :-1], w[:, 1:], term, ntp_weight=0.0)).loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    torch.manual_seed(1)
    g1 = grads(illegal)
    torch.manual_seed(1)
    g2 = grads(torch.tensor([[1, 2, 3, 0], [2, 2, 2, 1]]))
    # equal up to float rounding (the batched attention sums in another order)
    assert len(g1) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2, strict=True))
    model.eval()


def test_alignment_samples_are_the_sft_windows_with_their_rows():
    """Tiny log made in code: 2 users, positives and a negative, a valid-split row."""
    inter = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 2],
            "item_id": [10, 20, 30, 40, 20, 50, 10],
            "timestamp_ms": [100, 200, 300, 400, 150, 250, 350],
            "hourmin": [900, 1000, 1100, 1200, 1300, 1400, 1500],
            "split": [0, 0, 0, 1, 0, 0, 0],
            "like": [1, 0, 1, 1, 1, 1, 1],
        }
    )
    positive = inter["like"].to_numpy() == 1
    vocab = ItemVocab.fit(np.array([10, 30, 20, 50]))
    s = alignment_samples(inter, positive, vocab, max_len=3)
    expect = []
    for u in (1, 2):
        rows = inter[(inter.user_id == u) & positive & (inter.split == 0)]
        expect += [tuple(w) for w in windows(vocab.encode(rows.item_id.to_numpy()), 3, 1)]
    got = [tuple(x[x > 0].tolist()) for x in s.windows]
    assert sorted(got) == sorted(expect) and len(s) == 3  # user 1: 1 window, user 2: 2
    s2 = alignment_samples(inter, positive, vocab, max_len=3, step=2)  # user 2: 1 window
    assert len(s2) == 2 and sorted(s2.times.tolist()) == [300, 350]
    for i in range(len(s)):  # each sample's user/time/hour are its target row's
        row = inter[(inter.user_id == s.users[i]) & (inter.timestamp_ms == s.times[i])]
        assert vocab.encode(row.item_id.to_numpy())[0] == int(s.windows[i, -1])
        assert int(row.hourmin.iloc[0]) // 100 == s.hours[i]


@pytest.mark.parametrize(
    ("key", "value"),
    [("fraction", 0.0), ("candidates", 1), ("beta", 0.0), ("clip", -1.0), ("delta", 0.0)],
)
def test_bad_preference_values_are_named(key, value):
    with pytest.raises(ValueError, match=f"preference.{key}"):
        check_preference_config(PreferenceConfig(**{key: value}))


def test_penalize_ablation_gives_illegal_outputs_the_lowest_reward():
    """``preference.illegal=penalize``: illegal members enter the group with reward 0, so they
    get the most negative advantage; ``drop`` leaves them out."""
    from reelrec.models.generative import Generation
    from reelrec.training.rl import ecpo_term

    out = Generation(
        items=torch.tensor([[3, -1, 5, 7]]),
        logp=torch.tensor([[-1.0, -1.5, -2.0, -3.0]]),
        codes=torch.zeros(1, 4, 4, dtype=torch.long),
    )
    rewards = torch.tensor([[0.6, float("nan"), 0.4, 0.5]])
    seen = {}
    for mode in ("drop", "penalize"):
        term = ecpo_term(
            torch.zeros(1, 3).long(),
            out,
            rewards,
            PreferenceConfig(illegal=mode),
        )
        logp = torch.tensor([[-1.0, -1.5, -2.0, -3.0]], requires_grad=True)
        term.objective(logp)[0].backward()
        seen[mode] = logp.grad[0].tolist()
    assert seen["drop"][1] == 0.0 and seen["drop"][0] < 0 < seen["drop"][2]  # ascend best
    assert seen["penalize"][1] > 0  # pushed down, the most
    assert seen["penalize"][1] == max(seen["penalize"])


def test_the_alignment_term_enters_the_loss_by_name(model):
    """CASES C18: the DPO term is added to the next-token loss with its weight, and shows up by
    name in the loss breakdown (a silently dropped term would be missing)."""
    h = hist(3)
    w = torch.cat([h, torch.randint(1, 61, (3, 1))], 1)
    codes = model.table.codes[torch.tensor([[3, 7], [4, 5], [9, 2]])]
    ref = torch.full((3, 2), -6.0)

    def objective(lp):
        loss = dpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], 0.5)
        return loss, {"dpo": float(loss.detach())}

    term = AlignmentTerm(h, codes, objective, weight=0.3)
    with torch.no_grad():
        plain = model.loss(NextItemBatch.of_windows(w))
        both = model.loss(AlignmentBatch(w[:, :-1], w[:, 1:], term, ntp_weight=2.0))
    assert "dpo" in both.parts and "dpo" not in plain.parts
    expect = 2.0 * float(plain.loss) + 0.3 * both.parts["dpo"]
    assert float(both.loss) == pytest.approx(expect, rel=1e-5)
    with torch.no_grad():  # a batch without pairs still weighs the next-code loss by ntp_weight
        alone = model.loss(AlignmentBatch(w[:, :-1], w[:, 1:], None, ntp_weight=0.25))
        none = model.loss(AlignmentBatch(w[:, :-1], w[:, 1:], None, ntp_weight=0.0))
    assert float(alone.loss) == pytest.approx(0.25 * float(plain.loss), rel=1e-5)
    assert float(none.loss) == 0.0 and none.parts["ce"] == pytest.approx(float(plain.loss))


def test_with_a_fresh_old_policy_the_ratio_is_one_in_training_mode():
    """refresh_steps=1: the policy scores the group exactly as the copy that generated it, even
    though every training forward moves the MoE routing bias (the term is computed first)."""
    from reelrec.training.preference import frozen_copy
    from reelrec.training.rl import ecpo_term

    torch.manual_seed(0)
    policy = OneRec(make_table(), tiny(balance_rate=0.05)).train()
    h = hist(4)
    w = torch.cat([h, torch.randint(1, 61, (4, 1))], 1)
    for _ in range(2):  # the bias moves with every training forward
        old = frozen_copy(policy)
        with torch.no_grad():
            out = generate(old, h, old.trie, 5, constrained=False)
        rewards = torch.rand(4, 5)
        term = ecpo_term(h, out, rewards, PreferenceConfig())
        captured = {}

        def spy(logp, objective=term.objective, captured=captured):
            captured["logp"] = logp.detach()
            return objective(logp)

        term.objective = spy
        result = policy.loss(AlignmentBatch(w[:, :-1], w[:, 1:], term))
        result.loss.backward()
        legal = out.legal
        assert torch.allclose(captured["logp"][legal], out.logp[legal], atol=1e-5)
        assert result.parts["clip_fraction"] == 0.0


def test_rl_and_preference_share_a_module_instead_of_importing_each_other():
    """The import cycle preference <-> rl is gone: importing ECPO alone loads neither IPA's
    module nor the training loop; both take the settings from reelrec.training.alignment."""
    import subprocess

    code = (
        "import sys, reelrec.training.rl\n"
        "loaded = [m for m in ('reelrec.training.preference', 'reelrec.training.loop') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import reelrec.training.preference as p, reelrec.training.alignment as a\n"
        "assert p.PreferenceConfig is a.PreferenceConfig\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
