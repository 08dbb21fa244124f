"""``reelrec train can|din|deepfm|mmoe|ple`` and ``reelrec evaluate`` on the real KuaiRand slice with tiny
configs, with assertions on what they wrote; and the config errors of the ranking sections."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from reelrec.cli import evaluate, main, train

TINY = [
    "--train.epochs=1",
    "--train.progress=false",
    "--ranking.embed_dim=4",
    "--ranking.mlp=[8]",
    "--features.max_history=5",
]


@pytest.fixture(scope="module")
def run(kuairand_prepared):
    return kuairand_prepared("kuairand-ranking")


def test_train_each_ranker_and_evaluate_agrees(run, capsys):
    extra = {
        "can": ["--can.layers=[2]", "--can.feed_dim=3", "--can.orders=2"],
        "mmoe": ["--ranking.experts=2"],
        "ple": ["--ranking.experts=2", "--ranking.expert_mlp=[4]"],
    }
    for name in ("deepfm", "din", "can", "mmoe", "ple"):
        assert train.main([name, "--run", str(run), *TINY, *extra.get(name, [])]) == 0
    m = json.loads((run / "models" / "can" / "metrics.json").read_text())
    assert m["task"] == "ranking" and m["epochs_run"] == 1
    tasks = m["test"]["tasks"]
    assert set(tasks) == {
        "click",
        "long_view",
        "like",
        "follow",
        "comment",
        "forward",
        "watch_ratio",
    }
    # the test day: 2,220 impressions, 1,832 likes (a value of the data, not of the model)
    assert tasks["like"]["n"] == 2220 and tasks["like"]["positives"] == 1832
    assert 0.5 < tasks["like"]["auc"] <= 1.0 and tasks["like"]["gauc_excluded_users"] > 0
    assert tasks["watch_ratio"]["n"] < 2220  # unknown durations have no watch ratio
    assert "hist_video" in m["sequences"] and "video_like_rate" in m["fields"]
    assert evaluate.main([str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["models"]) == {"deepfm", "din", "can", "mmoe", "ple"}
    ple = json.loads((run / "models" / "ple" / "metrics.json").read_text())["test"]["tasks"]
    assert metrics["models"]["ple"]["like/auc"] == pytest.approx(ple["like"]["auc"], abs=1e-9)
    # evaluate recomputes from the saved weights: it must agree with what train measured
    assert metrics["models"]["can"]["like/auc"] == pytest.approx(tasks["like"]["auc"], abs=1e-9)
    report = (run / "report.md").read_text()
    assert "## Ranking models" in report and "| can | like | 1,832 / 2,220 |" in report
    assert "## Test metrics" not in report  # no retrieval model in this run: no empty table


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--can.orders=0", "can.orders must be >= 1"),
        ("--ranking.tasks=[click,nope]", "ranking.tasks must be distinct names"),
        ("--ranking.task_weights=[1,2]", "ranking.task_weights must be [] or one weight per task"),
        ("--train.metric=ndcg@10", "train.metric must be one of auc"),
        ("--can.pairs=[video_id]", "can.pairs must be a list of 'field:feed'"),
        ("--features.history_labels=[]", "features.history_labels must be a non-empty list"),
        ("--train.metric=watch_ratio/auc", "train.metric must be one of auc"),
        ("--ranking.tasks=[watch_ratio]", "at least one binary task"),
        ("--data.dataset=ml-100k", "data.dataset must be one of kuairand, kuairand-pure"),
        ("--features.max_history=5000", "features.max_history must be in 1..1000"),
        ("--ranking.task_weights=[0,0,0,0,0,0,1]", "at least one binary task of loss weight > 0"),
        ("--can.pooling=max", "can.pooling must be 'sum' or 'mean'"),
        ("--ranking.multitask=moe", "ranking.multitask must be 'shared_bottom' or 'mmoe'"),
        ("--ranking.levels=0", "ranking.levels must be >= 1"),
        ("--features.semantic_ids=../elsewhere", "a folder inside the run"),
    ],
)
def test_invalid_ranking_config_exits_2(tmp_path, capsys, override, message):
    assert main.main(["train", "can", "--run", str(tmp_path), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_unknown_can_pair_field_is_named(run, capsys):
    args = ["train", "can", "--run", str(run), "--name=badpair", *TINY]
    assert main.main([*args, "--can.pairs=[video_id:hist_nothing]"]) == 2
    assert "hist_nothing" in capsys.readouterr().err


def test_changed_vq_codes_block_resume_and_evaluate(run, capsys):
    """VQ codes written by hand (a fixture made in code: each item's codes are its neighbours in
    id order), then changed: the ranker that used them must not resume or be scored on them."""
    items = sorted(pd.read_parquet(run / "data" / "interactions.parquet")["item_id"].unique())[:300]
    folder = run / "vq-test"
    folder.mkdir()
    codes = [[items[(i + 1) % 300], items[(i + 2) % 300]] for i in range(300)]
    pd.DataFrame({"item_id": items, "vq_codes": codes}).to_parquet(folder / "vq_codes.parquet")
    args = ["din", "--run", str(run), "--name=vq", "--features.vq_codes=vq-test", *TINY]
    assert train.main(args) == 0
    assert (run / "models" / "vq" / "semantic_ids.sha256").exists()
    codes[0] = [items[5], items[6]]
    pd.DataFrame({"item_id": items, "vq_codes": codes}).to_parquet(folder / "vq_codes.parquet")
    capsys.readouterr()
    assert main.main(["train", *args[: -len(TINY)], *TINY, "--train.epochs=2"]) == 2
    assert "other semantic IDs (or VQ codes)" in capsys.readouterr().err
    assert (run / "models" / "vq" / "metrics.json").exists()  # the finished run is untouched
    assert evaluate.main([str(run)]) == 0
    assert "skipping vq" in capsys.readouterr().out
    assert "vq" not in json.loads((run / "metrics.json").read_text())["models"]


def test_resume_ignores_sections_the_model_does_not_read(run, capsys):
    args = ["din", "--run", str(run), "--name=sect", *TINY]
    assert train.main(args) == 0
    # another model's section is not the model's: an unknown key, refused before anything runs
    assert main.main(["train", *args, "--can.orders=5", "--train.epochs=2"]) == 2
    assert "unknown config key 'can.orders' for model 'din'" in capsys.readouterr().err
    saved = (run / "models" / "sect" / "config.yaml").read_text()
    assert "\ncan:" not in saved and "\ndin:" in saved and "\nsasrec:" not in saved
    assert train.main([*args, "--train.epochs=2"]) == 0
    assert "resumed from" in capsys.readouterr().out
    # a section it does read still blocks the resume
    assert main.main(["train", *args, "--din.attention_mlp=[3]", "--train.epochs=3"]) == 2
    assert "din.attention_mlp" in capsys.readouterr().err
