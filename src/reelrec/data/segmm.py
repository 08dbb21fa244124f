"""SegMM sample loader (He et al., "Short Video Segment-level User Dynamic Interests Modeling in
Personalized Recommendation", SIGIR 2025, arXiv 2504.04237).

``SegMM_inter_sample.csv`` columns: ``user_id, video_id, time_ms`` (relative ms),
``duration_ms, playing_time`` (ms), ``label_1D``: a numpy-printed array such as ``"[ 1  0 -1]"``
with one entry per 5-second segment (1 watched, 0 the segment where the user left, -1 never
reached); long arrays wrap over several physical lines inside a quoted field, so the file is read
with a real CSV parser. Canonical columns: ``item_id``, ``timestamp_ms``, ``duration_ms``,
``play_time_ms``, ``watch_ratio`` and ``label_1d`` (list of int8, length ceil(duration_ms/5000)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import (
    NON_NEGATIVE,
    DataFormatError,
    physical_line,
    read_table,
    to_numeric,
)
from reelrec.data.tables import RawTables

FILE = "SegMM_inter_sample.csv"
#: Segment length of the SegMM labels, in ms (paper section 3: 5-second segments).
SEGMENT_MS = 5000


def parse_label_array(text: str) -> list[int]:
    """Parse a numpy-printed label array (``"[ 1  0 -1]"``, possibly with newlines).

    Raises:
        ValueError: not a bracketed list of integers in {-1, 0, 1}.
    """
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ValueError(f"expected a bracketed array, got {text[:40]!r}")
    values = [int(t) for t in body[1:-1].split()]
    if not values or any(v not in (-1, 0, 1) for v in values):
        raise ValueError(f"labels must be -1, 0 or 1, got {text[:40]!r}")
    return values


def load_segmm(folder: Path) -> RawTables:
    """Load the SegMM interaction sample.

    Raises:
        FileNotFoundError: the file is missing.
        DataFormatError: malformed row, value, or a label array whose length is not
            ceil(duration_ms / 5000) (message names file and physical line).
    """
    path = Path(folder) / FILE
    cols = ["user_id", "video_id", "time_ms", "duration_ms", "playing_time", "label_1D"]
    raw = read_table(path, sep=",", required=cols)
    out = pd.DataFrame()
    nn = NON_NEGATIVE
    out["user_id"] = to_numeric(raw, "user_id", path, ",", bounds=nn)[0]
    out["item_id"] = to_numeric(raw, "video_id", path, ",", bounds=nn)[0]
    out["timestamp_ms"] = pd.array(
        to_numeric(raw, "time_ms", path, ",", bounds=nn)[0], dtype="Int64"
    )
    out["duration_ms"] = to_numeric(
        raw, "duration_ms", path, ",", dtype="float64", bounds=(1, None)
    )[0]
    out["play_time_ms"] = to_numeric(raw, "playing_time", path, ",", dtype="float64", bounds=nn)[0]
    labels = []
    for rec, (text, dur) in enumerate(zip(raw["label_1D"], out["duration_ms"], strict=True)):
        try:
            arr = parse_label_array(text)
        except ValueError as exc:
            line = physical_line(path, rec, ",")
            raise DataFormatError(f"{path}, line {line}, column 'label_1D': {exc}") from None
        if len(arr) != math.ceil(dur / SEGMENT_MS):
            line = physical_line(path, rec, ",")
            raise DataFormatError(
                f"{path}, line {line}, column 'label_1D': {len(arr)} segments but duration "
                f"{dur:.0f} ms needs ceil({dur:.0f}/{SEGMENT_MS}) = {math.ceil(dur / SEGMENT_MS)}"
            )
        labels.append(np.asarray(arr, dtype=np.int8))
    out["label_1d"] = labels
    with np.errstate(divide="ignore", invalid="ignore"):
        out["watch_ratio"] = out["play_time_ms"] / out["duration_ms"].where(out["duration_ms"] > 0)
    items = out.groupby("item_id", as_index=False)["duration_ms"].max()
    users = pd.DataFrame({"user_id": np.unique(out["user_id"].to_numpy())})
    return RawTables(out, items, users, {"files": [str(path)]})
