"""The library API (``reelrec.Run``): trained-model loading and its one error type, resume rules,
cold-start answers, ranker requests and the run's caches, on real ML-100K / KuaiRand data with
tiny configs. Each test is a fault found by a new-user or adversarial trial (issue 20)."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml

from reelrec import ConfigError, Run, RunError
from reelrec.cli import main

TINY = ["--train.epochs=1", "--train.progress=false", "--sasrec.hidden=16", "--sasrec.layers=1"]
QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory, data_root):
    """A prepared ML-100K run with a finished 1-epoch SASRec."""
    path = tmp_path_factory.mktemp("run-api") / "ml"
    run = Run.prepare(path, "ml-100k", data_dir=str(data_root), **QUIET)
    run.train("sasrec", TINY, **QUIET)
    return path


def fresh_copy(src, tmp_path, name="copy"):
    dest = tmp_path / name
    shutil.copytree(src, dest)
    return dest


def test_trained_model_errors_are_one_run_error_that_says_what_to_run(ml100k, tmp_path):
    run = Run(ml100k)
    with pytest.raises(
        RunError, match=r"no trained model 'nope'.*it holds sasrec.*--data.dataset=ml-100k"
    ):
        run.trained("nope")
    with pytest.raises(RunError, match="a model folder name"):
        run.trained("../../elsewhere/models/sasrec")
    with pytest.raises(RunError, match="no such run folder"):
        Run(tmp_path / "typo").trained("sasrec")
    broken = fresh_copy(ml100k, tmp_path)
    (broken / "models" / "sasrec" / "model.safetensors").write_bytes(b"\x80\x04garbage")
    with pytest.raises(RunError, match=r"config.yaml --run .* --no-resume"):
        Run(broken).trained("sasrec")


def test_an_unfinished_model_loads_with_a_warning(ml100k, tmp_path):
    copy = fresh_copy(ml100k, tmp_path)
    (copy / "models" / "sasrec" / "metrics.json").unlink()
    with pytest.warns(UserWarning, match="did not finish"):
        Run(copy).trained("sasrec")


def test_cold_start_histories_get_the_popular_items_not_the_lowest_ids(ml100k):
    run = Run(ml100k)
    sasrec = run.trained("sasrec")
    counts = np.asarray(sasrec.data.train_counts)[1:]
    popular = [int(x) for x in sasrec.data.vocab.decode(np.argsort(-counts, kind="stable")[:5] + 1)]
    assert sasrec.recommend([], k=5) == popular
    assert sasrec.recommend([999_999_999, -3], k=5) == popular  # ids the model never saw
    assert sasrec.recommend([], k=5) != [1, 2, 3, 4, 5]
    warm = sasrec.recommend([50, 100], k=5, exclude_history=True)
    assert len(warm) == 5 and not {50, 100} & set(warm)
    with pytest.raises(ValueError, match="k must be >= 1"):
        sasrec.recommend([50], k=0)


def test_a_checkpoint_old_of_another_config_is_refused_too(ml100k, tmp_path):
    """A save killed between its two renames leaves checkpoint.old: it resumes, so it must be
    checked like checkpoint/ (adversarial finding 1)."""
    copy = fresh_copy(ml100k, tmp_path)
    out = copy / "models" / "sasrec"
    (out / "checkpoint").rename(out / "checkpoint.old")
    with pytest.raises(ConfigError, match=r"another config: train.lr"):
        Run(copy).train("sasrec", [*TINY, "--train.lr=0.01"], **QUIET)
    assert "lr: 0.001" in (out / "config.yaml").read_text()  # nothing was touched


def test_starting_over_removes_the_old_weights_before_the_new_config_is_written(ml100k, tmp_path):
    """An interrupted retrain must never leave a new config.yaml beside old weights."""
    copy = fresh_copy(ml100k, tmp_path)
    out = copy / "models" / "sasrec"
    from reelrec.training import loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real = loop.fit
    loop.fit = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            Run(copy).train("sasrec", [*TINY, "--sasrec.dropout=0.1"], resume=False, **QUIET)
    finally:
        loop.fit = real
    assert "dropout: 0.1" in (out / "config.yaml").read_text()
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint").exists()
    with pytest.raises(RunError, match="no epoch has finished"):
        Run(copy).trained("sasrec")


def test_more_epochs_resume_even_when_the_warmup_was_clamped(ml100k, tmp_path, capsys):
    copy = fresh_copy(ml100k, tmp_path)
    args = [*TINY, "--name=warm", "--train.warmup_steps=100000"]
    Run(copy).train("sasrec", args, **QUIET)
    first = yaml.safe_load((copy / "models" / "warm" / "config.yaml").read_text())
    assert 0 < first["train"]["warmup_steps"] < 100000  # config.yaml records what ran
    Run(copy).train("sasrec", [*args, "--train.epochs=2"], log=print)
    assert "resumed from" in capsys.readouterr().out
    history = json.loads((copy / "models" / "warm" / "history.json").read_text())
    assert len(history) == 2


def test_stages_that_rewrite_files_drop_what_the_run_had_loaded(ml100k):
    run = Run(ml100k)
    first = run.trained("sasrec")
    run.forget()
    assert run.trained("sasrec") is not first


def test_configs_of_another_model_and_bad_files_are_config_errors(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: sasrec\nsasrec:\n  hidden: 32\n")
    with pytest.raises(ConfigError, match="sasrec: set, but model 'gru4rec' does not read it"):
        Run(tmp_path / "r").train(str(cfg), ["--model=gru4rec"])
    cfg.write_bytes(b"model: sasrec\ntrain:\n  lr: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Run(tmp_path / "r").train(str(cfg))
    cfg.write_text("1: x\n")
    with pytest.raises(ConfigError, match="unknown config key 1;"):
        Run(tmp_path / "r").train(str(cfg))
    with pytest.raises(ConfigError, match="a list of strings"):
        Run(tmp_path / "r").train("sasrec", "--train.epochs=1")
    with pytest.raises(ConfigError, match="train.seed must be in"):
        Run(tmp_path / "r").train("sasrec", ["--train.seed=99999999999999999999"])
    assert main.main(["train", "gru4rec", "--run", str(tmp_path / "r"), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert list(printed) == ["model", "name", "data", "train", "eval", "gru4rec"]
    assert not (tmp_path / "r").exists()  # printing the config writes nothing


def test_a_damaged_metrics_file_skips_that_model_in_evaluate(ml100k, tmp_path):
    copy = fresh_copy(ml100k, tmp_path)
    Run(copy).train("popularity", **QUIET)
    (copy / "models" / "sasrec" / "history.json").write_text('{"a": 1}')
    lines = []
    metrics = Run(copy).evaluate(log=lines.append)
    assert set(metrics["models"]) == {"popularity"}
    assert any("skipping sasrec" in ln and "history.json" in ln for ln in lines)


def test_ranker_requests_are_checked_and_an_empty_request_is_empty(kuairand_prepared):
    path = kuairand_prepared("kuairand-run-api")
    run = Run(path)
    tiny = ["--train.epochs=1", "--train.progress=false", "--ranking.embed_dim=4"]
    run.train("deepfm", [*tiny, "--ranking.mlp=[8]", "--features.max_history=5"], **QUIET)
    ranker = run.trained("deepfm")
    rows = run.prep.interactions.iloc[:4]
    req = {c: rows[c].to_numpy() for c in ("user_id", "item_id", "timestamp_ms")}
    scores = ranker.score(req)
    assert scores.shape == (4, len(ranker.tasks)) and scores.dtype == np.float32
    assert np.allclose(ranker.score({k: v[:1] for k, v in req.items()}), scores[:1], atol=1e-6)
    assert ranker.score({k: v[:0] for k, v in req.items()}).shape == (0, len(ranker.tasks))
    with pytest.raises(ValueError, match="hour"):
        ranker.score({**req, "hour": np.array([25, 1, 2, 3])})
    with pytest.raises(ValueError, match="differ in length"):
        ranker.score({**req, "item_id": req["item_id"][:2]})
    with pytest.raises(ValueError, match="integers"):
        ranker.score({**req, "timestamp_ms": req["timestamp_ms"] / 1.5})
    with pytest.raises(ValueError, match="'item_id'"):
        ranker.score({"user_id": req["user_id"], "timestamp_ms": req["timestamp_ms"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unknown users / videos: the "unknown" index, no warning
        unknown = ranker.score({"user_id": [10**12], "item_id": [-5], "timestamp_ms": [0]})
    assert unknown.shape == (1, len(ranker.tasks)) and np.isfinite(unknown).all()


def test_a_bug_in_a_model_is_never_reported_as_a_user_error(ml100k, tmp_path, monkeypatch):
    """Only user errors become one line (exit 2) or an evaluate warning; a ValueError or
    KeyError from inside a model keeps its traceback (the CLI used to catch both broadly)."""
    from reelrec.models import sasrec

    def broken(self, *args, **kwargs):
        raise KeyError("a bug in the model's constructor")

    copy = fresh_copy(ml100k, tmp_path)
    monkeypatch.setattr(sasrec.SASRec, "__init__", broken)
    with pytest.raises(KeyError, match="a bug"):
        main.main(["train", "sasrec", "--run", str(copy), "--data.dataset=ml-100k", *TINY])
    with pytest.raises(KeyError, match="a bug"):
        Run(copy).evaluate(**QUIET)  # not "warning: skipping sasrec"


def test_a_pure_ranker_scores_logged_rows_as_evaluated_when_given_their_tab(data_root, tmp_path):
    """KuaiRand-Pure: ``score`` with the rows' scenario reproduces the evaluated predictions;
    without it, every request is scored in the most frequent training scenario."""
    run = Run.prepare(tmp_path / "pure", "kuairand-pure", data_dir=str(data_root), log=lambda s: 0)
    tiny = ["--train.epochs=1", "--ranking.embed_dim=4", "--ranking.mlp=[8]"]
    run.train("deepfm", [*tiny, "--features.max_history=5", "--ranking.tasks=[click]"], **QUIET)
    ranker = run.trained("deepfm")
    test = np.flatnonzero(ranker.data.split == 2)[:200]
    rows = run.prep.interactions.iloc[test]
    req = {c: rows[c].to_numpy() for c in ("user_id", "item_id", "timestamp_ms", "tab")}
    req["hour"] = rows["hourmin"].to_numpy() // 100
    with torch.no_grad():
        logged = ranker.model.predict(ranker.data.batch(test)).numpy()
    assert np.allclose(ranker.score(req), logged, atol=1e-6)
    no_tab = ranker.score({k: v for k, v in req.items() if k != "tab"})
    assert not np.allclose(no_tab, logged, atol=1e-6)


def test_eval_max_users_scores_a_fixed_subset_of_users(tmp_path):
    """``eval.max_users``: final metrics on a seeded subset of the users, the same for every
    model of a seed; 0 = all (the own-log example: 4 users)."""
    import json
    from pathlib import Path

    import pytest

    from reelrec.config import ConfigError
    from reelrec.run import Run
    from reelrec.tasks.retrieval import user_subset

    example = Path(__file__).resolve().parent / "fixtures" / "own-log"
    run = Run.prepare_own_log(
        tmp_path / "run", example / "interactions.csv", example / "columns.yaml", log=print
    )
    run.train("popularity", ["--eval.max_users=2"], log=lambda _: None)
    m = json.loads((tmp_path / "run" / "models" / "popularity" / "metrics.json").read_text())
    assert m["test"]["n_instances"] == 2 and m["valid"]["n_instances"] == 2
    assert run.evaluate(log=lambda _: None)["models"]["popularity"]  # evaluate honours it too
    rows = user_subset(10, 4, 0)
    assert rows.tolist() == sorted(rows.tolist()) and len(set(rows.tolist())) == 4
    assert (user_subset(10, 4, 0) == rows).all() and user_subset(10, 0, 0) == slice(None)
    with pytest.raises(ConfigError, match="eval.max_users"):
        run.train("popularity", ["--eval.max_users=-1", "--name=bad"], log=lambda _: None)
