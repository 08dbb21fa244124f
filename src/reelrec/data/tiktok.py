"""TikTok (Douyin) micro-video loader: implicit feedback plus visual and acoustic item vectors.

Data: the TikTok set of MMSSL / DiffMM (HKUDS; derived from the MMGCN TikTok data of the ICME
2019 Short Video Understanding Challenge), 9,308 users x 6,710 items, as the CSV edge lists and
``.npy`` feature files of ``shared/datasets/tiktok-mmssl-va-features`` (read its SOURCE.md):

* ``train.csv``, ``valid.csv``, ``test.csv``: ``user_id,item_id`` implicit positives (59,541 /
  3,051 / 6,130 rows), no timestamps and no order. The split is given: column ``given_split``
  (0 train, 1 valid, 2 test) carries it, and protocol ``tiktok-given`` keeps it (valid and test
  hold one item per user, and not every user has one).
* ``image_feat.npy``, ``audio_feat.npy``: (6,710, 128) float16 visual and acoustic vectors,
  row = item id. They fill ``items.visual`` / ``items.audio`` (float32 lists): the item content
  that ``reelrec encode`` (encoder ``item-vectors``) turns into embeddings for semantic IDs, as
  QARM quantises multimodal item embeddings.

Within a user, rows are in file order (train, then valid, then test): sequence models see an
order that the data does not have, so the benchmark use is content-based retrieval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import NON_NEGATIVE, DataFormatError, read_table, to_numeric
from reelrec.data.tables import RawTables

SPLIT_FILES = ("train.csv", "valid.csv", "test.csv")
FEATURE_FILES = {"visual": "image_feat.npy", "audio": "audio_feat.npy"}


def _vectors(path: Path) -> np.ndarray:
    """A (n, d) feature matrix as float32.

    Raises:
        FileNotFoundError: no such file. DataFormatError: not a 2-D numeric array, or not finite.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataFormatError(f"{path}: not a .npy array ({exc})") from None
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise DataFormatError(f"{path}: expected a 2-D float array, got {x.dtype} {x.shape}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise DataFormatError(f"{path}: row {int(np.flatnonzero(bad)[0])} is not finite")
    return x


def load_tiktok(folder: Path) -> RawTables:
    """Load the TikTok folder into canonical tables.

    Returns:
        :class:`RawTables`: interactions (``user_id``, ``item_id``, ``timestamp_ms`` null,
        ``given_split`` int8), items (``item_id`` 0..n-1, ``visual`` and ``audio`` float32
        lists), users (``user_id``), notes (files, rows per given split).

    Raises:
        FileNotFoundError: a split or feature file is missing.
        DataFormatError: a malformed row (names the file, line and column), feature files of
            different row counts, or an item id without a feature row.
    """
    folder = Path(folder)
    parts = []
    for code, name in enumerate(SPLIT_FILES):
        path = folder / name
        df = read_table(path, ",", required=["user_id", "item_id"])
        u = to_numeric(df, "user_id", path, ",", bounds=NON_NEGATIVE)[0]
        i = to_numeric(df, "item_id", path, ",", bounds=NON_NEGATIVE)[0]
        parts.append(pd.DataFrame({"user_id": u, "item_id": i, "given_split": np.int8(code)}))
    inter = pd.concat(parts, ignore_index=True)
    inter["given_split"] = inter["given_split"].astype(np.int8)
    inter["timestamp_ms"] = pd.array([None] * len(inter), dtype="Int64")
    vectors = {col: _vectors(folder / f) for col, f in FEATURE_FILES.items()}
    rows = {col: len(x) for col, x in vectors.items()}
    if len(set(rows.values())) != 1:
        raise DataFormatError(f"{folder}: feature files have different row counts {rows}")
    n = next(iter(rows.values()))
    too_big = inter["item_id"].to_numpy() >= n
    if too_big.any():
        r = int(np.flatnonzero(too_big)[0])
        raise DataFormatError(
            f"{folder}: item {int(inter['item_id'].iloc[r])} has no feature row "
            f"(the feature files have {n} rows)"
        )
    items = pd.DataFrame({"item_id": np.arange(n, dtype=np.int64)})
    for col, x in vectors.items():
        items[col] = list(x)
    users = pd.DataFrame({"user_id": np.unique(inter["user_id"].to_numpy())})
    notes: dict[str, object] = {
        "files": [str(folder / f) for f in (*SPLIT_FILES, *FEATURE_FILES.values())],
        "timestamps": "none (given split, no order)",
        "rows_per_given_split": {
            name.removesuffix(".csv"): len(p) for name, p in zip(SPLIT_FILES, parts, strict=True)
        },
        "item_vectors": {col: int(x.shape[1]) for col, x in vectors.items()},
    }
    return RawTables(inter, items, users, notes)
