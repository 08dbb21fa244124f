"""The HTTP service: ``POST /recommend``, ``POST /events``, ``GET /healthz``, ``GET /metrics``,
and a web page ``GET /`` (``static/index.html``: pick a user, see the history and the feed with
titles where the dataset has them, the trace of the request, a live load panel, and send
like / watched events) over ``GET /users``, ``/history/{user_id}``, ``/items?ids=`` and
``/status``.

:class:`Recommender` serves one request through the cascade of :mod:`reelrec.serving.replay`
(faiss retrieval -> dot-product pre-rank -> the run's ranker on the first ``size_j``
candidates), with the action j chosen per request by DCAF (:mod:`reelrec.serving.allocation`):
``argmax_j Q(i, j) - lambda c_j``, Q from the request-value model fitted at start-up on the
validation day's requests, c_j the ranker milliseconds measured at start-up (or given: the
``costs`` argument), lambda found by bisection on those requests for the budget (``budget_ms``
per request on average) and then moved by a PI controller from the load of the last second,
so the service holds ``capacity_ms`` of ranker time per second when traffic changes (a burst
gets cheaper actions, not timeouts). The load is, per request served, either the start-up
cost of its action (``load_signal="cost"``, the default: the sum DCAF's budget constrains,
which contention on shared cores does not inflate) or the CPU time the ranker call took on its
thread (``"cpu"``; ``reelrec serve`` runs torch on one thread per call so that this is the
call's whole CPU time). With ``dcaf=False`` every request gets the default action.

A run with a trained generator (``reelrec quickstart --dataset microlens``) is served by the
generative cascade instead (``source="generator"``, the default when ``RUN/models/onerec-v2``
exists; :mod:`reelrec.serving.generative`): OneRec-V2 beam search over semantic IDs makes the
candidates, SASRec ranks them, and DCAF's actions are (beam width, candidates ranked) pairs
whose cost is the measured generate + rank time; the same controller, fallbacks, store and
endpoints serve both.

Every time the service reads comes from an injectable source (``clock`` for the controller,
``timer`` and ``cpu_timer`` for the trace's milliseconds and the ``"cpu"`` load, ``wall_clock``
for a request's default time and hence its hour), and the action costs can be given instead of
measured: with all of them given, what it serves does not depend on the machine's speed or load.

Users the dataset does not know, and users without history, get the most popular videos
(``trace.fallback = "cold_start"``); so does a user for whom retrieval finds no unseen
candidate (``"no_candidates"``), and an answer with fewer than k ranked candidates is topped
up from them (``"topped_up"``). Fallbacks are raw video ids (never internal indices: case C22
of ``shared/cases``), counted in ``/metrics`` and recorded in the store with their reason;
they cost no ranker time and are observed as such by the DCAF controller. Events are stored by a :class:`reelrec.serving.store.EventStore`
(SQLite by default, or Redis shared by several processes) and
acknowledged only after their transaction commits; the next recommendation reads them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from reelrec.config import ConfigError
from reelrec.serving.allocation import (
    BEAM_ACTIONS,
    FAISS_SIZES,
    ActionLadder,
    PIController,
    RequestValueModel,
    find_multiplier,
)
from reelrec.serving.generative import (
    GenerativeCascade,
    check_actions,
    check_generator_run,
    validation_requests,
)
from reelrec.serving.replay import (
    Cascade,
    action_costs,
    check_run,
    hourly_requests,
    ranker_scores,
    replay,
    request_features,
)
from reelrec.serving.store import Event, EventStore, StoreUnavailable

MAX_K = 100
#: the web page ``GET /`` serves: one file, no build step, nothing fetched from elsewhere
PAGE = Path(__file__).with_name("static") / "index.html"
MAX_BODY_BYTES = 1_000_000
MAX_EVENTS = 1000
FALLBACKS = ("cold_start", "no_candidates", "topped_up")


def popularity(item_ids: np.ndarray) -> np.ndarray:
    """Raw video ids by how often they occur in ``item_ids`` (each occurrence counts, case
    C07), most first, ties by the lower id.

    Args:
        item_ids: ``(N,)`` int raw video ids of positive interactions.

    Returns:
        ``(V,)`` int64 raw ids (the distinct ones), most popular first.
    """
    ids, counts = np.unique(np.asarray(item_ids, dtype=np.int64), return_counts=True)
    return ids[np.lexsort((ids, -counts))]


EMPTY_META = {"title": None, "tags": [], "duration_s": None}


def item_metadata(items) -> dict[int, dict]:
    """Raw video id -> ``{"title", "tags", "duration_s"}`` from a prepared ``items`` table
    (only the fields it has: MicroLens titles, KuaiRand tags and durations)."""
    import pandas as pd

    out: dict[int, dict] = {}
    has = {c: c in items.columns for c in ("title", "tags", "duration_ms")}
    for row in items.itertuples(index=False):
        m: dict = {}
        if has["title"] and isinstance(row.title, str) and row.title.strip():
            m["title"] = row.title.strip()
        if (
            has["tags"]
            and row.tags is not None
            and not (np.isscalar(row.tags) and pd.isna(row.tags))
        ):
            m["tags"] = [int(t) if str(t).lstrip("-").isdigit() else str(t) for t in row.tags]
        if has["duration_ms"] and row.duration_ms == row.duration_ms and row.duration_ms:
            m["duration_s"] = round(float(row.duration_ms) / 1000, 1)
        if m:
            out[int(row.item_id)] = m
    return out


def fill_from_popular(popular: np.ndarray, seen: set[int], k: int, taken=()) -> list[int]:
    """``k`` raw ids from ``popular`` (most popular first): unseen ones first; when fewer than
    ``k`` are unseen, seen ones follow, so that a user who has watched every video still gets
    an answer. Ids in ``taken`` (already in the answer) are never repeated.

    Source: case C22 (a cold-start fallback must return raw ids, for unknown users and for
    users with no candidate left).
    """
    taken = {int(v) for v in taken}
    fresh = [int(v) for v in popular if int(v) not in seen and int(v) not in taken]
    if len(fresh) >= k:
        return fresh[:k]
    again = [int(v) for v in popular if int(v) in seen and int(v) not in taken]
    return (fresh + again)[:k]


def resolve_source(run: Path, source: str, generator: str, ranker: str | None) -> tuple[str, str]:
    """``(source, ranker)`` of a run: ``"auto"`` is the generator when ``run/models/generator``
    exists, else faiss; no ranker is ``sasrec`` with the generator and ``can`` with faiss.

    Raises:
        ConfigError: ``source`` not one of ``auto``, ``faiss``, ``generator``.
    """
    if source not in ("auto", "faiss", "generator"):
        raise ConfigError(f"source must be 'auto', 'faiss' or 'generator', got {source!r}")
    if source == "auto":
        source = "generator" if (Path(run) / "models" / generator).is_dir() else "faiss"
    return source, ranker or ("sasrec" if source == "generator" else "can")


class Recommender:
    """The cascade + DCAF over a trained run (see the module docstring).

    Args:
        run: a run folder. The faiss source needs ``content/item_embeddings.npy`` and a
            trained ranker in ``models/<ranker>`` (``reelrec train can``, KuaiRand); the
            generator source a trained generator ``models/<generator>`` and an embedding
            ranker ``models/<ranker>`` (``reelrec quickstart --dataset microlens`` makes both).
        store: where events go (:class:`~reelrec.serving.store.SQLiteStore` or
            :class:`~reelrec.serving.store.RedisStore`).
        ranker: model folder of the ranker (None: ``can`` for faiss, ``sasrec`` for the
            generator).
        sizes: the action ladder: candidates the ranker scores (faiss), or ``(beam width,
            candidates ranked)`` pairs (generator; None: :data:`~reelrec.serving.generative.
            BEAM_ACTIONS`).
        default_size: the action of ``dcaf=False`` and the budget's reference (None: the
            middle action).
        source: the candidate source: ``"faiss"`` (nearest items to the history's embeddings,
            :mod:`reelrec.serving.replay`), ``"generator"`` (beam search of the generator,
            :mod:`reelrec.serving.generative`), or ``"auto"``: the generator when the run has
            ``models/<generator>``, else faiss.
        generator: model folder of the generator (``onerec-v2``).
        budget_ms: mean ranker milliseconds per request of the offline multiplier, the
            controller's starting point (default: the default action's measured cost).
        capacity_ms: ranker milliseconds per second of wall time the service may spend; the
            PI controller moves lambda to hold it (a burst of traffic gets cheaper actions).
        load_signal: ``"cost"`` (start-up cost of each served action) or ``"cpu"`` (ranker
            CPU milliseconds measured per call): what the controller holds at ``capacity_ms``.
        clock: seconds, monotone (``time.monotonic``; tests pass a simulated clock): the
            time of the PI controller.
        dcaf: allocate per request (else everyone gets ``default_size``).
        calibration_requests: validation requests replayed at start-up to fit Q and lambda.
        costs: the cost of each action, ranker milliseconds per request, one per size,
            > 0 and non-decreasing; None (the default) measures them at start-up
            (:func:`~reelrec.serving.replay.action_costs`: median wall milliseconds, which
            depend on the machine's speed and load). Tests give them.
        timer: seconds, monotone (``time.perf_counter``): the ``ms`` of the trace and
            ``reelrec_rank_ms_total``.
        cpu_timer: CPU seconds of the calling thread (``time.thread_time``): the ranker's
            CPU milliseconds per call, the load of ``load_signal="cpu"``.
        wall_clock: seconds since the epoch (``time.time``): the time of a request without
            ``now_ms`` (its hour is a feature of the value model).

    Raises:
        FileNotFoundError: embeddings, generator or ranker missing (says which command
            makes them).
        ValueError: unknown ``source``, ``default_size`` not an action, ``capacity_ms`` <= 0, unknown
            ``load_signal``, or ``costs`` not one finite, > 0, non-decreasing value per size.
    """

    def __init__(
        self,
        run: Path,
        store: EventStore,
        ranker: str | None = None,
        sizes: tuple | None = None,
        default_size: int | tuple[int, int] | None = None,
        budget_ms: float | None = None,
        dcaf: bool = True,
        capacity_ms: float = 500.0,
        calibration_requests: int = 300,
        seed: int = 0,
        load_signal: str = "cost",
        clock: Callable[[], float] = time.monotonic,
        costs: Sequence[float] | None = None,
        timer: Callable[[], float] = time.perf_counter,
        cpu_timer: Callable[[], float] = time.thread_time,
        wall_clock: Callable[[], float] = time.time,
        source: str = "auto",
        generator: str = "onerec-v2",
    ) -> None:
        from reelrec.data.prepare import load_prepared
        from reelrec.data.splits import positive_mask

        run = Path(run)
        source, ranker = resolve_source(run, source, generator, ranker)
        self.source, self.generator_name = source, generator
        if sizes is None:
            sizes = BEAM_ACTIONS if source == "generator" else FAISS_SIZES
        if default_size is None:
            default_size = sizes[len(sizes) // 2]
        if source == "generator":
            check_generator_run(run, generator, ranker)
            sizes = check_actions(sizes)
            default_size = tuple(default_size) if isinstance(default_size, list) else default_size
        else:
            check_run(run, ranker)
        if default_size not in sizes:
            raise ConfigError(f"default_size {default_size} is not one of the actions {sizes}")
        if not capacity_ms > 0:
            raise ConfigError(f"capacity_ms must be > 0, got {capacity_ms}")
        if load_signal not in ("cost", "cpu"):
            raise ConfigError(f"load_signal must be 'cost' or 'cpu', got {load_signal!r}")
        given = None
        if costs is not None:  # checked now, before the start-up's work
            given = ActionLadder(tuple(sizes), tuple(float(c) for c in costs))
        self.load_signal, self.clock = load_signal, clock
        self.timer, self.cpu_timer, self.wall_clock = timer, cpu_timer, wall_clock
        self.store, self.dcaf, self.sizes = store, dcaf, tuple(sizes)
        self.capacity_ms = float(capacity_ms)
        self.default = self.sizes.index(default_size)
        prep = load_prepared(run)
        inter = prep.interactions.reset_index(drop=True)
        positive = positive_mask(inter, prep.protocol)
        self.known_videos = set(inter["item_id"].unique().tolist())
        if source == "faiss":
            score, features = ranker_scores(run, prep, ranker, task="click")
            ids = np.load(run / "content" / "item_ids.npy")
            self.cascade = Cascade(ids, np.load(run / "content" / "item_embeddings.npy"), score)
            self.known_user = features.known_user
        else:
            from reelrec.run import Run

            trained = Run(run)
            self.generative = GenerativeCascade(
                trained.trained(generator), trained.trained(ranker), sizes
            )
            users = set(inter["user_id"].unique().tolist())
            self.known_user = lambda u: int(u) in users
        # each user's logged impressions and click rate (request features of the faiss path)
        self.activity: dict[int, tuple[int, float]] = {}
        if source == "faiss":
            clicks = inter["click"] if "click" in inter else inter["user_id"] * 0.0
            g = clicks.groupby(inter["user_id"]).agg(["size", "mean"])
            self.activity = {
                int(u): (int(n), float(r))
                for u, n, r in zip(g.index, g["size"], g["mean"], strict=True)
            }
        uid = inter["user_id"].to_numpy()
        item = inter["item_id"].to_numpy()
        self.logged: dict[int, list[int]] = {}
        for u, v in zip(uid[positive], item[positive], strict=True):
            self.logged.setdefault(int(u), []).append(int(v))
        self.popular = popularity(inter.loc[positive, "item_id"].to_numpy())
        self.meta = item_metadata(prep.items)
        # calibration on validation requests: action costs, Q model, lambda
        if source == "faiss":
            valid = hourly_requests(inter, positive, split=1)
            pick = np.random.default_rng(seed).permutation(len(valid))[:calibration_requests]
            valid = valid.subset(pick)
            if given is None:  # measured: wall milliseconds of this machine, now
                measured = action_costs(valid, self.cascade, sizes)
                given = ActionLadder(self.sizes, tuple(float(c) for c in measured))
            res = replay(valid, self.cascade, sizes, progress=False)
            feats, values = res.features, res.values
        else:
            hists, targets = validation_requests(inter, positive, calibration_requests, seed)
            if given is None:  # measured: wall milliseconds of this machine, now
                measured = self.generative.measure_costs(hists)
                given = ActionLadder(self.sizes, tuple(float(c) for c in measured))
            self.calibration = self.generative.calibrate(hists, targets)
            feats, values = self.calibration.features, self.calibration.values
        self.ladder = given
        self.value_model = RequestValueModel().fit(feats, values)
        costs = self.ladder.cost_array
        self.budget_ms = float(budget_ms if budget_ms is not None else costs[self.default])
        q = self.value_model.predict(feats)
        if not (np.isfinite(self.budget_ms) and self.budget_ms >= costs[0]):
            raise ConfigError(
                f"budget_ms must be at least the cheapest action's cost "
                f"({costs[0]:.2f} ms per request), got {self.budget_ms:g}"
            )
        # a budget above the dearest action binds nothing: lambda 0 (no overflow for huge ones)
        b = min(self.budget_ms, float(costs[-1])) * len(q)
        self.lam0 = find_multiplier(q, costs, b)
        # 4x the multiplier above which every calibration request takes the cheapest action
        # (live requests outside the calibration sample may need more)
        lam_max = 4.0 * max(find_multiplier(q, costs, costs[0] * len(q)), 1e-9)
        self.controller = PIController(self.capacity_ms, self.lam0, lam_max)
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "cold_start": 0, "events": 0, "rank_ms": 0.0}
        self.stats |= {"rank_cpu_ms": 0.0, "cost_ms": 0.0}
        self.fallbacks = dict.fromkeys(FALLBACKS, 0)
        self.stats["fallback_records_lost"] = 0
        self._fallback_queue: queue.Queue = queue.Queue(maxsize=10_000)
        threading.Thread(target=self._record_loop, name="fallback-records", daemon=True).start()
        self.actions = dict.fromkeys(self.sizes, 0)

    def lam(self) -> float:
        """The current Lagrange multiplier (the controller's; ``lam0`` before any traffic)."""
        return self.controller.lam

    def describe(self, ids: Sequence[int]) -> list[dict]:
        """What the catalogue knows of each raw video id, in order: ``{"video_id", "title"
        (or None), "tags" (list), "duration_s" (or None), "known"}`` (the web page's cards)."""
        out = []
        for v in ids:
            m = self.meta.get(int(v), {})
            out.append(
                {"video_id": int(v), **EMPTY_META, **m, "known": int(v) in self.known_videos}
            )
        return out

    def users(self, n: int = 50) -> list[dict]:
        """The ``n`` users with the longest logged history, longest first (ties: lower id):
        ``{"user_id", "history"}`` (the web page's user list)."""
        rows = sorted(self.logged.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:n]
        return [{"user_id": u, "history": len(h)} for u, h in rows]

    def status(self) -> dict:
        """The live numbers of the web page's load panel: requests, load against capacity
        (ms per second, the controller's signal), the multiplier, actions and fallbacks."""
        with self.lock:
            now = self.clock()
            lam = self.controller.advance(now)
            return {
                "requests": self.stats["requests"],
                "events": self.stats["events"],
                "load_ms_per_s": round(self.controller.rate(now), 3),
                "capacity_ms_per_s": self.capacity_ms,
                "load_signal": self.load_signal,
                "lambda": lam,
                "dcaf": self.dcaf,
                "actions": {str(a): c for a, c in self.actions.items()},
                "fallbacks": dict(self.fallbacks),
            }

    def history(self, user_id: int, limit: int = 200) -> tuple[np.ndarray, bool]:
        """Logged positives then stored positive events, the latest ``limit``; and whether
        the store answered (when it cannot, the logged positives alone)."""
        try:
            stored, ok = self.store.history(user_id, limit), True
        except StoreUnavailable:
            stored, ok = [], False
        h = self.logged.get(user_id, []) + stored
        return np.asarray(h[-limit:], dtype=np.int64), ok

    def recommend(self, user_id: int, k: int, now_ms: int | None = None) -> dict:
        """Top ``k`` videos for ``user_id`` at ``now_ms`` (ms since the epoch; default: the
        ``wall_clock`` of the constructor, now).

        Returns:
            ``{"user_id", "items": [{"video_id", "score"}] (best first; score = the ranker's
            click probability, None for a popular fallback), "trace": {"user_known" (in the
            logged data), "history" (positives: logged + stored events), "source" (the
            candidate source, ``faiss``), "history_embedded",
            "cold_start", "fallback" (None, or one of :data:`FALLBACKS`), "stages" (candidates
            per stage), "dcaf" (enabled, action, cost_ms, lambda, q: Q per action), "ms"
            (history, retrieve_prerank, rank, rank_cpu, total)}}``; a fallback without ranking
            has ``stages: {"popular": n}`` and DCAF action None at cost 0.
        """
        t0 = self.timer()
        now_ms = int(self.wall_clock() * 1000) if now_ms is None else now_ms
        hist, store_ok = self.history(user_id)
        trace: dict = {"user_known": self.known_user(user_id), "history": len(hist)}
        # the candidate source: the generator's beam, or the nearest items to the history
        trace["source"] = self.generator_name if self.source == "generator" else "faiss"
        if self.source == "faiss":
            # history videos with an embedding; 0: retrieval starts from the catalogue's mean
            trace["history_embedded"] = sum(int(v) in self.cascade.row for v in hist)
        if not store_ok:
            trace["store_unavailable"] = True  # recent events missing from the history
        if len(hist) == 0 or (self.source == "generator" and not self.generative.known(hist)):
            return self._fallback(user_id, k, hist, "cold_start", trace, t0, now_ms)
        if self.source == "generator":
            return self._recommend_generative(user_id, k, hist, trace, t0, now_ms)
        t1 = self.timer()
        cand, rs, ps = self.cascade.candidates(hist)
        t2 = self.timer()
        if len(cand) == 0:
            return self._fallback(user_id, k, hist, "no_candidates", trace, t0, now_ms)
        hour = (now_ms // 3_600_000 + 8) % 24  # KuaiRand hours are Beijing time (UTC+8)
        imp, rate = self.activity.get(user_id, (0, 0.0))
        q, lam, j = self._allocate(lambda: request_features(len(hist), imp, rate, rs, ps, hour))
        size = self.sizes[j]
        ranked = cand[:size]
        t3, c3 = self.timer(), self.cpu_timer()
        m = len(ranked)
        scores = self.cascade.score_fn(
            np.full(m, user_id), ranked, np.full(m, now_ms), np.full(m, hour)
        )
        t4, c4 = self.timer(), self.cpu_timer()
        rank_ms, rank_cpu_ms = 1e3 * (t4 - t3), 1e3 * (c4 - c3)
        cost_ms = self._account(j, rank_ms, rank_cpu_ms)
        items, fallback = self._answer(user_id, k, hist, ranked, scores, now_ms)
        trace |= {
            "cold_start": False,
            "fallback": fallback,
            "stages": {"retrieve": len(cand), "prerank": len(cand), "rank": m},
            "dcaf": self._dcaf_trace(size, cost_ms, lam, q),
            "ms": {
                "history": 1e3 * (t1 - t0),
                "retrieve_prerank": 1e3 * (t2 - t1),
                "rank": rank_ms,
                "rank_cpu": rank_cpu_ms,
                "total": 1e3 * (self.timer() - t0),
            },
        }
        return {"user_id": user_id, "items": items, "trace": trace}

    def _recommend_generative(
        self, user_id: int, k: int, hist: np.ndarray, trace: dict, t0: float, now_ms: int
    ) -> dict:
        """The generative cascade (:mod:`reelrec.serving.generative`) for a user with history:
        allocate a (beam, ranked) action, beam search, rank, answer."""
        g = self.generative
        t1 = self.timer()
        q, lam, j = self._allocate(lambda: g.features(hist))
        if self.sizes[j][1] < k:  # fewer ranked than asked for: the first beam that ranks k
            fits = [i for i, a in enumerate(self.sizes) if a[1] >= k]
            j = next((i for i in fits if self.sizes[i][0] > 0), fits[0] if fits else j)
        c2 = self.cpu_timer()
        ranked, scores, found, gen_ms, rank_ms = g.serve(hist, j, self.timer)
        spent_cpu = 1e3 * (self.cpu_timer() - c2)
        if len(ranked) == 0:
            return self._fallback(user_id, k, hist, "no_candidates", trace, t0, now_ms)
        cost_ms = self._account(j, gen_ms + rank_ms, spent_cpu)
        items, fallback = self._answer(user_id, k, hist, ranked, scores, now_ms)
        beam, size = self.sizes[j]
        if beam == 0:  # DCAF's cheapest action: popular candidates, no generation
            trace["source"] = "popular-ranked"
        trace |= {
            "cold_start": False,
            "fallback": fallback,
            "stages": {
                "generate" if beam else "popular": found,
                "prerank": len(ranked),
                "rank": len(ranked),
            },
            "dcaf": self._dcaf_trace(size, cost_ms, lam, q) | {"beam": beam},
            "ms": {
                "history": 1e3 * (t1 - t0),
                "generate": gen_ms,
                "rank": rank_ms,
                "generate_rank_cpu": spent_cpu,
                "total": 1e3 * (self.timer() - t0),
            },
        }
        return {"user_id": user_id, "items": items, "trace": trace}

    def _allocate(self, features: Callable[[], np.ndarray]):
        """DCAF's action for a request: ``(Q per action or None, lambda or None, j)``; the
        request's features are computed only with DCAF on."""
        if not self.dcaf:
            return None, None, self.default
        q = self.value_model.predict(features()[None, :])[0]
        with self.lock:
            lam = self.controller.advance(self.clock())
        gain = q - lam * self.ladder.cost_array
        return q, lam, int(gain.argmax()) if gain.max() >= 0 else 0

    def _account(self, j: int, spent_ms: float, spent_cpu_ms: float) -> float:
        """Count a served action j (its measured ``spent_ms`` and CPU ms) and feed the
        controller; returns the action's start-up cost (ms)."""
        cost_ms = float(self.ladder.cost_array[j])
        with self.lock:
            self.controller.observe(
                self.clock(), cost_ms if self.load_signal == "cost" else spent_cpu_ms
            )
            self.stats["requests"] += 1
            self.stats["rank_ms"] += spent_ms
            self.stats["rank_cpu_ms"] += spent_cpu_ms
            self.stats["cost_ms"] += cost_ms
            self.actions[self.sizes[j]] += 1
        return cost_ms

    def _answer(self, user_id, k, hist, ranked, scores, now_ms) -> tuple[list[dict], str | None]:
        """The top ``k`` of ``ranked`` by score (ties: pre-rank order), topped up from the
        popular videos when fewer than ``k`` (fallback ``"topped_up"``)."""
        order = np.argsort(-np.asarray(scores), kind="stable")[:k]
        items = [{"video_id": int(ranked[i]), "score": float(scores[i])} for i in order]
        if len(items) >= k:
            return items, None
        seen = {int(v) for v in hist}
        more = fill_from_popular(self.popular, seen, k - len(items), taken=ranked)
        self._record_fallback(user_id, now_ms, "topped_up", more)
        return items + [{"video_id": v, "score": None} for v in more], "topped_up"

    def _dcaf_trace(self, size: int, cost_ms: float, lam, q) -> dict:
        return {
            "enabled": self.dcaf,
            "action": size,
            "cost_ms": cost_ms,
            "lambda": lam,
            "q": None if q is None else [round(float(x), 4) for x in q],
        }

    def _record_fallback(self, user_id: int, now_ms: int, reason: str, items: list[int]) -> None:
        """Count a fallback and queue its record for the store: a background thread writes
        it, so that a slow or locked store never delays an answer (records it cannot write,
        or that overflow the queue of 10,000, are counted as lost in ``/metrics``)."""
        with self.lock:
            self.fallbacks[reason] += 1
        try:
            self._fallback_queue.put_nowait((user_id, now_ms, reason, items))
        except queue.Full:
            with self.lock:
                self.stats["fallback_records_lost"] += 1

    def _record_loop(self) -> None:
        while True:
            record = self._fallback_queue.get()
            try:
                self.store.record_fallback(*record)
            except Exception:  # StoreUnavailable, or a store closed at shutdown
                with self.lock:
                    self.stats["fallback_records_lost"] += 1
            finally:
                self._fallback_queue.task_done()

    def flush(self) -> None:
        """Wait until every queued fallback record has been written (or lost)."""
        self._fallback_queue.join()

    def _fallback(
        self,
        user_id: int,
        k: int,
        hist: np.ndarray,
        reason: str,
        trace: dict,
        t0: float,
        now_ms: int,
    ) -> dict:
        """The popular answer of a request the cascade cannot serve (no ranker time: the
        controller observes cost 0, so the request is still in the budget's accounting)."""
        items = fill_from_popular(self.popular, {int(v) for v in hist}, k)
        with self.lock:
            lam = self.controller.observe(self.clock(), 0.0)
            self.stats["requests"] += 1
            self.stats["cold_start"] += reason == "cold_start"
        self._record_fallback(user_id, now_ms, reason, items)
        trace |= {
            "source": "popular",
            "cold_start": reason == "cold_start",
            "fallback": reason,
            "stages": {"popular": len(items)},
            "dcaf": {"enabled": self.dcaf, "action": None, "cost_ms": 0.0, "lambda": lam},
            "ms": {"total": 1e3 * (self.timer() - t0)},
        }
        return {
            "user_id": user_id,
            "items": [{"video_id": v, "score": None} for v in items],
            "trace": trace,
        }

    def add_events(self, events: list[Event]) -> int:
        """Store ``events`` (all or none) after checking their videos.

        Raises:
            KeyError: a video id the catalogue does not know (names it; nothing stored).
        """
        unknown = [e.video_id for e in events if e.video_id not in self.known_videos]
        if unknown:
            raise KeyError(f"unknown video_id(s) {unknown[:10]}: nothing stored")
        n = self.store.append(events)
        with self.lock:
            self.stats["events"] += n
        return n

    def metrics_text(self) -> str:
        """Prometheus text exposition of the counters, the multiplier and the actions."""
        with self.lock:
            s = dict(self.stats)
            actions = dict(self.actions)
            fallbacks = dict(self.fallbacks)
            now = self.clock()
            lam = self.controller.advance(now)
            rate = self.controller.rate(now)
        lines = [
            "# HELP reelrec_requests_total Recommendations served.",
            "# TYPE reelrec_requests_total counter",
            f"reelrec_requests_total {s['requests']}",
            "# HELP reelrec_cold_start_total Recommendations to users without history.",
            "# TYPE reelrec_cold_start_total counter",
            f"reelrec_cold_start_total {s['cold_start']}",
            "# HELP reelrec_fallback_total Answers (partly) from the popular fallback, by reason.",
            "# TYPE reelrec_fallback_total counter",
            *[f'reelrec_fallback_total{{reason="{r}"}} {n}' for r, n in fallbacks.items()],
            "# HELP reelrec_fallback_records_lost_total Fallback records the store did not take.",
            "# TYPE reelrec_fallback_records_lost_total counter",
            f"reelrec_fallback_records_lost_total {s['fallback_records_lost']}",
            "# HELP reelrec_events_total Feedback events stored.",
            "# TYPE reelrec_events_total counter",
            f"reelrec_events_total {s['events']}",
            "# HELP reelrec_rank_ms_total Ranker milliseconds spent.",
            "# TYPE reelrec_rank_ms_total counter",
            f"reelrec_rank_ms_total {s['rank_ms']:.3f}",
            "# HELP reelrec_rank_cpu_ms_total Ranker CPU milliseconds (thread time).",
            "# TYPE reelrec_rank_cpu_ms_total counter",
            f"reelrec_rank_cpu_ms_total {s['rank_cpu_ms']:.3f}",
            "# HELP reelrec_cost_ms_total Start-up cost of the actions served (ms).",
            "# TYPE reelrec_cost_ms_total counter",
            f"reelrec_cost_ms_total {s['cost_ms']:.3f}",
            f"# HELP reelrec_load_ms_per_second Load the controller holds ({self.load_signal}).",
            "# TYPE reelrec_load_ms_per_second gauge",
            f"reelrec_load_ms_per_second {rate:.3f}",
            "# HELP reelrec_capacity_ms_per_second The load the controller aims at.",
            "# TYPE reelrec_capacity_ms_per_second gauge",
            f"reelrec_capacity_ms_per_second {self.capacity_ms:g}",
            "# HELP reelrec_dcaf_lambda The DCAF Lagrange multiplier.",
            "# TYPE reelrec_dcaf_lambda gauge",
            f"reelrec_dcaf_lambda {lam:.6g}",
            "# HELP reelrec_actions_total Requests per DCAF action (beam width, candidates ranked).",
            "# TYPE reelrec_actions_total counter",
        ]
        lines += [f"reelrec_actions_total{{{_action_labels(a)}}} {n}" for a, n in actions.items()]
        return "\n".join(lines) + "\n"


def _action_labels(action) -> str:
    """Prometheus labels of an action: ``candidates="200"`` or ``beam="40",candidates="40"``."""
    if isinstance(action, tuple):
        return f'beam="{action[0]}",candidates="{action[1]}"'
    return f'candidates="{action}"'


#: ids and times are stored as SQLite INTEGER (signed 64-bit)
MAX_INT = 2**63 - 1
_STRICT = ConfigDict(strict=True, extra="forbid")


class RecommendIn(BaseModel):
    """Body of ``POST /recommend`` (strict JSON types, no other fields)."""

    model_config = _STRICT
    user_id: int = Field(ge=0, le=MAX_INT)
    k: int = Field(default=10, ge=1, le=MAX_K)


class EventIn(BaseModel):
    """One event of ``POST /events`` (strict JSON types, no other fields)."""

    model_config = _STRICT
    user_id: int = Field(ge=0, le=MAX_INT)
    video_id: int = Field(ge=0, le=MAX_INT)
    timestamp_ms: int = Field(ge=0, le=MAX_INT)
    play_time_ms: int = Field(default=0, ge=0, le=86_400_000)
    like: bool = False


class EventsIn(BaseModel):
    """Body of ``POST /events``: 1..1000 events, stored all or none."""

    model_config = _STRICT
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


def create_app(recommender: Recommender):
    """The FastAPI application around ``recommender`` (OpenAPI at ``/docs``, ``/openapi.json``)."""
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi import Path as Path_
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

    app = FastAPI(
        title="reelrec",
        description="Short-video recommendation: retrieve -> pre-rank -> rank with DCAF",
    )

    def too_big() -> JSONResponse:
        return JSONResponse(
            status_code=413, content={"detail": f"body over {MAX_BODY_BYTES} bytes"}
        )

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json" and not kind.endswith("+json"):
                return JSONResponse(
                    status_code=415,
                    content={"detail": f"content-type must be application/json, got {kind!r}"},
                )
        size = request.headers.get("content-length")
        if size is not None:
            return (
                too_big()
                if not size.isdigit() or int(size) > MAX_BODY_BYTES
                else (await call_next(request))
            )
        # chunked: count the bytes as they arrive and stop reading past the limit
        receive, seen = request._receive, [0]

        async def limited():
            message = await receive()
            seen[0] += len(message.get("body", b""))
            if seen[0] > MAX_BODY_BYTES:
                raise ValueError("body too large")  # FastAPI answers 400; replaced below
            return message

        request._receive = limited
        response = await call_next(request)
        return too_big() if seen[0] > MAX_BODY_BYTES else response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # the field and the reason, not the input (it may be huge, or NaN, which JSON cannot hold)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()[:20]
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable):
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/healthz")
    def healthz() -> dict:
        recommender.store.check()  # StoreUnavailable -> 503: the store could not take a write
        return {"status": "ok", "events": recommender.store.count()}

    @app.post("/recommend")
    def recommend(body: RecommendIn) -> dict:
        return recommender.recommend(body.user_id, body.k)

    @app.post("/events")
    def events(body: EventsIn) -> dict:
        evs = [Event(**e.model_dump()) for e in body.events]
        try:
            n = recommender.add_events(evs)
        except KeyError as exc:
            raise HTTPException(status_code=422, detail=str(exc.args[0])) from None
        return {"stored": n}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return recommender.metrics_text()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/users")
    def users(n: int = Query(default=50, ge=1, le=1000)) -> dict:
        return {"users": recommender.users(n)}

    @app.get("/history/{user_id}")
    def history(
        user_id: int = Path_(ge=0, le=MAX_INT), limit: int = Query(default=20, ge=1, le=200)
    ) -> dict:
        hist, store_ok = recommender.history(user_id, limit)
        items = recommender.describe(hist[::-1].tolist())  # most recent first
        return {"user_id": user_id, "items": items, "store_ok": store_ok}

    @app.get("/items")
    def items(ids: str = Query(max_length=20_000)) -> dict:
        try:
            parsed = [int(x) for x in ids.split(",") if x.strip()]
        except ValueError:
            raise HTTPException(
                status_code=422, detail="ids: comma-separated integers, e.g. ids=12,40"
            ) from None
        return {"items": recommender.describe(parsed[: MAX_K * 2])}

    @app.get("/status")
    def status() -> dict:
        return recommender.status()

    return app
