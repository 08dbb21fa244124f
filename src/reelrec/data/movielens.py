"""MovieLens loaders (Harper & Konstan, "The MovieLens Datasets: History and Context", TiiS 2015).

* ``ml-1m``: either the SeqRec-Benchmark conversion in ``movielens-1m-seqrec``
  (``interactions.csv.gz``: UserID, ItemID, Timestamp [s], Position; ``item2title.csv``; ids
  re-indexed from 100) or the GroupLens original ``ratings.dat``/``movies.dat``
  (``UserID::MovieID::Rating::Timestamp``), whichever is in the folder (a folder holding both is
  refused). ``users.dat`` is not read: the users table holds ``user_id`` only.
* ``ml-100k``: the GroupLens files ``u.data`` (tab-separated user, item, rating, timestamp),
  ``u.item`` (latin-1, ``|``-separated, title and 19 genre flags) and ``u.user``.

Every rating is an interaction (implicit feedback, as in SASRec/HSTU); ``rating`` is kept.
Rows keep the file order inside equal timestamps (CASES.md C08): the SeqRec file is read in
Position order, the GroupLens files in line order, before :mod:`reelrec.data.prepare` stable-sorts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import (
    NON_NEGATIVE,
    UNIX_S,
    DataFormatError,
    read_separated_lines,
    read_table,
    single_candidate,
    to_numeric,
)
from reelrec.data.tables import RawTables

ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


#: valid MovieLens ratings (1..5 stars; 0 tolerated)
RATING = (0, 5)


def _interactions(
    path: Path, sep: str, cols: list[str] | None, user: str, item: str, ts: str
) -> pd.DataFrame:
    """Read an interaction file; ``cols`` names the columns of a file with no header line."""
    raw = read_table(path, sep=sep, columns=cols, required=[user, item, ts])
    h = cols is None
    nn = NON_NEGATIVE
    out = pd.DataFrame()
    out["user_id"] = to_numeric(raw, user, path, sep, header=h, bounds=nn)[0]
    out["item_id"] = to_numeric(raw, item, path, sep, header=h, bounds=nn)[0]
    out["timestamp_ms"] = pd.array(
        to_numeric(raw, ts, path, sep, header=h, bounds=UNIX_S)[0] * 1000, dtype="Int64"
    )
    if "Rating" in raw.columns:
        rating = to_numeric(raw, "Rating", path, sep, header=h, bounds=RATING)[0]
        out["rating"] = rating.astype("int8")
    if "Position" in raw.columns:
        pos = to_numeric(raw, "Position", path, sep, header=h)[0]
        out = out.iloc[np.lexsort((pos, out["user_id"].to_numpy()))].reset_index(drop=True)
    return out


#: the ML-1M interaction files the loader knows: SeqRec conversion, GroupLens original
ML1M_FILES = ("interactions.csv.gz", "ratings.dat")


def load_ml1m(folder: Path) -> RawTables:
    """Load ML-1M from ``folder`` (SeqRec conversion or GroupLens ``ratings.dat``).

    Raises:
        FileNotFoundError: neither format is present.
        AmbiguousDataError: both formats are present (message names the folder and both files).
        DataFormatError: malformed rows or values (message names file, line and column).
    """
    folder = Path(folder)
    path = single_candidate(
        folder,
        [folder / name for name in ML1M_FILES if (folder / name).is_file()],
        "ML-1M interaction",
        "keep either interactions.csv.gz with item2title.csv (SeqRec conversion) or ratings.dat "
        "with movies.dat (GroupLens original) and move the other format out",
    )
    if path is None:
        raise FileNotFoundError(
            f"{folder}: expected interactions.csv.gz (SeqRec conversion) or ratings.dat (GroupLens)"
        )
    notes: dict[str, object] = {"files": [str(path)]}
    if path.name == "interactions.csv.gz":
        inter = _interactions(path, ",", None, "UserID", "ItemID", "Timestamp")
        titles = read_table(folder / "item2title.csv", sep=",", required=["ItemID", "Title"])
        items = pd.DataFrame(
            {
                "item_id": to_numeric(
                    titles, "ItemID", folder / "item2title.csv", ",", bounds=NON_NEGATIVE
                )[0],
                "title": titles["Title"].to_numpy(),
            }
        )
    else:
        inter = _read_ratings_dat(path)
        items = _ml1m_movies(folder / "movies.dat", inter["item_id"].to_numpy(), notes)
    users = pd.DataFrame({"user_id": np.unique(inter["user_id"].to_numpy())})
    return RawTables(inter, items, users, notes)


def _read_ratings_dat(path: Path) -> pd.DataFrame:
    """Read GroupLens ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp`` [s], no header) in
    line order.

    Raises:
        FileNotFoundError: missing file.
        DataFormatError: a line without exactly four ``::``-separated fields, or a value that is
            not an integer or is out of range (message names file, line and column).
    """
    cols = ["UserID", "MovieID", "Rating", "Timestamp"]
    raw, lines = read_separated_lines(path, "::", cols, encoding="latin-1")

    def column(name: str, bounds: tuple[float | None, float | None]) -> np.ndarray:
        return to_numeric(raw, name, path, "::", header=False, bounds=bounds, lines=lines)[0]

    out = pd.DataFrame(
        {"user_id": column("UserID", NON_NEGATIVE), "item_id": column("MovieID", NON_NEGATIVE)}
    )
    out["timestamp_ms"] = pd.array(column("Timestamp", UNIX_S) * 1000, dtype="Int64")
    out["rating"] = column("Rating", RATING).astype("int8")
    return out


def _ml1m_movies(path: Path, item_ids: np.ndarray, notes: dict[str, object]) -> pd.DataFrame:
    """Read GroupLens ``movies.dat`` (``MovieID::Title::Genres``, genres ``|``-separated).

    A missing file gives the rated items with a null title and no genres (noted in ``notes``).

    Raises:
        DataFormatError: a line without exactly three ``::``-separated fields, or a movie id
            that is not a non-negative integer (message names file, line and column).
    """
    if not path.exists():
        notes["movies"] = f"not found ({path}); items have no title or genres"
        ids = np.unique(item_ids)
        return pd.DataFrame(
            {"item_id": ids, "title": [None] * len(ids), "genres": [[] for _ in ids]}
        )
    raw, lines = read_separated_lines(path, "::", ["MovieID", "Title", "Genres"], "latin-1")
    ids = to_numeric(raw, "MovieID", path, "::", header=False, bounds=NON_NEGATIVE, lines=lines)[0]
    notes["files"].append(str(path))  # type: ignore[union-attr]
    return pd.DataFrame(
        {
            "item_id": ids,
            "title": raw["Title"].to_numpy(),
            "genres": [g.split("|") if g else [] for g in raw["Genres"]],
        }
    )


def load_ml100k(folder: Path) -> RawTables:
    """Load MovieLens 100K (``u.data``, ``u.item``, ``u.user``).

    Raises:
        FileNotFoundError: ``u.data`` is missing.
        DataFormatError: malformed rows (names file and line).
    """
    folder = Path(folder)
    path = folder / "u.data"
    inter, n_space = _read_udata(path)
    item_cols = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
    item_path = folder / "u.item"
    raw_items = read_table(item_path, sep="|", columns=item_cols, encoding="latin-1")
    items = pd.DataFrame(
        {
            "item_id": to_numeric(raw_items, "item_id", item_path, "|", header=False)[0],
            "title": raw_items["title"].to_numpy(),
        }
    )
    flags = raw_items[list(ML100K_GENRES)].to_numpy() == "1"
    items["genres"] = [[g for g, f in zip(ML100K_GENRES, row, strict=True) if f] for row in flags]
    user_path = folder / "u.user"
    if user_path.exists():
        raw_users = read_table(
            user_path, sep="|", columns=["user_id", "age", "gender", "occupation", "zip_code"]
        )
        users = raw_users.copy()
        users["user_id"] = to_numeric(raw_users, "user_id", user_path, "|", header=False)[0]
        users["age"] = to_numeric(raw_users, "age", user_path, "|", header=False)[0]
    else:
        users = pd.DataFrame({"user_id": np.unique(inter["user_id"].to_numpy())})
    notes = {"files": [str(path), str(item_path)], "u.data_lines_with_spaces_not_tabs": n_space}
    return RawTables(inter, items, users, notes)


def _read_udata(path: Path) -> tuple[pd.DataFrame, int]:
    """Read ``u.data``: four integers per line. The README says tab-separated, but some lines of
    the distributed file use spaces (line 1: ``196\t242\t3   881250949``), so any whitespace
    separates fields; such lines are counted.

    Raises:
        FileNotFoundError: missing file.
        DataFormatError: a line without exactly four integer fields (names file and line).
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    rows: list[list[int]] = []
    n_space = 0
    with open(path, encoding="latin-1") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise DataFormatError(
                    f"{path}, line {line_no}: expected 4 fields, found {len(parts)}"
                )
            try:
                user, item, rating, ts = (int(p) for p in parts)
            except ValueError:
                raise DataFormatError(
                    f"{path}, line {line_no}: expected integers, got {line.strip()!r}"
                ) from None
            for name, value, (lo, hi) in (
                ("user id", user, (0, 2**62)),
                ("item id", item, (0, 2**62)),
                ("rating", rating, RATING),
                ("timestamp", ts, UNIX_S),
            ):
                if not lo <= value <= hi:
                    raise DataFormatError(
                        f"{path}, line {line_no}: {name} {value} outside [{lo}, {hi}]"
                    )
            rows.append([user, item, rating, ts])
            n_space += line.rstrip("\n").count("\t") != 3
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    out = pd.DataFrame({"user_id": arr[:, 0], "item_id": arr[:, 1]})
    out["timestamp_ms"] = pd.array(arr[:, 3] * 1000, dtype="Int64")
    out["rating"] = arr[:, 2].astype("int8")
    return out, n_space
