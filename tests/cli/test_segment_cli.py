"""``reelrec train segment-interest`` and ``reelrec evaluate`` on the real SegMM sample with a
tiny config; config errors of the ``segment`` section."""

from __future__ import annotations

import json

import pytest

from reelrec.cli import evaluate, main, train

TINY = ["--train.epochs=2", "--train.progress=false", "--segment.dim=8", "--segment.heads=2"]


def test_train_segment_interest_and_evaluate_agrees(tmp_path, data_root):
    run = tmp_path / "run"
    args = ["segment-interest", "--run", str(run), f"--data.data_dir={data_root}", *TINY]
    assert train.main(args) == 0
    m = json.loads((run / "models" / "segment-interest" / "metrics.json").read_text())
    assert m["task"] == "segment" and m["epochs_run"] == 2
    # the test views with a skip segment (a value of the data and the split, not of the model)
    assert m["test"]["n"] == 619 and 0 < m["test"]["hr@1"] <= m["test"]["hr@5"] <= 1
    assert evaluate.main([str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["models"]["segment-interest"]["hr@1"] == pytest.approx(m["test"]["hr@1"])
    report = (run / "report.md").read_text()
    assert "## Video-skip prediction" in report and "| segment-interest | 619 |" in report


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--data.dataset=kuairand", "data.dataset must be segmm"),
        ("--train.metric=auc", "train.metric must be one of hr@1"),
        ("--segment.loss=hinge", "segment.loss must be 'pairwise' or 'softmax'"),
        ("--segment.dim=7", "divisible by heads"),
    ],
)
def test_invalid_segment_config_exits_2(tmp_path, capsys, override, message):
    assert main.main(["train", "segment-interest", "--run", str(tmp_path), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "models").exists()
