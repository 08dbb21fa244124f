"""The day protocol of the alignment evaluation on hand-made logs (built in code): one request
per user at its first row of the day, hated videos from ``hate`` where the log has it, and the
per-label hit rates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from reelrec.data.sequences import ItemVocab
from reelrec.eval.alignment import day_hit_rates, day_requests


def _log(with_hate: bool) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2],
            "item_id": [10, 11, 12, 13, 11, 14],
            "timestamp_ms": [1, 2, 30, 31, 32, 33],
            "hourmin": [800, 900, 1000, 1100, 1200, 1300],
            "click": [1, 1, 1, 0, 1, 0],
            "long_view": [0, 1, 0, 1, 1, 0],
            "like": [0, 0, 1, 0, 0, 0],
            "split": [0, 0, 2, 2, 2, 2],
        }
    )
    if with_hate:
        df["hate"] = [0, 0, 0, 1, 0, 0]
    return df


def test_day_requests_targets_and_hated_from_the_hate_column():
    inter = _log(with_hate=True)
    vocab = ItemVocab.fit(np.array([10, 11, 12, 13, 14]))
    r = day_requests(inter, inter["click"].to_numpy() == 1, vocab, 2, max_len=3)
    assert r.users.tolist() == [1, 2] and r.times.tolist() == [30, 32]
    assert r.hours.tolist() == [10, 12]
    # user 1's history: clicked rows strictly before its first test row (10, 11)
    assert vocab.decode(r.history[0].numpy()).tolist()[-2:] == [10, 11]
    assert [x.tolist() for x in r.liked] == [[12], [11]]  # the protocol's positive: click
    assert [x.tolist() for x in r.hated] == [[13], []]  # hate == 1, not like == 0
    assert [x.tolist() for x in r.targets["long_view"]] == [[13], [11]]
    assert [x.tolist() for x in r.targets["like"]] == [[12], []]
    # the like/hate slice: like == 0 is the explicit dislike
    old = day_requests(_log(with_hate=False), inter["like"].to_numpy() == 1, vocab, 2, 3)
    assert [x.tolist() for x in old.hated] == [[13], [11, 14]]


def test_day_hit_rates_count_users_with_the_label_only():
    top = np.array([[12, 99, -1], [14, 11, 7], [5, 6, 7]])
    targets = {"click": [np.array([12]), np.array([11]), np.array([], dtype=np.int64)]}
    out = day_hit_rates(top, targets, k=2)
    assert out == {"click_hit_rate@2": 1.0, "click_day_hits": 2, "click_day_users": 2}
    out = day_hit_rates(top, targets, k=1)
    assert out["click_hit_rate@1"] == 0.5 and out["click_day_hits"] == 1
    nobody = day_hit_rates(top, {"like": [np.array([], dtype=np.int64)] * 3}, k=2)
    assert np.isnan(nobody["like_hit_rate@2"]) and nobody["like_day_users"] == 0
    assert "like_hits" not in nobody  # alignment_metrics' own like_hits stays unambiguous
