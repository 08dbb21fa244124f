"""`reelrec train onerec|onerec-v2|tiger` end to end on real KuaiRand data with tiny sizes:
semantic IDs from item2vec (KuaiRand has no item content), training, resume, `reelrec evaluate`."""

from __future__ import annotations

import json

import pytest

from reelrec.cli import evaluate, main, train
from reelrec.config import ConfigError
from reelrec.run import resolve_config

TINY = [
    "--train.epochs=2",
    "--train.progress=false",
    "--train.warmup_steps=5",
    "--onerec.hidden=16",
    "--onerec.heads=2",
    "--onerec.kv_heads=2",
    "--onerec.inner=16",
    "--onerec.encoder_layers=1",
    "--onerec.decoder_layers=1",
    "--onerec.window_step=8",
    "--onerec.valid_instances=300",
]


@pytest.fixture(scope="module")
def run(kuairand_prepared):
    return kuairand_prepared("kuairand-onerec")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REELREC_CACHE_DIR", str(tmp_path / "cache"))


def test_missing_semantic_ids_say_which_commands_make_them(run, capsys):
    assert main.main(["train", "onerec", "--run", str(run), *TINY]) == 2
    err = capsys.readouterr().err
    assert "semantic_ids.parquet not found" in err and "reelrec tokenize" in err


def test_train_onerec_v2_and_tiger_then_evaluate(run, capsys):
    assert main.main(["encode", "--run", str(run)]) == 0
    raw = ["--tokenizer.embeddings=raw", "--tokenizer.codebook_size=16"]
    assert main.main(["tokenize", "--run", str(run), *raw]) == 0
    tok = [
        "tokenize",
        "--run",
        str(run),
        "--method",
        "rq-vae",
        "--out",
        str(run / "tokenizer-rq-vae"),
    ]
    assert main.main([*tok, *raw, "--tokenizer.rqvae_epochs=3"]) == 0

    assert train.main(["onerec", "--run", str(run), *TINY]) == 0
    out = run / "models" / "onerec"
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_run"] == 2 and m["test"]["n_instances"] == 1832
    assert m["test"]["oov_targets"] == 1038  # never-liked-in-train targets are misses
    assert 0.0 <= m["test"]["ndcg@10"] <= m["test"]["recall@10"] <= 0.43
    assert "mrr" not in m["test"]  # ranks are computed up to the largest cutoff only
    # both history protocols, exact and by the beam
    assert set(m["test_protocols"]) == {"unmasked", "masked"} == set(m["test_beam"])
    assert m["test_protocols"]["unmasked"]["ndcg@10"] == pytest.approx(m["test"]["ndcg@10"])
    assert m["mask_history"] is False and m["ranking"] == "exact"
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 2 and 0 < hist[0]["moe_max_load_share"] <= 1.0 and hist[0]["lr"] > 0

    # resuming a finished run with more epochs continues from the checkpoint
    assert train.main(["onerec", "--run", str(run), *TINY, "--train.epochs=3"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 3
    assert "resumed" in capsys.readouterr().out

    assert train.main(["onerec-v2", "--run", str(run), *TINY]) == 0
    assert train.main(["tiger", "--run", str(run), *TINY]) == 0
    assert "training tiger (model onerec)" in capsys.readouterr().out
    assert train.main(["popularity", "--run", str(run)]) == 0  # a full-ranking model beside them
    # a training stopped before its first epoch leaves a folder without weights: skipped
    half = run / "models" / "half"
    half.mkdir()
    (half / "config.yaml").write_text((out / "config.yaml").read_text())
    assert evaluate.main([str(run)]) == 0
    assert "skipping half" in capsys.readouterr().out
    models = json.loads((run / "metrics.json").read_text())["models"]
    assert set(models) == {"onerec", "onerec-v2", "tiger", "popularity"}
    report = (run / "report.md").read_text()
    assert "exact log-probability" in report and "| onerec |" in report and "mrr" in report
    assert "## NDCG@10 under both protocols, exact and by the beam" in report
    # `reelrec evaluate` rebuilds the model from its folder and gets the training run's numbers
    final = json.loads((out / "metrics.json").read_text())["test"]
    assert models["onerec"]["ndcg@10"] == pytest.approx(final["ndcg@10"])

    # re-tokenizing changes the IDs under trained models: resume refuses, evaluate skips them
    retok = ["tokenize", "--run", str(run), "--tokenizer.embeddings=raw"]
    assert main.main([*retok, "--tokenizer.codebook_size=8"]) == 0
    capsys.readouterr()
    assert main.main(["train", "onerec", "--run", str(run), *TINY, "--train.epochs=3"]) == 2
    assert "other semantic IDs" in capsys.readouterr().err
    assert evaluate.main([str(run)]) == 0
    assert "skipping onerec:" in capsys.readouterr().out
    models = json.loads((run / "metrics.json").read_text())["models"]
    assert set(models) == {"tiger", "popularity"}


def test_config_rules_for_generative_models():
    with pytest.raises(ConfigError, match="onerec.beam"):
        resolve_config("onerec", ["--onerec.beam=10"])  # eval.ks has 20 > beam
    with pytest.raises(ConfigError, match="train.metric"):
        resolve_config("onerec", ["--train.metric=mrr"])
    with pytest.raises(ConfigError, match="onerec.experts"):
        resolve_config("onerec", ["--onerec.experts=-1"])
    cfg = resolve_config("tiger", [])
    assert cfg.model == "onerec" and cfg.onerec.semantic_ids == "tokenizer-rq-vae"
    assert cfg.onerec.experts == 0 and cfg.onerec.item_tokens == "flat"
