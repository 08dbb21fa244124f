"""KuaiRand loaders (Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with
Randomly Exposed Videos", CIKM 2022).

:func:`load_kuairand_pure` reads the KuaiRand-Pure standard-policy impression log (dataset
``kuairand-pure``; see its docstring). :func:`load_kuairand` reads the tab-separated KuaiRand-27K
like/hate slice (``processed_standard_kcore_15*.csv``: the
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
    physical_line,
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
    return _one_file(
        Path(folder),
        LOG_GLOB,
        "KuaiRand log",
        f"keep exactly one in the folder and move the others out (the reference copy is {DEV_LOG})",
    )


def _one_file(folder: Path, glob: str, what: str, keep: str) -> Path:
    """The one file of ``folder`` matching ``glob``.

    Raises:
        FileNotFoundError: none matches. AmbiguousDataError: several match (``keep`` says which
            to keep).
    """
    path = single_candidate(folder, [f for f in folder.glob(glob) if f.is_file()], what, keep)
    if path is None:
        raise FileNotFoundError(f"{folder}: no file matching {glob}")
    return path


def _log_columns(
    raw: pd.DataFrame,
    path: Path,
    sep: str,
    ints: dict[str, tuple],
    binary: list[str],
    floats: list[str],
    notes: dict[str, object],
) -> pd.DataFrame:
    """The checked columns of a KuaiRand log: ``ints`` (column -> bounds) as int64, ``binary``
    as int8 in {0, 1}, ``floats`` as non-negative float64 (missing markers NaN, counted in
    ``notes`` as ``missing_<col>``); errors name the file, physical line and column."""
    out = pd.DataFrame()
    for col, bounds in ints.items():
        out[col] = to_numeric(raw, col, path, sep, bounds=bounds)[0]
    _binary_columns(raw, binary, path, sep, out)
    for col in floats:
        values, n_missing = to_numeric(
            raw, col, path, sep, dtype="float64", nullable=True, bounds=NON_NEGATIVE
        )
        out[col] = values
        if n_missing:
            notes[f"missing_{col}"] = n_missing
    return out


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
    notes: dict[str, object] = {"files": [str(path)]}
    out = _log_columns(raw, path, "\t", _INT_COLUMNS, _BINARY, _FLOAT, notes)
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

    users = _join_user_features(out["user_id"].to_numpy(), features_folder, notes)
    return RawTables(out, items, users, notes)


#: the KuaiRand-Pure standard-policy log of 2022-04-25..05-05 (shared/datasets SOURCE.md)
PURE_LOG = "log_standard_20220425_to_20220505_pure.csv.gz"
PURE_LOG_GLOB = "log_standard_*_pure.csv*"
PURE_VIDEOS = "video_features_basic_statistic_pure.csv.gz"
PURE_VIDEOS_GLOB = "video_features_basic*_pure.csv*"
#: the 12 basic video columns (the official ``video_features_basic_pure.csv``); the loader reads
#: these and nothing else from the video table
PURE_VIDEO_BASIC = (
    "video_id",
    "author_id",
    "video_type",
    "upload_dt",
    "upload_type",
    "visible_status",
    "video_duration",
    "server_width",
    "server_height",
    "music_id",
    "music_type",
    "tag",
)
#: the video columns the rankers may use as features, as named in ``items.parquet``
PURE_ITEM_FEATURES = ("author_id", "music_id", "music_type", "video_type", "upload_type")
_PURE_BINARY = [
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "is_profile_enter",
]
_PURE_INT = {**_INT_COLUMNS, "tab": (0, 1000)}
_PURE_FLOAT = ["play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time"]
_PURE_RENAME = {
    **{k: v for k, v in _RENAME.items() if k != "label"},
    "is_like": "like",
    "is_hate": "hate",
    "profile_stay_time": "profile_stay_ms",
}


def _binary_columns(raw: pd.DataFrame, cols: list[str], path: Path, sep: str, out) -> None:
    """Convert 0/1 text columns to int8 into ``out``, naming the first bad value's line."""
    for col in cols:
        values = to_numeric(raw, col, path, sep)[0]
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            rec = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                f"{path}, line {physical_line(path, rec, sep)}, column {col!r}: expected 0 or 1, "
                f"got {values[rec]}"
            )
        out[col] = values.astype("int8")


def _join_user_features(
    user_ids: np.ndarray, features_folder: Path | None, notes: dict[str, object]
) -> pd.DataFrame:
    """One row per id of ``user_ids`` with the KuaiRand user-table columns (left join)."""
    users = pd.DataFrame({"user_id": np.unique(user_ids)})
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
    return users


def _pure_videos(folder: Path, notes: dict[str, object]) -> pd.DataFrame:
    """The items table of KuaiRand-Pure: the basic video columns only (see the loader)."""
    path = _one_file(
        folder,
        PURE_VIDEOS_GLOB,
        "KuaiRand-Pure video feature",
        f"keep exactly one (the reference copy is {PURE_VIDEOS})",
    )
    raw = read_table(path, sep=",", required=list(PURE_VIDEO_BASIC))
    notes["files"].append(str(path))  # type: ignore[union-attr]
    notes["video_columns_not_read"] = [c for c in raw.columns if c not in PURE_VIDEO_BASIC]
    items = pd.DataFrame()
    items["item_id"] = to_numeric(raw, "video_id", path, ",", bounds=NON_NEGATIVE)[0]
    dur, n_missing = to_numeric(
        raw, "video_duration", path, ",", dtype="float64", nullable=True, bounds=NON_NEGATIVE
    )
    items["duration_ms"] = np.where(dur > 0, dur, np.nan)
    notes["videos_without_duration"] = int(n_missing + (dur == 0).sum())
    for col in PURE_ITEM_FEATURES:
        text = raw[col].astype(str).str.strip()
        # music_type is written as a float ("9.0"): the category is its integer part
        text = text.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
        items[col] = text.where(text != "", None)
    tags = raw["tag"].astype(str).str.strip()
    bad = ~tags.str.fullmatch(r"(\d{1,18}(,\d{1,18})*)?").to_numpy(dtype=bool)
    if bad.any():
        rec = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{path}, line {physical_line(path, rec, ',')}, column 'tag': expected "
            "comma-separated category ids (integers of at most 18 digits), "
            f"got {raw['tag'].iloc[rec]!r}"
        )
    items["tags"] = [[int(t) for t in s.split(",")] if s else [] for s in tags]
    notes["videos_without_tags"] = int((tags == "").sum())
    dup = items["item_id"].duplicated()
    if dup.any():
        rec = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataFormatError(
            f"{path}, line {physical_line(path, rec, ',')}, column 'video_id': video "
            f"{items['item_id'].iloc[rec]} "
            "appears twice"
        )
    return items


def load_kuairand_pure(log_folder: Path, features_folder: Path | None) -> RawTables:
    """Load the KuaiRand-Pure standard-policy impression log with its video and user tables.

    One row per impression of the standard recommendation policy (``is_rand`` = 0), with all
    feedback signals. Column mapping to the canonical schema: ``video_id`` -> ``item_id``,
    ``time_ms`` -> ``timestamp_ms``, ``is_click`` -> ``click``, ``is_like`` -> ``like``,
    ``is_follow`` -> ``follow``, ``is_comment`` -> ``comment``, ``is_forward`` -> ``forward``,
    ``is_hate`` -> ``hate``, ``is_profile_enter`` -> ``profile_enter``, ``profile_stay_time`` /
    ``comment_stay_time`` -> ``profile_stay_ms`` / ``comment_stay_ms``; ``long_view``,
    ``play_time_ms``, ``duration_ms``, ``date``, ``hourmin`` and ``tab`` (the scenario id) keep
    their names; rows with ``is_rand`` = 1 (random exposure, another policy) are dropped and
    counted (``random_exposure_rows_dropped``; none in the shared file), then the column. ``duration_ms == 0`` (unknown) is taken
    from the video table where it has the duration, else NaN (and so is ``watch_ratio``).

    Items: every video of the Pure pool (7,583) with ``duration_ms``, ``author_id``,
    ``music_id``, ``music_type``, ``video_type``, ``upload_type`` (strings, None when empty) and
    ``tags`` (list of int category ids, [] when none). Only the 12 basic video columns are read:
    the 51 statistic columns aggregate a month that overlaps the test days and never enter
    reelrec's tables (``prepare_report.json`` lists them under ``video_columns_not_read``).
    Duplicate rows are kept here; ``reelrec prepare`` collapses rows equal in user, video, time
    and every feedback label (counted there: 5,036 on the shared file, of which 4,677 are exact
    copies of another row).

    Args:
        log_folder: ``kuairand-pure-standard-late`` (the log and the video table).
        features_folder: folder with ``user_features_pure.csv``; ``None`` or missing gives a
            users table with ``user_id`` only (noted in the report).

    Raises:
        FileNotFoundError: the log or the video table is missing.
        AmbiguousDataError: several log or video files in ``log_folder``.
        DataFormatError: a malformed row or value (message names file, line, column).
    """
    folder = Path(log_folder)
    path = _one_file(
        folder,
        PURE_LOG_GLOB,
        "KuaiRand-Pure log",
        f"keep exactly one (the reference copy is {PURE_LOG})",
    )
    binary = [*_PURE_BINARY, "is_rand"]
    raw = read_table(path, sep=",", required=[*_PURE_INT, *binary, *_PURE_FLOAT])
    notes: dict[str, object] = {"files": [str(path)]}
    out = _log_columns(raw, path, ",", _PURE_INT, binary, _PURE_FLOAT, notes)
    rand = out.pop("is_rand").to_numpy() == 1
    notes["random_exposure_rows_dropped"] = int(rand.sum())
    out = out.loc[~rand].reset_index(drop=True)
    items = _pure_videos(folder, notes)
    zero = out["duration_ms"].to_numpy() == 0
    from_items = out["video_id"].map(items.set_index("item_id")["duration_ms"]).to_numpy()
    out.loc[zero, "duration_ms"] = from_items[zero]
    notes["duration_ms_zero_filled_from_video_table"] = int((zero & ~np.isnan(from_items)).sum())
    notes["duration_ms_missing"] = int(np.isnan(out["duration_ms"].to_numpy()).sum())
    out = out.rename(columns=_PURE_RENAME)
    out["timestamp_ms"] = out["timestamp_ms"].astype("Int64")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["watch_ratio"] = out["play_time_ms"] / out["duration_ms"]
    unknown = ~out["item_id"].isin(items["item_id"])
    notes["rows_on_videos_outside_the_video_table"] = int(unknown.sum())
    users = _join_user_features(out["user_id"].to_numpy(), features_folder, notes)
    return RawTables(out, items, users, notes)
