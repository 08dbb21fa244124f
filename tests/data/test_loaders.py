"""Every loader on the real files (shared/datasets via REELREC_DATA_DIR), and malformed inputs.

Malformed-input fixtures are tiny files written by the tests themselves (tmp_path).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reelrec.data import sources
from reelrec.data.kuairand import DEV_LOG, load_kuairand
from reelrec.data.movielens import load_ml1m
from reelrec.data.readers import AmbiguousDataError, DataFormatError, read_table, to_numeric
from reelrec.data.segmm import load_segmm, parse_label_array

# (dataset, rows, users, items) from each folder's SOURCE.md
REAL = [
    ("kuairand", 35716, 663, 7942),
    ("kuairand-pure", 185061, 24448, 6153),
    ("amazon-beauty", 198502, 22363, 12101),
    ("amazon-sports", 296337, 35598, 18357),
    ("amazon-toys", 167597, 19412, 11924),
    ("ml-1m", 999611, 6040, 3416),
    ("ml-100k", 100000, 943, 1682),
    ("segmm", 10000, 37, 9123),
    ("microlens", 359708, 50000, 19220),
    ("tiktok", 68722, 9308, 6710),
]


@pytest.mark.parametrize(("name", "rows", "users", "items"), REAL)
def test_real_loader_counts_and_schema(data_root, name, rows, users, items):
    raw = sources.load(name, data_root)
    inter = raw.interactions
    assert len(inter) == rows
    assert inter["user_id"].nunique() == users
    assert inter["item_id"].nunique() == items
    assert inter["user_id"].dtype == np.int64 and inter["item_id"].dtype == np.int64
    assert str(inter["timestamp_ms"].dtype) == "Int64"
    assert set(raw.items["item_id"]) >= set(inter["item_id"])


def test_kuairand_columns_and_missing_duration(data_root):
    raw = sources.load("kuairand", data_root)
    inter = raw.interactions
    for col in ("click", "long_view", "like", "follow", "comment", "forward"):
        assert inter[col].dtype == np.int8 and set(inter[col].unique()) <= {0, 1}
    # 18.5% of rows log duration 0 = unknown: NaN, never a division by zero
    missing = inter["duration_ms"].isna()
    assert raw.notes["duration_ms_zero_as_missing"] == int(missing.sum()) == 6619
    assert inter.loc[missing, "watch_ratio"].isna().all()
    assert np.isfinite(inter.loc[~missing, "watch_ratio"]).all()
    assert inter["like"].sum() == 29049
    # users joined with the KuaiRand user-features table
    assert "user_active_degree" in raw.users.columns and len(raw.users) == 663


def test_kuairand_pure_columns_videos_and_no_statistic_column(data_root):
    from reelrec.data.kuairand import PURE_VIDEO_BASIC

    raw = sources.load("kuairand-pure", data_root)
    inter, items = raw.interactions, raw.items
    for col in ("click", "long_view", "like", "follow", "comment", "forward", "hate"):
        assert inter[col].dtype == np.int8 and set(inter[col].unique()) <= {0, 1}
    assert sorted(inter["date"].unique()) == list(range(20220425, 20220431)) + list(
        range(20220501, 20220506)
    )
    assert inter["tab"].between(0, 14).all() and "is_rand" not in inter.columns
    # SOURCE.md: 7,583 pool videos, 12 basic + 51 statistic columns; only basic ones are read
    assert len(items) == 7583 and len(raw.notes["video_columns_not_read"]) == 51
    kept = set(items.columns) - {"item_id", "tags", "duration_ms"}
    assert kept <= set(PURE_VIDEO_BASIC)
    assert not kept & set(raw.notes["video_columns_not_read"])
    assert items.loc[items["item_id"] == 0, "tags"].item() == [39]
    assert raw.notes["videos_without_tags"] == 96
    assert inter.loc[inter["duration_ms"].isna(), "watch_ratio"].isna().all()
    assert raw.users["user_id"].nunique() == 24448 and raw.notes["users_without_features"] == 0


def test_kuairand_pure_prepare_collapses_duplicates_and_splits_by_day(data_root):
    from reelrec.data.prepare import prepare
    from reelrec.data.splits import get_protocol

    raw = sources.load("kuairand-pure", data_root)
    exact = int(raw.interactions.duplicated().sum())
    prep = prepare(raw, get_protocol("kuairand-pure-temporal"), "kuairand-pure")
    r = prep.report
    # 4,677 exact copies of another row, plus 359 rows equal in user, video, time and every
    # label but not in watch time or scenario: both collapsed to the first (the same event)
    assert exact == 4677 and r["duplicate_events_removed"] == 5036
    assert r["rows_per_split"] == {"train": 149734, "valid": 17200, "test": 13091}
    day = prep.interactions.groupby("split")["date"].agg(["min", "max"])
    assert day.loc[0].tolist() == [20220425, 20220503]
    assert day.loc[1].tolist() == [20220504, 20220504]
    assert day.loc[2].tolist() == [20220505, 20220505]


def test_microlens_titles_order_and_leave_one_out(data_root):
    from reelrec.data.prepare import prepare
    from reelrec.data.splits import TEST, get_protocol

    raw = sources.load("microlens", data_root)
    # SOURCE.md: every item has a title; user 6's sequence ends "... 764 269"; three clips
    assert raw.items["title"].notna().all() and len(raw.items) == 19220
    assert raw.interactions.loc[raw.interactions["user_id"] == 6, "item_id"].tolist()[-2:] == [
        764,
        269,
    ]
    assert raw.notes["video_clips"] == ["1002.mp4", "10034.mp4", "10040.mp4"]
    prep = prepare(raw, get_protocol("leave-one-out"), "microlens")
    r = prep.report
    assert r["rows_per_split"]["test"] == 50000 and r["rows_per_split"]["valid"] == 50000
    last = prep.interactions.groupby("user_id").tail(1)
    assert (last["split"] == TEST).all() and last["item_id"].iloc[5] == 269


def test_tiktok_keeps_its_given_split_and_item_vectors(data_root, tmp_path):
    from reelrec.data.prepare import prepare_run

    raw = sources.load("tiktok", data_root)
    assert raw.notes["rows_per_given_split"] == {"train": 59541, "valid": 3051, "test": 6130}
    assert len(raw.items) == 6710 and raw.notes["item_vectors"] == {"visual": 128, "audio": 128}
    assert raw.items["visual"].iloc[0].dtype == np.float32
    prep = prepare_run(tmp_path / "run", "tiktok", data_dir=str(data_root), log=lambda _: None)
    # the prepared split is the given one, row for row
    assert (prep.interactions["split"] == prep.interactions["given_split"]).all()
    assert prep.report["rows_per_split"] == {"train": 59541, "valid": 3051, "test": 6130}
    per_user = prep.interactions[prep.interactions["split"] > 0].groupby(["user_id", "split"])
    assert per_user.size().max() == 1  # valid and test hold one item per user
    # without timestamps the row order is the clock: a test target's history is the user's
    # train rows and valid row (a temporal cut on missing times once left every history empty)
    from reelrec.data.sequences import build_sequences

    seq = build_sequences(prep.interactions, prep.protocol, 50)
    inter = prep.interactions
    n_train = inter[inter["split"] == 0].groupby("user_id").size()
    n_valid = inter[inter["split"] == 1].groupby("user_id").size()
    for k in (0, 1, 100):
        u = int(seq.test.user_ids[k])
        expected = min(50, n_train.get(u, 0) + n_valid.get(u, 0))
        assert int((seq.test.history[k] > 0).sum()) <= expected
        assert int((seq.test.history[k] > 0).sum()) > 0 or expected == 0
    assert (seq.test.history > 0).any(1).float().mean() > 0.9


def test_tiktok_feature_files_must_agree(tmp_path):
    from reelrec.data.tiktok import load_tiktok

    for name in ("train.csv", "valid.csv", "test.csv"):
        (tmp_path / name).write_text("user_id,item_id\n0,1\n1,2\n")
    np.save(tmp_path / "image_feat.npy", np.ones((3, 4), dtype=np.float16))
    np.save(tmp_path / "audio_feat.npy", np.ones((2, 4), dtype=np.float16))
    with pytest.raises(DataFormatError, match="different row counts"):
        load_tiktok(tmp_path)
    np.save(tmp_path / "audio_feat.npy", np.ones((3, 4), dtype=np.float16))
    (tmp_path / "test.csv").write_text("user_id,item_id\n0,1\n1,3\n")
    with pytest.raises(DataFormatError, match="item 3 has no feature row"):
        load_tiktok(tmp_path)
    (tmp_path / "test.csv").write_text("user_id,item_id\n0,x\n")
    with pytest.raises(DataFormatError, match=r"test.csv, line 2, column 'item_id'"):
        load_tiktok(tmp_path)


def test_microlens_bad_lines_name_file_and_line(tmp_path):
    from reelrec.data.microlens import load_microlens
    from reelrec.data.readers import DataFormatError

    (tmp_path / "MicroLens-50k_pairs.tsv").write_text("1\t5 6 7\n2\t8 x 9\n")
    with pytest.raises(DataFormatError, match=r"MicroLens-50k_pairs.tsv, line 2: .*'x'"):
        load_microlens(tmp_path)
    (tmp_path / "MicroLens-50k_pairs.tsv").write_text("1\t5 6 7\n")
    (tmp_path / "MicroLens-50k_titles.csv").write_text('item,title\n5,"a"\n5,"b"\n')
    with pytest.raises(DataFormatError, match="item 5 has several title rows"):
        load_microlens(tmp_path)
    (tmp_path / "MicroLens-50k_titles.csv").write_text('item,title\n5,"a"\n6,""\n')
    raw = load_microlens(tmp_path)
    assert raw.notes["items_without_title"] == 2  # item 6's title is empty, item 7 has none
    assert raw.items.set_index("item_id")["title"].to_dict() == {5: "a", 6: None, 7: None}
    (tmp_path / "MicroLens-50k_titles.csv").write_text('item,title\n5,"a"\n0,"b"\n')
    with pytest.raises(DataFormatError, match=r"titles.csv, data row 2: item ids start at 1"):
        load_microlens(tmp_path)
    (tmp_path / "MicroLens-50k_pairs.tsv").write_text("\n")
    with pytest.raises(DataFormatError, match="pairs.tsv: no user lines"):
        load_microlens(tmp_path)


@pytest.mark.parametrize("token", ["1_0", "+3", "\u00b2", "--5", "\uff11"])
def test_sequence_files_take_ascii_integers_only(tmp_path, token):
    """int() reads "1_0" as 10 and other scripts' digits; every such token is refused with
    the file and line named (a byte-order mark is read as one)."""
    from reelrec.data.amazon import read_s3rec_sequences
    from reelrec.data.readers import DataFormatError

    path = tmp_path / "seq.txt"
    path.write_text(f"\ufeff1 5 6\n2 7 {token}\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"seq.txt, line 2: expected integer ids"):
        read_s3rec_sequences(path)
    path.write_text("\ufeff1 5 6\n", encoding="utf-8")
    assert read_s3rec_sequences(path) == {1: [5, 6]}


def test_amazon_titles_joined_where_mapped(data_root):
    raw = sources.load("amazon-beauty", data_root)
    titled = raw.items["title"].notna().sum()
    assert titled == 12086  # every SeqRec item; 15 S3-Rec items were dropped there
    assert raw.items["attributes"].map(len).gt(0).all()
    assert raw.notes["title_mapping"]["conflicts"] == 0


def test_ml100k_handles_space_separated_lines(data_root):
    raw = sources.load("ml-100k", data_root)
    assert raw.notes["u.data_lines_with_spaces_not_tabs"] == 2
    first = raw.interactions.iloc[0]
    assert (first["user_id"], first["item_id"], first["rating"]) == (196, 242, 3)
    assert "Toy Story (1995)" in set(raw.items["title"])


def test_segmm_multiline_label_arrays(data_root):
    raw = sources.load("segmm", data_root)
    inter = raw.interactions
    lengths = inter["label_1d"].map(len)
    assert (lengths == np.ceil(inter["duration_ms"] / 5000).astype(int)).all()
    assert lengths.max() > 20  # arrays that wrap over several physical lines were joined
    assert inter["label_1d"].map(lambda a: int((a == 0).sum())).isin([0, 1]).all()


def test_missing_dataset_names_folder_and_source(tmp_path):
    with pytest.raises(sources.DatasetNotFound) as err:
        sources.load("kuairand", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "kuairand-27k-likehate-kcore15") in msg
    assert "kuairand.com" in msg and "REELREC_DATA_DIR" in msg


def test_unknown_dataset_lists_known():
    from reelrec.config import ConfigError

    with pytest.raises(ConfigError, match="amazon-beauty"):  # a user error: one line in the CLI
        sources.get_spec("netflix")


def test_registry_pins_sha256_of_distributed_files(data_root):
    # the digests the downloader checks are those of the reference copies in shared/
    for name in ("amazon-beauty", "segmm"):
        spec = sources.get_spec(name)
        for dl in spec.downloads:
            if dl.sha256:
                assert sources.sha256_file(data_root / spec.folder / dl.target) == dl.sha256


# ---- malformed inputs (CASES.md C11) ------------------------------------------------------


def test_bad_numeric_value_names_file_line_column(tmp_path):
    f = tmp_path / "items.csv"
    f.write_text("item_id,price\nB001,12.99\nB002,\u2014x\nB003,\n", encoding="utf-8")
    df = read_table(f, ",")
    with pytest.raises(DataFormatError, match=r"items\.csv, line 3, column 'price'.*\u2014x"):
        to_numeric(df, "price", f, ",", dtype="float64", nullable=True)


def test_missing_markers_become_nan_and_are_counted(tmp_path):
    f = tmp_path / "items.csv"
    f.write_text("item_id,price\nB001,12.99\nB002,\u2014\nB003,\nB004,N/A\n", encoding="utf-8")
    values, n_missing = to_numeric(
        read_table(f, ","), "price", f, ",", dtype="float64", nullable=True
    )
    assert n_missing == 3
    assert values[0] == 12.99 and np.isnan(values[1:]).all()


def test_required_column_rejects_missing_marker(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("user_id,item_id\n1,2\n-,3\n")
    with pytest.raises(DataFormatError, match=r"line 3, column 'user_id'"):
        to_numeric(read_table(f, ","), "user_id", f, ",")


@pytest.mark.parametrize(("row", "found"), [("4,5", "2"), ("4,5,6,7", "4")])
def test_wrong_field_count_names_line(tmp_path, row, found):
    f = tmp_path / "inter.csv"
    f.write_text(f"a,b,c\n1,2,3\n{row}\n6,7,8\n")
    with pytest.raises(
        DataFormatError, match=rf"inter\.csv, line 3: expected 3 fields, found {found}"
    ):
        read_table(f, ",")


def test_line_numbers_count_physical_lines_in_quoted_fields(tmp_path):
    f = tmp_path / "seg.csv"
    f.write_text('a,b\n1,"[1\n 0]"\n2,"[1 1]"\nx,3\n')
    df = read_table(f, ",")
    assert len(df) == 3
    with pytest.raises(DataFormatError, match="line 5, column 'a'"):
        to_numeric(df, "a", f, ",")


KUAIRAND_HEADER = (
    "user_id\tvideo_id\tdate\thourmin\ttime_ms\tis_click\tis_follow\tis_comment\tis_forward\t"
    "long_view\tplay_time_ms\tduration_ms\tcomment_stay_time\tis_profile_enter\tlabel\ttimestamp\n"
)


def _kuairand_row(user, video, time_ms, click=1, play=8000, duration=10000, label=1, date=20220410):
    return f"{user}\t{video}\t{date}\t1200\t{time_ms}\t{click}\t0\t0\t0\t1\t{play}\t{duration}\t0\t0\t{label}\tx\n"


def test_kuairand_bad_binary_label_names_line(tmp_path):
    (tmp_path / "processed_standard_kcore_15.csv").write_text(
        KUAIRAND_HEADER + _kuairand_row(1, 11, 100) + _kuairand_row(1, 12, 200, label=2)
    )
    with pytest.raises(DataFormatError, match=r"line 3, column 'label'"):
        load_kuairand(tmp_path, None)


def test_kuairand_zero_duration_is_missing(tmp_path):
    (tmp_path / "processed_standard_kcore_15.csv").write_text(
        KUAIRAND_HEADER + _kuairand_row(1, 11, 100, duration=0) + _kuairand_row(1, 12, 200)
    )
    raw = load_kuairand(tmp_path, None)
    assert math.isnan(raw.interactions["duration_ms"][0])
    assert math.isnan(raw.interactions["watch_ratio"][0])
    assert raw.interactions["watch_ratio"][1] == pytest.approx(0.8)
    assert "user_features" in raw.notes


def test_segmm_label_array_checks(tmp_path):
    assert parse_label_array("[ 1  0\n -1]") == [1, 0, -1]
    with pytest.raises(ValueError):
        parse_label_array("[1 2]")
    f = tmp_path / "SegMM_inter_sample.csv"
    f.write_text(
        "user_id,video_id,time_ms,duration_ms,playing_time,label_1D\n"
        '1,5,100,12000,3000,"[ 1  0\n -1]"\n'
        "1,6,200,12000,3000,[1 0]\n"
    )
    with pytest.raises(DataFormatError, match=r"line 4, column 'label_1D': 2 segments"):
        load_segmm(tmp_path)


def test_read_table_missing_column_hints_separator(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("a\tb\n1\t2\n")
    with pytest.raises(DataFormatError, match="separator"):
        read_table(f, ",", required=["a", "b"])


def test_canonical_tables_write_parquet(data_root, tmp_path):
    raw = sources.load("segmm", data_root)
    raw.interactions.to_parquet(tmp_path / "i.parquet")
    back = pd.read_parquet(tmp_path / "i.parquet")
    assert list(back["label_1d"].iloc[0]) == list(raw.interactions["label_1d"].iloc[0])


# ---- exact numbers and ranges (found by trying to break the loaders) ---------------------


def _one_column(tmp_path, values: list[str]):
    f = tmp_path / "n.csv"
    f.write_text("x\n" + "\n".join(values) + "\n")
    return read_table(f, ","), f


def test_integers_stay_exact_above_2_pow_53(tmp_path):
    df, f = _one_column(tmp_path, ["9007199254740993", "9007199254740992", "12.0"])
    values, _ = to_numeric(df, "x", f, ",")
    assert values.tolist() == [9007199254740993, 9007199254740992, 12]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99999999999999999999", "at most 18 digits"),
        ("inf", "an integer"),
        ("1.5", "an integer"),
        ("-3", "outside"),
    ],
)
def test_bad_integers_are_rejected(tmp_path, value, message):
    df, f = _one_column(tmp_path, ["1", value])
    with pytest.raises(DataFormatError, match=rf"line 3, column 'x': .*{message}"):
        to_numeric(df, "x", f, ",", bounds=(0, None))


def test_non_finite_float_is_rejected(tmp_path):
    df, f = _one_column(tmp_path, ["1.5", "inf"])
    with pytest.raises(DataFormatError, match="finite"):
        to_numeric(df, "x", f, ",", dtype="float64")


def test_blank_lines_do_not_shift_reported_line_numbers(tmp_path):
    f = tmp_path / "b.csv"
    f.write_text("x\n1\n\n\n2\nbad\n")
    with pytest.raises(DataFormatError, match="line 6"):
        to_numeric(read_table(f, ","), "x", f, ",")


def test_kuairand_time_out_of_range(tmp_path):
    (tmp_path / "processed_standard_kcore_15.csv").write_text(
        KUAIRAND_HEADER + _kuairand_row(1, 11, 100) + _kuairand_row(1, 12, 10**17)
    )
    with pytest.raises(DataFormatError, match=r"line 3, column 'time_ms': value outside"):
        load_kuairand(tmp_path, None)


# ---- several candidate files in one dataset folder: refuse, never read the first ----------


@pytest.mark.parametrize(
    "names",
    [
        ["processed_standard_kcore_15.csv", DEV_LOG],
        ["processed_standard_kcore_15.a.csv", "processed_standard_kcore_15.b.csv"],
    ],
)
def test_kuairand_two_log_files_are_refused_naming_both(tmp_path, names):
    for name in names:
        (tmp_path / name).write_text(KUAIRAND_HEADER + _kuairand_row(1, 11, 100))
    with pytest.raises(AmbiguousDataError) as err:
        load_kuairand(tmp_path, None)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path) in msg and all(name in msg for name in names)
    assert msg.endswith(f"move the others out (the reference copy is {DEV_LOG})")


def test_ml1m_both_formats_in_one_folder_are_refused(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n")
    (tmp_path / "interactions.csv.gz").write_bytes(b"")
    with pytest.raises(AmbiguousDataError) as err:
        load_ml1m(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg
    assert "interactions.csv.gz" in msg and "ratings.dat" in msg and "keep" in msg


# ---- GroupLens ML-1M '::' files ------------------------------------------------------------


def test_ml1m_grouplens_files_read_in_line_order(tmp_path):
    (tmp_path / "ratings.dat").write_text(
        "1::1193::5::978300760\r\n2::661::3::978302109\r\n\r\n1::914::3::978300760\r\n"
    )
    (tmp_path / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "914::Misérables, Les: Part I (1995)::Drama\n".encode("latin-1")
    )
    raw = load_ml1m(tmp_path)
    inter = raw.interactions
    assert inter["user_id"].tolist() == [1, 2, 1]
    assert inter["item_id"].tolist() == [1193, 661, 914]
    assert inter["rating"].tolist() == [5, 3, 3]
    assert inter["timestamp_ms"].tolist() == [978300760000, 978302109000, 978300760000]
    assert raw.items.set_index("item_id").loc[661, "genres"] == [
        "Animation",
        "Children's",
        "Musical",
    ]
    assert "Misérables, Les: Part I (1995)" in set(raw.items["title"])  # latin-1, one ':' kept


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("2::661::3", r"line 3: expected 4 fields separated by '::', found 3"),
        ("2::661::3::978302109::7", r"line 3: expected 4 fields separated by '::', found 5"),
        ("u2::661::3::978302109", r"line 3, column 'UserID': expected an integer.*'u2'"),
        ("2::661::3::9783021x9", r"line 3, column 'Timestamp': expected an integer.*'9783021x9'"),
        ("2::661::3::", r"line 3, column 'Timestamp': expected an integer.*''"),
        ("2::661::7::978302109", r"line 3, column 'Rating': value outside \[0, 5\]"),
        ("2::-661::3::978302109", r"line 3, column 'MovieID': value outside"),
    ],
)
def test_ml1m_ratings_dat_malformed_names_file_line_column(tmp_path, bad_line, expected):
    (tmp_path / "ratings.dat").write_text(
        f"1::1193::5::978300760\n\n{bad_line}\n3::914::3::978300760\n"
    )
    with pytest.raises(DataFormatError, match=rf"ratings\.dat, {expected}"):
        load_ml1m(tmp_path)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("661::James and the Giant Peach (1996)", r"line 2: expected 3 fields separated by '::'"),
        ("6x1::James and the Giant Peach (1996)::Animation", r"line 2, column 'MovieID'"),
    ],
)
def test_ml1m_movies_dat_malformed_names_file_line_column(tmp_path, bad_line, expected):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n")
    (tmp_path / "movies.dat").write_text(
        f"1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n{bad_line}\n"
    )
    with pytest.raises(DataFormatError, match=rf"movies\.dat, {expected}"):
        load_ml1m(tmp_path)


PURE_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,"
    "is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,"
    "is_profile_enter,is_rand,tab\n"
)
PURE_VIDEO_HEADER = (
    "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
    "server_width,server_height,music_id,music_type,tag,show_cnt\n"
)


def _pure_row(user, video, time_ms, click=1, rand=0, date=20220426):
    return f"{user},{video},{date},1000,{time_ms},{click},0,0,0,0,0,1,5000,10000,0,0,0,{rand},1\n"


def _pure_folder(tmp_path, log: str, tags=("39", "2,7")) -> Path:
    folder = tmp_path / "kuairand-pure-standard-late"
    folder.mkdir()
    (folder / "log_standard_20220425_to_20220505_pure.csv").write_text(PURE_HEADER + log)
    rows = "".join(
        f'{v},a{v},NORMAL,2022-04-10,Web,0.0,10000.0,720.0,1280.0,m{v},9.0,"{t}",5\n'
        for v, t in zip((11, 12), tags, strict=True)
    )
    (folder / "video_features_basic_statistic_pure.csv").write_text(PURE_VIDEO_HEADER + rows)
    return folder


def test_kuairand_pure_drops_random_exposure_rows_and_reads_basic_video_columns(tmp_path):
    from reelrec.data.kuairand import load_kuairand_pure

    folder = _pure_folder(tmp_path, _pure_row(1, 11, 100) + _pure_row(1, 12, 200, rand=1))
    raw = load_kuairand_pure(folder, None)
    assert len(raw.interactions) == 1 and raw.notes["random_exposure_rows_dropped"] == 1
    assert raw.notes["video_columns_not_read"] == ["show_cnt"]
    assert raw.items["tags"].tolist() == [[39], [2, 7]]
    assert raw.items["music_type"].tolist() == ["9", "9"]  # "9.0" is category 9


def test_kuairand_pure_bad_values_name_the_physical_line(tmp_path):
    from reelrec.data.kuairand import load_kuairand_pure

    log = _pure_row(1, 11, 100) + "\n\n" + _pure_row(1, 12, 200, click=2)
    folder = _pure_folder(tmp_path, log)
    with pytest.raises(DataFormatError, match=r"line 5, column 'is_click': expected 0 or 1"):
        load_kuairand_pure(folder, None)
    other = tmp_path / "other"
    other.mkdir()
    folder = _pure_folder(other, _pure_row(1, 11, 100), tags=("39", "9" * 23))
    with pytest.raises(DataFormatError, match=r"line 3, column 'tag'.*at most 18 digits"):
        load_kuairand_pure(folder, None)


def test_a_dataset_without_official_downloads_is_refused_by_fetch(tmp_path):
    with pytest.raises(sources.DatasetNotFound, match="no automatic download"):
        sources.fetch("kuairand-pure", tmp_path, log=lambda s: None)
    assert not any(tmp_path.iterdir())  # nothing created


def test_kuairec_captions_counts_and_the_readme_row(data_root):
    """SOURCE.md: 10,728 videos, cover text 37.6%, caption 87.4%, topic tags 57%, 7,176 users,
    four captions with bare carriage returns; video 2418 is the README's example row."""
    from reelrec.data.kuairec import load_kuairec_captions

    cat = load_kuairec_captions(data_root / "kuairec-caption-category")
    items, n = cat.items, cat.notes
    assert len(items) == 10728 and items["item_id"].tolist() == list(range(10728))
    assert (n["items_with_cover_text"], n["items_with_caption"]) == (4033, 9372)
    assert n["items_with_topic_tags"] == 6117 and n["captions_with_carriage_returns"] == 4
    assert len(cat.users) == 7176 and n["items_without_tags"] == 0
    row = items.set_index("item_id").loc[2418]
    assert row["cover_text"] == "被小可爱发现了" and row["caption"].startswith("这是什么狗狗")
    assert "博美俊介" in row["topic_tags"]
    assert (row["category1_name"], row["category2_name"], row["category3_name"]) == (
        "宠物",
        "宠物日常记录",
        "宠物狗",
    )
    assert items["category1"].notna().sum() == 10688  # -124 = no category: NA, never an id
    assert not items["caption"].dropna().str.contains("\r").any()


def test_kuairec_captions_bad_rows_name_the_line(tmp_path):
    from reelrec.data.kuairec import CAPTION_COLUMNS, load_kuairec_captions

    head = ",".join(CAPTION_COLUMNS)
    row = "{id},UNKNOWN,hi\r there,[],8,a,{c2},b,-124,UNKNOWN"
    path = tmp_path / "kuairec_caption_category.csv"
    path.write_bytes(
        "\n".join([head, row.format(id=0, c2=5), row.format(id=1, c2="x")]).encode() + b"\n"
    )
    with pytest.raises(DataFormatError, match=r"line 3, column 'second_level_category_id'"):
        load_kuairec_captions(tmp_path)
    path.write_bytes(
        "\n".join([head, row.format(id=0, c2=5), row.format(id=0, c2=5)]).encode() + b"\n"
    )
    with pytest.raises(DataFormatError, match=r"line 3: video 0 appears again"):
        load_kuairec_captions(tmp_path)
    path.write_bytes("\n".join([head, row.format(id=7, c2=-124)]).encode() + b"\n")
    cat = load_kuairec_captions(tmp_path)  # the bare \r stays inside its caption
    assert cat.items["caption"].tolist() == ["hi  there"] and cat.items["category2"].isna().all()
