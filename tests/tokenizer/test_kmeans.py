"""Balanced k-means (OneRec Alg. 1) against a literal reference, balance, determinism, errors.
Inputs are small random arrays built in code."""

from __future__ import annotations

import numpy as np
import pytest

from reelrec.tokenizer.kmeans import balanced_kmeans, nearest, plain_kmeans


def reference_balanced_kmeans(x: np.ndarray, k: int, iters: int, seed: int):
    """Algorithm 1 as printed: per cluster, sort the unassigned set, take w, move the centroid."""
    n = len(x)
    x = x.astype(np.float64)
    rng = np.random.default_rng(seed)
    cent = x[rng.choice(n, size=k, replace=False)].copy()
    sizes = [n // k + (c < n % k) for c in range(k)]
    assign = np.full(n, -1)
    for _ in range(iters):
        new = np.full(n, -1)
        free = list(range(n))
        for c in range(k):
            d = [((x[i] - cent[c]) ** 2).sum() for i in free]
            order = sorted(range(len(free)), key=lambda j: (d[j], free[j]))
            members = [free[j] for j in order[: sizes[c]]]
            new[members] = c
            cent[c] = x[members].mean(0)
            chosen = set(members)
            free = [i for i in free if i not in chosen]
        if np.array_equal(new, assign):
            break
        assign = new
    return cent, new


@pytest.mark.parametrize("n,k,seed", [(23, 4, 0), (40, 7, 3), (31, 31, 1)])
def test_balanced_equals_literal_algorithm(n, k, seed):
    x = np.random.default_rng(seed).standard_normal((n, 5)).astype(np.float32)
    fast = balanced_kmeans(x, k, iters=30, seed=seed)
    cent, assign = reference_balanced_kmeans(x, k, iters=30, seed=seed)
    np.testing.assert_array_equal(fast.assign, assign)
    np.testing.assert_allclose(fast.centroids, cent, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,k", [(103, 10), (64, 8), (257, 256), (5, 1)])
def test_balanced_cluster_sizes_equal_within_one(n, k):
    x = np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32)
    res = balanced_kmeans(x, k, iters=20, seed=0)
    sizes = np.bincount(res.assign, minlength=k)
    assert sizes.max() - sizes.min() <= 1
    assert sizes.sum() == n
    assert sorted(sizes.tolist(), reverse=True) == sizes.tolist()  # first n % k clusters larger


def test_balanced_is_seeded_and_stops_at_convergence():
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    a = balanced_kmeans(x, 8, iters=100, seed=5)
    b = balanced_kmeans(x, 8, iters=100, seed=5)
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.converged and a.iters < 100


def test_plain_kmeans_is_seeded_and_assigns_nearest():
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    a = plain_kmeans(x, 16, iters=10, seed=2)
    b = plain_kmeans(x, 16, iters=10, seed=2)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assign, nearest(x, a.centroids))


def test_nearest_breaks_ties_to_the_lower_index():
    cent = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    x = np.array([[0.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    assert nearest(x, cent).tolist() == [0, 0]


@pytest.mark.parametrize("fit", [balanced_kmeans, plain_kmeans])
def test_bad_input_is_refused(fit):
    x = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="fewer items than codes"):
        fit(x, 6)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(x, 2)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit(np.zeros(5, dtype=np.float32), 2)
