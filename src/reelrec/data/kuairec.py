"""KuaiRec 2.0 item content: Chinese captions, cover text, topic tags and a 3-level category tree.

Data: ``shared/datasets/kuairec-caption-category`` (read its SOURCE.md; KuaiRec, Gao et al.,
CIKM 2022, CC BY-SA 4.0), 10,728 videos (ids 0..10727) and 7,176 user profiles, **no
interactions** (the KuaiRec matrices are not in the folder). So this is a content catalogue,
not a ``reelrec prepare`` dataset: real Chinese short-video text for the cleaning pipeline
(:mod:`reelrec.content.text_cleaning`), the encoders and semantic IDs, with categories to
measure them by (``bench/kuairec_captions.py``).

* ``kuairec_caption_category.csv``: ``video_id, manual_cover_text`` (literal ``UNKNOWN`` when
  absent), ``caption`` (may be empty; four hold bare carriage returns inside unquoted fields,
  so lines end at ``\\n`` only), ``topic_tag`` (``[a,b]``), and the id and name of the first,
  second and third category level (``-124`` / ``UNKNOWN`` = none at that level).
* ``item_categories.csv``: ``video_id, feat`` (1-3 tag ids in 0..30).
* ``user_features.csv``: ``user_id`` plus profile columns (kept as read, numbers where they parse).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import DataFormatError, read_table, to_numeric

CAPTIONS = "kuairec_caption_category.csv"
TAGS = "item_categories.csv"
USERS = "user_features.csv"
#: the markers of "none" in the captions file
NO_TEXT, NO_CATEGORY_ID, NO_CATEGORY_NAME = "UNKNOWN", -124, "UNKNOWN"
CAPTION_COLUMNS = [
    "video_id",
    "manual_cover_text",
    "caption",
    "topic_tag",
    *(
        f"{level}_level_category_{part}"
        for level in ("first", "second", "third")
        for part in ("id", "name")
    ),
]


@dataclass
class ItemCatalog:
    """Items with content but no interactions.

    Attributes:
        items: one row per video: ``item_id`` int64, ``caption``, ``cover_text`` (None when
            absent), ``topic_tags`` (list of str), ``category1..3`` (Int64, NA = none) and
            ``category1_name..category3_name``, ``tags`` (list of int), ``title`` (cover text
            and caption joined: the text an encoder reads; None when both are absent).
        users: ``user_id`` plus profile columns.
        notes: files read and coverage counts.
    """

    items: pd.DataFrame
    users: pd.DataFrame
    notes: dict[str, object] = field(default_factory=dict)


def _read_captions(path: Path) -> pd.DataFrame:
    """The captions file as strings, lines ending at ``\\n`` only (SOURCE.md's gotcha).

    Raises:
        FileNotFoundError, DataFormatError: missing, not UTF-8, wrong header or field count.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8")  # read_text would turn each bare \r into \n
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None
    try:
        df = pd.read_csv(io.StringIO(text), lineterminator="\n", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"{path}: cannot parse: {exc}") from None
    missing = [c for c in CAPTION_COLUMNS if c not in df.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def _bracket_list(values: pd.Series) -> list[list[str]]:
    """``"[a,b]"`` cells -> ``["a", "b"]`` (``"[]"`` -> [])."""
    out = []
    for v in values:
        inner = v.strip().removeprefix("[").removesuffix("]")
        out.append([t.strip() for t in inner.split(",") if t.strip()])
    return out


def load_kuairec_captions(folder: Path) -> ItemCatalog:
    """Load the KuaiRec caption/category folder.

    Returns:
        :class:`ItemCatalog` (see its attributes); ``notes`` counts the items with cover text,
        caption, topic tags, a category per level, carriage returns inside captions, and items
        without any text.

    Raises:
        FileNotFoundError: the captions file is missing.
        DataFormatError: a malformed row (names the file, line and column), a repeated video id,
            a tag list that is not integers.
    """
    folder = Path(folder)
    path = folder / CAPTIONS
    df = _read_captions(path)
    # to_numeric names the physical line: rows are one per line here, after the header
    lines = np.arange(2, len(df) + 2)
    ids = to_numeric(df, "video_id", path, ",", lines=lines, bounds=(0, None))[0]
    if len(np.unique(ids)) != len(ids):
        rec = int(np.flatnonzero(pd.Series(ids).duplicated().to_numpy())[0])
        raise DataFormatError(f"{path}, line {rec + 2}: video {int(ids[rec])} appears again")
    cover = df["manual_cover_text"].str.strip()
    caption = df["caption"].str.replace("\r", " ").str.strip()
    items = pd.DataFrame({"item_id": ids})
    items["cover_text"] = pd.Series(
        [None if v in ("", NO_TEXT) else v for v in cover], dtype=object
    )
    items["caption"] = pd.Series([v or None for v in caption], dtype=object)
    items["topic_tags"] = _bracket_list(df["topic_tag"])
    for k, level in enumerate(("first", "second", "third"), start=1):
        cid = to_numeric(df, f"{level}_level_category_id", path, ",", lines=lines)[0]
        name = df[f"{level}_level_category_name"].str.strip()
        none = cid == NO_CATEGORY_ID
        items[f"category{k}"] = pd.array(np.where(none, 0, cid), dtype="Int64")
        items.loc[none, f"category{k}"] = pd.NA
        items[f"category{k}_name"] = pd.Series(
            [None if x else v for v, x in zip(name, none, strict=True)], dtype=object
        )
    joined = [
        " ".join(t for t in (c, p) if t) or None
        for c, p in zip(items["cover_text"], items["caption"], strict=True)
    ]
    items["title"] = pd.Series(joined, dtype=object)
    notes: dict[str, object] = {"files": [str(path)]}
    tag_path = folder / TAGS
    if tag_path.exists():
        t = read_table(tag_path, ",", required=["video_id", "feat"])
        tid = to_numeric(t, "video_id", tag_path, ",")[0]
        feats = _bracket_list(t["feat"])
        try:
            tag_ids = [[int(x) for x in f] for f in feats]
        except ValueError:
            bad = next(
                i for i, f in enumerate(feats) if not all(x.lstrip("-").isdigit() for x in f)
            )
            raise DataFormatError(
                f"{tag_path}, data row {bad + 1}, column 'feat': expected integers, got "
                f"{t['feat'].iloc[bad]!r}"
            ) from None
        by_id = dict(zip(tid.tolist(), tag_ids, strict=True))
        items["tags"] = [by_id.get(int(i), []) for i in ids]
        notes["files"].append(str(tag_path))  # type: ignore[union-attr]
        notes["items_without_tags"] = int(sum(not by_id.get(int(i)) for i in ids))
    users = pd.DataFrame({"user_id": np.zeros(0, dtype=np.int64)})
    user_path = folder / USERS
    if user_path.exists():
        u = read_table(user_path, ",", required=["user_id"])
        users = pd.DataFrame({"user_id": to_numeric(u, "user_id", user_path, ",")[0]})
        for c in u.columns:
            if c == "user_id":
                continue
            try:
                users[c] = to_numeric(u, c, user_path, ",", dtype="float64", nullable=True)[0]
            except DataFormatError:
                users[c] = u[c].to_numpy(dtype=object)
        notes["files"].append(str(user_path))  # type: ignore[union-attr]
    n = len(items)
    notes |= {
        "items": n,
        "items_with_cover_text": int(items["cover_text"].notna().sum()),
        "items_with_caption": int(items["caption"].notna().sum()),
        "items_with_topic_tags": int(sum(bool(t) for t in items["topic_tags"])),
        "items_without_text": int(items["title"].isna().sum()),
        "captions_with_carriage_returns": int(df["caption"].str.contains("\r").sum()),
        "items_with_category": {
            f"level{k}": int(items[f"category{k}"].notna().sum()) for k in (1, 2, 3)
        },
        "users": len(users),
    }
    return ItemCatalog(items.reset_index(drop=True), users, notes)
