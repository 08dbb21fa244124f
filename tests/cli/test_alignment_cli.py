"""`reelrec train pscore|ipa|ecpo` end to end on real KuaiRand with tiny sizes: the reward
model, both alignments of a tiny OneRec, `reelrec evaluate`, and the errors of a wrong setup."""

from __future__ import annotations

import json
import math

import pytest

from reelrec.cli import evaluate, main, train
from reelrec.config import ConfigError
from reelrec.run import resolve_config

ONEREC = [
    "--train.epochs=1",
    "--train.progress=false",
    "--train.warmup_steps=5",
    "--onerec.hidden=16",
    "--onerec.heads=2",
    "--onerec.kv_heads=2",
    "--onerec.inner=16",
    "--onerec.encoder_layers=1",
    "--onerec.decoder_layers=1",
    "--onerec.window_step=16",
    "--onerec.valid_instances=200",
]
PSCORE = [
    "--train.epochs=2",
    "--train.progress=false",
    "--ranking.embed_dim=4",
    "--ranking.mlp=[16]",
    "--ranking.tower=[8]",
    "--reward.pscore_mlp=[8]",
]
ALIGN = [
    "--train.epochs=1",
    "--train.progress=false",
    "--train.batch_size=256",
    "--preference.candidates=3",
    "--preference.fraction=0.1",
]


@pytest.fixture(scope="module")
def run(kuairand_prepared):
    """A prepared KuaiRand run with a tiny trained OneRec and a tiny reward model."""
    run = kuairand_prepared("kuairand-alignment")
    assert main.main(["encode", "--run", str(run)]) == 0
    raw = ["--tokenizer.embeddings=raw", "--tokenizer.codebook_size=16"]
    assert main.main(["tokenize", "--run", str(run), *raw]) == 0
    assert train.main(["onerec", "--run", str(run), *ONEREC]) == 0
    assert train.main(["pscore", "--run", str(run), *PSCORE]) == 0
    return run


def test_reward_model_reports_towers_and_pscore_per_objective(run):
    m = json.loads((run / "models" / "pscore" / "metrics.json").read_text())
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
    assert 0.5 < tasks["like"]["auc"] <= 1.0 and "gauc" in tasks["click"]
    p = m["pscore"]["test"]
    assert set(p) == {"click", "long_view", "like", "follow", "comment", "forward"}
    assert all(0 <= p[t]["auc"] <= 1 for t in p) and p["like"]["n"] == tasks["like"]["n"]


@pytest.mark.parametrize("kind", ["ipa", "ecpo"])
def test_alignment_trains_and_reports_before_and_after(run, kind, capsys):
    assert train.main([kind, "--run", str(run), *ALIGN]) == 0
    out = run / "models" / kind
    m = json.loads((out / "metrics.json").read_text())
    for split in ("init_test", "valid", "test"):
        a = m["alignment"][split]
        for key in ("pscore_mean@10", "pscore_max@10", "recall@10", "hate_share@10"):
            assert 0.0 <= a[key] <= 1.0, (split, key, a[key])
        assert a["pscore_mean@10"] <= a["pscore_max@10"]
        assert 0.0 <= a["legal_rate"] <= 1.0 and a["users"] > 300
    assert m["test"]["n_instances"] == 1832  # per-instance retrieval metrics as for onerec
    hist = json.loads((out / "history.json").read_text())
    assert ("loss_dpo" if kind == "ipa" else "loss_ecpo") in hist[0]
    if kind == "ecpo":  # IPA's candidates are trie-constrained, always legal
        assert 0 <= hist[0]["legal_rate"] <= 1
    if kind == "ipa" or hist[0]["legal_rate"] > 0:  # P-Score of the real generated videos
        assert 0 < hist[0]["reward_mean"] < 1
    log = capsys.readouterr().out
    assert "P-Score mean@10" in log and "legal rate" in log


def test_evaluate_includes_the_aligned_models(run):
    for kind in ("ipa", "ecpo"):
        if not (run / "models" / kind / "model.safetensors").exists():
            assert train.main([kind, "--run", str(run), *ALIGN]) == 0
    assert evaluate.main([str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"onerec", "pscore", "ipa", "ecpo"} <= set(metrics["models"])
    assert not math.isnan(metrics["models"]["ecpo"]["recall@10"])


def test_missing_generator_or_reward_names_the_command(run, capsys):
    def fails(kind: str, override: str) -> str:
        args = ["train", kind, "--run", str(run), "--name=bad", override, *ALIGN]
        assert main.main(args) == 2
        return capsys.readouterr().err

    assert "reelrec train onerec" in fails("ipa", "--preference.init=nope")
    assert "reelrec train pscore" in fails("ecpo", "--preference.reward=nope")
    # a ranking model is not a generator, a generator is not a reward model
    assert "needs a semantic-ID generator" in fails("ipa", "--preference.init=pscore")
    assert "P-Score model" in fails("ipa", "--preference.reward=onerec")
    assert not (run / "models" / "bad").exists()  # nothing half-written


def test_onerec_overrides_are_refused_and_the_config_records_the_generator(run, capsys):
    args = ["train", "ipa", "--run", str(run), "--name=arch", "--onerec.hidden=64", *ALIGN]
    assert main.main(args) == 2
    assert "remove the --onerec.* overrides" in capsys.readouterr().err
    assert not (run / "models" / "arch").exists()  # nothing written
    cfg = (run / "models" / "ipa" / "config.yaml").read_text()
    assert "hidden: 16" in cfg  # the tiny generator's width, not the default 128


@pytest.mark.parametrize(
    "override",
    [
        "--preference.fraction=0",
        "--preference.candidates=1",
        "--preference.beta=-1",
        "--preference.delta=0",
        "--preference.init=../x",
        "--train.metric=mrr",
        "--data.dataset=ml-1m",
        "--preference.init=ipa",
        "--name=pscore",  # would overwrite the reward model it reads
        "--preference.candidates=5000",
        "--preference.beta=1e39",
        "--preference.weight=1e39",
    ],
)
def test_bad_alignment_configs_are_refused(override):
    with pytest.raises(ConfigError):
        resolve_config("ipa", [override])


@pytest.mark.parametrize(
    "override",
    [
        "--ranking.tower=[]",
        "--reward.pscore_weights=[1,2]",
        "--reward.pscore_mlp=[]",
        "--reward.pscore_weights=[1e-320,1,1,1,1,1,1]",
        "--reward.pscore_weights=[1e308,1,1,1,1,1,1]",
    ],
)
def test_bad_reward_configs_are_refused(override):
    with pytest.raises(ConfigError):
        resolve_config("pscore", [override])


def test_no_resume_removes_the_old_checkpoint_before_anything_trains(run, monkeypatch):
    """An interrupted --no-resume run must not leave the old checkpoint for the next run to
    resume under the new config."""
    out = run / "models" / "ipa"
    if not (out / "checkpoint").exists():
        assert train.main(["ipa", "--run", str(run), *ALIGN]) == 0
    # a missing reward model fails before anything is written: the finished model is kept
    assert (
        main.main(
            ["train", "ipa", "--run", str(run), "--no-resume", "--preference.reward=x", *ALIGN]
        )
        == 2
    )
    assert (out / "checkpoint").exists() and (out / "metrics.json").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    from reelrec.training import loop

    monkeypatch.setattr(loop, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.main(["ipa", "--run", str(run), "--no-resume", "--preference.beta=0.5", *ALIGN])
    assert not (out / "checkpoint").exists() and not (out / "model.safetensors").exists()
    assert "beta: 0.5" in (out / "config.yaml").read_text()
    monkeypatch.undo()
    assert train.main(["ipa", "--run", str(run), *ALIGN, "--preference.beta=0.5"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
