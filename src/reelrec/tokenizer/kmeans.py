"""K-means for residual quantisation: OneRec's balanced k-means and plain k-means (faiss).

Source: OneRec (Deng et al., arXiv 2502.18965), Sec. 2.2 "Balanced K-means", Algorithm 1:
``w = |V| / K``; centroids initialised by random selection; repeat { U = V; for k = 1..K: sort U
by ascending Euclidean distance to ``c_k``, ``V_k = U[0:w]``, ``c_k = mean(V_k)``,
``U = U minus V_k`` } until the assignment converges.

Deviations (written down as STYLE.md asks):

* ``|V|`` need not be divisible by K: the first ``|V| mod K`` clusters in the visiting order take
  ``w + 1`` items, the rest ``w`` (sizes equal within one).
* The paper gives no iteration cap; we stop at convergence (no item changes cluster) or after
  ``iters`` passes, and report which.
* Ties in distance are broken by item index (stable sort), so the result is a function of the
  data and the seed only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class KMeansResult:
    """A fitted codebook.

    Attributes:
        centroids: float32 (K, D).
        assign: int64 (N,), the cluster of each training vector, in 0..K-1.
        iters: passes run.
        converged: True when the last pass changed no assignment; None where the fitter does
            not tell (faiss runs all its iterations).
    """

    centroids: np.ndarray
    assign: np.ndarray
    iters: int
    converged: bool | None


def _check(x: np.ndarray, k: int, iters: int = 1) -> np.ndarray:
    if iters < 1:
        raise ValueError(f"k-means needs at least 1 iteration, got {iters}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"k-means needs an (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("k-means input contains NaN or inf")
    if k < 1 or k > len(x):
        raise ValueError(f"cannot make {k} clusters from {len(x)} vectors (fewer items than codes)")
    return x


def balanced_kmeans(x: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> KMeansResult:
    """OneRec Algorithm 1: every cluster gets ``N // K`` or ``N // K + 1`` vectors.

    Args:
        x: float (N, D) vectors.
        k: number of clusters K (1 <= K <= N).
        iters: maximum passes over the K clusters.
        seed: seed of the initial random selection of K distinct vectors as centroids.

    Returns:
        :class:`KMeansResult`; cluster ``c`` has ``N // K + (c < N % K)`` members.

    Raises:
        ValueError: non-finite input, wrong shape, K outside 1..N, or iters < 1.

    Cost: O(iters * K * N * D) time, O(N * D) memory.
    """
    x = _check(x, k, iters)
    n = len(x)
    xt = torch.from_numpy(x).double()
    sq = (xt * xt).sum(1)
    rng = np.random.default_rng(seed)
    cent = xt[torch.from_numpy(rng.choice(n, size=k, replace=False))].clone()
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    assign = torch.full((n,), -1, dtype=torch.int64)
    converged = False
    passes = 0
    for _ in range(iters):
        passes += 1
        # Cluster k is visited after clusters 0..k-1 moved their own centroids, but its sort uses
        # only c_k, which has not moved yet in this pass: distances to all centroids can be taken
        # once per pass and the sequential algorithm stays exact.
        dist = sq.unsqueeze(1) - 2.0 * (xt @ cent.T) + (cent * cent).sum(1).unsqueeze(0)
        new = torch.empty(n, dtype=torch.int64)
        taken = torch.zeros(n, dtype=torch.bool)
        for c in range(k):
            d = dist[:, c].masked_fill(taken, float("inf"))
            members = torch.sort(d, stable=True).indices[: sizes[c]]
            new[members] = c
            taken[members] = True
        for c in range(k):
            cent[c] = xt[new == c].mean(0)
        converged = bool(torch.equal(new, assign))
        assign = new
        if converged:
            break
    return KMeansResult(cent.float().numpy(), assign.numpy(), passes, converged)


def plain_kmeans(x: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> KMeansResult:
    """Lloyd's k-means by faiss (``faiss.Kmeans``), then nearest-centroid assignment.

    Args:
        x: float (N, D) vectors.
        k: number of clusters K (1 <= K <= N).
        iters: Lloyd iterations.
        seed: faiss's seed (same seed, same centroids).

    Returns:
        :class:`KMeansResult` (``converged`` is None: faiss runs all ``iters``).

    Raises:
        ValueError: non-finite input, wrong shape, K outside 1..N, or iters < 1.
        ImportError: faiss missing (``pip install 'reelrec[tokenizer]'``).
    """
    x = _check(x, k, iters)
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("plain k-means needs faiss: pip install 'reelrec[tokenizer]'") from exc
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=iters,
        seed=seed,
        max_points_per_centroid=max(256, len(x)),
        verbose=False,
    )
    km.cp.min_points_per_centroid = 1
    km.train(np.ascontiguousarray(x))
    cent = km.centroids.astype(np.float32)
    return KMeansResult(cent, nearest(x, cent), iters, None)


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean; ties to the lower index).

    Args:
        x: float (N, D); centroids: float (K, D).

    Returns:
        int64 (N,) in 0..K-1.
    """
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    ct = torch.from_numpy(np.asarray(centroids, dtype=np.float64))
    out = torch.empty(len(xt), dtype=torch.int64)
    csq = (ct * ct).sum(1)
    for s in range(0, len(xt), 8192):
        d = csq.unsqueeze(0) - 2.0 * xt[s : s + 8192] @ ct.T
        out[s : s + 8192] = d.argmin(1)
    return out.numpy()
