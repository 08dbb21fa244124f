"""DCAF: per-request computation allocation under a global budget.

Source: Jiang et al., "DCAF: A Dynamic Computation Allocation Framework for Online Serving
System" (DLP-KDD 2020, arXiv 2006.09684), Sections 3-4.

Problem (Section 3.1): N requests, J actions (here: how many pre-ranked candidates the ranker
scores) with costs q_j; Q_ij is the value of request i under action j. Choose one action per
request to maximise sum_i Q_{i,a_i} subject to sum_i q_{a_i} <= C. The Lagrangian dual gives,
for a multiplier lambda >= 0, the per-request rule ``a_i = argmax_j Q_ij - lambda q_j``
(Section 3.2). Under the paper's assumptions (Q_ij non-decreasing in j, diminishing returns),
the total cost is non-increasing in lambda, so the smallest lambda whose cost meets C is found
by bisection (Algorithm 1): :func:`find_multiplier`.

Online (Section 4): lambda is computed from logged requests and then moved by a feedback
controller from the measured load so that the system holds its budget when traffic changes
(:class:`PIController`, the paper's "MaxPower" control with a PID; here proportional-integral
on log lambda, updated five times a second from the cost of the last second).
Q is predicted per request from its features by :class:`RequestValueModel`.

Deviations: the paper lets a request get no action at all (x_ij = 0 for every j) when every
``Q_ij - lambda q_j`` is negative; a recommender must answer, so such requests get the
``fallback`` action (the cheapest by default) and its cost is counted. The value model is a
ridge regression per action with a monotone fix (the paper does not prescribe one).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

#: the default DCAF actions of the faiss cascade (:mod:`reelrec.serving.replay`): candidates
#: the ranker scores
FAISS_SIZES = (50, 100, 200, 400, 800)

#: the default DCAF actions of the generative cascade (:mod:`reelrec.serving.generative`):
#: (beam width, candidates ranked); beam 0: no generation, the ranker ranks the most popular
#: unwatched videos
BEAM_ACTIONS: tuple[tuple[int, int], ...] = (
    (0, 100),
    (10, 10),
    (20, 20),
    (40, 40),
    (80, 40),
    (80, 80),
)


class BudgetError(ValueError):
    """The budget cannot be met even with every request on the fallback action."""


@dataclass(frozen=True)
class ActionLadder:
    """The actions a request can get, cheapest first.

    Attributes:
        sizes: candidates the ranker scores under each action, increasing (e.g. 50..800), or
            ``(beam width, candidates ranked)`` pairs increasing in tuple order (the
            generative cascade, :mod:`reelrec.serving.generative`).
        costs: cost of each action (``(J,)``, milliseconds of ranker time, or candidates),
            increasing and > 0.
    """

    sizes: tuple[int, ...]
    costs: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.sizes) == 0 or len(self.sizes) != len(self.costs):
            raise ValueError(
                f"ActionLadder needs as many costs as sizes (>= 1), got {self.sizes} / {self.costs}"
            )
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:], strict=False)):
            raise ValueError(f"action sizes must increase, got {self.sizes}")
        if any(not math.isfinite(c) or c <= 0 for c in self.costs) or any(
            b < a for a, b in zip(self.costs, self.costs[1:], strict=False)
        ):
            raise ValueError(f"action costs must be finite, > 0 and non-decreasing: {self.costs}")

    @property
    def cost_array(self) -> np.ndarray:
        """``(J,)`` float64 costs."""
        return np.asarray(self.costs, dtype=np.float64)


def _check(q: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(q, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if q.ndim != 2 or costs.ndim != 1 or q.shape[1] != len(costs):
        raise ValueError(f"Q must be (N, J) and costs (J,), got {q.shape} and {costs.shape}")
    if not np.isfinite(q).all() or not np.isfinite(costs).all() or (costs <= 0).any():
        raise ValueError("Q must be finite and costs finite and > 0")
    return q, costs


def choose_actions(q: np.ndarray, costs: np.ndarray, lam: float, fallback: int = 0) -> np.ndarray:
    """DCAF's rule for one multiplier: ``argmax_j Q_ij - lam q_j``, or ``fallback`` when all
    of a request's gains are negative.

    Args:
        q: ``(N, J)`` request values. costs: ``(J,)`` action costs. lam: the multiplier >= 0.
        fallback: the action of requests with no positive gain.

    Returns:
        ``(N,)`` int64 action indices.

    Raises:
        ValueError: shapes disagree, non-finite values, or ``lam`` < 0.
    """
    q, costs = _check(q, costs)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"the Lagrange multiplier must be finite and >= 0, got {lam}")
    gain = q - lam * costs[None, :]
    best = gain.argmax(axis=1)
    return np.where(gain.max(axis=1) < 0, fallback, best).astype(np.int64)


def total_cost(actions: np.ndarray, costs: np.ndarray) -> float:
    """Sum of the costs of ``actions`` (``(N,)`` indices into ``costs``)."""
    return float(np.asarray(costs, dtype=np.float64)[np.asarray(actions)].sum())


def find_multiplier(
    q: np.ndarray,
    costs: np.ndarray,
    budget: float,
    fallback: int = 0,
    tol: float = 1e-9,
    max_iter: int = 200,
) -> float:
    """The smallest Lagrange multiplier whose allocation costs at most ``budget`` (bisection).

    Args:
        q: ``(N, J)`` request values (non-decreasing in j for the bisection to be exact).
        costs: ``(J,)`` action costs. budget: total cost allowed (same unit).
        fallback: the action of requests with no positive gain.
        tol: stop when the bracket is narrower than ``tol * (1 + upper end)``.
        max_iter: bisection steps at most.

    Returns:
        lambda >= 0; 0 when the unconstrained choice (every request's best action) fits.

    Raises:
        BudgetError: even every request on the fallback action costs more than ``budget``.
        ValueError: bad shapes or values.
    """
    q, costs = _check(q, costs)
    if not math.isfinite(budget):
        raise ValueError(f"budget must be finite, got {budget}")
    floor = len(q) * costs[fallback]
    if floor > budget:
        raise BudgetError(
            f"budget {budget:g} is below the cost of the fallback action for all {len(q)} "
            f"requests ({floor:g})"
        )

    def cost(lam: float) -> float:
        return total_cost(choose_actions(q, costs, lam, fallback), costs)

    if cost(0.0) <= budget:
        return 0.0
    # above max Q / q every gain is negative: everyone falls back, which fits (checked above)
    hi = float(max(q.max(), 0.0) / costs.min()) + 1.0
    lo = 0.0
    for _ in range(max_iter):
        if hi - lo <= tol * (1.0 + hi):
            break
        mid = 0.5 * (lo + hi)
        if cost(mid) <= budget:
            hi = mid
        else:
            lo = mid
    return hi


class PIController:
    """Moves the Lagrange multiplier from the measured cost rate (Section 4, load control).

    Every ``period_s`` seconds of (caller-supplied) time, the cost observed over the last
    ``window_s`` seconds gives the rate r and the relative error ``e = (r - target) / target``
    (clipped to [-1, 3]; positive when over budget). The controller is a proportional-integral
    law in velocity form on ``log lambda``::

        log lambda += kp * (e - e_prev) + ki * e,   clipped to [log lam_min, log lam_max]

    so that one gain works across the decades lambda spans, and the clip is the anti-windup.
    ``lam_max`` is the ceiling: about the multiplier at which every logged request already
    takes the cheapest action (raising it further changes little); below
    ``lam_min = lam_max * floor`` lambda is reported as 0 (every request's best action).

    Args:
        target: the budget rate (cost per second, the unit of the action costs), > 0.
        lam0: the offline multiplier (:func:`find_multiplier` on logged requests), >= 0.
        lam_max: see above, > 0 (from ``find_multiplier`` with the budget of the cheapest
            action; the service takes four times that, for requests unlike the logged ones).
        kp, ki: gains (>= 0), in log-multiplier units per unit of relative error.
        window_s: seconds of cost the rate is measured over. period_s: seconds between
            updates.
        floor: ``lam_min / lam_max``, in (0, 1).

    Raises:
        ValueError: a non-finite or out-of-range argument.

    Source: DCAF Section 4 (the paper's PID on the system's measured load); the log-space
    velocity form and the clip are ours, tuned on a simulated 3x burst.
    """

    def __init__(
        self,
        target: float,
        lam0: float,
        lam_max: float,
        kp: float = 1.0,
        ki: float = 0.5,
        window_s: float = 1.0,
        period_s: float = 0.2,
        floor: float = 1e-3,
    ) -> None:
        for name, v in (("target", target), ("lam_max", lam_max), ("window_s", window_s)):
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be finite and > 0, got {v}")
        if not (math.isfinite(lam0) and lam0 >= 0 and kp >= 0 and ki >= 0 and period_s > 0):
            raise ValueError("lam0, kp, ki must be finite and >= 0, period_s > 0")
        if not 0 < floor < 1:
            raise ValueError(f"floor must be in (0, 1), got {floor}")
        self.target, self.kp, self.ki = float(target), float(kp), float(ki)
        self.window_s, self.period_s = float(window_s), float(period_s)
        self.log_lo, self.log_hi = math.log(lam_max * floor), math.log(lam_max)
        self.log_lam = float(
            np.clip(math.log(max(lam0, lam_max * floor)), self.log_lo, self.log_hi)
        )
        self.events: deque[tuple[float, float]] = deque()
        self.start: float | None = None
        self.last_update: float | None = None
        self.e_prev: float | None = None

    @property
    def lam(self) -> float:
        """The current multiplier (0 at the floor)."""
        return 0.0 if self.log_lam <= self.log_lo else math.exp(self.log_lam)

    def rate(self, now: float) -> float:
        """Cost per second over the last ``window_s`` seconds (or since the first observation)."""
        while self.events and self.events[0][0] < now - self.window_s:
            self.events.popleft()
        span = min(self.window_s, now - self.start) if self.start is not None else 0.0
        return sum(c for _, c in self.events) / max(span, self.period_s)

    def advance(self, now: float) -> float:
        """Run the updates due by ``now`` (one per elapsed period, at most 50: 10 s at the
        default period), with the load observed so far; returns the multiplier. Idle time thus
        lowers lambda even when no request arrives."""
        if self.last_update is None:
            return self.lam
        due = int((now - self.last_update) / self.period_s)
        if due <= 0:  # not yet (or a clock that went back)
            return self.lam
        for k in range(1, min(due, 50) + 1):
            self._update(self.last_update + k * self.period_s)
        self.last_update += due * self.period_s
        return self.lam

    def _update(self, t: float) -> None:
        e = float(np.clip((self.rate(t) - self.target) / self.target, -1.0, 3.0))
        step = self.ki * e + (self.kp * (e - self.e_prev) if self.e_prev is not None else 0.0)
        self.log_lam = float(np.clip(self.log_lam + step, self.log_lo, self.log_hi))
        self.e_prev = e

    def observe(self, now: float, cost: float) -> float:
        """Record the ``cost`` of one request served at time ``now`` (seconds, monotone); once
        per period, update. Returns the multiplier.

        Raises:
            ValueError: ``cost`` negative or not finite.
        """
        if not math.isfinite(cost) or cost < 0:
            raise ValueError(f"cost must be finite and >= 0, got {cost}")
        if self.start is None:
            self.start = self.last_update = now
        self.advance(now)
        self.events.append((now, float(cost)))
        return self.lam


class RequestValueModel:
    """Q(i, j) from request features: ridge regression per action, made non-decreasing in j.

    Args:
        alpha: ridge penalty (>= 0) on standardised features.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        self.alpha = alpha
        self.mean_: np.ndarray | None = None

    def fit(self, x: np.ndarray, values: np.ndarray) -> RequestValueModel:
        """Fit on logged requests.

        Args:
            x: ``(N, F)`` float features. values: ``(N, J)`` the value each request had
                (or would have had) under each action.

        Raises:
            ValueError: shapes disagree, fewer than 2 requests or non-finite input.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
            raise ValueError(f"x (N, F) and values (N, J) with N >= 2, got {x.shape}, {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("features and values must be finite")
        self.mean_, self.std_ = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = np.hstack([(x - self.mean_) / self.std_, np.ones((len(x), 1))])
        reg = self.alpha * np.eye(z.shape[1])
        reg[-1, -1] = 0.0  # no penalty on the intercept
        self.coef_ = np.linalg.solve(z.T @ z + reg, z.T @ y)  # (F + 1, J)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N, J)`` predicted values, non-decreasing in j (running maximum).

        Raises:
            RuntimeError: not fitted. ValueError: wrong number of features.
        """
        if self.mean_ is None:
            raise RuntimeError("RequestValueModel.predict before fit")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.mean_):
            raise ValueError(f"expected (N, {len(self.mean_)}) features, got {x.shape}")
        z = np.hstack([(x - self.mean_) / self.std_, np.ones((len(x), 1))])
        return np.maximum.accumulate(z @ self.coef_, axis=1)
