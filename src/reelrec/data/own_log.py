"""Bring your own log: a user's interaction file, in any column naming, into canonical tables.

A column map (YAML) says which of the user's columns holds each canonical column of
:mod:`reelrec.data.tables`, per table::

    interactions:            # required: user_id, item_id; everything else optional
      user_id: uid
      item_id: video
      timestamp_s: ts        # or timestamp_ms; without either, file order is the clock
      play_time_ms: watch_ms
      duration_ms: length_ms
      like: liked            # binary labels: click long_view like follow comment forward
    items:                   # read with --items: item_id required, title, duration_ms
      item_id: video
      title: caption
    users:                   # read with --users: user_id required; the file's other
      user_id: uid           # columns are kept as profile features (numbers where they parse)

Files are CSV (``.csv``, ``,``), TSV (``.tsv``/``.txt``, tab), either gzipped, or Parquet
(``.parquet``/``.pq``). Ids are non-negative integers (at most 18 digits; ``007`` is 7). Every
error names the file, the line (the row for Parquet) and the column, and nothing is written
before all files are read.
The prepared run uses protocol ``leave-one-out`` by default (every row is an interaction; the
last of each user is the test target).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from reelrec.data.readers import (
    NON_NEGATIVE,
    UNIX_MS,
    UNIX_S,
    DataFormatError,
    physical_line,
    read_table,
    to_numeric,
)
from reelrec.data.tables import LABEL_COLUMNS, RawTables

#: canonical columns each table of the map may name; the first of each is required
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": (
        "user_id",
        "item_id",
        "timestamp_s",
        "timestamp_ms",
        "play_time_ms",
        "duration_ms",
        *LABEL_COLUMNS,
    ),
    "items": ("item_id", "title", "duration_ms"),
    "users": ("user_id",),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "interactions": ("user_id", "item_id"),
    "items": ("item_id",),
    "users": ("user_id",),
}
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class ColumnMap:
    """Canonical column -> the user's column name, per table (see the module docstring).

    Attributes:
        interactions, items, users: ``{canonical: user column}``; ``items``/``users`` may be
            empty when no such file is read.
        path: the YAML file it came from (for messages).
    """

    interactions: dict[str, str]
    items: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    path: str = "<column map>"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (the last one would
    silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_column_map(path: str | Path) -> ColumnMap:
    """Read and check a column map.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not YAML, not a mapping, an unknown table or canonical column, a
            required column unmapped, a column name that is not a non-empty string, both
            ``timestamp_s`` and ``timestamp_ms``; the message names the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: column map not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        why = " ".join(str(exc).replace('"<unicode string>"', "").split())
        raise DataFormatError(f"{path}: not a valid YAML column map ({why})") from None
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{path}: expected a mapping with an 'interactions:' section, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(TABLE_COLUMNS))
    if unknown:
        raise DataFormatError(
            f"{path}: unknown section(s) {unknown}; known: {', '.join(TABLE_COLUMNS)}"
        )
    if "interactions" not in data:
        raise DataFormatError(f"{path}: no 'interactions:' section")
    tables: dict[str, dict[str, str]] = {}
    for table, section in data.items():
        if not isinstance(section, dict):
            raise DataFormatError(f"{path}, {table}: expected 'canonical: your_column' lines")
        for key, value in section.items():
            if key not in TABLE_COLUMNS[table]:
                raise DataFormatError(
                    f"{path}, {table}.{key}: unknown canonical column; "
                    f"known: {', '.join(TABLE_COLUMNS[table])}"
                )
            if not isinstance(value, str) or not value.strip():
                raise DataFormatError(
                    f"{path}, {table}.{key}: expected the name of a column of your file, "
                    f"got {value!r} (quote names that YAML reads as numbers or yes/no: "
                    f'{key}: "{value}")'
                )
        missing = [c for c in REQUIRED[table] if c not in section]
        if missing:
            raise DataFormatError(f"{path}, {table}: required column(s) {missing} not mapped")
        values = [v.strip() for v in section.values()]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise DataFormatError(
                f"{path}, {table}: column(s) {twice} mapped to several canonical columns "
                "(each canonical column needs its own)"
            )
        tables[table] = {k: v.strip() for k, v in section.items()}
    if {"timestamp_s", "timestamp_ms"} <= set(tables["interactions"]):
        raise DataFormatError(f"{path}, interactions: map timestamp_s or timestamp_ms, not both")
    return ColumnMap(
        tables["interactions"], tables.get("items", {}), tables.get("users", {}), str(path)
    )


@dataclass
class _Table:
    """A user file read as strings, with what error messages need."""

    path: Path
    df: pd.DataFrame
    sep: str
    lines: np.ndarray | None  # physical line (row for Parquet) of each record; None: re-scan

    parquet: bool = False  # messages name the data row, not a line

    def numeric(self, column: str, **kw) -> tuple[np.ndarray, int]:
        """:func:`~reelrec.data.readers.to_numeric` of one column, with this file's lines."""
        try:
            return to_numeric(self.df, column, self.path, self.sep, lines=self.lines, **kw)
        except DataFormatError as exc:
            if self.parquet:
                raise DataFormatError(str(exc).replace(", line ", ", row ", 1)) from None
            raise


def _read(path: Path, what: str) -> _Table:
    """One user file (CSV, TSV or Parquet) as string columns.

    Raises:
        FileNotFoundError: no such file. DataFormatError: empty, unparsable, no data rows.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder; --{what} takes a file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(PARQUET_SUFFIXES):
        import pyarrow.parquet as pq

        try:
            table_ = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid and OSError variants
            why = " ".join(str(exc).split())
            raise DataFormatError(f"{path}: cannot read as Parquet ({why})") from None
        _unique_columns(path, list(table_.column_names))
        raw = table_.to_pandas()
        df = pd.DataFrame({c: [_text(v) for v in raw[c]] for c in raw.columns})
        # Parquet has no lines: messages count data rows from 1 (the "line" is the row)
        table = _Table(path, df, ",", np.arange(1, len(df) + 1), parquet=True)
    else:
        sep = "\t" if name.endswith((".tsv", ".txt")) else ","
        df = read_table(path, sep)
        _unique_columns(path, list(df.columns))
        table = _Table(path, df, sep, None)
    if len(table.df) == 0:
        raise DataFormatError(f"{path}: no data rows (only a header)")
    return table


def _text(v: object) -> str:
    """A Parquet cell as the text a CSV would hold ("" for any null: None, NaN, NA, NaT)."""
    try:
        if v is None or bool(pd.isna(v)):
            return ""
    except (TypeError, ValueError):  # list-like cells: pd.isna is element-wise
        pass
    return str(v)


def _unique_columns(path: Path, names: list[str]) -> None:
    """Refuse a header naming one column twice (which value would be read is a guess)."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataFormatError(f"{path}: column(s) {twice} appear more than once in the header")


def _columns(table: _Table, mapping: dict[str, str], section: str, map_path: str) -> None:
    """Check that every mapped column is in the file; rename them to canonical names."""
    found = list(table.df.columns)
    for canonical, theirs in mapping.items():
        if theirs not in found:
            raise DataFormatError(
                f"{table.path}: no column {theirs!r} (named by {section}.{canonical} in "
                f"{map_path}); the file has {found}"
            )


def _read_interactions(table: _Table, mapping: dict[str, str]) -> pd.DataFrame:
    col = mapping.get
    out = pd.DataFrame(
        {
            "user_id": table.numeric(col("user_id"), bounds=NON_NEGATIVE)[0],
            "item_id": table.numeric(col("item_id"), bounds=NON_NEGATIVE)[0],
        }
    )
    if "timestamp_ms" in mapping:
        ts = table.numeric(col("timestamp_ms"), bounds=UNIX_MS)[0]
    elif "timestamp_s" in mapping:
        ts = table.numeric(col("timestamp_s"), bounds=UNIX_S)[0] * 1000
    else:
        ts = None
    out["timestamp_ms"] = pd.array([None] * len(out) if ts is None else ts, dtype="Int64")
    for label in LABEL_COLUMNS:
        if label in mapping:
            out[label] = table.numeric(col(label), bounds=(0, 1))[0].astype(np.int8)
    for name in ("play_time_ms", "duration_ms"):
        if name in mapping:
            out[name] = table.numeric(
                col(name), dtype="float64", nullable=True, bounds=NON_NEGATIVE
            )[0]
    if "duration_ms" in out:
        out["duration_ms"] = out["duration_ms"].where(out["duration_ms"] > 0)
        if "play_time_ms" in out:
            out["watch_ratio"] = out["play_time_ms"] / out["duration_ms"]
    return out


def _read_items(table: _Table, mapping: dict[str, str]) -> pd.DataFrame:
    ids = table.numeric(mapping["item_id"], bounds=NON_NEGATIVE)[0]
    _no_repeats(table, ids, mapping["item_id"])
    items = pd.DataFrame({"item_id": ids})
    if "title" in mapping:
        text = table.df[mapping["title"]].astype(str).str.strip()
        items["title"] = text.where(text != "", None).astype(object).to_numpy()
    if "duration_ms" in mapping:
        d = table.numeric(
            mapping["duration_ms"], dtype="float64", nullable=True, bounds=NON_NEGATIVE
        )[0]
        items["duration_ms"] = np.where(d > 0, d, np.nan)
    return items


def _read_users(table: _Table, mapping: dict[str, str]) -> pd.DataFrame:
    ids = table.numeric(mapping["user_id"], bounds=NON_NEGATIVE)[0]
    _no_repeats(table, ids, mapping["user_id"])
    users = pd.DataFrame({"user_id": ids})
    for c in table.df.columns:
        if c == mapping["user_id"]:
            continue
        if c == "user_id":  # the canonical name, holding something else here
            raise DataFormatError(
                f"{table.path}: column 'user_id' is not the one mapped as users.user_id "
                f"({mapping['user_id']!r}); rename it (profile columns keep their names)"
            )
        try:  # a profile feature: numbers where every value parses, else kept as text
            users[c] = table.numeric(c, dtype="float64", nullable=True)[0]
        except DataFormatError:
            users[c] = table.df[c].astype(object).to_numpy()
    return users


def _no_repeats(table: _Table, ids: np.ndarray, column: str) -> None:
    s = pd.Series(ids)
    dup = s.duplicated()
    if dup.any():
        rec = int(np.flatnonzero(dup.to_numpy())[0])
        if table.lines is not None:
            line = int(table.lines[rec])
        else:
            line = physical_line(table.path, rec, table.sep)
        where = "row" if table.parquet else "line"
        raise DataFormatError(
            f"{table.path}, {where} {line}, column {column!r}: id {int(ids[rec])} appears again "
            "(one row per id)"
        )


def load_own_log(
    interactions: str | Path,
    columns: str | Path | ColumnMap,
    items: str | Path | None = None,
    users: str | Path | None = None,
) -> RawTables:
    """Read a user's own interaction log (and item / user files) into canonical tables.

    Args:
        interactions: CSV / TSV / Parquet file, one row per event.
        columns: the column map (a YAML path or a :class:`ColumnMap`).
        items: optional item file (titles feed ``reelrec encode``); items of the log missing
            from it are kept without a title.
        users: optional user file.

    Returns:
        :class:`~reelrec.data.tables.RawTables` in file order (``reelrec prepare`` sorts and
        splits them); notes count the files, items without a title and the timestamp unit.

    Raises:
        FileNotFoundError: a file is missing.
        DataFormatError: a bad map, a missing column, text in a numeric column, a label other
            than 0/1, a timestamp outside 1970..2100, a repeated item or user row, an empty
            file; each message names the file, line and column.
        ValueError: an items or users file given without its section in the map.
    """
    cmap = columns if isinstance(columns, ColumnMap) else read_column_map(columns)
    for what, path, section in (("items", items, cmap.items), ("users", users, cmap.users)):
        if path is not None and not section:
            raise DataFormatError(
                f"{cmap.path}: --{what} {path} is given but the map has no '{what}:' section "
                f"(it must name at least {what}.{REQUIRED[what][0]})"
            )
    log = _read(Path(interactions), "interactions")
    _columns(log, cmap.interactions, "interactions", cmap.path)
    inter = _read_interactions(log, cmap.interactions)
    notes: dict[str, object] = {
        "files": [str(log.path)],
        "column_map": str(cmap.path),
        "timestamps": (
            "ms"
            if "timestamp_ms" in cmap.interactions
            else "s"
            if "timestamp_s" in cmap.interactions
            else "none (file order)"
        ),
    }
    item_table = pd.DataFrame({"item_id": np.unique(inter["item_id"].to_numpy())})
    if items is not None:
        t = _read(Path(items), "items")
        _columns(t, cmap.items, "items", cmap.path)
        given = _read_items(t, cmap.items)
        item_table = item_table.merge(given, on="item_id", how="outer").sort_values("item_id")
        item_table = item_table.reset_index(drop=True)
        notes["files"].append(str(t.path))  # type: ignore[union-attr]
        notes["items_not_in_items_file"] = int(
            (~np.isin(item_table["item_id"], given["item_id"])).sum()
        )
        if "title" in item_table:
            item_table["title"] = (
                item_table["title"].astype(object).where(item_table["title"].notna(), None)
            )
            notes["items_without_title"] = int(item_table["title"].isna().sum())
    user_table = pd.DataFrame({"user_id": np.unique(inter["user_id"].to_numpy())})
    if users is not None:
        t = _read(Path(users), "users")
        _columns(t, cmap.users, "users", cmap.path)
        user_table = user_table.merge(_read_users(t, cmap.users), on="user_id", how="left")
        notes["files"].append(str(t.path))  # type: ignore[union-attr]
    return RawTables(inter, item_table, user_table, notes)
