"""Tests for reelrec.data.amazon_titles (S3-Rec -> SeqRec item id mapping)."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import pytest

from reelrec.data.amazon_titles import MappingResult, map_s3rec_to_seqrec

# --------------------------------------------------------------------------------------------
# Synthetic fixture, built in code (no file): one set of fake "raw" sequences over item names,
# processed twice with different id schemes.  Processing A (S3-Rec-like) numbers items 1.. in
# order of first appearance; processing B (SeqRec-like) drops item "x", re-5-cores (which
# removes the one user left with 4 items) and numbers items 100.. in sorted-name order, with
# its own user ids in reverse order.
# --------------------------------------------------------------------------------------------
_RAW = {
    "u01": ["a", "b", "c", "d", "e", "f"],
    "u02": ["b", "c", "g", "h", "i"],
    "u03": ["a", "d", "g", "j", "k", "l", "m"],
    "u04": ["c", "e", "h", "j", "n"],
    "u05": ["a", "f", "i", "k", "n", "o"],
    "u06": ["b", "d", "l", "o", "x", "p", "q"],
    "u07": ["e", "g", "m", "p", "q", "r"],
    "u08": ["f", "h", "j", "r", "x", "s"],
    "u09": ["a", "c", "k", "n", "o", "s", "t"],
    "u10": ["i", "l", "p", "r", "t", "x"],
    "u11": ["x", "m", "q", "s", "t"],  # 4 items once "x" is dropped: removed by re-5-coring
    "u12": ["b", "g", "o", "q", "t", "s", "d"],
}
_DROPPED = {"x"}


def _process_a(raw: dict[str, list[str]]) -> tuple[dict[int, list[int]], dict[str, int]]:
    ids: dict[str, int] = {}
    seqs: dict[int, list[int]] = {}
    for n, user in enumerate(sorted(raw), start=1):
        seqs[n] = [ids.setdefault(item, len(ids) + 1) for item in raw[user]]
    return seqs, ids


def _process_b(raw: dict[str, list[str]]) -> tuple[dict[int, list[int]], dict[str, int]]:
    kept = {u: [i for i in s if i not in _DROPPED] for u, s in raw.items()}
    kept = {u: s for u, s in kept.items() if len(s) >= 5}
    ids = {item: 100 + k for k, item in enumerate(sorted({i for s in kept.values() for i in s}))}
    users = sorted(kept, reverse=True)
    seqs = {500 + n: [ids[i] for i in kept[u]] for n, u in enumerate(users)}
    return seqs, ids


def test_synthetic_two_processings_recover_map() -> None:
    a, a_ids = _process_a(_RAW)
    b, b_ids = _process_b(_RAW)
    expected = {a_ids[name]: b_ids[name] for name in b_ids}

    result = map_s3rec_to_seqrec(a, b)

    assert isinstance(result, MappingResult)
    assert result.item_map == expected
    assert a_ids["x"] not in result.item_map
    assert result.n_items_mapped == len(b_ids) == len(a_ids) - 1
    assert result.n_users_matched == len(b) == len(a) - 1
    assert result.n_users_exact == len(b)
    assert result.n_conflicts == 0


def test_synthetic_deterministic_under_reordering() -> None:
    a, _ = _process_a(_RAW)
    b, _ = _process_b(_RAW)
    first = map_s3rec_to_seqrec(a, b)
    a_rev = {u: a[u] for u in reversed(list(a))}
    b_relabelled = {7 * v: s for v, s in reversed(list(b.items()))}
    again = map_s3rec_to_seqrec(a_rev, b_relabelled)
    assert again.item_map == first.item_map
    assert again.n_users_exact == first.n_users_exact


def test_identical_inputs_map_to_themselves() -> None:
    a, _ = _process_a(_RAW)
    result = map_s3rec_to_seqrec(a, a)
    assert result.item_map == {i: i for s in a.values() for i in s}
    assert result.n_users_exact == len(a)
    assert result.n_conflicts == 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        map_s3rec_to_seqrec({}, {1: [1, 2]})
    with pytest.raises(ValueError):
        map_s3rec_to_seqrec({1: []}, {1: [1, 2]})
    with pytest.raises(ValueError):
        map_s3rec_to_seqrec({1: [1]}, {1: [1]}, max_rounds=0)
    with pytest.raises(TypeError):
        map_s3rec_to_seqrec([[1, 2]], {1: [1, 2]})  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Real data (Beauty): small local readers, the package loaders live elsewhere.
# --------------------------------------------------------------------------------------------
def _data_dir() -> Path:
    root = os.environ.get("REELREC_DATA_DIR")
    if not root:
        pytest.skip("REELREC_DATA_DIR is not set")
    return Path(root)


def _read_s3rec(path: Path) -> dict[int, list[int]]:
    seqs: dict[int, list[int]] = {}
    with path.open() as fh:
        for line in fh:
            user, *items = (int(x) for x in line.split())
            seqs[user] = items
    return seqs


def _read_seqrec(path: Path) -> dict[int, list[int]]:
    rows: dict[int, list[tuple[int, int]]] = {}
    with gzip.open(path, "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(int(row["UserID"]), []).append((int(row["Position"]), int(row["ItemID"])))
    return {u: [item for _, item in sorted(r)] for u, r in rows.items()}


def _read_titles(path: Path) -> dict[int, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {int(row["ItemID"]): row["Title"] for row in csv.DictReader(fh)}


@pytest.mark.data
def test_beauty_real_mapping_verified() -> None:
    root = _data_dir()
    s3_path = root / "amazon-beauty-sports-toys-s3rec" / "Beauty.txt"
    sq_dir = root / "amazon2014-beauty-seqrec"
    if not s3_path.is_file() or not (sq_dir / "interactions.csv.gz").is_file():
        pytest.skip("Beauty S3-Rec or SeqRec files are missing")
    s3 = _read_s3rec(s3_path)
    sq = _read_seqrec(sq_dir / "interactions.csv.gz")
    n_s3_items = len({i for s in s3.values() for i in s})
    n_sq_items = len({i for s in sq.values() for i in s})
    assert (len(s3), n_s3_items, len(sq), n_sq_items) == (22363, 12101, 22332, 12086)

    result = map_s3rec_to_seqrec(s3, sq)

    # Measured: 12,086 items (all SeqRec items), 22,332 users matched, all exact, 0 conflicts.
    assert result.n_items_mapped >= 12_050  # >= 99.5 % of the 12,101 S3-Rec items
    assert result.n_items_mapped <= n_sq_items
    assert result.n_users_matched >= 22_250
    assert result.n_users_exact >= 0.99 * result.n_users_matched
    assert result.n_conflicts == 0
    assert len(set(result.item_map.values())) == len(result.item_map)

    titles = _read_titles(sq_dir / "item2title.csv")
    assert set(result.item_map.values()) <= titles.keys()
    # Spot checks (docs/amazon-title-mapping.md): brand attributes vs mapped titles.
    assert "OPI" in titles[result.item_map[1]]
    assert "Matrix" in titles[result.item_map[5000]]
    assert "Brush" in titles[result.item_map[100]]
