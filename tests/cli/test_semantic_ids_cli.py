"""`reelrec encode / align / tokenize` on real data: ML-100K (1,682 films, titles + genres) with
the bundled e5-small encoder, and KuaiRand (no content: behaviour-only item2vec)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reelrec.cli import main, prepare
from reelrec.tokenizer.semantic_ids import load_semantic_ids


@pytest.fixture(scope="module")
def ml100k_run(data_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("ml100k") / "run"
    assert (
        prepare.main(["--dataset", "ml-100k", "--data-dir", str(data_root), "--out", str(run)]) == 0
    )
    return run


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REELREC_CACHE_DIR", str(tmp_path / "cache"))


def test_encode_align_tokenize_on_ml100k(ml100k_run, capsys):
    run = ml100k_run
    assert main.main(["encode", "--run", str(run)]) == 0
    enc = json.loads((run / "content" / "encoder.json").read_text())
    assert enc["encoder"] == "e5-small" and enc["source"] == "text" and enc["items"] == 1682
    x = np.load(run / "content" / "item_embeddings.npy")
    ids = np.load(run / "content" / "item_ids.npy")
    assert x.shape == (1682, 384) and x.dtype == np.float32 and len(ids) == 1682
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)

    assert (
        main.main(["align", "--run", str(run), "--align.epochs=3", "--align.u2i_per_user=5"]) == 0
    )
    rep = json.loads((run / "content" / "align.json").read_text())
    for key in ("test_before", "test_after", "valid_before", "valid_after"):
        assert 0.0 <= rep[key]["recall@10"] <= 1.0
    assert rep["pairs"]["train"] > rep["pairs"]["test"] > 0
    aligned = np.load(run / "content" / "aligned_embeddings.npy")
    assert aligned.shape == x.shape
    assert (run / "content" / "align_head.safetensors").exists()
    assert "temperature: 0.05" in (run / "content" / "align_config.yaml").read_text()

    for method, extra in [
        ("rq-kmeans-balanced", []),
        ("rq-kmeans", []),
        ("rq-vae", ["--tokenizer.rqvae_epochs=3"]),
    ]:
        out = run / f"tok-{method}"
        argv = ["tokenize", "--run", str(run), "--method", method, "--out", str(out), *extra]
        assert main.main(argv) == 0
        stats = json.loads((out / "stats.json").read_text())
        assert stats["unique"] is True and stats["codebook_size"] == 256 and stats["levels"] == 3
        assert (out / "plots" / "tokenizer.png").stat().st_size > 0
        table = pd.read_parquet(out / "semantic_ids.parquet")
        assert list(table.columns) == ["item_id", "code_1", "code_2", "code_3", "code_4"]
        assert (
            len(table) == 1682
            and not table.duplicated(["code_1", "code_2", "code_3", "code_4"]).any()
        )
        back = load_semantic_ids(out)
        np.testing.assert_array_equal(back.semantic_ids, table.iloc[:, 1:].to_numpy())
        if method == "rq-kmeans-balanced":
            for c in ("code_1", "code_2", "code_3"):
                sizes = table[c].value_counts()
                assert sizes.max() - sizes.min() <= 1 and len(sizes) == 256

    assert (
        main.main(["tokenize", "--run", str(run), "--method", "vq", "--tokenizer.vq_topk=5"]) == 0
    )
    vq = pd.read_parquet(run / "tokenizer" / "vq_codes.parquet")
    assert len(vq) == 1682 and all(len(c) == 5 for c in vq["vq_codes"])
    assert "codebook_utilisation" in json.loads((run / "tokenizer" / "vq_stats.json").read_text())


def test_tokenize_errors_are_one_line_and_write_nothing(ml100k_run, tmp_path, capsys):
    run = ml100k_run
    if not (run / "content" / "item_embeddings.npy").exists():
        assert main.main(["encode", "--run", str(run)]) == 0
    out = tmp_path / "tok"
    argv = ["tokenize", "--run", str(run), "--out", str(out), "--tokenizer.embeddings=raw"]
    assert main.main([*argv, "--tokenizer.codebook_size=4096"]) == 2
    assert "fewer items (1682) than codes per level (4096)" in capsys.readouterr().err
    assert main.main([*argv, "--tokenizer.embeddings=best"]) == 2
    assert "tokenizer.embeddings must be one of aligned, raw" in capsys.readouterr().err
    assert main.main([*argv, "--tokenizer.levls=2"]) == 2
    assert "unknown config key 'tokenizer.levls'" in capsys.readouterr().err
    assert not out.exists()
    assert main.main(["tokenize", "--run", str(tmp_path / "nope")]) == 2
    assert "after `reelrec encode --run RUN`" in capsys.readouterr().err
    argv = ["tokenize", "--run", str(tmp_path / "nope"), "--tokenizer.embeddings=raw"]
    assert main.main(argv) == 2
    assert "`reelrec encode --run RUN` writes it" in capsys.readouterr().err


def test_kuairand_has_no_content_and_gets_item2vec(data_root, tmp_path, capsys):
    run = tmp_path / "k"
    assert (
        prepare.main(["--dataset", "kuairand", "--data-dir", str(data_root), "--out", str(run)])
        == 0
    )
    assert main.main(["encode", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no item content" in out and "item2vec" in out
    enc = json.loads((run / "content" / "encoder.json").read_text())
    assert enc["source"] == "behaviour" and enc["items_without_embedding"] > 0
    assert main.main(["encode", "--run", str(run), "--encoder", "e5-small"]) == 2
    assert "use --encoder item2vec" in capsys.readouterr().err
    argv = ["tokenize", "--run", str(run), "--tokenizer.embeddings=raw", "--tokenizer.levels=2"]
    assert main.main(argv) == 0
    assert json.loads((run / "tokenizer" / "stats.json").read_text())["unique"] is True


def test_items_without_title_error_or_placeholder(ml100k_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(ml100k_run / "data", run / "data")
    shutil.copy(ml100k_run / "run.json", run / "run.json")
    items = pd.read_parquet(run / "data" / "items.parquet")
    items.loc[items["item_id"].isin([5, 9]), ["title", "genres"]] = None
    items.to_parquet(run / "data" / "items.parquet", index=False)
    argv = ["encode", "--run", str(run), "--encoder", "hashing"]
    assert main.main([*argv, "--missing-text", "error"]) == 2
    assert "2 item(s) have no title, item ids [5, 9]" in capsys.readouterr().err
    assert not (run / "content").exists()
    assert main.main(argv) == 0
    enc = json.loads((run / "content" / "encoder.json").read_text())
    assert enc["items_without_text"] == 2 and enc["items_without_text_ids"] == [5, 9]


def test_stale_alignment_and_dataset_mixups_are_refused(ml100k_run, tmp_path, capsys):
    import shutil
    import stat

    run = tmp_path / "r"
    shutil.copytree(ml100k_run, run)
    if not (run / "content" / "align.json").exists():
        assert main.main(["encode", "--run", str(run), "--encoder", "hashing"]) == 0
        assert main.main(["align", "--run", str(run), "--align.epochs=1"]) == 0
    mode = stat.S_IMODE((run / "content" / "align.json").stat().st_mode)
    assert mode & 0o044, f"outputs must be readable by others like open() makes them: {oct(mode)}"
    # re-encoding makes the alignment stale: tokenize must not quantise the old vectors
    assert main.main(["encode", "--run", str(run), "--encoder", "hashing", "--dim", "32"]) == 0
    assert main.main(["tokenize", "--run", str(run)]) == 2
    assert "aligned from other item embeddings" in capsys.readouterr().err
    assert main.main(["tokenize", "--run", str(run), "--tokenizer.embeddings=raw"]) == 0
    capsys.readouterr()
    assert (
        main.main(
            ["tokenize", "--run", str(run), "--method", "rq-kmeans", "--tokenizer.embeddings=raw"]
        )
        == 0
    )
    assert "replacing the rq-kmeans-balanced tokenizer" in capsys.readouterr().out
    # a run of another dataset, and a missing run without --dataset
    assert main.main(["encode", "--run", str(run), "--dataset", "kuairand"]) == 2
    assert "holds ml-100k, not kuairand" in capsys.readouterr().err
    assert main.main(["encode", "--run", str(tmp_path / "typo")]) == 2
    assert "pass --dataset NAME" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()


def test_broken_files_and_interrupts_exit_cleanly(ml100k_run, tmp_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(ml100k_run / "data", run / "data")
    shutil.copy(ml100k_run / "run.json", run / "run.json")
    assert main.main(["encode", "--run", str(run), "--encoder", "hashing"]) == 0
    raw = [
        "tokenize",
        "--run",
        str(run),
        "--tokenizer.embeddings=raw",
        "--tokenizer.codebook_size=8",
    ]
    (run / "content" / "item_embeddings.npy").write_bytes(b"")
    assert main.main(raw) == 2
    assert "item_embeddings.npy: not a readable plain .npy array" in capsys.readouterr().err
    assert main.main(["encode", "--run", str(run), "--encoder", "hashing"]) == 0
    (tmp_path / "file").write_text("x")
    assert main.main([*raw, "--out", str(tmp_path / "file")]) == 2  # --out is a file
    assert "reelrec tokenize: error:" in capsys.readouterr().err

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(main, "_commands", lambda: {"tokenize": (interrupted, "")})
    assert main.main(raw) == 130
    assert "interrupted" in capsys.readouterr().err


def test_mostly_missing_titles_fall_back_to_item2vec(ml100k_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(ml100k_run / "data", run / "data")
    shutil.copy(ml100k_run / "run.json", run / "run.json")
    items = pd.read_parquet(run / "data" / "items.parquet")
    items.loc[items.index[100:], ["title", "genres"]] = None  # 100 of 1,682 keep a text
    items.to_parquet(run / "data" / "items.parquet", index=False)
    assert main.main(["encode", "--run", str(run), "--encoder", "hashing"]) == 2
    assert "only 6% of the items have a title or genres" in capsys.readouterr().err
    assert main.main(["encode", "--run", str(run)]) == 0
    assert "using behaviour-only item2vec" in capsys.readouterr().out
    assert json.loads((run / "content" / "encoder.json").read_text())["encoder"] == "item2vec"
