"""Evaluation protocols as data, and the split they put on every interaction row.

Two kinds (DESIGN.md "Evaluation protocols"):

* ``leave_one_out``: per user, over the user's positive rows in time order, the last one is
  test, the second last is validation, the rest is train (SASRec, TIGER, HSTU tables). Users with
  two positives give a test row only; users with one keep it in train.
* ``temporal``: rows are assigned by a day column: ``< valid_from`` train, ``valid_from ..
  test_from-1`` validation, ``test_from .. test_until`` test; later rows are dropped (counted).

A row's behaviour history (:mod:`reelrec.data.sequences`) uses only rows of the same or an
earlier split; under ``temporal`` also only rows strictly earlier in time (equal timestamps are
not history, CASES.md C08).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from reelrec.config import ConfigError

#: split codes stored in ``interactions.parquet`` column ``split``
TRAIN, VALID, TEST, DROPPED = 0, 1, 2, -1
SPLIT_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol.

    Attributes:
        name: registry name.
        kind: ``"leave_one_out"`` or ``"temporal"``.
        positive: label column whose value 1 marks a positive (a sequence item / retrieval
            target); ``None``: every row is positive.
        day_column: temporal only: integer day column (KuaiRand ``date``, YYYYMMDD Beijing;
            TikTok's ``given_split`` 0/1/2).
        valid_from, test_from, test_until: temporal only: first validation day, first and last
            test day (inclusive).
        description: one line for reports.
    """

    name: str
    kind: str
    positive: str | None = None
    day_column: str | None = None
    valid_from: int | None = None
    test_from: int | None = None
    test_until: int | None = None
    description: str = ""

    def to_dict(self) -> dict[str, object]:
        """Plain form for ``splits.json``."""
        return asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    "leave-one-out": Protocol(
        name="leave-one-out",
        kind="leave_one_out",
        description="per user: last item test, second last validation, full ranking over all items",
    ),
    "kuairand-temporal": Protocol(
        name="kuairand-temporal",
        kind="temporal",
        positive="like",
        day_column="date",
        valid_from=20220417,
        test_from=20220418,
        test_until=20220418,
        description="KuaiRand by Beijing day: train 20220408..20220416, valid 20220417, "
        "test 20220418; targets are liked videos, full ranking over all train items",
    ),
    "kuairand-pure-temporal": Protocol(
        name="kuairand-pure-temporal",
        kind="temporal",
        positive="click",
        day_column="date",
        valid_from=20220504,
        test_from=20220505,
        test_until=20220505,
        description="KuaiRand-Pure impressions by Beijing day: train 20220425..20220503, valid "
        "20220504, test 20220505 (the split of the FuxiCTR runs in shared/PEERS.md); retrieval "
        "targets are clicked videos",
    ),
    "tiktok-given": Protocol(
        name="tiktok-given",
        kind="temporal",
        day_column="given_split",
        valid_from=1,
        test_from=2,
        test_until=2,
        description="TikTok (MMSSL/DiffMM) split as given: train, valid (one item for 3,051 "
        "users), test (one item for 6,130 users); no order within a history; full ranking",
    ),
}


def get_protocol(name: str) -> Protocol:
    """Look up a protocol by name.

    Raises:
        KeyError: unknown name (lists the known ones).
    """
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def positive_mask(df: pd.DataFrame, protocol: Protocol) -> np.ndarray:
    """Boolean mask (n_rows,) of positive rows under ``protocol``.

    Raises:
        KeyError: the protocol's positive column is not in ``df``.
    """
    if protocol.positive is None:
        return np.ones(len(df), dtype=bool)
    if protocol.positive not in df.columns:
        raise KeyError(
            f"protocol {protocol.name!r} needs column {protocol.positive!r}; "
            f"the interactions have {list(df.columns)}"
        )
    return df[protocol.positive].to_numpy() == 1


def assign_splits(df: pd.DataFrame, protocol: Protocol) -> np.ndarray:
    """Split code per row (int8 array (n_rows,), values TRAIN/VALID/TEST/DROPPED).

    ``df`` must already be stable-sorted by (user, time) (:func:`reelrec.data.prepare.prepare`).

    Raises:
        ConfigError: a column the protocol needs is missing (the protocol is not this
            dataset's).
        ValueError: unknown protocol kind.
    """
    n = len(df)
    split = np.full(n, TRAIN, dtype=np.int8)
    if protocol.kind == "temporal":
        if protocol.day_column not in df.columns:
            raise ConfigError(
                f"protocol {protocol.name!r} needs day column {protocol.day_column!r}, which this "
                "dataset does not have: use its own protocol (leave --protocol out)"
            )
        day = df[protocol.day_column].to_numpy()
        split[day >= protocol.valid_from] = VALID
        split[day >= protocol.test_from] = TEST
        split[day > protocol.test_until] = DROPPED
        return split
    if protocol.kind != "leave_one_out":
        raise ValueError(f"unknown protocol kind {protocol.kind!r}")
    pos = np.flatnonzero(positive_mask(df, protocol))
    users = df["user_id"].to_numpy()[pos]
    # rank from the end of each user's positive rows: 0 = last, 1 = second last
    is_last = np.r_[users[1:] != users[:-1], True]
    group_end = np.flatnonzero(is_last)
    group_id = np.cumsum(np.r_[0, is_last[:-1]])
    from_end = group_end[group_id] - np.arange(len(pos))
    count = np.diff(np.r_[-1, group_end])[group_id]
    split[pos[(from_end == 0) & (count >= 2)]] = TEST
    split[pos[(from_end == 1) & (count >= 3)]] = VALID
    return split
