"""Replay of logged requests through the retrieve -> pre-rank -> rank cascade, per DCAF action.

For DCAF (arXiv 2006.09684) every request needs its value under every action. Here a request is
a user at the first row of an hour of the split (KuaiRand's temporal split), and the cascade is:

1. **retrieve**: the ``retrieve`` items nearest to the mean embedding of the user's earlier
   positive videos (exact inner-product search with faiss over L2-normalised item embeddings;
   the user's own earlier positives are left out; no history: the mean item);
2. **pre-rank**: those candidates ordered by a light dot-product scorer, the mean embedding of
   the user's ``recent`` last positives;
3. **rank**: the first ``size_j`` pre-ranked candidates scored by the ranking model (action j
   decides ``size_j``), the top ``k`` shown.

The value of request i under action j is the ranker's expected engagement of what is shown:
the sum of its predicted probabilities (of ``task``, e.g. click) over the top ``k`` of the
first ``size_j`` candidates (the issue's "sum of predicted engagement of shown videos").
Scoring the first ``max(size)`` candidates once gives every action's value.

Request features for the value model (known before allocation, i.e. without the ranker):
log history length, log earlier impressions and the click rate on them, the top-1 and mean
top-50 retrieval scores, the mean pre-rank score of candidates 1-50, 51-200 and 201-800, and
the hour as sine / cosine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.config import ConfigError
from reelrec.progress import progress as show_progress

#: names of the columns of :attr:`ReplayResult.features`
FEATURES = (
    "log_history",
    "log_impressions",
    "click_rate",
    "retrieval_top1",
    "retrieval_mean50",
    "prerank_mean50",
    "prerank_mean50_200",
    "prerank_mean200_800",
    "hour_sin",
    "hour_cos",
)


@dataclass
class Requests:
    """Logged requests: users ``(N,)``, times ``(N,)`` ms, hours ``(N,)`` 0-23, each user's
    earlier positive videos (raw ids, oldest first), and the user's earlier impressions ``(N,)``
    and click rate on them ``(N,)`` (0 without impressions)."""

    users: np.ndarray
    times: np.ndarray
    hours: np.ndarray
    history: list[np.ndarray]
    impressions: np.ndarray
    click_rate: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, idx: np.ndarray) -> Requests:
        """The requests at positions ``idx`` (int array)."""
        return Requests(
            self.users[idx],
            self.times[idx],
            self.hours[idx],
            [self.history[i] for i in idx],
            self.impressions[idx],
            self.click_rate[idx],
        )


def check_run(run: Path, ranker: str) -> None:
    """Raise ``FileNotFoundError`` naming the command that makes what the cascade needs from
    ``run``: item embeddings (``reelrec encode``) and a trained ranker (``reelrec train``);
    ``ConfigError`` for a run of a dataset the rankers cannot train on (no impressions)."""
    if not Path(run).is_dir():
        raise FileNotFoundError(
            f"run folder {run} not found: make it with `reelrec prepare --dataset kuairand "
            f"--out {run}`, then `reelrec encode --run {run}` and `reelrec train {ranker} --run "
            f"{run}`"
        )
    meta = run / "run.json"
    if meta.exists():
        import json

        from reelrec.tasks.ranking import RANKING_DATASETS

        dataset = json.loads(meta.read_text(encoding="utf-8")).get("dataset")
        if dataset and dataset not in RANKING_DATASETS:
            raise ConfigError(
                f"{run} holds {dataset!r}: reelrec serve ranks with a ranker trained on KuaiRand "
                f"impressions ({', '.join(RANKING_DATASETS)}), which this dataset has none of; "
                "serve a run of `reelrec prepare --dataset kuairand`, or serve this one from a "
                f"generator: it has no {run / 'models' / 'onerec-v2'} (make one with `reelrec "
                "quickstart --dataset microlens`; docs/serving.md)"
            )
    for path, how in [
        (run / "content" / "item_embeddings.npy", f"reelrec encode --run {run}"),
        (run / "models" / ranker / "model.safetensors", f"reelrec train {ranker} --run {run}"),
    ]:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `{how}` first")


def ranker_scores(run: Path, prep, name: str = "can", task: str = "click"):
    """The ``score_fn`` of :class:`Cascade` for the trained ranker ``run/models/name``: its
    predicted ``task`` probability (the first task when it has no ``task``), ``(M,)`` float32.

    Also returns the ranker's :class:`reelrec.data.ctr.RequestFeatures` (``known_user``).
    """
    import torch

    from reelrec.run import Run

    ranker = Run(run).trained(name)
    model, features = ranker.model, ranker.features
    tasks = ranker.tasks
    t = tasks.index(task) if task in tasks else 0

    def score(users, items, times, hours) -> np.ndarray:
        with torch.no_grad():
            return model.predict(features.batch(users, items, times, hours))[:, t].float().numpy()

    return score, features


def hourly_requests(inter: pd.DataFrame, positive: np.ndarray, split: int) -> Requests:
    """One request per (user, hour) of split ``split`` (1 valid, 2 test) at its first row.

    Args:
        inter: prepared interactions sorted by (user, time) with ``user_id``, ``item_id``,
            ``timestamp_ms``, ``hourmin``, ``split``.
        positive: ``(n,)`` bool, the protocol's positive rows (the histories).

    Raises:
        ValueError: no row in the split, or ``positive`` of another length.
    """
    inter = inter.reset_index(drop=True)
    if len(positive) != len(inter):
        raise ValueError(f"positive has {len(positive)} rows, interactions {len(inter)}")
    day = np.flatnonzero(inter["split"].to_numpy() == split)
    if len(day) == 0:
        raise ValueError(f"no rows in split {split}")
    uid = inter["user_id"].to_numpy(dtype=np.int64)
    t = inter["timestamp_ms"].to_numpy(dtype=np.int64)
    item = inter["item_id"].to_numpy(dtype=np.int64)
    key = uid[day] * 10**7 + t[day] // 3_600_000
    _, first = np.unique(key, return_index=True)
    rows = day[np.sort(first)]
    pos = np.flatnonzero(positive)
    history = [item[pos[(uid[pos] == uid[r]) & (t[pos] < t[r])]] for r in rows]
    hours = inter["hourmin"].to_numpy(dtype=np.int64)[rows] // 100
    click = inter["click"].to_numpy(dtype=np.float64) if "click" in inter else np.zeros(len(t))
    # rows are sorted by (user, time): a user's earlier rows lie between its first row and r
    users, firsts = np.unique(uid, return_index=True)
    start = dict(zip(users.tolist(), firsts.tolist(), strict=True))
    seen = np.array([r - start[int(uid[r])] for r in rows], dtype=np.int64)
    clicks = np.array([click[start[int(uid[r])] : r].sum() for r in rows])
    rate = np.where(seen > 0, clicks / np.maximum(seen, 1), 0.0)
    return Requests(uid[rows], t[rows], hours, history, seen, rate)


class Cascade:
    """Retrieval and pre-ranking over item embeddings, ranking by ``score_fn``.

    Args:
        item_ids: ``(V,)`` raw ids of the embedded items.
        item_emb: ``(V, D)`` float32 embeddings (normalised here).
        score_fn: ``(users (M,), items (M,) raw ids, times (M,), hours (M,)) -> (M,)`` float
            scores of the ranker (e.g. predicted click probability).
        retrieve: candidates retrieved per request (>= the largest action).
        recent: history length of the pre-rank scorer.
    """

    def __init__(
        self,
        item_ids: np.ndarray,
        item_emb: np.ndarray,
        score_fn: Callable[..., np.ndarray],
        retrieve: int = 800,
        recent: int = 10,
    ) -> None:
        import faiss

        x = np.asarray(item_emb, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(item_ids):
            raise ValueError(f"item_emb {x.shape} must be (V, D) with V = {len(item_ids)}")
        if not 1 <= retrieve <= len(x):
            raise ValueError(f"retrieve must be in [1, {len(x)}] (the items), got {retrieve}")
        self.emb = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        self.ids = np.asarray(item_ids, dtype=np.int64)
        self.row = {int(v): i for i, v in enumerate(self.ids)}
        self.index = faiss.IndexFlatIP(self.emb.shape[1])
        self.index.add(self.emb)
        self.score_fn, self.retrieve, self.recent = score_fn, retrieve, recent
        self.mean = self.emb.mean(axis=0)

    def _vec(self, items: np.ndarray) -> np.ndarray:
        rows = [self.row[int(v)] for v in items if int(v) in self.row]
        return self.emb[rows].mean(axis=0) if rows else self.mean

    def candidates(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(raw ids (M,) in pre-rank order, retrieval scores (M,), pre-rank scores (M,))``."""
        seen = {int(v) for v in history}
        extra = min(len(seen), len(self.ids) - self.retrieve)
        scores, idx = self.index.search(self._vec(history)[None, :], self.retrieve + extra)
        keep = [k for k, i in enumerate(idx[0]) if i >= 0 and int(self.ids[i]) not in seen]
        keep = keep[: self.retrieve]
        cand, rscore = idx[0][keep], scores[0][keep]
        pscore = self.emb[cand] @ self._vec(history[-self.recent :])
        order = np.argsort(-pscore, kind="stable")
        return self.ids[cand][order], rscore[order], pscore[order]


@dataclass
class ReplayResult:
    """Per request: ``values (N, J)`` (expected engagement shown under each action),
    ``features (N, F)`` (:data:`FEATURES`) and ``rank_ms (N,)`` (ranker time for the
    largest action)."""

    values: np.ndarray
    features: np.ndarray
    rank_ms: np.ndarray


def replay(
    requests: Requests, cascade: Cascade, sizes: Sequence[int], k: int = 10, progress: bool = True
) -> ReplayResult:
    """Every request's value under every action (module docstring).

    Raises:
        ValueError: ``sizes`` not increasing, larger than ``cascade.retrieve`` or below ``k``.
    """
    sizes = list(sizes)
    if sizes != sorted(set(sizes)) or sizes[-1] > cascade.retrieve or sizes[0] < k:
        raise ValueError(
            f"sizes must increase within [k={k}, retrieve={cascade.retrieve}], got {sizes}"
        )
    n = len(requests)
    values = np.zeros((n, len(sizes)))
    feats = np.zeros((n, len(FEATURES)))
    rank_ms = np.zeros(n)
    for i in show_progress(range(n), "replay", "request", enabled=progress):
        items, rs, ps = cascade.candidates(requests.history[i])
        items = items[: sizes[-1]]
        m = len(items)
        t0 = time.perf_counter()
        s = np.asarray(
            cascade.score_fn(
                np.full(m, requests.users[i]),
                items,
                np.full(m, requests.times[i]),
                np.full(m, requests.hours[i]),
            ),
            dtype=np.float64,
        )
        rank_ms[i] = 1e3 * (time.perf_counter() - t0)
        for j, size in enumerate(sizes):
            top = np.sort(s[:size])[::-1][:k]
            values[i, j] = top.sum()
        feats[i] = request_features(
            len(requests.history[i]),
            requests.impressions[i],
            requests.click_rate[i],
            rs,
            ps,
            requests.hours[i],
        )
    return ReplayResult(values, feats, rank_ms)


def request_features(
    history: int, impressions: int, click_rate: float, rs: np.ndarray, ps: np.ndarray, hour: int
) -> np.ndarray:
    """The :data:`FEATURES` of one request: ``(F,)`` float64 from its history length, the
    user's earlier impressions and click rate, the retrieval scores ``rs`` and pre-rank scores
    ``ps`` of its candidates (pre-rank order) and its hour of day."""
    return np.array(
        [
            np.log1p(history),
            np.log1p(impressions),
            click_rate,
            rs.max() if len(rs) else 0.0,
            _mean(np.sort(rs)[::-1][:50]),
            _mean(ps[:50]),
            _mean(ps[50:200]),
            _mean(ps[200:800]),
            np.sin(2 * np.pi * hour / 24),
            np.cos(2 * np.pi * hour / 24),
        ]
    )


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else 0.0


def action_costs(
    requests: Requests, cascade: Cascade, sizes: Sequence[int], samples: int = 30, seed: int = 0
) -> np.ndarray:
    """Measured ranker milliseconds per action: the median over ``samples`` requests of
    scoring ``size_j`` candidates (after one warm-up call). Returns ``(J,)`` float64."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(requests), size=min(samples, len(requests)), replace=False)
    cost = np.zeros(len(sizes))
    for j, size in enumerate(sizes):
        times = []
        for n, i in enumerate(picks):
            items = cascade.candidates(requests.history[i])[0][:size]
            args = (
                np.full(len(items), requests.users[i]),
                items,
                np.full(len(items), requests.times[i]),
                np.full(len(items), requests.hours[i]),
            )
            t0 = time.perf_counter()
            cascade.score_fn(*args)
            if n:  # the first call warms up
                times.append(1e3 * (time.perf_counter() - t0))
        cost[j] = float(np.median(times)) if times else 1.0
    # larger actions never cost less (timer noise on tiny differences)
    return np.maximum.accumulate(cost)
