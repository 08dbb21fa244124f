"""The generative cascade: generate (beam search over semantic IDs) -> pre-rank -> rank.

For a run with a trained semantic-ID generator (OneRec-V2 or OneRec, ``reelrec train``) and a
trained embedding ranker (SASRec, the run's ``sasrec``), a request of a user with history h
is served as:

1. **generate**: trie-constrained beam search of width ``beam_j`` over the generator's
   semantic IDs (:func:`reelrec.models.generative.beam_search`), the user's history items
   excluded (masked inside the beam); the beam's legal items are the candidates, in beam
   order. ``beam_j = 0`` skips the generator: the candidates are the most popular videos the
   user has not watched (the degraded action a burst can fall back to: about a tenth of a
   beam's cost, since a beam of any width pays the decoder's fixed per-step cost);
2. **pre-rank**: the first ``rank_j`` of them by the generator's sequence log-probability
   (the beam's own order: no second model);
3. **rank**: those ``rank_j`` candidates scored by the ranker (the inner product of its user
   representation and the candidates' item embeddings), the top ``k`` shown.

A DCAF action j is the pair ``(beam_j, rank_j)`` (OneRec Technical Report section 2.4 serves
with beam search; DCAF, arXiv 2006.09684, section 3: one action per request under a global
budget): its cost is the measured milliseconds of generating with ``beam_j`` plus ranking
``rank_j`` candidates, so the multiplier trades beam width and ranked candidates together.

The value of a request under action j (what the request-value model learns from the
calibration requests) is the ranker's own probability that the user's next video is among
those shown: the sum, over the ``k`` shown videos, of the ranker's softmax over the whole
catalogue. It is the generative analogue of the faiss path's "sum of predicted engagement of
shown videos" (MicroLens has no impressions or click labels to predict). The calibration also
records the real held-out validation video's hit rate per action (``valid_hit``), which
the value model does not use: it says how much the actions differ in what they find.

Request features (known before allocation, so no model is run for them): log history
length, log training popularity of the most recent video and the mean over the last 10, the
distinct share of the last 20, and the share of the last 10 that are among the catalogue's
1,000 most popular.

Deviations: the faiss path's DCAF features include retrieval scores (retrieval runs before
allocation there); here the generator runs inside the action, so its scores are not
features. Costs are measured on this machine at start-up (or given, in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from reelrec.serving.allocation import BEAM_ACTIONS

#: names of the request features of the generative path
FEATURES = (
    "log_history",
    "log_pop_last",
    "log_pop_last10",
    "distinct_last20",
    "popular_share_last10",
)


def check_actions(actions: Sequence[tuple[int, int]], k: int = 10) -> tuple[tuple[int, int], ...]:
    """``actions`` as a tuple of ``(beam, rank)`` int pairs, increasing (lexicographically),
    with ``k <= rank <= beam``, or ``beam == 0`` (popular candidates) and ``rank >= k``.

    Raises:
        ValueError: an action that is not such a pair, or the actions not increasing.
    """
    out = []
    for a in actions:
        if not (isinstance(a, Sequence) and len(a) == 2 and all(isinstance(x, int) for x in a)):
            raise ValueError(f"a generative action is a (beam, rank) pair of ints, got {a!r}")
        beam, rank = a
        if not (k <= rank <= beam or (beam == 0 and rank >= k)):
            raise ValueError(
                f"action {a}: need k={k} <= rank <= beam (candidates come from the beam), "
                "or beam 0 (popular candidates) and rank >= k"
            )
        out.append((beam, rank))
    if not out or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"actions must be non-empty and increasing, got {out}")
    return tuple(out)


def check_generator_run(run, generator: str, ranker: str) -> None:
    """Raise ``FileNotFoundError`` naming the command that makes what the generative cascade
    needs from ``run``: a prepared dataset, semantic IDs, the generator and the ranker."""
    from pathlib import Path

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(
            f"run folder {run} not found: make it with `reelrec quickstart --dataset microlens "
            f"--out {run}`"
        )
    found = sorted(p.parent.name for p in (run / "models").glob("*/model.safetensors"))
    for name in (generator, ranker):
        if not (run / "models" / name / "model.safetensors").exists():
            how = (
                f"reelrec train {name} --run {run}"
                if name in ("sasrec", "elastic", "onerec", "onerec-v2")
                else f"reelrec train MODEL --run {run} --name={name}"
            )
            raise FileNotFoundError(
                f"{run / 'models' / name / 'model.safetensors'} not found (trained models in "
                f"{run}: {', '.join(found) or 'none'}): run `{how}`, or make the whole run "
                "with `reelrec quickstart --dataset microlens`"
            )


def validation_requests(inter, positive: np.ndarray, n: int, seed: int = 0):
    """Up to ``n`` calibration requests of a leave-one-out run, a seeded random choice of
    users: each user's training positives (raw ids, in order) and its held-out validation
    video. Returns ``(histories, targets (N,) int64)``.

    Raises:
        ValueError: no user has both training positives and a validation video.
    """
    split = inter["split"].to_numpy()
    uid = inter["user_id"].to_numpy(dtype=np.int64)
    item = inter["item_id"].to_numpy(dtype=np.int64)
    pos = np.asarray(positive, dtype=bool)
    train, valid = pos & (split == 0), pos & (split == 1)
    first_valid: dict[int, int] = {}
    for u, v in zip(uid[valid], item[valid], strict=True):
        first_valid.setdefault(int(u), int(v))
    hist: dict[int, list[int]] = {}
    for u, v in zip(uid[train], item[train], strict=True):
        if int(u) in first_valid:
            hist.setdefault(int(u), []).append(int(v))
    users = sorted(hist)
    if not users:
        raise ValueError("no user has both training positives and a validation video")
    pick = np.random.default_rng(seed).permutation(len(users))[:n]
    chosen = [users[i] for i in sorted(pick)]
    return [np.asarray(hist[u], dtype=np.int64) for u in chosen], np.asarray(
        [first_valid[u] for u in chosen], dtype=np.int64
    )


@dataclass
class Calibration:
    """What the calibration requests gave: ``features (N, F)``, ``values (N, J)`` (the
    ranker's probability mass of the shown videos, per action) and ``valid_hit (N, J)``
    (1 when the user's held-out validation video is shown, per action)."""

    features: np.ndarray
    values: np.ndarray
    valid_hit: np.ndarray


class GenerativeCascade:
    """Generator candidates, ranked by an embedding ranker (module docstring).

    Args:
        generator: the trained generator (``Run.trained("onerec-v2")``: a
            :class:`~reelrec.tasks.trained.TrainedRetriever` whose model decodes semantic IDs).
        ranker: the trained ranker (``Run.trained("sasrec")``: its model an
            :class:`~reelrec.models.base.EmbeddingScorer`).
        actions: ``(beam, rank)`` pairs, increasing (:data:`BEAM_ACTIONS`).
        k: videos shown.

    Raises:
        ConfigError: the generator does not decode semantic IDs, or the ranker does not score
            by inner products.
        ValueError: bad ``actions``.
    """

    def __init__(self, generator, ranker, actions=BEAM_ACTIONS, k: int = 10) -> None:
        from reelrec.config import ConfigError
        from reelrec.models.base import EmbeddingScorer

        model = generator.model
        if not (hasattr(model, "trie") and hasattr(model, "start")):
            raise ConfigError(
                f"generator {generator.name!r} is not a semantic-ID generator: name a OneRec or "
                "OneRec-V2 model folder (--generator)"
            )
        if not isinstance(ranker.model, EmbeddingScorer):
            raise ConfigError(
                f"ranker {ranker.name!r} does not score by item embeddings: name a SASRec or "
                "ELASTIC model folder (--ranker)"
            )
        self.generator, self.ranker = generator, ranker
        self.actions, self.k = check_actions(actions, k), k
        self.gen_vocab, self.rank_vocab = generator.data.vocab, ranker.data.vocab
        counts = np.asarray(generator.data.train_counts, dtype=np.float64)
        self.log_pop = np.log1p(counts)  # by generator item index
        order = np.argsort(-counts[1:], kind="stable") + 1  # most popular first, ties by index
        self.popular_set = np.zeros(len(counts), dtype=bool)
        self.popular_set[order[:1000]] = True
        self.popular_raw = np.asarray(self.gen_vocab.decode(order), dtype=np.int64)
        import torch

        with torch.no_grad():
            self.item_emb = ranker.model.item_embeddings().detach().float()

    def _rows(self, hist: np.ndarray, vocab, length: int):
        import torch

        idx = vocab.encode(np.asarray(hist, dtype=np.int64))
        idx = idx[idx > 0][-length:]
        row = torch.zeros(1, length, dtype=torch.long)
        if len(idx):
            row[0, -len(idx) :] = torch.from_numpy(idx)
        return row

    def features(self, hist: np.ndarray) -> np.ndarray:
        """The :data:`FEATURES` of one request: ``(F,)`` float64 from its history (raw ids)."""
        idx = self.gen_vocab.encode(np.asarray(hist, dtype=np.int64))
        idx = idx[idx > 0]
        last10, last20 = idx[-10:], idx[-20:]
        return np.array(
            [
                np.log1p(len(hist)),
                self.log_pop[idx[-1]] if len(idx) else 0.0,
                self.log_pop[last10].mean() if len(last10) else 0.0,
                len(set(last20.tolist())) / len(last20) if len(last20) else 0.0,
                self.popular_set[last10].mean() if len(last10) else 0.0,
            ]
        )

    def known(self, hist: np.ndarray) -> bool:
        """Whether the generator knows any item of ``hist`` (else it has nothing to read)."""
        return bool((self.gen_vocab.encode(np.asarray(hist, dtype=np.int64)) > 0).any())

    def generate(self, hist: np.ndarray, beam: int) -> tuple[np.ndarray, np.ndarray]:
        """Beam search of width ``beam`` for one history (raw ids, oldest first), history
        items excluded: ``(raw ids (n,), log-probabilities (n,))``, best first, n <= beam."""
        import torch

        from reelrec.models.generative import beam_search

        g = self.generator
        row = self._rows(hist, self.gen_vocab, g.max_len)
        exclude = self.gen_vocab.encode(np.asarray(hist, dtype=np.int64))
        exclude = torch.from_numpy(exclude[exclude > 0][None, :])
        model = g.model
        if model.trie.children[0].device != row.device:
            model.trie.to(row.device)
        with torch.no_grad():
            items, logp = beam_search(model, row, model.trie, beam, exclude=exclude)
        ok = items[0] > 0
        raw = self.gen_vocab.decode(items[0][ok].numpy().astype(np.int64))
        return np.asarray(raw, dtype=np.int64), logp[0][ok].numpy().astype(np.float64)

    def user_vector(self, hist: np.ndarray):
        """The ranker's user representation of one history (raw ids, oldest first): float32
        torch tensor ``(D,)``."""
        import torch

        row = self._rows(hist, self.rank_vocab, self.ranker.max_len)
        with torch.no_grad():
            return self.ranker.model.user_representation(row)[0].float()

    def rank(self, hist: np.ndarray, items: np.ndarray, user=None) -> np.ndarray:
        """The ranker's scores of ``items`` (raw ids) for this history: ``(n,)`` float64
        inner products (-inf for an item the ranker never saw); ``user``: the
        :meth:`user_vector` when already computed."""
        import torch

        user = self.user_vector(hist) if user is None else user
        idx = self.rank_vocab.encode(np.asarray(items, dtype=np.int64))
        with torch.no_grad():
            s = (self.item_emb[torch.from_numpy(idx)] @ user).double().numpy()
        return np.where(idx > 0, s, -np.inf)

    def candidates(self, hist: np.ndarray, j: int) -> tuple[np.ndarray, int]:
        """Action ``j``'s pre-ranked candidates for one history: ``(raw ids (m,) int64, how
        many the source found)``, m <= the action's ``ranked``: the beam's items in beam
        order, or for beam 0 the most popular videos not in the history."""
        beam, n = self.actions[j]
        if beam == 0:
            cand = self.popular_raw[: n + len(hist)]
            cand = cand[~np.isin(cand, np.asarray(hist, dtype=np.int64))]
        else:
            cand, _ = self.generate(hist, beam)
        return cand[:n], len(cand)

    def serve(self, hist: np.ndarray, j: int, timer: Callable[[], float] = time.perf_counter):
        """Action ``j`` for one history: ``(ranked raw ids (m,) int64, ranker scores (m,)
        float64, candidates found (int), generate ms, rank ms)``; the ranked ids are the
        pre-ranked candidates, not yet sorted by score; ms by ``timer`` (seconds)."""
        t0 = timer()
        ranked, found = self.candidates(hist, j)
        t1 = timer()
        scores = self.rank(hist, ranked) if len(ranked) else np.zeros(0)
        t2 = timer()
        return ranked, scores, found, 1e3 * (t1 - t0), 1e3 * (t2 - t1)

    def shown(self, ranked: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The top ``k`` of ``ranked`` by score (ties: pre-rank order)."""
        return ranked[np.argsort(-scores, kind="stable")[: self.k]]

    def calibrate(self, histories: list[np.ndarray], targets: np.ndarray) -> Calibration:
        """Every action on each calibration history (raw ids) with its held-out ``targets``
        (raw ids, ``(N,)``): features, values and validation hits (:class:`Calibration`).
        The ranker's user vector and softmax over the catalogue are computed once per
        history and shared by its actions."""
        import torch

        from reelrec.progress import progress

        n, jn = len(histories), len(self.actions)
        feats, values, hits = np.zeros((n, len(FEATURES))), np.zeros((n, jn)), np.zeros((n, jn))
        for i in progress(range(n), "calibrate DCAF (generator)", "request", enabled=n >= 50):
            hist = histories[i]
            feats[i] = self.features(hist)
            user = self.user_vector(hist)
            with torch.no_grad():  # by ranker item index - 1
                p = torch.softmax((self.item_emb[1:] @ user).double(), 0).numpy()
            for j in range(jn):
                ranked, _ = self.candidates(hist, j)
                shown = self.shown(ranked, self.rank(hist, ranked, user))
                idx = self.rank_vocab.encode(shown)
                values[i, j] = float(p[idx[idx > 0] - 1].sum())
                hits[i, j] = float(int(targets[i]) in set(shown.tolist()))
        return Calibration(feats, values, hits)

    def measure_costs(self, histories: list[np.ndarray], samples: int = 20) -> np.ndarray:
        """Median wall milliseconds of each action (generate + rank) over the first
        ``samples`` of the histories (after one warm-up call per action), made non-decreasing
        along the ladder: ``(J,)`` float64."""
        use = histories[: samples + 1]
        cost = np.zeros(len(self.actions))
        for j in range(len(self.actions)):
            ms = [sum(self.serve(h, j)[3:]) for h in use][1:] or [1.0]
            cost[j] = float(np.median(ms))
        return np.maximum.accumulate(np.maximum(cost, 1e-3))
