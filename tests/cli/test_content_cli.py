"""`reelrec encode --encoder ct-llm | keye-vl` on real ML-100K titles, with the tiny random
CT-LLM of tests/conftest.py (built in code); missing weights, frames or GPU give clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reelrec.cli import main, prepare


@pytest.fixture(scope="module")
def ml100k_run(data_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("ml100k-content") / "run"
    argv = ["--dataset", "ml-100k", "--data-dir", str(data_root), "--out", str(run)]
    assert prepare.main(argv) == 0
    return run


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REELREC_CACHE_DIR", str(tmp_path / "cache"))


def test_encode_with_ct_llm(ml100k_run, tiny_ct_llm):
    argv = ["encode", "--run", str(ml100k_run), "--encoder", "ct-llm"]
    assert main.main([*argv, "--model-path", str(tiny_ct_llm), "--device", "cpu"]) == 0
    enc = json.loads((ml100k_run / "content" / "encoder.json").read_text())
    assert enc["encoder"] == "ct-llm" and enc["items"] == 1682 and enc["dim"] == 32
    assert enc["cache_key"].startswith("ct-llm-")
    x = np.load(ml100k_run / "content" / "item_embeddings.npy")
    assert x.shape == (1682, 32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert len(np.unique(x.round(5), axis=0)) > 1500  # titles give different embeddings


def test_adapter_errors_name_what_is_needed(ml100k_run, tmp_path, capsys):
    argv = ["encode", "--run", str(ml100k_run)]
    assert main.main([*argv, "--encoder", "ct-llm"]) == 2
    assert "m-a-p/CT-LLM-Base" in capsys.readouterr().err
    assert main.main([*argv, "--encoder", "ct-llm", "--model-path", str(tmp_path)]) == 2
    assert "missing config.json, tokenizer.model" in capsys.readouterr().err
    assert main.main([*argv, "--encoder", "keye-vl"]) == 2
    assert "--video-dir" in capsys.readouterr().err
    frames = tmp_path / "frames"
    (frames / "1").mkdir(parents=True)
    ckpt = tmp_path / "keye"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    keye = [*argv, "--encoder", "keye-vl", "--video-dir", str(frames)]
    assert main.main([*keye, "--model-path", str(tmp_path / "none")]) == 2
    assert "Kwai-Keye/Keye-VL-1_5-8B" in capsys.readouterr().err
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert main.main([*keye, "--model-path", str(ckpt)]) == 2
        assert "needs a GPU" in capsys.readouterr().err
