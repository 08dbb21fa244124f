"""Encoders, cache, item texts, item2vec, embedding files. Small tables are built in code; the
e5-small test runs the real bundled model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reelrec.content.encoders import E5SmallEncoder, HashingEncoder, encode_cached
from reelrec.content.items import (
    PLACEHOLDER_TEXT,
    behaviour_embeddings,
    check_embeddings,
    item_texts,
    load_embeddings,
    save_embeddings,
)
from reelrec.data.splits import TEST, TRAIN, get_protocol


def test_hashing_encoder_is_deterministic_unit_norm_and_lexical():
    enc = HashingEncoder(64)
    texts = ["red lipstick matte", "red lipstick glossy", "football boots"]
    x = enc.encode(texts)
    assert x.shape == (3, 64) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(x, HashingEncoder(64).encode(texts))
    assert x[0] @ x[1] > x[0] @ x[2]


def test_empty_text_is_refused_with_its_position():
    with pytest.raises(ValueError, match=r"position\(s\) \[1, 3\]"):
        HashingEncoder().encode(["a", " ", "b", ""])


def test_e5_small_handles_chinese_and_english():
    enc = E5SmallEncoder()
    x = enc.encode(
        ["red lipstick", "lip colour makeup", "soccer boots for kids", "红色口红", "儿童足球鞋"]
    )
    assert x.shape == (5, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]  # English paraphrase beats an unrelated product
    # cross-lingual: each English product is nearer its Chinese translation than the other one
    assert x[0] @ x[3] > x[0] @ x[4]
    assert x[2] @ x[4] > x[2] @ x[3]


def test_cache_hits_and_recovers_from_a_corrupt_entry(tmp_path):
    enc = HashingEncoder(16)
    texts = ["one", "two", "three"]
    a, hit = encode_cached(enc, texts, tmp_path)
    assert not hit
    (entry,) = tmp_path.glob("*.npy")
    entry.write_bytes(b"not a numpy file")
    b, hit = encode_cached(enc, texts, tmp_path)
    assert not hit  # recomputed, not read
    np.testing.assert_array_equal(a, b)
    c, hit = encode_cached(enc, texts, tmp_path)
    assert hit
    np.testing.assert_array_equal(a, c)
    _, hit = encode_cached(enc, ["one", "three", "two"], tmp_path)  # order is content
    assert not hit
    _, hit = encode_cached(HashingEncoder(32), texts, tmp_path)  # so is the encoder
    assert not hit


def test_item_texts_uses_title_and_genres_and_flags_missing():
    items = pd.DataFrame(
        {
            "item_id": [3, 1, 2],
            "title": ["Toy  Story", None, ""],
            "genres": [["Animation", "Comedy"], ["Drama"], None],
        }
    )
    ids, texts, missing = item_texts(items)
    assert ids.tolist() == [3, 1, 2]
    assert texts == ["Toy Story | Animation, Comedy", "Drama", PLACEHOLDER_TEXT]
    assert missing.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="no item content"):
        item_texts(pd.DataFrame({"item_id": [1]}))


def tiny_log() -> pd.DataFrame:
    """Three users over items 10..17 (fixture built in code); one test row must not count."""
    rows = []
    for u, seq in {
        1: [10, 11, 12, 13, 14],
        2: [11, 12, 13, 15, 16],
        3: [10, 12, 14, 16, 17],
    }.items():
        for t, i in enumerate(seq):
            rows.append((u, i, t, TRAIN))
    rows.append((3, 99, 9, TEST))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp_ms", "split"])


def test_item2vec_uses_training_positives_only_and_is_seeded():
    proto = get_protocol("leave-one-out")
    ids, x = behaviour_embeddings(tiny_log(), proto, dim=3, window=2, seed=1)
    assert ids.tolist() == [10, 11, 12, 13, 14, 15, 16, 17]  # 99 is test-only
    assert x.shape == (8, 3) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    _, y = behaviour_embeddings(tiny_log(), proto, dim=3, window=2, seed=1)
    np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="more than 8 items"):
        behaviour_embeddings(tiny_log(), proto, dim=8)


def test_embedding_files_round_trip_and_refuse_other_ids(tmp_path):
    ids = np.array([5, 7, 9])
    x = np.eye(3, dtype=np.float32)
    save_embeddings(tmp_path, "item_embeddings", ids, x)
    back_ids, back = load_embeddings(tmp_path, "item_embeddings")
    np.testing.assert_array_equal(back_ids, ids)
    np.testing.assert_array_equal(back, x)
    with pytest.raises(ValueError, match="other items"):
        save_embeddings(tmp_path, "aligned_embeddings", np.array([5, 7, 8]), x)
    with pytest.raises(FileNotFoundError, match="reelrec align"):
        load_embeddings(tmp_path, "aligned_embeddings")


def test_check_embeddings_names_bad_rows():
    ids = np.array([4, 5, 6])
    x = np.ones((3, 2), dtype=np.float32)
    x[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"item ids \[5\]"):
        check_embeddings(ids, x, "f.npy")
    with pytest.raises(ValueError, match="mismatched ids"):
        check_embeddings(ids[:2], np.ones((3, 2)), "f.npy")
    with pytest.raises(ValueError, match="floating point"):
        check_embeddings(ids, np.ones((3, 2), dtype=np.int64), "f.npy")


def test_cache_recomputes_empty_and_non_finite_entries(tmp_path):
    enc = HashingEncoder(16)
    texts = ["one", "two"]
    a, _ = encode_cached(enc, texts, tmp_path)
    (entry,) = tmp_path.glob("*.npy")
    entry.write_bytes(b"")  # a 0-byte file (a crash of another tool mid-write)
    b, hit = encode_cached(enc, texts, tmp_path)
    assert not hit
    np.testing.assert_array_equal(a, b)
    np.save(entry, np.full_like(a, np.nan))
    c, hit = encode_cached(enc, texts, tmp_path)
    assert not hit and np.isfinite(c).all()


def test_texts_digest_has_no_separator_collisions():
    from reelrec.content.encoders import texts_digest

    assert texts_digest(["a\x00", "b"]) != texts_digest(["a", "\x00b"])
    assert texts_digest(["ab"]) != texts_digest(["a", "b"])
    with pytest.raises(ValueError, match="not one string"):
        HashingEncoder().encode("abc")


def test_item_texts_refuses_bad_ids():
    with pytest.raises(ValueError, match="item_id must be integers"):
        item_texts(pd.DataFrame({"item_id": [1.5, 2.0], "title": ["a", "b"]}))
    with pytest.raises(ValueError, match="no item_id column"):
        item_texts(pd.DataFrame({"title": ["a"]}))
    with pytest.raises(ValueError, match="empty"):
        item_texts(pd.DataFrame({"item_id": pd.Series([], dtype="int64"), "title": []}))
    with pytest.raises(ValueError, match="do not fit int64"):
        check_embeddings(np.array([2**63 + 1], dtype=np.uint64), np.ones((1, 2)), "f.npy")


def test_unreadable_embedding_files_are_named(tmp_path):
    save_embeddings(tmp_path, "item_embeddings", np.array([1, 2]), np.eye(2, dtype=np.float32))
    (tmp_path / "item_ids.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"item_ids\.npy: not a readable plain \.npy"):
        load_embeddings(tmp_path, "item_embeddings")
    np.save(tmp_path / "item_ids.npy", np.array([1, 2]))
    np.save(tmp_path / "item_embeddings.npy", np.array([[1e40, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(as float32\).*NaN/inf, item ids \[1\]"):
        load_embeddings(tmp_path, "item_embeddings")


def test_metadata_embeddings_are_content_only_idf_weighted_multi_hot():
    """Built in code: equal metadata gives equal vectors, a rare tag weighs more than a common
    type, an item without metadata gets no embedding, a table without metadata is refused."""
    import numpy as np
    import pandas as pd

    from reelrec.content.items import metadata_embeddings
    from reelrec.data.readers import DataFormatError

    items = pd.DataFrame(
        {
            "item_id": [5, 6, 7, 8],
            "tags": [[1, 2], [1, 2], [1], []],
            "video_type": ["NORMAL", "NORMAL", "NORMAL", None],
            "duration_ms": [15000.0, 15000.0, 15000.0, np.nan],
        }
    )
    ids, x = metadata_embeddings(items)
    assert ids.tolist() == [5, 6, 7] and x.dtype == np.float32  # 8 has no metadata: left out
    assert np.allclose(x[0], x[1]) and not np.allclose(x[0], x[2])
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    # tag 2 is on 2 of 4 items, NORMAL on 3: the tag's weight is larger
    # item 5: tag 1, tag 2, NORMAL, one duration bucket; tag 2 is on 2 of 4 items, the rest on 3
    w = x[0][x[0] > 0]
    assert len(w) == 4 and np.isclose(w.max() / w.min(), np.log(4 / 2) / np.log(4 / 3))
    with pytest.raises(DataFormatError, match="no metadata column"):
        metadata_embeddings(items[["item_id"]])


def test_vector_embeddings_weigh_each_modality_equally_whatever_its_scale():
    """Built in code: the acoustic block is 100x smaller than the visual one, yet after
    standardisation each modality carries half of every row's squared norm."""
    import numpy as np
    import pandas as pd

    from reelrec.content.items import vector_embeddings
    from reelrec.data.readers import DataFormatError

    rng = np.random.default_rng(0)
    visual = rng.normal(size=(6, 4)).astype(np.float32) * 100
    audio = rng.normal(size=(6, 3)).astype(np.float32)
    items = pd.DataFrame(
        {"item_id": np.arange(10, 16), "visual": list(visual), "audio": list(audio)}
    )
    items.loc[3, "audio"] = None  # an item without one of its vectors is left out
    ids, x = vector_embeddings(items)
    assert ids.tolist() == [10, 11, 12, 14, 15] and x.shape == (5, 7) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    assert np.allclose((x[:, :4] ** 2).sum(1), 0.5, atol=1e-6)
    with pytest.raises(DataFormatError, match="no vector column"):
        vector_embeddings(items[["item_id"]])
    items.loc[0, "visual"] = np.ones(5, dtype=np.float32)
    with pytest.raises(DataFormatError, match="different widths"):
        vector_embeddings(items)
