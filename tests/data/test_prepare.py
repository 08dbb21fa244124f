"""prepare (dedup, stable sort, ties), splits (leave-one-out, temporal) and sequence building.

Inputs are tiny tables built in code from the CASES.md examples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reelrec.data.prepare import prepare, read_prepared, write_prepared
from reelrec.data.sequences import ItemVocab, build_sequences, windows
from reelrec.data.splits import TEST, TRAIN, VALID, Protocol, assign_splits, get_protocol
from reelrec.data.tables import RawTables

LOO = get_protocol("leave-one-out")


def _raw(rows: list[dict]) -> RawTables:
    inter = pd.DataFrame(rows)
    inter["timestamp_ms"] = inter["timestamp_ms"].astype("Int64")
    items = pd.DataFrame({"item_id": sorted(inter["item_id"].unique())})
    users = pd.DataFrame({"user_id": sorted(inter["user_id"].unique())})
    return RawTables(inter, items, users)


def test_c08_equal_timestamps_keep_file_order():
    rows = [
        {"user_id": 1, "item_id": 42, "timestamp_ms": 100},
        {"user_id": 1, "item_id": 7, "timestamp_ms": 100},
        {"user_id": 1, "item_id": 19, "timestamp_ms": 100},
        {"user_id": 1, "item_id": 3, "timestamp_ms": 200},
    ]
    prep = prepare(_raw(rows), LOO, "toy")
    inter = prep.interactions
    assert inter["item_id"].tolist() == [42, 7, 19, 3]
    assert inter.loc[inter["split"] == TEST, "item_id"].tolist() == [3]
    assert inter.loc[inter["split"] == VALID, "item_id"].tolist() == [19]
    assert prep.report["tie_groups"] == 1 and prep.report["rows_in_tie_groups"] == 3


def test_c09_merged_unsorted_logs_are_sorted_with_columns_aligned():
    file1 = [
        {
            "user_id": 1,
            "item_id": 11,
            "timestamp_ms": 1650000300000,
            "click": 1,
            "play_time_ms": 8000.0,
        },
        {
            "user_id": 1,
            "item_id": 12,
            "timestamp_ms": 1650000100000,
            "click": 0,
            "play_time_ms": 900.0,
        },
    ]
    file2 = [
        {
            "user_id": 1,
            "item_id": 13,
            "timestamp_ms": 1650000200000,
            "click": 1,
            "play_time_ms": 15000.0,
        }
    ]
    prep = prepare(_raw(file1 + file2), LOO, "toy")
    inter = prep.interactions
    assert inter["item_id"].tolist() == [12, 13, 11]
    assert inter["click"].tolist() == [0, 1, 1]
    assert inter["play_time_ms"].tolist() == [900.0, 15000.0, 8000.0]
    assert prep.report["rows_out_of_time_order"] == 1


def test_duplicate_events_collapsed_and_counted():
    rows = [
        {"user_id": 1, "item_id": 5, "timestamp_ms": 10, "like": 1, "hourmin": 1700},
        {"user_id": 1, "item_id": 5, "timestamp_ms": 10, "like": 1, "hourmin": 1800},
        {"user_id": 1, "item_id": 5, "timestamp_ms": 10, "like": 0, "hourmin": 1800},
        {"user_id": 1, "item_id": 6, "timestamp_ms": 20, "like": 1, "hourmin": 1800},
    ]
    prep = prepare(_raw(rows), LOO, "toy")
    assert prep.report["duplicate_events_removed"] == 1
    assert len(prep.interactions) == 3


def test_order_only_rows_are_never_collapsed():
    rows = [{"user_id": 1, "item_id": i, "timestamp_ms": None} for i in (4, 4, 9)]
    prep = prepare(_raw(rows), LOO, "toy")
    assert prep.interactions["item_id"].tolist() == [4, 4, 9]
    assert prep.report["duplicate_events_removed"] == 0


def test_leave_one_out_counts_per_user():
    df = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 3]})
    split = assign_splits(df, LOO)
    assert split.tolist() == [TRAIN, TRAIN, VALID, TEST, TRAIN, TEST, TRAIN]


def test_leave_one_out_over_positive_rows_only():
    proto = Protocol("p", "leave_one_out", positive="like")
    df = pd.DataFrame({"user_id": [1, 1, 1, 1, 1], "like": [1, 1, 0, 1, 0]})
    assert assign_splits(df, proto).tolist() == [TRAIN, VALID, TRAIN, TEST, TRAIN]


def test_temporal_split_by_day_and_drops_later_days():
    proto = get_protocol("kuairand-temporal")
    df = pd.DataFrame({"user_id": 1, "date": [20220408, 20220416, 20220417, 20220418, 20220419]})
    assert assign_splits(df, proto).tolist() == [TRAIN, TRAIN, VALID, TEST, -1]


def test_windows_cover_every_target_once():
    seq = np.arange(1, 12)
    ws = windows(seq, max_len=4)
    targets = sorted(int(t) for w in ws for t in w[1:])
    assert targets == list(range(2, 12))  # every item after the first is a target exactly once
    assert all(len(w) <= 5 for w in ws)


def test_vocab_never_maps_a_real_item_to_padding():
    vocab = ItemVocab.fit(np.array([0, 7, 3, 3]))  # raw id 0 is a real item here
    enc = vocab.encode(np.array([0, 3, 7, 99]))
    assert enc.tolist() == [1, 2, 3, -1]
    assert vocab.decode(np.array([1, 2, 3, 0, -1])).tolist() == [0, 3, 7, -1, -1]


def test_temporal_history_excludes_equal_and_later_times():
    proto = Protocol(
        "t", "temporal", positive="like", day_column="date", valid_from=2, test_from=3, test_until=3
    )
    rows = [
        {"user_id": 1, "item_id": 10, "timestamp_ms": 1, "date": 1, "like": 1},
        {"user_id": 1, "item_id": 11, "timestamp_ms": 2, "date": 1, "like": 1},
        {"user_id": 1, "item_id": 12, "timestamp_ms": 3, "date": 2, "like": 1},
        {"user_id": 1, "item_id": 10, "timestamp_ms": 4, "date": 3, "like": 1},
        {"user_id": 1, "item_id": 11, "timestamp_ms": 4, "date": 3, "like": 1},  # same time
        {"user_id": 1, "item_id": 99, "timestamp_ms": 5, "date": 3, "like": 0},  # not positive
        {"user_id": 1, "item_id": 13, "timestamp_ms": 6, "date": 3, "like": 1},  # unseen in train
    ]
    prep = prepare(_raw(rows), proto, "toy")
    data = build_sequences(prep.interactions, proto, max_len=4)
    assert data.vocab.raw_ids.tolist() == [10, 11]
    # valid: target 12 is out of vocabulary (-1); history = train items
    assert data.valid.target.tolist() == [-1]
    assert data.valid.history.tolist() == [[0, 0, 1, 2]]
    # test rows at t=4 share a timestamp: neither is in the other's history; 12 is OOV (dropped)
    assert data.test.target.tolist() == [1, 2, -1]
    assert data.test.history.tolist() == [[0, 0, 1, 2], [0, 0, 1, 2], [1, 2, 1, 2]]
    assert data.train_counts.tolist() == [0, 1, 1]


def test_prepared_round_trip(tmp_path):
    rows = [
        {"user_id": u, "item_id": i, "timestamp_ms": t}
        for u, i, t in [(1, 5, 1), (1, 6, 2), (1, 7, 3), (2, 5, 1)]
    ]
    prep = prepare(_raw(rows), LOO, "toy")
    write_prepared(prep, tmp_path)
    back = read_prepared(tmp_path)
    pd.testing.assert_frame_equal(back.interactions, prep.interactions)
    assert back.protocol == LOO
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_read_prepared_missing_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="reelrec prepare"):
        read_prepared(tmp_path)


def test_kuairand_prepare_report_on_real_data(data_root):
    from reelrec.data import sources

    prep = prepare(
        sources.load("kuairand", data_root), get_protocol("kuairand-temporal"), "kuairand"
    )
    r = prep.report
    assert r["duplicate_events_removed"] == 93  # CASES.md C08 local check
    assert r["rows"] == 35716 - 93
    assert r["rows_per_split"] == {"train": 29945, "valid": 3458, "test": 2220}
    inter = prep.interactions
    ts = inter["timestamp_ms"].to_numpy(dtype="int64")
    same = inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1]
    assert (ts[1:][same] >= ts[:-1][same]).all()


def test_prepare_refuses_a_split_without_positives():
    from reelrec.data.readers import DataFormatError

    proto = get_protocol("kuairand-temporal")
    rows = [
        {"user_id": 1, "item_id": i, "timestamp_ms": i, "date": 20220410, "like": 1}
        for i in range(5)
    ]
    with pytest.raises(DataFormatError, match="no positive rows .* in the valid, test split"):
        prepare(_raw(rows), proto, "toy")
