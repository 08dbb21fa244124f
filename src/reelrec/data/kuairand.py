"""KuaiRand loader (Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with
Randomly Exposed Videos", CIKM 2022).

Reads the tab-separated KuaiRand-27K like/hate slice (``processed_standard_kcore_15*.csv``: the
development file ``...dev_20220408-20220418.csv`` or the full original, never both in one folder)
and the official KuaiRand user-features table (``kuairand-pure-features/user_features_pure.csv``;
same user ids as KuaiRand-27K).

Column mapping to the canonical schema (:mod:`reelrec.data.tables`): ``video_id`` -> ``item_id``,
``time_ms`` -> ``timestamp_ms``, ``is_click`` -> ``click``, ``is_follow`` -> ``follow``,
``is_comment`` -> ``comment``, ``is_forward`` -> ``forward``, ``is_profile_enter`` ->
``profile_enter``, ``label`` (1 like / 0 hate) -> ``like``, ``comment_stay_time`` ->
``comment_stay_ms``; ``long_view``, ``play_time_ms``, ``duration_ms`` and ``date``/``hourmin``
(Beijing calendar day and time; the protocol splits on ``date``) keep their names.
``duration_ms == 0`` means unknown (18.5% of rows): it becomes NaN and so does ``watch_ratio``.
The ``timestamp`` text column is derived UTC time and is dropped (``date`` is the protocol clock,
CASES.md C09).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import (
    NON_NEGATIVE,
    UNIX_MS,
    DataFormatError,
    read_table,
    single_candidate,
    to_numeric,
)
from reelrec.data.tables import RawTables

LOG_GLOB = "processed_standard_kcore_15*.csv"
#: the development slice distributed in shared/datasets (SOURCE.md); reference numbers use it
DEV_LOG = "processed_standard_kcore_15.dev_20220408-20220418.csv"
USER_FEATURES = "user_features_pure.csv"

_RENAME = {
    "video_id": "item_id",
    "time_ms": "timestamp_ms",
    "is_click": "click",
    "is_follow": "follow",
    "is_comment": "comment",
    "is_forward": "forward",
    "is_profile_enter": "profile_enter",
    "label": "like",
    "comment_stay_time": "comment_stay_ms",
}
#: integer columns and their valid ranges
_INT_COLUMNS = {
    "user_id": NON_NEGATIVE,
    "video_id": NON_NEGATIVE,
    "date": (20000101, 21001231),
    "hourmin": (0, 2359),
    "time_ms": UNIX_MS,
}
_BINARY = [
    "is_click",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_profile_enter",
    "long_view",
    "label",
]
_FLOAT = ["play_time_ms", "duration_ms", "comment_stay_time"]


def find_log(folder: Path) -> Path:
    """The one KuaiRand log file (``processed_standard_kcore_15*.csv``) in ``folder``.

    The dev slice and the full original give different users, items and dates, so a folder
    holding both (or any two matches) is refused rather than one of them being read.

    Raises:
        FileNotFoundError: no ``processed_standard_kcore_15*.csv`` in ``folder``.
        AmbiguousDataError: several files match (message names the folder and each file).
    """
    folder = Path(folder)
    path = single_candidate(
        folder,
        [f for f in folder.glob(LOG_GLOB) if f.is_file()],
        "KuaiRand log",
        f"keep exactly one in the folder and move the others out (the reference copy is {DEV_LOG})",
    )
    if path is None:
        raise FileNotFoundError(f"{folder}: no file matching {LOG_GLOB}")
    return path


def load_kuairand(log_folder: Path, features_folder: Path | None) -> RawTables:
    """Load KuaiRand interactions, items (id + duration) and users (profile features).

    Args:
        log_folder: folder holding the KuaiRand log (``kuairand-27k-likehate-kcore15``).
        features_folder: folder holding ``user_features_pure.csv``; ``None`` or missing gives a
            users table with ``user_id`` only (noted in the report).

    Returns:
        :class:`RawTables` with binary labels as int8, ``duration_ms``/``watch_ratio`` float64 (NaN
        where duration is unknown).

    Raises:
        FileNotFoundError: the log is missing.
        AmbiguousDataError: several log files in ``log_folder`` (names the folder and each).
        DataFormatError: a malformed row or value (message names file, line, column).
    """
    path = find_log(Path(log_folder))
    raw = read_table(path, sep="\t", required=[*_INT_COLUMNS, *_BINARY, *_FLOAT])
    out = pd.DataFrame()
    notes: dict[str, object] = {"files": [str(path)]}
    for col, bounds in _INT_COLUMNS.items():
        out[col] = to_numeric(raw, col, path, "\t", bounds=bounds)[0]
    for col in _BINARY:
        values = to_numeric(raw, col, path, "\t")[0]
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            rec = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}, line {rec + 2}, column {col!r}: expected 0 or 1, got {values[rec]}"
            )
        out[col] = values.astype("int8")
    for col in _FLOAT:
        values, n_missing = to_numeric(
            raw, col, path, "\t", dtype="float64", nullable=True, bounds=NON_NEGATIVE
        )
        out[col] = values
        if n_missing:
            notes[f"missing_{col}"] = n_missing
    zero = out["duration_ms"].to_numpy() == 0
    notes["duration_ms_zero_as_missing"] = int(zero.sum())
    out.loc[zero, "duration_ms"] = np.nan
    out = out.rename(columns=_RENAME)
    out["timestamp_ms"] = out["timestamp_ms"].astype("Int64")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["watch_ratio"] = out["play_time_ms"] / out["duration_ms"]

    dur = out.dropna(subset=["duration_ms"]).groupby("item_id")["duration_ms"].max()
    items = pd.DataFrame({"item_id": np.unique(out["item_id"].to_numpy())})
    items["duration_ms"] = items["item_id"].map(dur).astype("float64")

    users = pd.DataFrame({"user_id": np.unique(out["user_id"].to_numpy())})
    feat_path = Path(features_folder) / USER_FEATURES if features_folder is not None else None
    if feat_path is not None and feat_path.exists():
        feats = read_table(feat_path, sep=",", required=["user_id"])
        feats["user_id"] = to_numeric(feats, "user_id", feat_path, ",", bounds=NON_NEGATIVE)[0]
        dup = feats["user_id"].duplicated(keep="first")
        notes["user_feature_rows_duplicated"] = int(dup.sum())
        users = users.merge(feats.loc[~dup], on="user_id", how="left")
        notes["files"].append(str(feat_path))  # type: ignore[union-attr]
        notes["users_without_features"] = int(users.iloc[:, 1].isna().sum())
    else:
        notes["user_features"] = f"not found ({feat_path}); users table holds user_id only"
    return RawTables(out, items, users, notes)
