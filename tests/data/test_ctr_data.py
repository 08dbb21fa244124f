"""Ranking samples: counters and histories only see strictly earlier rows, vocabularies are
fitted on train, and the real Taobao/Criteo/Avazu samples load (tiny frames built in code where
said)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reelrec.data.ctr import (
    FeatureConfig,
    avazu_ctr,
    criteo_ctr,
    fit_vocab,
    kuairand_ctr,
    prior_counts,
    recent_history,
    taobao_ctr,
)


def test_prior_counts_exclude_the_row_itself_and_rows_at_the_same_time():
    keys = np.array([7, 7, 7, 7, 9])
    time = np.array([30, 10, 20, 20, 20])  # not sorted: the output keeps the input order
    vals = np.array([[1.0], [1.0], [0.0], [1.0], [1.0]])
    count, sums = prior_counts(keys, time, vals)
    assert count.tolist() == [3, 0, 1, 1, 0]
    assert sums[:, 0].tolist() == [2.0, 0.0, 1.0, 1.0, 0.0]


def test_recent_history_is_strictly_earlier_newest_last_and_left_padded():
    users = np.array([1, 1, 1, 1, 2, 2])
    time = np.array([1, 2, 2, 5, 1, 3])
    items = np.array([11, 12, 13, 14, 21, 22])
    positive = np.array([True, True, True, False, True, True])
    h = recent_history(users, time, items, positive, 2)
    assert h.tolist() == [[0, 0], [0, 11], [0, 11], [12, 13], [0, 0], [0, 21]]
    with pytest.raises(ValueError, match="sorted"):
        recent_history(users[::-1].copy(), time, items, positive, 2)


def test_fit_vocab_knows_only_the_fitted_rows():
    codes, size = fit_vocab(
        np.array(["a", "b", "c", None, "a"], dtype=object),
        np.array([True, True, False, True, False]),
    )
    assert size == 4 and codes.tolist() == [2, 3, 1, 1, 2]


def _tiny_kuairand() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five impressions of two users (built in code), split 0 0 0 1 2."""
    inter = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2],
            "item_id": [100, 101, 102, 100, 103],
            "timestamp_ms": [10, 20, 30, 40, 50],
            "hourmin": [900, 1000, 1100, 1200, 2300],
            "duration_ms": [12000.0, np.nan, 4000.0, 12000.0, 400000.0],
            "click": [1, 0, 1, 1, 0],
            "long_view": [1, 0, 0, 1, 0],
            "like": [1, 0, 1, 1, 0],
            "follow": 0,
            "comment": 0,
            "forward": 0,
            "watch_ratio": [1.0, np.nan, 0.5, 9.0, 0.1],
            "split": [0, 0, 0, 1, 2],
        }
    )
    users = pd.DataFrame({"user_id": [1, 2], "user_active_degree": ["high", "low"]})
    return inter, users


def test_kuairand_samples_fit_vocabularies_on_train_and_use_only_the_past():
    inter, users = _tiny_kuairand()
    d = kuairand_ctr(inter, users, FeatureConfig(max_history=3))
    f = d.fields.index
    video = d.sparse[:, f("video_id")].tolist()
    assert video == [2, 3, 4, 2, 1]  # 103 appears only in test: unknown
    assert d.sparse[:, f("user_user_active_degree")].tolist() == [
        2,
        2,
        2,
        2,
        1,
    ]  # low: not in train
    assert d.sparse[:, f("video_views")].tolist()[3] == 2 + 1  # one earlier view of video 100
    assert d.sparse[:, f("duration")].tolist()[1] == 1  # unknown duration
    # history of row 3: the earlier liked/long-viewed rows 0 and 2 (not row 1), newest last
    assert d.history[3, 0].tolist() == [0, 2, 4]
    assert d.labels[3, d.tasks.index("watch_ratio")].item() == 3.0  # clipped
    assert np.isnan(d.labels[1, d.tasks.index("watch_ratio")].item())


def _tiny_pure() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The tiny log with KuaiRand-Pure's extra columns: a scenario and a video table."""
    inter, users = _tiny_kuairand()
    inter["tab"] = [1, 1, 4, 1, 2]
    items = pd.DataFrame(
        {
            "item_id": [100, 101, 102, 103],
            "duration_ms": [12000.0, np.nan, 4000.0, 400000.0],
            "author_id": ["a", "b", "a", "c"],
            "music_id": ["m1", None, "m2", "m3"],
            "music_type": ["9", "9", "4", None],
            "video_type": ["NORMAL"] * 4,
            "upload_type": ["Web", "Kmovie", "Web", "Web"],
            "tags": [[39, 2], [], [2], [7]],
        }
    )
    return inter, users, items


def test_pure_features_hold_video_fields_and_no_statistic_column(data_root):
    """The feature list of the real KuaiRand-Pure samples: video basic fields and the scenario,
    never one of the 51 month-aggregate statistic columns of the video table."""
    from reelrec.data import sources
    from reelrec.data.prepare import prepare
    from reelrec.data.splits import get_protocol

    raw = sources.load("kuairand-pure", data_root)
    statistic = raw.notes["video_columns_not_read"]
    prep = prepare(raw, get_protocol("kuairand-pure-temporal"), "kuairand-pure")
    cfg = FeatureConfig(max_history=5, history_labels=["click", "long_view"])
    d = kuairand_ctr(prep.interactions, prep.users, cfg, ["click"], items=prep.items)
    names = [*d.fields, *d.sequences, *d.bags]
    assert len(statistic) == 51
    # video fields are named video_<column>; user_follow_user_num is the user table's own
    # column (how many accounts the user follows), not the video statistic of that name
    for col in statistic:
        assert col not in names and f"video_{col}" not in names, col
    for f in ("video_author_id", "video_music_id", "video_tag", "tab", "video_views"):
        assert f in d.fields
    assert d.bags == ["video_tags"]


def test_pure_item_fields_scenario_and_tag_bag():
    inter, users, items = _tiny_pure()
    d = kuairand_ctr(inter, users, FeatureConfig(max_history=3), items=items)
    f = d.fields.index
    assert d.sparse[:, f("video_author_id")].tolist() == [2, 3, 2, 2, 1]  # c: not in train
    assert d.sparse[:, f("video_music_id")].tolist()[1] == 1  # missing: unknown
    assert d.sparse[:, f("video_tag")].tolist() == [2, 1, 3, 2, 1]  # first tag; none: unknown
    assert d.sparse[:, f("tab")].tolist() == [2, 2, 3, 2, 1]  # tab 2: test only, unknown
    # tags bag: train vocabulary 39 -> 1, 2 -> 2; tag 7 (test only) -> 0 (absent)
    assert d.bag[:, 0].tolist() == [[1, 2], [0, 0], [2, 0], [1, 2], [0, 0]]
    off = kuairand_ctr(
        inter, users, FeatureConfig(item_features=False, scenario=False), items=items
    )
    item_fields = [n for n in off.fields if n.startswith("video_") and n != "video_id"]
    assert all(n.endswith(("_rate", "_views")) for n in item_fields)  # counters only
    assert "tab" not in off.fields and off.bags == []


def test_request_features_reproduce_pure_rows_with_their_scenario():
    """KuaiRand-Pure samples (video fields, tag bag, scenario) rebuilt from (user, video, time,
    hour, tab) equal the logged rows; without a tab a request gets the most frequent one."""
    from reelrec.data.ctr import RequestFeatures

    inter, users, items = _tiny_pure()
    cfg = FeatureConfig(max_history=3, history_labels=["click", "long_view"])
    d = kuairand_ctr(inter, users, cfg, items=items)
    feats = RequestFeatures(d, inter, cfg)
    args = (
        inter["user_id"].to_numpy(),
        inter["item_id"].to_numpy(),
        inter["timestamp_ms"].to_numpy(),
        inter["hourmin"].to_numpy() // 100,
    )
    b = feats.batch(*args, tabs=inter["tab"].to_numpy())
    assert b.sparse.tolist() == d.sparse.tolist()
    assert b.history.tolist() == d.history.tolist() and b.bag.tolist() == d.bag.tolist()
    tab = d.fields.index("tab")
    assert feats.batch(*args).sparse[:, tab].tolist() == [2] * 5  # tab 1: 2 of 3 train rows


def test_a_video_missing_from_the_items_table_has_no_tags_and_unknown_fields():
    inter, users, items = _tiny_pure()
    d = kuairand_ctr(inter, users, FeatureConfig(), items=items[items["item_id"] != 102])
    row = 2  # video 102
    assert d.bag[row, 0].tolist() == [0, 0]
    assert d.sparse[row, d.fields.index("video_author_id")] == 1


def test_raw_user_counts_and_dropped_fields():
    inter, users, items = _tiny_pure()
    users["fans_user_num"] = [12, 3000]
    users["fans_user_num_range"] = ["10-100", "1k-5k"]
    full = kuairand_ctr(inter, users, FeatureConfig(), items=items)
    assert {"user_fans_user_num", "user_fans_user_num_range"} <= set(full.fields)
    ranged = kuairand_ctr(inter, users, FeatureConfig(user_raw_counts=False), items=items)
    assert "user_fans_user_num" not in ranged.fields
    assert "user_fans_user_num_range" in ranged.fields
    dropped = kuairand_ctr(inter, users, FeatureConfig(drop=["user_id", "tab"]), items=items)
    assert "user_id" not in dropped.fields and "tab" not in dropped.fields
    # the history still points at video_id's column after the columns moved
    assert dropped.fields[dropped.seq_target[0]] == "video_id"
    assert dropped.history.tolist() == full.history.tolist()
    from reelrec.config import ConfigError

    for bad in (["video_id"], ["no_such_field"]):
        with pytest.raises(ConfigError, match="features.drop"):
            kuairand_ctr(inter, users, FeatureConfig(drop=bad), items=items)


@pytest.mark.parametrize("user_counters", ["realtime", "daily"])
@pytest.mark.parametrize("row", [0, 2, 3])
def test_a_rows_own_labels_never_reach_its_features(row, user_counters):
    """Flip every label of one row: that row's features (counters, history, all fields) stay
    the same; only later rows may change."""
    inter, users, items = _tiny_pure()
    cfg = FeatureConfig(
        max_history=3, history_labels=["click", "long_view"], user_counters=user_counters
    )
    a = kuairand_ctr(inter, users, cfg, items=items)
    flipped = inter.copy()
    for col in ("click", "long_view", "like", "follow", "comment", "forward"):
        flipped.loc[row, col] = 1 - flipped.loc[row, col]
    b = kuairand_ctr(flipped, users, cfg, items=items)
    assert a.sparse[row].tolist() == b.sparse[row].tolist()
    assert a.history[row].tolist() == b.history[row].tolist()
    assert a.bag[row].tolist() == b.bag[row].tolist()
    earlier = np.flatnonzero(inter["timestamp_ms"] <= inter.loc[row, "timestamp_ms"])
    assert a.sparse[earlier].tolist() == b.sparse[earlier].tolist()


def test_missing_semantic_ids_name_the_command(tmp_path):
    inter, users = _tiny_kuairand()
    with pytest.raises(FileNotFoundError, match="reelrec tokenize"):
        kuairand_ctr(inter, users, FeatureConfig(semantic_ids="tokenizer"), run_dir=tmp_path)


def test_real_smoke_samples_load(data_root):
    t = taobao_ctr(data_root / "taobao-userbehavior-head" / "UserBehavior.csv")
    assert len(t) == 4321 and t.sequences == ["hist_item", "hist_category"]
    assert 0 < float(t.labels.mean()) < 0.5 and set(np.unique(t.split)) == {0, 1, 2}
    c = criteo_ctr(data_root / "criteo-avazu-samples" / "criteo")
    assert (
        len(c) == 8000 and len(c.fields) == 39 and np.bincount(c.split).tolist() == [7200, 409, 391]
    )
    a = avazu_ctr(data_root / "criteo-avazu-samples" / "avazu")
    assert np.bincount(a.split).tolist() == [8087, 480, 432]  # SOURCE.md: 8,087 / 480 / 432 rows
    assert "click" not in a.fields and "id" not in a.fields


def _two_day_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    """User 1: two impressions late on Beijing day 1 (23:00, 23:30), two on day 2 (00:10 and
    09:00); user 2: one impression on day 2. Day 1 starts at 2022-05-04 00:00 Beijing time,
    which is 2022-05-03 16:00 UTC."""
    day1 = 1_651_593_600_000  # 2022-05-03T16:00:00Z
    hour = 3_600_000
    times = [day1 + 23 * hour, day1 + 23 * hour + hour // 2, day1 + 24 * hour + 600_000]
    times += [day1 + 33 * hour, day1 + 30 * hour]
    inter, users = _tiny_kuairand()  # the same users and columns, other rows
    inter["item_id"] = [100, 101, 100, 101, 100]
    inter["timestamp_ms"] = times
    inter["hourmin"] = [2300, 2330, 10, 900, 600]
    inter["duration_ms"] = 10_000.0
    inter["click"] = [1, 0, 1, 0, 1]
    inter["long_view"] = [0, 0, 1, 0, 1]
    inter["like"] = [1, 0, 0, 0, 0]
    inter["watch_ratio"] = 1.0
    inter["split"] = [0, 0, 1, 1, 2]
    return inter, users


def test_daily_user_counters_count_only_earlier_beijing_days():
    """``user_counters="daily"``: the user's counters count the rows of strictly earlier
    Beijing-time days (constant over the user's day; 00:10 Beijing is still 16:10 UTC of the
    previous UTC day), the video's stay real-time; ``RequestFeatures`` rebuilds the same rows."""
    from reelrec.data.ctr import RequestFeatures, day_start_ms

    inter, users = _two_day_log()
    assert (
        day_start_ms(inter["timestamp_ms"].to_numpy()).tolist()
        == [1_651_593_600_000] * 2 + [1_651_680_000_000] * 3
    )
    real = kuairand_ctr(inter, users, FeatureConfig(max_history=3))
    cfg = FeatureConfig(max_history=3, user_counters="daily")
    daily = kuairand_ctr(inter, users, cfg)
    f = daily.fields.index
    # floor(log2(n + 1)) + 2: 0 rows -> 2, 1..2 -> 3, 3..6 -> 4; rates: 10 buckets + 2, and
    # 12 = no earlier row
    assert real.sparse[:, f("user_views")].tolist() == [2, 3, 3, 4, 2]
    assert daily.sparse[:, f("user_views")].tolist() == [2, 2, 3, 3, 2]
    # day 2 of user 1 sees day 1's two rows: click 1/2 -> bucket 5, like 1/2 -> bucket 5
    assert daily.sparse[:, f("user_click_rate")].tolist() == [12, 12, 7, 7, 12]
    assert daily.sparse[:, f("user_like_rate")].tolist() == [12, 12, 7, 7, 12]
    assert real.sparse[:, f("user_click_rate")].tolist()[3] == 2 + 6  # 2 of 3 earlier rows
    for name in ("video_views", "video_click_rate", "video_like_rate"):
        assert daily.sparse[:, f(name)].tolist() == real.sparse[:, f(name)].tolist()
    feats = RequestFeatures(daily, inter, cfg)
    rebuilt = feats.batch(
        inter["user_id"].to_numpy(),
        inter["item_id"].to_numpy(),
        inter["timestamp_ms"].to_numpy(),
        inter["hourmin"].to_numpy() // 100,
    )
    assert rebuilt.sparse.tolist() == daily.sparse.tolist()

    from reelrec.config import ConfigError

    with pytest.raises(ConfigError, match="features.user_counters"):
        FeatureConfig(user_counters="hourly").validate()


def test_c28_counters_are_strictly_earlier_rates_never_leave_one_out():
    """CASES.md C28's smallest input: one user, 5 impressions in time order, clicks
    [1, 0, 0, 1, 0], prior 0.30, strength 1. The strictly-earlier smoothed rate from
    :func:`prior_counts` is [0.3000, 0.6500, 0.4333, 0.3250, 0.4600] (a leave-one-out rate of
    the same rows would give the positives 0.25 and the negatives 0.50: AUC 0.0, the leak)."""
    clicks = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    count, sums = prior_counts(np.zeros(5, dtype=np.int64), np.arange(5), clicks[:, None])
    smoothed = (sums[:, 0] + 1 * 0.30) / (count + 1)
    assert smoothed.tolist() == pytest.approx([0.3, 0.65, 0.43333, 0.325, 0.46], abs=1e-5)
    for r in range(5):  # flipping row r's label changes no count of row r or earlier
        flipped = clicks.copy()
        flipped[r] = 1 - flipped[r]
        _, s2 = prior_counts(np.zeros(5, dtype=np.int64), np.arange(5), flipped[:, None])
        assert s2[: r + 1, 0].tolist() == sums[: r + 1, 0].tolist()


def test_c28_real_time_user_rates_score_low_gauc_on_random_labels_and_daily_ones_tie():
    """Why real-time user counters cost GAUC (CASES.md C28): per-user AUC conditions on each
    user's total, so on 2,000 users x 10 random impressions (p = 0.3, seed 0) even the
    leak-free strictly-earlier rate ranks a user's later positives low (GAUC far below 0.5)
    while its global AUC stays near 0.5 (the case's values, reproduced). The daily counters (``user_counters="daily"``) are
    constant over a user's day: every pair within a user ties, GAUC exactly 0.5."""
    from reelrec.data.ctr import day_start_ms
    from reelrec.eval.metrics import auc, gauc

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(2000), 10)
    labels = (rng.random(len(users)) < 0.3).astype(np.float64)
    day1 = 1_651_593_600_000  # a Beijing-time midnight
    time = day1 + np.tile(np.arange(10), 2000) * 3_600_000  # 10 hourly rows, one day
    count, sums = prior_counts(users, time, labels[:, None])
    rate = (sums[:, 0] + 0.3) / (count + 1)
    realtime = gauc(users, labels, rate)
    # the case's right values: GAUC 0.224 over 1,945 users with both classes, global AUC 0.488
    assert realtime.value == pytest.approx(0.224, abs=5e-4) and realtime.n_users == 1945
    assert auc(labels, rate) == pytest.approx(0.488, abs=5e-4)
    count, sums = prior_counts(users, day_start_ms(time), labels[:, None])
    assert count.max() == 0
    assert gauc(users, labels, (sums[:, 0] + 0.3) / (count + 1)).value == 0.5


@pytest.mark.parametrize("row", range(5))
def test_daily_user_counters_never_see_their_own_day(row):
    """Flip every label of one row of the two-day log: under ``user_counters="daily"`` no user
    counter of any row on that row's Beijing day (or earlier) changes; later days' may."""
    from reelrec.data.ctr import day_start_ms

    inter, users = _two_day_log()
    cfg = FeatureConfig(max_history=3, user_counters="daily")
    a = kuairand_ctr(inter, users, cfg)
    flipped = inter.copy()
    for col in ("click", "long_view", "like"):
        flipped.loc[row, col] = 1 - flipped.loc[row, col]
    b = kuairand_ctr(flipped, users, cfg)
    day = day_start_ms(inter["timestamp_ms"].to_numpy())
    cols = [a.fields.index(f) for f in a.fields if f.startswith("user_") and f != "user_id"]
    same_day_or_earlier = np.flatnonzero(day <= day[row])
    assert a.sparse[same_day_or_earlier][:, cols].tolist() == (
        b.sparse[same_day_or_earlier][:, cols].tolist()
    )
    if day[row] < day.max() and inter.loc[row, "user_id"] == 1:  # user 1's day-2 rows see it
        later = np.flatnonzero((day > day[row]) & (inter["user_id"].to_numpy() == 1))
        assert a.sparse[later][:, cols].tolist() != b.sparse[later][:, cols].tolist()


def test_user_counters_are_checked_without_validate():
    from reelrec.config import ConfigError

    inter, users = _two_day_log()
    with pytest.raises(ConfigError, match="features.user_counters"):
        kuairand_ctr(inter, users, FeatureConfig(user_counters="Daily"))


def test_daily_user_counters_need_counters():
    from reelrec.config import ConfigError

    with pytest.raises(ConfigError, match="features.user_counters must be"):
        FeatureConfig(counters=False, user_counters="daily").validate()
    FeatureConfig(counters=False).validate()
