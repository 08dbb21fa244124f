"""MicroLens-50K loader (Ni et al., "A Content-Driven Micro-Video Recommendation Dataset at
Scale", arXiv 2309.15379): 50,000 users, 19,220 micro-videos, 359,708 interactions.

``MicroLens-50k_pairs.tsv``: one line per user, ``user_id<TAB>item item ...`` in time order (the
official readme); there are no timestamps, so ``timestamp_ms`` is null and the row order within a
user is the clock (protocol ``leave-one-out``: the last item is the test target, the one before
it the validation target). ``MicroLens-50k_titles.csv``: ``item,title`` (English machine
translations of the Chinese titles, ``#`` topic hashtags kept), one row per video; the titles
fill ``items.title`` and feed ``reelrec encode``. ``videos/<item>.mp4`` (three raw clips where
present) are listed in the notes as a frame source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.amazon import read_s3rec_sequences
from reelrec.data.readers import DataFormatError, read_table, to_numeric
from reelrec.data.tables import RawTables

PAIRS = "MicroLens-50k_pairs.tsv"
TITLES = "MicroLens-50k_titles.csv"


def load_microlens(folder: Path) -> RawTables:
    """Load MicroLens-50K into canonical tables.

    Args:
        folder: the ``microlens-50k`` folder (pairs file, titles file, optional ``videos/``).

    Returns:
        :class:`RawTables`: interactions (``user_id``, ``item_id``, ``timestamp_ms`` null, in
        file order), items (``item_id``, ``title``; titles of items nobody watched are kept),
        users (``user_id``), notes (files read, items without a title, clips found).

    Raises:
        FileNotFoundError: the pairs file is missing.
        DataFormatError: a malformed pairs line or titles row (names the file and line), an
            empty pairs file, a title item id below 1, a repeated item id in the titles file.
    """
    folder = Path(folder)
    seqs = read_s3rec_sequences(folder / PAIRS)
    if not seqs:
        raise DataFormatError(f"{folder / PAIRS}: no user lines")
    users = np.repeat(np.fromiter(seqs.keys(), dtype=np.int64), [len(s) for s in seqs.values()])
    items_col = np.fromiter((i for s in seqs.values() for i in s), dtype=np.int64)
    inter = pd.DataFrame({"user_id": users, "item_id": items_col})
    inter["timestamp_ms"] = pd.array([None] * len(inter), dtype="Int64")
    notes: dict[str, object] = {"files": [str(folder / PAIRS)], "timestamps": "none (order only)"}

    items = pd.DataFrame({"item_id": np.unique(items_col)})
    title_path = folder / TITLES
    if title_path.exists():
        df = read_table(title_path, sep=",", required=["item", "title"])
        ids = to_numeric(df, "item", title_path, ",")[0].astype(np.int64)
        if (ids < 1).any():
            row = int(np.flatnonzero(ids < 1)[0])
            raise DataFormatError(
                f"{title_path}, data row {row + 1}: item ids start at 1, got {int(ids[row])}"
            )
        if len(np.unique(ids)) != len(ids):
            dup = int(pd.Series(ids).loc[pd.Series(ids).duplicated()].iloc[0])
            raise DataFormatError(f"{title_path}: item {dup} has several title rows")
        titles = pd.DataFrame({"item_id": ids, "title": df["title"].astype(object).to_numpy()})
        items = items.merge(titles, on="item_id", how="outer").sort_values("item_id")
        items = items.reset_index(drop=True)
        empty = items["title"].isna() | (items["title"].astype(str).str.strip() == "")
        items["title"] = items["title"].astype(object).where(~empty, None)
        notes["files"].append(str(title_path))  # type: ignore[union-attr]
        notes["items_without_title"] = int(empty.sum())
        notes["titled_items_never_watched"] = int((~np.isin(ids, items_col)).sum())
    else:
        items["title"] = pd.Series([None] * len(items), dtype="object")
        notes["items_without_title"] = len(items)
    clips = sorted(p.name for p in (folder / "videos").glob("*.mp4"))
    notes["video_clips"] = clips
    user_table = pd.DataFrame({"user_id": np.fromiter(seqs.keys(), dtype=np.int64)})
    return RawTables(inter, items, user_table, notes)
