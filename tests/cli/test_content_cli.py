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
    assert enc["model_path"] == str(tiny_ct_llm.resolve())
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
    (ckpt / "config.json").write_text('{"vision_config": {}}')
    (ckpt / "model.safetensors").write_bytes(b"")
    keye = [*argv, "--encoder", "keye-vl", "--video-dir", str(frames)]
    assert main.main([*keye, "--model-path", str(tmp_path / "none")]) == 2
    assert "Kwai-Keye/Keye-VL-1_5-8B" in capsys.readouterr().err
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert main.main([*keye, "--model-path", str(ckpt)]) == 2
        assert "needs a GPU" in capsys.readouterr().err


def test_encode_appends_on_screen_text(ml100k_run, tmp_path):
    pytest.importorskip("rapidocr_onnxruntime")
    from PIL import Image, ImageDraw, ImageFont

    frames = tmp_path / "frames"
    for item, caption in [(1, "FUNNY CAT"), (2, "COOKING SHOW")]:
        (frames / str(item)).mkdir(parents=True)
        img = Image.new("RGB", (480, 160), (20, 20, 20))
        font = ImageFont.load_default(40)
        ImageDraw.Draw(img).text((20, 50), caption, fill=(255, 255, 255), font=font)
        for k in range(2):
            img.save(frames / str(item) / f"{k:06d}.jpg")
    argv = ["encode", "--run", str(ml100k_run), "--encoder", "hashing"]
    assert main.main(argv) == 0
    plain = np.load(ml100k_run / "content" / "item_embeddings.npy")
    assert main.main([*argv, "--ocr", "--video-dir", str(frames)]) == 0
    enc = json.loads((ml100k_run / "content" / "encoder.json").read_text())
    assert enc["ocr_items_with_frames"] == 2 and enc["ocr_items_with_text"] == 2
    with_ocr = np.load(ml100k_run / "content" / "item_embeddings.npy")
    ids = np.load(ml100k_run / "content" / "item_ids.npy")
    changed = ids[~np.isclose(plain, with_ocr).all(axis=1)]
    assert changed.tolist() == [1, 2]  # only the items with frames get new text


def test_ocr_needs_frames_and_a_text_encoder(ml100k_run, capsys):
    argv = ["encode", "--run", str(ml100k_run), "--ocr"]
    assert main.main([*argv, "--encoder", "hashing"]) == 2
    assert "--video-dir" in capsys.readouterr().err
    assert main.main([*argv, "--encoder", "item2vec"]) == 2
    assert "item2vec reads no text" in capsys.readouterr().err


def test_options_that_would_be_ignored_are_refused(ml100k_run, tiny_ct_llm, tmp_path, capsys):
    argv = ["encode", "--run", str(ml100k_run)]
    cases = [
        (["--encoder", "hashing", "--model-path", str(tiny_ct_llm)], "--model-path is for"),
        (["--encoder", "ct-llm", "--model-path", str(tiny_ct_llm), "--dim", "16"], "--dim sets"),
        (["--encoder", "hashing", "--video-dir", str(tmp_path)], "--video-dir is read by"),
        (["--encoder", "ct-llm", "--model-path", str(tiny_ct_llm), "--device", "tpu"], "cuda:N"),
    ]
    for extra, msg in cases:
        assert main.main([*argv, *extra]) == 2
        assert msg in capsys.readouterr().err
