"""Each CLI ``main(argv)`` on real data (kuairand, ml-100k) with small configs, with assertions
on what it wrote; plus error paths that must exit 2 with a clear message."""

from __future__ import annotations

import json

import pytest
import yaml

from reelrec.cli import datasets, evaluate, main, prepare, quickstart, train
from reelrec.config import ConfigError

TINY = ["--train.epochs=2", "--train.progress=false", "--sasrec.hidden=16", "--sasrec.inner=16"]


@pytest.fixture(scope="module")
def kuairand_run(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("kuairand")
    assert (
        prepare.main(["--dataset", "kuairand", "--data-dir", str(data_root), "--out", str(run)])
        == 0
    )
    return run


def test_prepare_writes_tables_and_reports(kuairand_run):
    data = kuairand_run / "data"
    for f in (
        "interactions.parquet",
        "items.parquet",
        "users.parquet",
        "splits.json",
        "prepare_report.json",
    ):
        assert (data / f).exists(), f
    splits = json.loads((data / "splits.json").read_text())
    assert splits["protocol"]["name"] == "kuairand-temporal"
    assert splits["rows"] == {"train": 29945, "valid": 3458, "test": 2220}
    run = json.loads((kuairand_run / "run.json").read_text())
    assert run["dataset"] == "kuairand" and "commit" in run and "version" in run


def test_train_and_evaluate(kuairand_run, data_root, capsys):
    assert (
        train.main(["popularity", "--run", str(kuairand_run), f"--data.data_dir={data_root}"]) == 0
    )
    assert train.main(["sasrec", "--run", str(kuairand_run), *TINY]) == 0
    out = kuairand_run / "models" / "sasrec"
    for f in ("model.safetensors", "config.yaml", "metrics.json", "history.json", "checkpoint"):
        assert (out / f).exists(), f
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["sasrec"]["hidden"] == 16
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and len(json.loads((out / "history.json").read_text())) == 2
    assert m["test"]["n_instances"] == 1832 and m["test"]["oov_targets"] == 1038
    assert 0.0 <= m["test"]["ndcg@10"] <= m["test"]["recall@10"] <= 1.0

    assert evaluate.main([str(kuairand_run)]) == 0
    metrics = json.loads((kuairand_run / "metrics.json").read_text())
    assert set(metrics) == {"dataset", "protocol", "models", "version", "commit"}
    assert set(metrics["models"]) == {"popularity", "sasrec"}
    # evaluate recomputes from the saved weights: it must agree with what train measured
    assert metrics["models"]["sasrec"]["ndcg@10"] == pytest.approx(m["test"]["ndcg@10"], abs=1e-9)
    report = (kuairand_run / "report.md").read_text()
    assert "| sasrec |" in report and "training_curves.png" in report
    assert (kuairand_run / "plots" / "training_curves.png").stat().st_size > 1000


def test_train_refuses_a_run_of_another_dataset(kuairand_run, capsys):
    assert (
        main.main(["train", "sasrec", "--run", str(kuairand_run), "--data.dataset=ml-100k", *TINY])
        == 2
    )
    assert "prepared for dataset 'kuairand'" in capsys.readouterr().err


def test_train_on_leave_one_out_dataset(tmp_path, data_root):
    args = [
        "sasrec",
        "--run",
        str(tmp_path),
        "--data.dataset=ml-100k",
        f"--data.data_dir={data_root}",
        *TINY,
    ]
    assert train.main(args) == 0  # prepares first
    m = json.loads((tmp_path / "models" / "sasrec" / "metrics.json").read_text())
    assert m["protocol"] == "leave-one-out" and m["test"]["n_instances"] == 943


def test_unknown_override_exits_2_naming_the_key(tmp_path, capsys):
    assert main.main(["train", "sasrec", "--run", str(tmp_path), "--train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "valid keys" in err
    assert not (tmp_path / "models").exists()  # nothing written


def test_missing_data_exits_2_naming_the_folder(tmp_path, capsys):
    code = main.main(
        ["prepare", "--dataset", "segmm", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "segmm-sample") in err and "github.com/hezy18/SegMMInterest" in err
    assert not (tmp_path / "r").exists()


def test_help_and_unknown_command(capsys):
    assert main.main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("quickstart", "datasets", "prepare", "train", "evaluate"):
        assert cmd in out
    assert main.main(["frobnicate"]) == 2
    with pytest.raises(SystemExit) as exit_:
        main.main(["train", "--help"])
    assert exit_.value.code == 0
    assert (
        "Overrides: any key of the config's sections as --section.key=value"
        in capsys.readouterr().out
    )


def test_datasets_lists_found_and_missing(data_root, tmp_path, capsys):
    assert datasets.main(["--data-dir", str(data_root), "--no-count"]) == 0
    out = capsys.readouterr().out
    assert "kuairand" in out and "found" in out
    rows = datasets.dataset_rows(str(data_root), count=False)
    assert {r["status"] for r in rows} == {"found"}
    assert {r["status"] for r in datasets.dataset_rows(str(tmp_path), count=False)} == {"missing"}
    counted = {
        r["name"]: r
        for r in datasets.dataset_rows(str(data_root))
        if r["name"] in ("segmm", "ml-100k")
    }
    assert counted["segmm"]["rows"] == 10000 and counted["ml-100k"]["users"] == 943


def test_quickstart_sasrec_beats_popularity(tmp_path, data_root, capsys):
    """The main job with its real default config, but a fixed number of epochs instead of its
    6-minute wall-clock budget: how many epochs fit in 6 minutes depends on the machine, and
    no assertion may (on a loaded 2-core machine the budget allowed fewer epochs)."""
    out = tmp_path / "qs"
    args = ["--dataset", "kuairand", "--data-dir", str(data_root), "--out", str(out)]
    args += ["--train.progress=false", "--train.max_minutes=0", "--train.epochs=6"]
    assert quickstart.main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "kuairand" and metrics["protocol"] == "kuairand-temporal"
    pop, sas = metrics["models"]["popularity"], metrics["models"]["sasrec"]
    for m in (pop, sas):
        assert {"recall@10", "ndcg@10"} <= set(m)
    assert sas["ndcg@10"] > pop["ndcg@10"]
    sasrec = json.loads((out / "models" / "sasrec" / "metrics.json").read_text())
    assert sasrec["epochs_run"] == 6 and sasrec["stopped"] == "epochs"
    assert (out / "report.md").exists()
    assert "report.md" in capsys.readouterr().out


def test_quickstart_content_chain_on_microlens(microlens_chain):
    """The content chain end to end on real MicroLens-50K: titles -> embeddings (the hashing
    encoder here: e5-small takes minutes) -> QARM -> semantic IDs -> popularity, SASRec,
    OneRec-V2 -> evaluation and report; tiny models, one epoch each, 300 test users
    (the ``microlens_chain`` fixture of tests/conftest.py runs it)."""
    out, printed = microlens_chain
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "microlens" and metrics["protocol"] == "leave-one-out"
    assert set(metrics["models"]) == {"popularity", "sasrec", "onerec-v2"}
    for m in metrics["models"].values():
        assert {"recall@10", "ndcg@10"} <= set(m)
    v2 = json.loads((out / "models" / "onerec-v2" / "metrics.json").read_text())
    assert v2["test"]["n_instances"] == 300 and v2["epochs_run"] == 1
    report = (out / "report.md").read_text()
    for section in ("## Data", "## Content", "## Semantic IDs", "## Retrieval", "## Test metrics"):
        assert section in report
    assert "| 1 | 100.0% |" in report  # level-1 codes all used (balanced k-means)
    assert (out / "plots" / "training_curves.png").exists()
    assert "seconds per stage" in printed and "onerec-v2" in printed
    assert f"```\nreelrec serve {out}\n```" in report.split("## Serve it")[-1]  # the end
    assert f"serve it (OneRec-V2 candidates, SASRec ranker): reelrec serve {out}" in printed


def test_quickstart_routes_overrides_by_section(tmp_path, data_root):
    with pytest.raises(ConfigError, match="name no section"):
        quickstart.main(["--dataset", "microlens", "--out", str(tmp_path), "--can.layers=[2]"])


def test_train_elastic_on_leave_one_out_dataset_and_evaluate(tmp_path, data_root, capsys):
    """`reelrec train elastic` uses SASRec's loop, evaluation and run folder (real ML-100K)."""
    args = [
        "elastic",
        "--run",
        str(tmp_path),
        "--data.dataset=ml-100k",
        f"--data.data_dir={data_root}",
        "--train.epochs=1",
        "--train.progress=false",
        "--elastic.hidden=16",
        "--elastic.inner=16",
        "--elastic.max_len=120",
        "--elastic.chunk=16",
        "--elastic.memory_size=64",
    ]
    assert train.main(args) == 0
    out = tmp_path / "models" / "elastic"
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == "elastic" and cfg["elastic"]["chunk"] == 16
    m = json.loads((out / "metrics.json").read_text())
    assert m["test"]["n_instances"] == 943 and 0 < m["test"]["ndcg@10"] <= 1
    assert evaluate.main([str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["models"]["elastic"]["ndcg@10"] == pytest.approx(m["test"]["ndcg@10"])
    # a finished run resumes to the same result
    assert train.main(args) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["test"]["ndcg@10"] == pytest.approx(m["test"]["ndcg@10"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--elastic.memory_size=1000", "elastic.memory_size must be 0 or a perfect square"),
        ("--elastic.chunk=0", "elastic.chunk must be >= 1"),
        ("--elastic.hidden=15", "divisible by elastic.heads"),
    ],
)
def test_invalid_elastic_config_exits_2(tmp_path, capsys, override, message):
    assert main.main(["train", "elastic", "--run", str(tmp_path), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_train_gru4rec_through_the_library_and_recommend(tmp_path, data_root):
    """A model added as one table row trains, evaluates and recommends like the others."""
    from reelrec.run import Run

    run = Run.prepare(tmp_path, "ml-100k", data_dir=str(data_root), log=lambda s: None)
    m = run.train(
        "gru4rec",
        ["--train.epochs=1", "--train.progress=false", "--gru4rec.gru_hidden=16"],
        log=lambda s: None,
    )
    assert m["task"] == "retrieval" and m["test"]["n_instances"] == 943
    saved = yaml.safe_load((tmp_path / "models" / "gru4rec" / "config.yaml").read_text())
    assert list(saved) == ["model", "name", "data", "train", "eval", "gru4rec"]
    items = run.trained("gru4rec").recommend([1, 2, 3], k=5, exclude_history=True)
    assert len(items) == 5 and not {1, 2, 3} & set(items)
    assert "gru4rec" in run.evaluate(log=lambda s: None)["models"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--train.epochs=0", "train.epochs must be >= 1"),
        ("--train.lr=-1", "train.lr must be a finite number > 0"),
        ("--sasrec.hidden=15", "divisible by sasrec.heads"),
        ("--eval.ks=5", "train.metric must be at a cutoff"),
        ("--name=../escape", "name must be a plain folder name"),
    ],
)
def test_invalid_config_is_refused_before_anything_is_written(
    kuairand_run, capsys, override, message
):
    before = (
        sorted(p.name for p in (kuairand_run / "models").iterdir())
        if (kuairand_run / "models").exists()
        else []
    )
    assert (
        main.main(["train", "sasrec", "--run", str(kuairand_run), "--name=bad", *TINY, override])
        == 2
    )
    assert message in capsys.readouterr().err
    after = (
        sorted(p.name for p in (kuairand_run / "models").iterdir())
        if (kuairand_run / "models").exists()
        else []
    )
    assert after == before


def test_resume_with_another_config_is_refused(kuairand_run, capsys):
    assert main.main(["train", "sasrec", "--run", str(kuairand_run), "--name=r", *TINY]) == 0
    config = (kuairand_run / "models" / "r" / "config.yaml").read_text()
    assert (
        main.main(
            ["train", "sasrec", "--run", str(kuairand_run), "--name=r", *TINY, "--sasrec.hidden=32"]
        )
        == 2
    )
    assert "sasrec.hidden (16 -> 32)" in capsys.readouterr().err
    assert (kuairand_run / "models" / "r" / "config.yaml").read_text() == config  # untouched
    # more epochs is a legal resume
    assert (
        main.main(
            ["train", "sasrec", "--run", str(kuairand_run), "--name=r", *TINY, "--train.epochs=3"]
        )
        == 0
    )


def test_prepare_over_models_of_another_dataset_is_refused(kuairand_run, data_root, capsys):
    args = [
        "prepare",
        "--dataset",
        "segmm",
        "--data-dir",
        str(data_root),
        "--out",
        str(kuairand_run),
    ]
    assert train.main(["popularity", "--run", str(kuairand_run), "--name=pop2"]) == 0
    assert main.main(args) == 2
    assert "would leave them stale" in capsys.readouterr().err
