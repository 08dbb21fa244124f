"""The generative path of ``reelrec serve``: OneRec-V2 beam search over semantic IDs as the
candidate source, SASRec as the ranker, DCAF choosing (beam width, candidates ranked) per
request, on the tiny real MicroLens chain of tests/conftest.py. Costs and clocks are
injected (tests/serving/conftest.py): no assertion depends on the machine's speed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")


def test_recommend_answers_from_the_generator(make_gen_rec, gen_costs):
    from fastapi.testclient import TestClient

    from reelrec.serving.generative import BEAM_ACTIONS
    from reelrec.serving.service import create_app

    rec = make_gen_rec(dcaf=False, calibration_requests=10)  # the default action: (40, 40)
    assert rec.source == "generator" and rec.sizes == BEAM_ACTIONS
    user = rec.users(1)[0]["user_id"]
    client = TestClient(create_app(rec))
    r = client.post("/recommend", json={"user_id": user, "k": 10}).json()
    tr = r["trace"]
    assert tr["source"] == "onerec-v2" and tr["fallback"] is None
    assert (tr["dcaf"]["beam"], tr["dcaf"]["action"]) == (40, 40)
    assert tr["dcaf"]["cost_ms"] == gen_costs[3] and tr["dcaf"]["lambda"] is None
    assert 10 <= tr["stages"]["generate"] <= 40 and tr["stages"]["rank"] == 40
    assert {"generate", "rank", "generate_rank_cpu", "total"} <= set(tr["ms"])
    ids = [it["video_id"] for it in r["items"]]
    assert len(ids) == len(set(ids)) == 10
    assert not set(ids) & {int(v) for v in rec.history(user)[0]}  # masked in the beam
    scores = [it["score"] for it in r["items"]]
    assert scores == sorted(scores, reverse=True)  # ranked by SASRec
    cards = client.get(f"/items?ids={','.join(map(str, ids))}").json()["items"]
    assert all(c["title"] for c in cards)  # MicroLens titles on the page's cards
    assert 'beam="40",candidates="40"' in client.get("/metrics").text


def test_dcaf_picks_an_action_and_says_which(gen_rec, gen_costs):
    from reelrec.serving.generative import BEAM_ACTIONS

    user = gen_rec.users(1)[0]["user_id"]
    tr = gen_rec.recommend(user, 10)["trace"]
    action = (tr["dcaf"]["beam"], tr["dcaf"]["action"])
    assert action in BEAM_ACTIONS and tr["dcaf"]["lambda"] >= 0
    assert tr["dcaf"]["cost_ms"] == gen_costs[BEAM_ACTIONS.index(action)]
    assert len(tr["dcaf"]["q"]) == len(BEAM_ACTIONS)
    source = "onerec-v2" if action[0] else "popular-ranked"
    assert tr["source"] == source and tr["stages"]["rank"] == action[1]


def test_an_action_ranking_fewer_than_k_is_never_served(make_gen_rec):
    rec = make_gen_rec(dcaf=False, default_size=(10, 10), calibration_requests=10)
    user = rec.users(1)[0]["user_id"]
    tr = rec.recommend(user, 30)["trace"]
    assert tr["dcaf"]["action"] >= 30 and tr["fallback"] is None  # (40, 40), no top-up


def test_the_cheapest_action_ranks_popular_videos_without_the_generator(gen_rec):
    g = gen_rec.generative
    hist = np.asarray(gen_rec.logged[gen_rec.users(1)[0]["user_id"]])
    ranked, scores, found, gen_ms, rank_ms = g.serve(hist, 0)
    assert len(ranked) == 100 and not set(ranked.tolist()) & set(hist.tolist())
    popular = [v for v in g.popular_raw.tolist() if v not in set(hist.tolist())][:100]
    assert ranked.tolist() == popular and np.isfinite(scores).all()


def test_calibration_gives_values_and_validation_hits_per_action(gen_rec):
    c = gen_rec.calibration
    n, j = c.values.shape
    assert n == 30 and j == len(gen_rec.sizes) and c.valid_hit.shape == (n, j)
    assert (c.values > 0).all() and (c.values <= 1).all()
    assert set(np.unique(c.valid_hit)) <= {0.0, 1.0}


def test_controller_narrows_the_beam_when_over_capacity(make_gen_rec, monkeypatch):
    # 10 requests per simulated second, each 1.5-20 ms of given cost, against 0.5 ms/s; Q is
    # given (diminishing returns in the beam: the one-epoch model's own Q is nearly flat)
    q = np.array([[0.005, 0.010, 0.015, 0.018, 0.019, 0.0195]])

    class GivenQ:
        def fit(self, x, values):
            return self

        def predict(self, x):
            return np.repeat(q, len(x), 0)

    monkeypatch.setattr("reelrec.serving.service.RequestValueModel", GivenQ)
    rec = make_gen_rec(capacity_ms=0.5, calibration_requests=10, budget_ms=20.0)
    user = rec.users(1)[0]["user_id"]
    first = rec.recommend(user, 10)["trace"]["dcaf"]
    for _ in range(40):
        tr = rec.recommend(user, 10)["trace"]
    assert rec.lam() > rec.lam0
    assert (first["beam"], first["action"]) == (80, 80)  # lambda 0: the most valuable
    assert (tr["dcaf"]["beam"], tr["dcaf"]["action"]) == (0, 100)
    assert tr["source"] == "popular-ranked" and tr["dcaf"]["cost_ms"] == 1.5


def test_unknown_users_and_unknown_histories_get_the_popular_fallback(make_gen_rec):
    from reelrec.serving.store import Event

    rec = make_gen_rec(dcaf=False, calibration_requests=10)  # beam 40: the generator serves
    tr = rec.recommend(10**12, 10)["trace"]
    assert tr["fallback"] == "cold_start" and tr["source"] == "popular"
    v = int(rec.popular[0])  # a new user with one liked video: served by the generator
    rec.add_events([Event(user_id=10**12 + 2, video_id=v, timestamp_ms=1, like=True)])
    r = rec.recommend(10**12 + 2, 10)
    assert r["trace"]["source"] == "onerec-v2" and r["trace"]["fallback"] is None
    assert v not in [it["video_id"] for it in r["items"]]


def test_validation_requests_on_a_hand_example():
    from reelrec.serving.generative import validation_requests

    inter = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2, 3, 3, 3],
            "item_id": [10, 11, 12, 13, 20, 21, 30, 31, 32],
            "split": [0, 0, 1, 2, 0, 2, 0, 1, 2],
        }
    )
    hists, targets = validation_requests(inter, np.ones(len(inter), bool), n=10)
    # user 2 has no validation video; users 1 and 3 in id order
    assert [h.tolist() for h in hists] == [[10, 11], [30]] and targets.tolist() == [12, 31]
    with pytest.raises(ValueError, match="validation video"):
        validation_requests(inter[inter.split != 1], np.ones(7, bool), n=10)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        ([(10, 20)], "rank <= beam"),
        ([(10, 5)], "k=10"),
        ([(0, 5)], "k=10"),
        ([(20, 20), (10, 10)], "increasing"),
        ([], "non-empty"),
        ([(10,)], "pair of ints"),
    ],
)
def test_bad_actions_are_refused(actions, match):
    from reelrec.serving.generative import check_actions

    with pytest.raises(ValueError, match=match):
        check_actions(actions)


def test_serve_cli_names_what_a_generator_run_lacks(microlens_chain, tmp_path, capsys):
    import shutil

    from reelrec.cli import main

    run = tmp_path / "run"
    shutil.copytree(microlens_chain[0], run, ignore=shutil.ignore_patterns("sasrec"))
    assert main.main(["serve", str(run), "--port", "8765"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models/sasrec/model.safetensors not found" in err[0]
    assert "reelrec train sasrec" in err[0] and "trained models in" in err[0]
    assert main.main(["serve", str(run), "--default-beam", "33"]) == 2
    assert "--default-beam" in capsys.readouterr().err
    argv = ["serve", str(microlens_chain[0]), "--port", "8765"]
    assert main.main([*argv, "--generator", "sasrec"]) == 2  # not a generator
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a semantic-ID generator" in err[0]
    assert main.main([*argv, "--default-beam", "0", "--no-popular-action"]) == 2
    assert "--no-popular-action" in capsys.readouterr().err
