"""DCAF allocation on hand-made examples (values computed by hand in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from reelrec.serving.allocation import (
    ActionLadder,
    BudgetError,
    PIController,
    RequestValueModel,
    choose_actions,
    find_multiplier,
    total_cost,
)

# request 0 gains from more compute, request 1 hardly; costs 1, 2, 4
Q = np.array([[1.0, 2.0, 2.5], [1.0, 1.2, 1.3]])
COSTS = np.array([1.0, 2.0, 4.0])


def test_rule_and_cost_by_hand():
    # lambda 0: both take their best action (2): cost 8
    assert choose_actions(Q, COSTS, 0.0).tolist() == [2, 2]
    # lambda 0.1: request 1's gains 0.9, 1.0, 0.9 -> action 1; request 0 keeps action 2
    assert choose_actions(Q, COSTS, 0.1).tolist() == [2, 1]
    assert total_cost([2, 1], COSTS) == 6.0
    # lambda 2: every gain is negative -> the fallback action
    assert choose_actions(Q, COSTS, 2.0, fallback=0).tolist() == [0, 0]


@pytest.mark.parametrize(
    "budget, lam",
    [
        # cost(lambda): 8 below 0.05, 6 on [0.05, 0.2), 5 on [0.2, 0.25), 3 on [0.25, 1)
        (6.0, 0.05),
        (5.0, 0.2),
        (4.0, 0.25),
        (3.0, 0.25),
    ],
)
def test_bisection_finds_the_smallest_multiplier_meeting_the_budget(budget, lam):
    found = find_multiplier(Q, COSTS, budget)
    assert found == pytest.approx(lam, abs=1e-6)
    assert total_cost(choose_actions(Q, COSTS, found), COSTS) <= budget
    # a little less and the budget is broken
    assert total_cost(choose_actions(Q, COSTS, found - 1e-4), COSTS) > budget


def test_budget_above_the_most_expensive_action_gives_everyone_it():
    assert find_multiplier(Q, COSTS, budget=100.0) == 0.0
    assert choose_actions(Q, COSTS, 0.0).tolist() == [2, 2]


def test_budget_below_the_fallback_is_refused():
    with pytest.raises(BudgetError, match="below the cost of the fallback"):
        find_multiplier(Q, COSTS, budget=1.5)
    with pytest.raises(ValueError, match="finite"):
        choose_actions(np.array([[np.nan, 1, 2]]), COSTS, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        choose_actions(Q, COSTS, -1.0)


def test_ladder_is_checked():
    ladder = ActionLadder((50, 100, 200), (1.0, 2.0, 4.0))
    assert ladder.cost_array.tolist() == [1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="increase"):
        ActionLadder((100, 50), (1.0, 2.0))
    with pytest.raises(ValueError, match="non-decreasing"):
        ActionLadder((50, 100), (2.0, 1.0))


def test_controller_moves_the_multiplier_with_load():
    pi = PIController(target=100.0, lam0=0.1, lam_max=1.0, kp=1.0, ki=0.5, period_s=0.25)
    assert pi.lam == pytest.approx(0.1)
    pi.observe(0.0, 50.0)
    # the update due at 0.25 s: 50 over max(0.25 s, period) -> 200 per second, e = 1 (first
    # update: no proportional term) -> log lambda rises by ki * e = 0.5
    assert pi.observe(0.25, 50.0) == pytest.approx(0.1 * np.exp(0.5))
    # at 0.5 s: 100 over 0.5 s -> 200 per second again: e = 1, e - e_prev = 0 -> +0.5
    assert pi.advance(0.5) == pytest.approx(0.1 * np.exp(1.0))
    for k in range(3, 200):
        lam = pi.observe(0.25 * k, 40.0)  # 160 per second: 60% over budget for ever
    assert lam == pytest.approx(1.0)  # clipped at lam_max (every request already cheapest)
    # no request for 30 s: the updates still run (at most 50 at once) and lambda falls to the
    # floor, reported as 0 (every request's best action)
    assert pi.advance(0.25 * 199 + 30.0) == 0.0 and pi.rate(0.25 * 199 + 30.0) == 0.0
    with pytest.raises(ValueError):
        PIController(target=0.0, lam0=0.0, lam_max=1.0)
    with pytest.raises(ValueError):
        PIController(target=1.0, lam0=0.0, lam_max=0.0)
    with pytest.raises(ValueError, match="cost"):
        pi.observe(100.0, float("nan"))


def test_controller_brings_a_burst_back_to_budget():
    """Closed loop on a simulated clock: Poisson requests with diminishing-returns values pick
    their action at the controller's multiplier; traffic triples at t = 10 s. The cost per
    second must settle at the budget in both regimes, the burst's requests getting cheaper
    actions."""
    rng = np.random.default_rng(0)
    sizes = np.array([50, 100, 200, 400, 800])
    costs = np.array([2.25, 3.34, 5.78, 11.1, 23.4])  # ranker ms measured on KuaiRand
    q = rng.lognormal(0.0, 0.5, 2000)[:, None] * np.log(sizes)[None, :] / 3
    budget_rate = 200.0
    lam0 = find_multiplier(q, costs, 5.78 * len(q))
    pi = PIController(budget_rate, lam0, find_multiplier(q, costs, costs[0] * len(q)))

    def serve(until: float, qps: float, t: float, log: list) -> float:
        while t < until:
            t += rng.exponential(1.0 / qps)
            j = choose_actions(q[rng.integers(len(q))][None, :], costs, pi.lam)[0]
            pi.observe(t, costs[j])
            log.append((t, costs[j]))
        return t

    log: list = []
    t = serve(10.0, 20.0, 0.0, log)
    lam_steady = pi.lam
    t = serve(25.0, 60.0, t, log)
    times, spent = np.array(log).T

    def rate(lo: float, hi: float) -> float:
        return spent[(times >= lo) & (times < hi)].sum() / (hi - lo)

    assert rate(5.0, 10.0) == pytest.approx(budget_rate, rel=0.15)
    assert rate(13.0, 25.0) == pytest.approx(budget_rate, rel=0.1)
    # it got there by cheaper actions: the mean cost per request fell to about a third
    per_request = [spent[(times >= lo) & (times < hi)].mean() for lo, hi in ((5, 10), (13, 25))]
    assert per_request[1] < 0.5 * per_request[0]
    assert lam_steady < pi.lam


def test_value_model_recovers_a_linear_value_and_is_monotone():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    base = 1.0 + x @ np.array([0.5, -0.2, 0.0])
    y = np.stack([base, base + 0.3, base + 0.4], axis=1)
    m = RequestValueModel(alpha=1e-3).fit(x, y)
    pred = m.predict(x)
    np.testing.assert_allclose(pred, y, atol=1e-2)
    assert (np.diff(pred, axis=1) >= 0).all()
    with pytest.raises(RuntimeError, match="before fit"):
        RequestValueModel().predict(x)
