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
    pi = PIController(target=100.0, lam0=1.0, kp=0.5, ki=0.1)
    up = pi.update(150.0)  # 50% over budget: e = 0.5 -> 1 + 0.5 * 0.5 + 0.1 * 0.5 = 1.3
    assert up == pytest.approx(1.3)
    assert pi.update(150.0) > up  # the integral keeps pushing while over budget
    pi2 = PIController(target=100.0, lam0=1.0)
    assert pi2.update(50.0) < 1.0  # under budget: cheaper multiplier, more compute
    for _ in range(1000):
        lam = pi2.update(0.0)
    assert lam == 0.0  # never negative
    with pytest.raises(ValueError):
        PIController(target=0.0)


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
