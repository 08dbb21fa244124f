"""Canonical tables every loader produces and every later stage reads.

``interactions`` (one row per logged event, in the source's order until :mod:`reelrec.data.prepare`
stable-sorts it):

=================  ========  =====================================================================
column             dtype     meaning
=================  ========  =====================================================================
user_id            int64     user id as in the source files
item_id            int64     item (video) id as in the source files
timestamp_ms       Int64     event time in Unix ms (SegMM: relative ms); null where the source has
                             only an order (S3-Rec Amazon files): row order is then the time order
labels...          int8      binary feedback where the dataset has it: ``click``, ``long_view``,
                             ``like`` (KuaiRand ``label``), ``follow``, ``comment``, ``forward``
play_time_ms       float64   watch time in ms
duration_ms        float64   video duration in ms; NaN when unknown (KuaiRand logs 0 for unknown)
watch_ratio        float64   play_time_ms / duration_ms; NaN when duration is unknown
=================  ========  =====================================================================

Dataset-specific extra columns (``date`` for KuaiRand's Beijing calendar day, ``rating`` for
MovieLens, ``label_1d`` segment labels for SegMM) are documented in each loader.

``items``: ``item_id`` plus what the dataset knows (``title``, ``attributes``, ``duration_ms``).
``users``: ``user_id`` plus profile features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

#: Binary feedback columns, in the order reports list them.
LABEL_COLUMNS = ("click", "long_view", "like", "follow", "comment", "forward")


@dataclass
class RawTables:
    """What a loader returns: the three canonical tables and counts for the prepare report.

    Attributes:
        interactions: canonical interactions (see module docstring).
        items: one row per item id seen in the source.
        users: one row per user id (possibly only ``user_id``).
        notes: counters and remarks from loading (missing values, files read), copied into
            ``prepare_report.json``.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    notes: dict[str, object] = field(default_factory=dict)
