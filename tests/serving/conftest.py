"""Shared fixtures of the serving tests: one KuaiRand run (item2vec embeddings and a tiny
1-epoch CAN ranker) trained once per session, and Recommenders built over it with injected
action costs and clocks, so that no assertion depends on the machine's speed or load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

#: the smallest CAN that still ranks (the tiny settings of tests/cli/test_ranking_cli.py)
TINY_CAN = [
    "--train.epochs=1",
    "--train.progress=false",
    "--ranking.embed_dim=4",
    "--ranking.mlp=[8]",
    "--features.max_history=5",
    "--can.layers=[2]",
    "--can.feed_dim=3",
    "--can.orders=2",
]

#: ranker ms per action (50, 100, 200, 400, 800 candidates), as once measured on KuaiRand:
#: given to every Recommender of the tests instead of measured on the machine running them
COSTS = (2.25, 3.34, 5.78, 11.1, 23.4)

#: generate + rank ms per action of the generative path ((0, 100), (10, 10), (20, 20),
#: (40, 40), (80, 40), (80, 80)): given, never measured, as COSTS
GEN_COSTS = (1.5, 4.0, 6.5, 11.0, 19.0, 20.0)

#: the time of every test request without ``now_ms``: 2022-04-15 12:00 UTC (20:00 in Beijing,
#: the hour the value model reads)
NOW_MS = 1_650_024_000_000


class StepClock:
    """Simulated seconds: the first call returns ``start``, each later one ``step`` more.

    A Recommender reads its controller clock twice per request it ranks with DCAF (once per
    fallback) and its CPU timer twice per ranker call: a call's CPU time is exactly ``step``.
    """

    def __init__(self, step: float, start: float = 0.0) -> None:
        self.step, self.t, self.lock = step, start - step, threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.t += self.step
            return self.t


@pytest.fixture(scope="session")
def costs() -> tuple[float, ...]:
    """:data:`COSTS` (test modules take it as a fixture: conftest is not imported by name)."""
    return COSTS


@pytest.fixture(scope="session")
def step_clock() -> type[StepClock]:
    """:class:`StepClock`, to make simulated clocks."""
    return StepClock


@pytest.fixture(scope="session")
def serving_run(kuairand_prepared) -> Path:
    """A run folder with item2vec embeddings and a tiny CAN ranker (trained once per session)."""
    from reelrec.cli import main

    run = kuairand_prepared("serve")
    assert main.main(["encode", "--run", str(run), "--encoder", "item2vec"]) == 0
    assert main.main(["train", "can", "--run", str(run), *TINY_CAN]) == 0
    return run


@pytest.fixture(scope="session")
def make_rec(serving_run, tmp_path_factory):
    """Factory: ``make(**kwargs)`` returns a new Recommender over :func:`serving_run` with a
    new SQLite store, :data:`COSTS`, simulated clocks (controller 0.05 s per read, timers 1 ms
    per read), the wall clock stopped at :data:`NOW_MS` and 30 calibration requests; any
    argument of :class:`~reelrec.serving.service.Recommender` overrides them."""
    return recommender_factory(serving_run, COSTS, tmp_path_factory)


def recommender_factory(run: Path, costs: tuple[float, ...], tmp_path_factory):
    """``make(**kwargs)``: a new Recommender over ``run`` with a new SQLite store, the given
    action ``costs``, simulated clocks, the wall clock at :data:`NOW_MS` and 30 calibration
    requests, any argument overridden by ``kwargs``."""
    from reelrec.serving.service import Recommender
    from reelrec.serving.store import SQLiteStore

    def make(**kwargs):
        args = {
            "costs": costs,
            "clock": StepClock(0.05),
            "timer": StepClock(0.001),
            "cpu_timer": StepClock(0.001),
            "wall_clock": lambda: NOW_MS / 1e3,
            "calibration_requests": 30,
        }
        args |= kwargs
        store = args.pop("store", None)
        if store is None:
            store = SQLiteStore(tmp_path_factory.mktemp("store") / "events.sqlite")
        return Recommender(run, store, **args)

    return make


@pytest.fixture(scope="session")
def gen_costs() -> tuple[float, ...]:
    """:data:`GEN_COSTS`."""
    return GEN_COSTS


@pytest.fixture(scope="session")
def make_gen_rec(microlens_chain, tmp_path_factory):
    """Factory as :func:`make_rec` over the tiny MicroLens chain of tests/conftest.py (OneRec-V2
    candidates, SASRec ranker: the generative path), with :data:`GEN_COSTS` and 30
    calibration requests."""
    return recommender_factory(microlens_chain[0], GEN_COSTS, tmp_path_factory)


@pytest.fixture(scope="session")
def gen_rec(make_gen_rec):
    """A Recommender on the generative path (shared by the session's tests)."""
    return make_gen_rec()


@pytest.fixture(scope="session")
def rec(make_rec):
    """The Recommender behind :func:`client` (shared by the session's tests)."""
    return make_rec(calibration_requests=60)


@pytest.fixture(scope="session")
def client(rec):
    """FastAPI's test client over :func:`rec`."""
    from fastapi.testclient import TestClient

    from reelrec.serving.service import create_app

    return TestClient(create_app(rec))
