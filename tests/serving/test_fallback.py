"""The popular fallback on case C22's input (a tiny catalogue built in code): raw ids, never
internal indices, for an unknown user and for a user who has watched everything."""

from __future__ import annotations

import numpy as np

from reelrec.serving.service import fill_from_popular, popularity


def test_c22_fallback_returns_raw_ids_most_popular_first():
    # external ids 1001, 1002, 1003 (internal 0, 1, 2) liked 5, 20 and 9 times
    liked = np.array([1001] * 5 + [1002] * 20 + [1003] * 9)
    popular = popularity(np.random.default_rng(0).permutation(liked))
    assert popular.tolist() == [1002, 1003, 1001]
    assert fill_from_popular(popular, seen=set(), k=2) == [1002, 1003]  # unknown user
    # a known user who has watched every video still gets k raw ids
    assert fill_from_popular(popular, seen={1001, 1002, 1003}, k=2) == [1002, 1003]
    # unseen first, then seen ones; nothing already in the answer twice
    assert fill_from_popular(popular, seen={1002}, k=3) == [1003, 1001, 1002]
    assert fill_from_popular(popular, seen=set(), k=5, taken=[1003]) == [1002, 1001]


def test_popularity_counts_every_occurrence_and_breaks_ties_by_id():
    # case C07: a repeated id in one batch counts each time (3 -> 3, 7 -> 2, 5 -> 1)
    assert popularity(np.array([3, 3, 3, 5, 7, 7])).tolist() == [3, 7, 5]
    assert popularity(np.array([9, 4, 9, 4])).tolist() == [4, 9]
    assert popularity(np.array([], dtype=np.int64)).tolist() == []
