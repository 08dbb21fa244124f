"""Amazon Beauty / Sports_and_Outdoors / Toys_and_Games loader, S3-Rec release (Zhou et al.,
CIKM 2020): the 5-core splits used by P5 and TIGER (Rajput et al., NeurIPS 2023).

``<Name>.txt``: one line per user, ``user_id item_1 ... item_n`` (1-based ids, time order, no
timestamps). ``<Name>_item2attributes.json``: item id -> brand/category attribute ids.
Canonical interactions have ``timestamp_ms`` null: row order within a user is the time order.

Titles: the S3-Rec files carry no text. Where the SeqRec-Benchmark copy of the same Amazon 2014
data is present (``amazon2014-beauty-seqrec``, ``amazon2014-toy-seqrec``), item ids are mapped by
aligning the two processings' user sequences (:mod:`reelrec.data.amazon_titles`, verification
figures in ``docs/amazon-title-mapping.md``) and ``items.title`` is filled; unmapped items and
Sports keep a null title.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import DataFormatError, read_table, to_numeric
from reelrec.data.tables import RawTables

#: dataset name -> (S3-Rec file stem, SeqRec-Benchmark titles folder or None)
AMAZON = {
    "amazon-beauty": ("Beauty", "amazon2014-beauty-seqrec"),
    "amazon-sports": ("Sports_and_Outdoors", None),
    "amazon-toys": ("Toys_and_Games", "amazon2014-toy-seqrec"),
}


_INT_TOKEN = re.compile(r"-?[0-9]+")


def read_s3rec_sequences(path: Path) -> dict[int, list[int]]:
    """Parse an S3-Rec sequence file into ``{user_id: [item ids in time order]}``.

    Raises:
        FileNotFoundError: missing file.
        DataFormatError: a line that is not integers, or a repeated user id (names file, line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    seqs: dict[int, list[int]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        # ASCII digits only: int() would also take "1_0", "+3" and other scripts' digits
        bad = next((p for p in parts if not _INT_TOKEN.fullmatch(p)), None)
        if bad is not None:
            raise DataFormatError(f"{path}, line {line_no}: expected integer ids, got {bad!r}")
        ids = [int(p) for p in parts]
        if len(ids) < 2:
            raise DataFormatError(f"{path}, line {line_no}: a user line needs >= 1 item")
        if ids[0] in seqs:
            raise DataFormatError(f"{path}, line {line_no}: user {ids[0]} appears twice")
        if min(ids[1:]) < 1 or ids[0] < 0:
            raise DataFormatError(f"{path}, line {line_no}: item ids start at 1")
        if max(ids) >= 2**62:
            raise DataFormatError(f"{path}, line {line_no}: id {max(ids)} is too large")
        seqs[ids[0]] = ids[1:]
    return seqs


def read_seqrec_sequences(folder: Path) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Read a SeqRec-Benchmark folder: per-user sequences (by Position) and item titles."""
    folder = Path(folder)
    inter_path = folder / "interactions.csv.gz"
    inter = read_table(inter_path, sep=",", required=["UserID", "ItemID", "Position"])
    u = to_numeric(inter, "UserID", inter_path, ",")[0]
    i = to_numeric(inter, "ItemID", inter_path, ",")[0]
    p = to_numeric(inter, "Position", inter_path, ",")[0]
    order = np.lexsort((p, u))
    seqs: dict[int, list[int]] = {}
    for uid, iid in zip(u[order].tolist(), i[order].tolist(), strict=True):
        seqs.setdefault(uid, []).append(iid)
    title_path = folder / "item2title.csv"
    titles_df = read_table(title_path, sep=",", required=["ItemID", "Title"])
    ids = to_numeric(titles_df, "ItemID", title_path, ",")[0]
    return seqs, dict(zip(ids.tolist(), titles_df["Title"].tolist(), strict=True))


def load_amazon(name: str, folder: Path, titles_folder: Path | None) -> RawTables:
    """Load one Amazon S3-Rec dataset (``amazon-beauty``, ``amazon-sports``, ``amazon-toys``).

    Raises:
        KeyError: unknown name.
        FileNotFoundError / DataFormatError: missing or malformed files.
    """
    stem, _ = AMAZON[name]
    folder = Path(folder)
    seqs = read_s3rec_sequences(folder / f"{stem}.txt")
    users = np.repeat(np.fromiter(seqs.keys(), dtype=np.int64), [len(s) for s in seqs.values()])
    items_col = np.fromiter((i for s in seqs.values() for i in s), dtype=np.int64)
    inter = pd.DataFrame({"user_id": users, "item_id": items_col})
    inter["timestamp_ms"] = pd.array([None] * len(inter), dtype="Int64")
    notes: dict[str, object] = {
        "files": [str(folder / f"{stem}.txt")],
        "timestamps": "none (order only)",
    }

    items = pd.DataFrame({"item_id": np.unique(items_col)})
    attr_path = folder / f"{stem}_item2attributes.json"
    if attr_path.exists():
        try:
            attrs = json.loads(attr_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{attr_path}, line {exc.lineno}: invalid JSON: {exc.msg}"
            ) from None
        items["attributes"] = items["item_id"].map(lambda i: attrs.get(str(i), []))
        notes["files"].append(str(attr_path))  # type: ignore[union-attr]
    items["title"] = pd.Series([None] * len(items), dtype="object")
    if titles_folder is not None and Path(titles_folder).exists():
        from reelrec.data.amazon_titles import map_s3rec_to_seqrec

        seqrec, titles = read_seqrec_sequences(Path(titles_folder))
        result = map_s3rec_to_seqrec(seqs, seqrec)
        items["title"] = items["item_id"].map(
            lambda i: titles.get(result.item_map[i]) if i in result.item_map else None
        )
        notes["title_mapping"] = {
            "source": str(titles_folder),
            "items_with_title": int(items["title"].notna().sum()),
            "items": len(items),
            "users_matched": result.n_users_matched,
            "users_exact": result.n_users_exact,
            "conflicts": result.n_conflicts,
        }
    else:
        notes["title_mapping"] = "no titles folder; items.title is null"
    user_table = pd.DataFrame({"user_id": np.fromiter(seqs.keys(), dtype=np.int64)})
    return RawTables(inter, items, user_table, notes)
