"""Semantic IDs: uniqueness, balance, determinism, round trip, stats, collisions, VQ codes, bad
input. Embeddings are small clustered random arrays built in code."""

from __future__ import annotations

import numpy as np
import pytest

from reelrec.tokenizer.semantic_ids import (
    RQ_METHODS,
    TokenizerConfig,
    auto_codebook_size,
    disambiguate,
    encode_residual,
    fit_semantic_ids,
    level_stats,
    load_semantic_ids,
    save_semantic_ids,
    vq_codes,
)


def clustered(n: int = 240, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d))
    x = centres[rng.integers(0, 6, n)] + 0.3 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = rng.permutation(np.arange(1000, 1000 + 3 * n, 3))  # unsorted, non-contiguous ids
    return ids.astype(np.int64), x.astype(np.float32)


def cfg(method: str, **kw) -> TokenizerConfig:
    return TokenizerConfig(
        **{"method": method, "levels": 3, "codebook_size": 8, "rqvae_epochs": 5, **kw}
    )


def test_disambiguation_hand_example():
    codes = np.array([[1, 2], [1, 2], [0, 0], [1, 2], [0, 1]])
    out = disambiguate(codes)
    assert out[:, 2].tolist() == [0, 1, 0, 2, 0]
    assert len(np.unique(out, axis=0)) == len(out)


def test_level_stats_hand_example():
    codes = np.array([[0, 1], [0, 1], [1, 0], [1, 1]])
    s = level_stats(codes, k=4, recon=[0.5, 0.25])
    assert s["utilisation"] == [0.5, 0.5]
    assert s["entropy_bits"] == pytest.approx([1.0, -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))])
    assert s["collision_rate_per_level"] == [0.5, 0.25]  # 2 of 4 prefixes, then 3 of 4
    assert s["recon_loss"] == 0.25 and s["collision_rate"] == 0.25


@pytest.mark.parametrize("method", RQ_METHODS)
def test_every_item_gets_a_unique_id_and_stats(method):
    ids, x = clustered()
    sid = fit_semantic_ids(ids, x, cfg(method))
    assert np.all(np.diff(sid.item_ids) > 0) and set(sid.item_ids) == set(ids)
    assert sid.codes.shape == (len(ids), 3) and sid.semantic_ids.shape == (len(ids), 4)
    assert sid.codes.min() >= 0 and sid.codes.max() < 8
    assert len(np.unique(sid.semantic_ids, axis=0)) == len(ids)
    assert sid.stats["unique"] is True
    for key in ("utilisation", "entropy_bits", "recon_loss_per_level", "collision_rate_per_level"):
        assert len(sid.stats[key]) == 3
    assert all(0 <= e <= 3.0 + 1e-9 for e in sid.stats["entropy_bits"])
    # the rows are the item's own: the order follows sorted item ids
    row = {i: r for r, i in enumerate(sid.item_ids)}
    x_sorted = x[np.argsort(ids)]
    assert np.allclose(x_sorted[row[ids[0]]], x[0])


@pytest.mark.parametrize("method", ["rq-kmeans-balanced", "rq-kmeans"])
def test_residual_kmeans_recon_never_increases(method):
    ids, x = clustered()
    rec = fit_semantic_ids(ids, x, cfg(method)).stats["recon_loss_per_level"]
    start = float((x.astype(np.float64) ** 2).sum(1).mean())
    assert start >= rec[0] >= rec[1] >= rec[2]


def test_balanced_levels_have_equal_cluster_sizes():
    ids, x = clustered(n=243)
    sid = fit_semantic_ids(ids, x, cfg("rq-kmeans-balanced"))
    for level in range(3):
        sizes = np.bincount(sid.codes[:, level], minlength=8)
        assert sizes.max() - sizes.min() <= 1
    assert sid.stats["utilisation"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("method", RQ_METHODS)
def test_same_seed_same_ids(method):
    ids, x = clustered()
    a = fit_semantic_ids(ids, x, cfg(method, seed=3))
    b = fit_semantic_ids(ids, x, cfg(method, seed=3))
    np.testing.assert_array_equal(a.semantic_ids, b.semantic_ids)
    for k in a.tensors:
        np.testing.assert_array_equal(a.tensors[k], b.tensors[k])


@pytest.mark.parametrize("method", RQ_METHODS)
def test_saved_tokenizer_reloads_bit_identically(method, tmp_path):
    ids, x = clustered()
    sid = fit_semantic_ids(ids, x, cfg(method))
    save_semantic_ids(sid, tmp_path, {"method": method})
    back = load_semantic_ids(tmp_path)
    assert back.method == method
    np.testing.assert_array_equal(back.item_ids, sid.item_ids)
    np.testing.assert_array_equal(back.semantic_ids, sid.semantic_ids)
    assert set(back.tensors) == set(sid.tensors)
    for k, v in sid.tensors.items():
        assert back.tensors[k].dtype == v.dtype
        np.testing.assert_array_equal(back.tensors[k], v)
    assert not list(tmp_path.glob(".*.tmp"))


def test_plain_rq_kmeans_codes_reproduce_from_saved_codebooks(tmp_path):
    ids, x = clustered()
    sid = fit_semantic_ids(ids, x, cfg("rq-kmeans"))
    save_semantic_ids(sid, tmp_path)
    back = load_semantic_ids(tmp_path)
    books = [back.tensors[f"level_{i}"] for i in (1, 2, 3)]
    np.testing.assert_array_equal(encode_residual(x[np.argsort(ids)], books), sid.codes)


def test_auto_codebook_size():
    assert auto_codebook_size(12101) == 256
    assert auto_codebook_size(3416) == 256
    assert auto_codebook_size(100) == 16
    assert auto_codebook_size(40) == 8
    assert auto_codebook_size(3) == 2


def test_bad_input_gives_clear_errors():
    ids, x = clustered(n=20)
    with pytest.raises(ValueError, match="fewer items"):
        fit_semantic_ids(ids, x, TokenizerConfig(codebook_size=32))
    bad = x.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match=f"NaN/inf, item ids \\[{ids[4]}\\]"):
        fit_semantic_ids(ids, bad, cfg("rq-kmeans"))
    bad = x.copy()
    bad[7] = 0.0
    with pytest.raises(ValueError, match=f"all-zero embedding row\\(s\\), item ids \\[{ids[7]}\\]"):
        fit_semantic_ids(ids, bad, cfg("rq-kmeans"))
    with pytest.raises(ValueError, match="mismatched ids"):
        fit_semantic_ids(ids[:-1], x, cfg("rq-kmeans"))
    dup = ids.copy()
    dup[1] = dup[0]
    with pytest.raises(ValueError, match="duplicate item ids"):
        fit_semantic_ids(dup, x, cfg("rq-kmeans"))
    with pytest.raises(ValueError, match="unknown tokenizer method"):
        fit_semantic_ids(ids, x, TokenizerConfig(method="kmeans++"))


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="codebooks.safetensors not found"):
        load_semantic_ids(tmp_path)


def test_vq_codes_are_the_nearest_other_items():
    ids, x = clustered(n=50)
    table, stats = vq_codes(ids, x, topk=4)
    assert table["item_id"].tolist() == ids.tolist()
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    for r, codes in enumerate(table["vq_codes"]):
        assert len(codes) == 4 and ids[r] not in codes
        expected = ids[np.argsort(-sims[r], kind="stable")[:4]]
        assert set(codes) == set(expected.tolist())
    assert 0 < stats["codebook_utilisation"] <= 1
    with pytest.raises(ValueError, match="vq_topk"):
        vq_codes(ids, x, topk=50)


def c12_input() -> tuple[np.ndarray, np.ndarray]:
    """CASES.md C12: 1,024 32-d vectors, 16 clusters 10 units apart on distinct axes, sigma 0.1."""
    rng = np.random.default_rng(0)
    centres = np.zeros((16, 32))
    centres[np.arange(16), np.arange(16)] = 10.0
    x = centres[np.repeat(np.arange(16), 64)] + 0.1 * rng.standard_normal((1024, 32))
    return np.arange(1024), x.astype(np.float32)


def test_c12_balanced_level_one_uses_every_code_equally():
    ids, x = c12_input()
    s = fit_semantic_ids(ids, x, TokenizerConfig(codebook_size=16)).stats
    assert s["utilisation"][0] == 1.0
    assert s["entropy_bits"][0] == pytest.approx(4.0)
    assert s["fit_info"][0]["cluster_size_min"] == s["fit_info"][0]["cluster_size_max"] == 64
    assert s["warnings"] == []


def test_c12_rq_vae_does_not_collapse():
    ids, x = c12_input()
    s = fit_semantic_ids(
        ids, x, TokenizerConfig(method="rq-vae", codebook_size=16, rqvae_epochs=250)
    ).stats
    assert s["utilisation"][0] >= 0.9 and s["entropy_bits"][0] >= 3.5
    # every loss term is logged by name (CASES.md C18): the commitment term is not silently 0
    history = s["fit_info"][0]["rqvae_history"]
    assert {"recon", "commit"} <= set(history[-1]) and history[-1]["commit"] > 0


def test_c12_one_step_run_reports_stats_and_collapse_warns(capsys):
    ids, x = c12_input()
    x = np.repeat(x[:1], len(x), axis=0)  # one embedding for every item: nothing to separate
    s = fit_semantic_ids(ids, x, TokenizerConfig(method="rq-kmeans", codebook_size=16, iters=1))
    for key in ("utilisation", "entropy_bits", "collision_rate_per_level"):
        assert len(s.stats[key]) == 3
    assert s.stats["entropy_bits"][0] < 1.0
    assert any("collapse at level 1" in w for w in s.stats["warnings"])
    assert "warning: codebook collapse at level 1" in capsys.readouterr().out
    one = fit_semantic_ids(ids, c12_input()[1], cfg("rq-vae", rqvae_epochs=1))
    assert len(one.stats["utilisation"]) == 3  # a one-epoch RQ-VAE still reports every level


def test_c13_identical_embeddings_get_the_extra_digit_by_item_id():
    ids, x = clustered(n=60)
    x[10] = x[3]  # item ids[10] re-uploads item ids[3]
    for method in ("rq-kmeans-balanced", "rq-kmeans"):
        sid = fit_semantic_ids(ids, x, cfg(method))
        row = {int(i): r for r, i in enumerate(sid.item_ids)}
        p, q = sorted([int(ids[3]), int(ids[10])])
        assert sid.codes[row[p]].tolist() == sid.codes[row[q]].tolist()
        assert sid.semantic_ids[row[p], -1] == 0 and sid.semantic_ids[row[q], -1] == 1
        assert sid.stats["colliding_groups"] >= 1 and sid.stats["largest_colliding_group"] >= 2
        assert len(np.unique(sid.semantic_ids, axis=0)) == len(ids)  # 0 collisions after
        again = fit_semantic_ids(ids, x, cfg(method))
        np.testing.assert_array_equal(again.semantic_ids, sid.semantic_ids)


def test_c07_code_counts_with_repeated_codes():
    codes = np.array([[3], [3], [3], [5], [7], [7]])
    s = level_stats(codes, k=8, recon=[0.0])
    assert s["utilisation"] == [3 / 8]
    p = np.array([3, 1, 2]) / 6
    assert s["entropy_bits"][0] == pytest.approx(float(-(p * np.log2(p)).sum()))


def test_more_bad_settings_are_refused():
    from reelrec.tokenizer.kmeans import balanced_kmeans

    ids, x = clustered(n=64)
    with pytest.raises(ValueError, match="at least 1 iteration"):
        balanced_kmeans(x, 4, iters=0)
    with pytest.raises(ValueError, match="tokenizer.seed"):
        fit_semantic_ids(ids, x, cfg("rq-kmeans", seed=2**31))
    with pytest.raises(ValueError, match="rqvae_batch_size"):
        fit_semantic_ids(ids, x, cfg("rq-vae", rqvae_batch_size=4))
    with pytest.raises(ValueError, match="dead_code"):
        fit_semantic_ids(ids, x, cfg("rq-vae", rqvae_dead_code_threshold=float("nan")))
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        disambiguate(np.array([1, 1, 2]))
    with pytest.raises(ValueError, match="at least 2 items"):
        vq_codes(ids[:1], x[:1], topk=1)
