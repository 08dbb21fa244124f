"""Samples for multi-task ranking (CTR-style models: CAN, DIN, DeepFM).

One sample is one logged impression (KuaiRand: one row of the like/hate slice) with

* **sparse fields** ``(n, F)`` int64: categorical features, each with its own vocabulary. Index 0
  is padding, 1 is "unknown" (a value not seen in the rows the vocabulary was fitted on, or
  missing); known values start at 2. Vocabularies are fitted on the training split only.
* **behaviour sequences** ``(n, S, L)`` int64: the user's most recent positive items strictly
  earlier in time (never the row itself or a row at the same timestamp), newest last, left
  padded with 0. Sequence ``s`` is aligned with sparse field ``seq_target[s]`` and shares its
  vocabulary (the history video ids with ``video_id``, history semantic-ID codes with the
  target's codes), as in DIN.
* **bags** ``(n, B, K)`` int64: multi-valued target-side features (QARM VQ codes: the K nearest
  items of the target video), 0-padded.
* **labels** ``(n, T)`` float32: binary tasks in {0, 1}, regression tasks (watch ratio) as
  values; NaN where a row has no label for the task (excluded from loss and metrics).
* ``groups`` (user id, for GAUC) and ``split`` (0 train, 1 valid, 2 test).

Builders: :func:`kuairand_ctr` (the temporal protocol of DESIGN.md on a prepared run), and, for
smoke runs only, :func:`taobao_ctr`, :func:`criteo_ctr` and :func:`avazu_ctr` over the small
real samples in ``$REELREC_DATA_DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reelrec.data.readers import DataFormatError, read_table, to_numeric

PAD, UNKNOWN = 0, 1
#: binary feedback tasks of KuaiRand and the regression task
KUAIRAND_TASKS = ("click", "long_view", "like", "follow", "comment", "forward", "watch_ratio")
REGRESSION_TASKS = ("watch_ratio",)
#: basic video columns of the items table that become sparse fields (``video_<name>``) when
#: present (kuairand-pure); the video statistic columns are never read (data/kuairand.py)
STATIC_ITEM_FIELDS = ("author_id", "music_id", "music_type", "video_type", "upload_type")
#: duration buckets (seconds): short-video lengths are spread over 5 s .. 5 min
DURATION_EDGES_S = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)


@dataclass
class FeatureConfig:
    """Which features the KuaiRand ranking samples carry (section ``ranking`` of a config)."""

    max_history: int = 50  # L: behaviour-sequence length (1..1000)
    history_labels: list[str] = field(default_factory=lambda: ["like", "long_view"])  # a row
    # enters later histories when any of these labels is 1
    user_profile: bool = True  # KuaiRand user-table fields (activity degree, fans range, ...)
    user_raw_counts: bool = True  # also the raw count columns that have a ``<name>_range``
    # bucket (follow / fans / friend numbers, register days: thousands of values each, so each
    # acts as a second user id); false keeps only their ranges
    counters: bool = True  # real-time counters: the video's and the user's impressions and
    # click / long_view / like rates over rows strictly earlier in time, bucketed
    user_counters: str = "realtime"  # the user's counters over rows strictly earlier in time
    # ("realtime"), or over rows of strictly earlier days only ("daily": the Beijing-time day of
    # each row's timestamp, so they stay constant over a user's day; their drift within the day
    # costs GAUC on kuairand-pure, see docs/results.md). The video's counters stay real-time.
    # The day comes from ``timestamp_ms``, not the log's ``date`` column: on kuairand-pure 0.9%
    # of rows are dated the next day while their timestamp says 21:49-23:59 the day before.
    min_count: int = 1  # ids (user, video) on fewer training rows map to "unknown" (>= 1)
    semantic_ids: str = ""  # run sub-folder with semantic_ids.parquet (e.g. "tokenizer"):
    # the target's and the history's semantic-ID codes become features; "" = off
    vq_codes: str = ""  # run sub-folder with vq_codes.parquet (e.g. "tokenizer-vq"): the
    # target's QARM VQ codes become a bag feature; "" = off
    drop: list[str] = field(default_factory=list)  # sparse fields left out of the samples
    # (e.g. [user_id]); never video_id, hour, duration or a field a behaviour sequence uses
    item_features: bool = True  # the video's basic content fields where the items table has
    # them (kuairand-pure: author, music, music/video/upload type, first tag, and all tags as a
    # bag); never a video statistic column
    scenario: bool = True  # the impression's scenario (``tab``) where the log has it

    def validate(self, section: str = "features") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key.
        """
        from reelrec.config import ConfigError

        labels = list(KUAIRAND_TASKS[:-1])
        rules = [
            (1 <= self.max_history <= 1000, "max_history", "in 1..1000"),
            (self.min_count >= 1, "min_count", ">= 1"),
            (
                len(self.history_labels) > 0 and all(x in labels for x in self.history_labels),
                "history_labels",
                f"a non-empty list of {labels}",
            ),
        ]
        for key in ("semantic_ids", "vq_codes"):
            folder = getattr(self, key)
            inside = folder == "" or (
                not Path(folder).is_absolute() and ".." not in Path(folder).parts
            )
            rules.append((inside, key, '"" or a folder inside the run (no absolute path, no ..)'))
        kept = sorted({"video_id", "hour", "duration"} & set(self.drop))
        rules.append(
            (self.user_counters in USER_COUNTERS, "user_counters", f"one of {USER_COUNTERS}")
        )
        rules.append(
            (
                self.counters or self.user_counters == "realtime",
                "user_counters",
                '"realtime" (the default) when features.counters is false (there are no user '
                "counters to count by day)",
            )
        )
        rules += [
            (not kept, "drop", f"a list without {kept} (these fields always stay)"),
            (len(set(self.drop)) == len(self.drop), "drop", "a list of distinct field names"),
        ]
        for ok, key, rule in rules:
            if not ok:
                raise ConfigError(f"{section}.{key} must be {rule}, got {getattr(self, key)!r}")


@dataclass
class CTRData:
    """Ranking samples; see the module docstring for the layout.

    Attributes:
        fields: names of the sparse fields (F). vocab: vocabulary size per field (incl. 0, 1).
        sparse: int64 (n, F). sequences: names of the S behaviour sequences; seq_target: for each,
        the index of the sparse field it is aligned with. history: int64 (n, S, L).
        bags: names of the B bag fields; bag_vocab: their vocabulary sizes; bag: int64 (n, B, K).
        tasks: task names (T); labels: float32 (n, T), NaN = no label.
        groups: int64 (n,) user ids. split: int8 (n,) 0/1/2. source: what the samples came from.
    """

    fields: list[str]
    vocab: list[int]
    sparse: torch.Tensor
    sequences: list[str]
    seq_target: list[int]
    history: torch.Tensor
    bags: list[str]
    bag_vocab: list[int]
    bag: torch.Tensor
    tasks: list[str]
    labels: torch.Tensor
    groups: np.ndarray
    split: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.sparse)

    @property
    def binary(self) -> list[bool]:
        """Per task, True for binary tasks (BCE, AUC) and False for regression."""
        return [t not in REGRESSION_TASKS for t in self.tasks]

    def rows(self, split: int) -> np.ndarray:
        """Row indices of a split (0 train, 1 valid, 2 test)."""
        return np.flatnonzero(self.split == split)

    def batch(self, idx: torch.Tensor | np.ndarray) -> CTRBatch:
        """The samples at ``idx`` as one batch (CPU tensors)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return CTRBatch(self.sparse[idx], self.history[idx], self.bag[idx], self.labels[idx])

    def check(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent array (shapes, index ranges)."""
        n, nf = len(self.sparse), len(self.fields)
        if self.sparse.shape != (n, nf) or len(self.vocab) != nf:
            raise ValueError(f"sparse has shape {tuple(self.sparse.shape)} for {nf} fields")
        if self.history.shape[:2] != (n, len(self.sequences)):
            raise ValueError(f"history has shape {tuple(self.history.shape)}")
        if self.labels.shape != (n, len(self.tasks)):
            raise ValueError(f"labels have shape {tuple(self.labels.shape)}")
        for j, name in enumerate(self.fields):
            col = self.sparse[:, j]
            if len(col) and (int(col.min()) < 0 or int(col.max()) >= self.vocab[j]):
                raise ValueError(f"field {name!r}: index outside 0..{self.vocab[j] - 1}")
        for s, name in enumerate(self.sequences):
            v = self.vocab[self.seq_target[s]]
            h = self.history[:, s]
            if h.numel() and (int(h.min()) < 0 or int(h.max()) >= v):
                raise ValueError(f"sequence {name!r}: index outside 0..{v - 1}")


@dataclass
class CTRBatch:
    """One batch: sparse (B, F), history (B, S, L), bag (B, Bf, K) int64; labels (B, T) float."""

    sparse: torch.Tensor
    history: torch.Tensor
    bag: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> CTRBatch:
        """The batch on ``device``."""
        return CTRBatch(*(t.to(device) for t in (self.sparse, self.history, self.bag, self.labels)))


class CTRTrainSet:
    """The training rows of :class:`CTRData` as :func:`reelrec.training.loop.fit` consumes them:
    uniformly shuffled batches of :class:`CTRBatch` (the rankers' ``loss(CTRBatch)``)."""

    def __init__(self, data: CTRData, rows: np.ndarray | None = None) -> None:
        self.data = data
        self.rows = torch.as_tensor(data.rows(0) if rows is None else rows, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Row indices in random order, cut into batches of ``batch_size`` (the last smaller)."""
        return list(
            torch.split(self.rows[torch.randperm(len(self.rows), generator=gen)], batch_size)
        )

    def batch(self, idx: torch.Tensor, gen: torch.Generator, device) -> CTRBatch:
        """The rows ``idx`` (int64 indices) as a :class:`CTRBatch` on ``device`` (``gen`` is
        unused: the ranking losses draw nothing)."""
        return self.data.batch(idx).to(device)


def read_semantic_id_codes(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Items and semantic-ID codes of ``folder/semantic_ids.parquet`` (written by
    ``reelrec tokenize``), without the last, disambiguation column.

    Returns:
        ``(item ids int64 (N,), codes int64 (N, K))``.

    Raises:
        DataFormatError: no ``code_*`` column, or a code that is not a non-negative integer.
    """
    from reelrec.data.readers import DataFormatError

    path = Path(folder) / "semantic_ids.parquet"
    df = pd.read_parquet(path)
    cols = sorted((c for c in df.columns if c.startswith("code_")), key=lambda c: int(c[5:]))
    if len(cols) < 2 or "item_id" not in df.columns:
        raise DataFormatError(
            f"{path}: expected item_id and code_0..code_K columns, got {list(df.columns)}"
        )
    codes = df[cols[:-1]].to_numpy()
    if not np.issubdtype(codes.dtype, np.integer) or (codes < 0).any():
        raise DataFormatError(f"{path}: codes must be non-negative integers")
    return df["item_id"].to_numpy(dtype=np.int64), codes.astype(np.int64)


def fit_vocab(
    values: np.ndarray, fit_rows: np.ndarray, min_count: int = 1
) -> tuple[np.ndarray, int]:
    """Encode ``values`` with a vocabulary fitted on ``values[fit_rows]``.

    Args:
        values: (n,) any hashable dtype; NaN/None count as missing.
        fit_rows: bool (n,) rows whose values enter the vocabulary.
        min_count: values seen on fewer fitted rows are "unknown" too, so that the unknown
            embedding is trained on rare values and means something for the new ones of the
            test days (>= 1).

    Returns:
        ``(codes int64 (n,), vocab size)``: 0 is never produced (reserved for padding), 1 is
        unknown, rare or missing; known values are 2.. in order of first appearance.
    """
    ser = pd.Series(values)
    fitted = ser[fit_rows & ser.notna().to_numpy()]
    counts = fitted.value_counts(sort=False)
    known = [v for v in pd.unique(fitted) if counts[v] >= min_count]
    mapping = pd.Series(
        np.arange(2, len(known) + 2, dtype=np.int64), index=pd.Index(known, dtype=object)
    )
    codes = np.array(ser.map(mapping).fillna(UNKNOWN), dtype=np.int64)  # writable copy
    return codes, len(known) + 2


def _log2_bucket(count: np.ndarray, cap: int = 12) -> np.ndarray:
    """0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, ... capped at ``cap``."""
    return np.minimum(np.floor(np.log2(count + 1.0)).astype(np.int64), cap)


def _rate_bucket(hits: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Empirical rate in 10 buckets (0..9), or 10 when there is no earlier row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = hits / count
    out = np.minimum(np.floor(np.nan_to_num(rate) * 10).astype(np.int64), 9)
    return np.where(count > 0, out, 10)


#: values of ``features.user_counters``
USER_COUNTERS = ("realtime", "daily")
#: KuaiRand's clock is Beijing time (UTC+8): its ``date`` and ``hourmin`` columns are local
BEIJING_UTC_OFFSET_MS = 8 * 3_600_000
DAY_MS = 86_400_000


def day_start_ms(time_ms: np.ndarray) -> np.ndarray:
    """The start (int64 ms since the epoch) of the Beijing-time day of each time in ``time_ms``
    (int64 (n,) ms since the epoch): rows strictly before it are the rows of earlier days."""
    t = np.asarray(time_ms, dtype=np.int64)
    return (t + BEIJING_UTC_OFFSET_MS) // DAY_MS * DAY_MS - BEIJING_UTC_OFFSET_MS


def prior_counts(keys: np.ndarray, time: np.ndarray, values: np.ndarray) -> tuple:
    """Per row, how many earlier rows share its key and the sum of their ``values``.

    Only rows with a strictly smaller ``time`` count (rows at the same timestamp do not see each
    other), so a row's counters never include its own label or a simultaneous one.

    Args:
        keys: int64 (n,) grouping key (video id, user id). time: int64 (n,) event time.
        values: float (n, V) values to sum.

    Returns:
        ``(count int64 (n,), sums float64 (n, V))`` in the input row order.
    """
    order = np.lexsort((time, keys))
    k, t, v = keys[order], time[order], values[order].astype(np.float64)
    start = np.r_[True, k[1:] != k[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(k)), 0))
    # first row of each (key, time) tie group: every row of the group sees what it sees
    tie_start_flag = start | np.r_[True, t[1:] != t[:-1]]
    tie_start = np.maximum.accumulate(np.where(tie_start_flag, np.arange(len(k)), 0))
    csum = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(v, 0)])
    count = tie_start - group_start
    sums = csum[tie_start] - csum[group_start]
    out_c, out_s = np.empty_like(count), np.empty_like(sums)
    out_c[order], out_s[order] = count, sums
    return out_c, out_s


def recent_history(
    users: np.ndarray, time: np.ndarray, items: np.ndarray, positive: np.ndarray, length: int
) -> np.ndarray:
    """Per row, the user's last ``length`` positive items strictly earlier in time.

    Args:
        users, time, items: int64 (n,); rows must be sorted by (user, time) (as ``reelrec
            prepare`` stores them). positive: bool (n,) rows that enter histories.
        length: L >= 1.

    Returns:
        int64 (n, L) item values, newest last, left-padded with 0 (``items`` must be >= 1).

    Raises:
        ValueError: rows not sorted by (user, time).
    """
    n = len(users)
    if n and (
        np.any(users[1:] < users[:-1]) or np.any((users[1:] == users[:-1]) & (time[1:] < time[:-1]))
    ):
        raise ValueError("recent_history: rows must be sorted by (user, time)")
    out = np.zeros((n, length), dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    steps = np.arange(length)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        pos = a + np.flatnonzero(positive[a:b])
        if len(pos) == 0:
            continue
        # positives with time strictly before each row's time
        cnt = np.searchsorted(time[pos], time[a:b], side="left")
        idx = cnt[:, None] - length + steps[None, :]
        ok = idx >= 0
        out[a:b][ok] = items[pos[idx[ok]]]
    return out


def _label_matrix(inter: pd.DataFrame, tasks: Sequence[str], clip: float) -> torch.Tensor:
    cols = []
    for t in tasks:
        if t not in inter.columns:
            raise KeyError(f"task {t!r}: the prepared interactions have no such column")
        v = inter[t].to_numpy(dtype=np.float64)
        if t in REGRESSION_TASKS:
            v = np.minimum(v, clip)
        cols.append(v)
    return torch.from_numpy(np.stack(cols, 1).astype(np.float32))


def kuairand_ctr(
    inter: pd.DataFrame,
    users: pd.DataFrame,
    cfg: FeatureConfig,
    tasks: Sequence[str] = KUAIRAND_TASKS,
    run_dir: Path | None = None,
    watch_ratio_clip: float = 3.0,
    items: pd.DataFrame | None = None,
    source: str = "kuairand",
) -> CTRData:
    """Ranking samples from a prepared KuaiRand or KuaiRand-Pure run (``RUN/data``), one per
    impression.

    Fields: ``user_id``, ``video_id``, ``hour`` (from ``hourmin``, Beijing time), ``duration``
    (bucket of ``duration_ms``), the video's basic fields where ``items`` has them
    (``cfg.item_features``: ``video_author_id``, ``video_music_id``, ``video_music_type``,
    ``video_type``, ``video_upload_type``, ``video_tag`` = the first tag, and the bag
    ``video_tags``), the scenario ``tab`` where the log has it (``cfg.scenario``), the
    user-table profile fields (``cfg.user_profile``), real-time
    counters (``cfg.counters``: the video's and the user's earlier impressions, click, long_view
    and like rates; rows strictly earlier in time, of any split: the DESIGN.md protocol lets a
    row see every earlier row; with ``cfg.user_counters="daily"`` the user's count only rows of
    strictly earlier Beijing-time days, :func:`day_start_ms`), semantic-ID codes ``sid_1..``
    (``cfg.semantic_ids``). Sequences: the user's last ``cfg.max_history`` rows with a ``cfg.history_labels`` label, strictly
    earlier in time (``hist_video`` and ``hist_sid_l``). Bag: the video's VQ codes
    (``cfg.vq_codes``). Vocabularies are fitted on the train split.

    Args:
        inter: prepared interactions (sorted by user, time; column ``split``).
        users: prepared users table.
        cfg: feature settings. tasks: label columns (``watch_ratio`` clipped at
            ``watch_ratio_clip``, NaN where the duration is unknown).
        run_dir: the run folder that holds ``cfg.semantic_ids`` / ``cfg.vq_codes``.
        items: prepared items table (``None``: no video fields). source: recorded in the data.

    Raises:
        FileNotFoundError: a code folder named in ``cfg`` has no codes (says which command).
        KeyError: a task or history label is not a column of ``inter``.
        ConfigError: ``cfg`` fails :meth:`FeatureConfig.validate` (checked here too, for
            callers that built it by hand), or ``cfg.drop`` names a field these samples lack.
    """
    cfg.validate()
    inter = inter.reset_index(drop=True)
    train = (inter["split"] == 0).to_numpy()
    uid = inter["user_id"].to_numpy(dtype=np.int64)
    vid = inter["item_id"].to_numpy(dtype=np.int64)
    time = inter["timestamp_ms"].to_numpy(dtype=np.int64)
    names: list[str] = []
    cols: list[np.ndarray] = []
    vocab: list[int] = []

    def add(name: str, values: np.ndarray, fit: bool = True, min_count: int = 1) -> None:
        if fit:
            codes, size = fit_vocab(values, train, min_count)
        else:  # values are already small non-negative integers: shift past PAD/UNKNOWN
            codes, size = values.astype(np.int64) + 2, int(values.max(initial=0)) + 3
        names.append(name)
        cols.append(codes)
        vocab.append(size)

    add("user_id", uid, min_count=cfg.min_count)
    add("video_id", vid, min_count=cfg.min_count)
    add("hour", (inter["hourmin"].to_numpy(dtype=np.int64) // 100), fit=False)
    dur = inter["duration_ms"].to_numpy(dtype=np.float64) / 1000.0
    dur_bucket = np.where(np.isnan(dur), -1, np.digitize(np.nan_to_num(dur), DURATION_EDGES_S))
    names.append("duration")
    cols.append(np.where(dur_bucket < 0, UNKNOWN, dur_bucket + 2).astype(np.int64))
    vocab.append(len(DURATION_EDGES_S) + 3)
    item_table = items.set_index("item_id") if items is not None else pd.DataFrame()
    vid_series = pd.Series(vid)
    if cfg.item_features:
        for col in STATIC_ITEM_FIELDS:
            if col in item_table.columns:
                raw = vid_series.map(item_table[col]).astype(object).to_numpy()
                add(
                    col if col.startswith("video_") else f"video_{col}",
                    raw,
                    min_count=cfg.min_count,
                )
        if "tags" in item_table.columns:
            first = item_table["tags"].map(lambda t: t[0] if len(t) else None)
            add("video_tag", vid_series.map(first).astype(object).to_numpy())
    if cfg.scenario and "tab" in inter.columns:
        add("tab", inter["tab"].to_numpy(dtype=np.int64))
    if cfg.user_profile:
        prof = users.set_index("user_id")
        cols_ = [c for c in users.columns if c != "user_id"]
        if not cfg.user_raw_counts:
            cols_ = [c for c in cols_ if f"{c}_range" not in users.columns]
        for col in cols_:
            raw = inter["user_id"].map(prof[col]).astype(object).to_numpy()
            add(f"user_{col}", raw)
    if cfg.counters:
        lab = inter[["click", "long_view", "like"]].to_numpy(dtype=np.float64)
        for key_name, key in (("video", vid), ("user", uid)):
            daily = key_name == "user" and cfg.user_counters == "daily"
            count, sums = prior_counts(key, day_start_ms(time) if daily else time, lab)
            add(f"{key_name}_views", _log2_bucket(count), fit=False)
            for j, what in enumerate(("click", "long_view", "like")):
                add(f"{key_name}_{what}_rate", _rate_bucket(sums[:, j], count), fit=False)

    positive = np.zeros(len(inter), dtype=bool)
    for lab_name in cfg.history_labels:
        if lab_name not in inter.columns:
            raise KeyError(f"features.history_labels: {lab_name!r} is not a column of the data")
        positive |= inter[lab_name].to_numpy() == 1
    video_col = names.index("video_id")
    seqs = ["hist_video"]
    seq_target = [video_col]
    hist = [recent_history(uid, time, cols[video_col], positive, cfg.max_history)]

    if cfg.semantic_ids:
        folder = Path(run_dir or ".") / cfg.semantic_ids
        if not (folder / "semantic_ids.parquet").exists():
            raise FileNotFoundError(
                f"{folder / 'semantic_ids.parquet'} not found (features.semantic_ids="
                f"{cfg.semantic_ids!r}); make it with `reelrec encode --run {run_dir}` then "
                f"`reelrec tokenize --run {run_dir} --out {folder} --tokenizer.embeddings=raw`"
            )
        sid_items, sid_codes = read_semantic_id_codes(folder)
        for level in range(sid_codes.shape[1]):  # the disambiguation level is left out
            code = pd.Series(sid_codes[:, level], index=sid_items)
            values = inter["item_id"].map(code).to_numpy(dtype=np.float64)  # NaN: no code
            codes = np.where(np.isnan(values), UNKNOWN, np.nan_to_num(values) + 2).astype(np.int64)
            names.append(f"sid_{level + 1}")
            cols.append(codes)
            vocab.append(int(sid_codes[:, level].max()) + 3)
            seqs.append(f"hist_sid_{level + 1}")
            seq_target.append(len(names) - 1)
            hist.append(recent_history(uid, time, codes, positive, cfg.max_history))

    bags: list[str] = []
    bag_vocab: list[int] = []
    bag_rows: list[np.ndarray] = []
    if "tags" in item_table.columns and cfg.item_features:
        # a video outside the items table maps to NaN: no tags
        tag_lists = [
            t if isinstance(t, list | tuple | np.ndarray) else []
            for t in vid_series.map(item_table["tags"])
        ]
        width = max((len(t) for t in tag_lists), default=1) or 1
        flat_train = [t for ts, tr in zip(tag_lists, train, strict=True) if tr for t in ts]
        tag_vocab = {t: j + 1 for j, t in enumerate(dict.fromkeys(flat_train))}
        rows = np.zeros((len(inter), width), dtype=np.int64)
        for i, ts in enumerate(tag_lists):
            if len(ts):
                rows[i, : len(ts)] = [tag_vocab.get(int(t), 0) for t in ts]
        bags.append("video_tags")
        bag_vocab.append(len(tag_vocab) + 1)
        bag_rows.append(rows)
    if cfg.vq_codes:
        path = Path(run_dir or ".") / cfg.vq_codes / "vq_codes.parquet"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found (features.vq_codes={cfg.vq_codes!r}); make it with "
                f"`reelrec encode --run {run_dir}` then `reelrec tokenize --run {run_dir} "
                f"--method vq --out {path.parent} --tokenizer.embeddings=raw`"
            )
        vq = pd.read_parquet(path)
        k = max(len(c) for c in vq["vq_codes"])
        code_vocab = {int(i): j + 1 for j, i in enumerate(vq["item_id"])}
        table = np.zeros((len(vq) + 1, k), dtype=np.int64)
        for j, codes in enumerate(vq["vq_codes"]):
            table[j + 1, : len(codes)] = [code_vocab.get(int(c), 0) for c in codes]
        row = np.array([code_vocab.get(int(v), 0) for v in vid], dtype=np.int64)
        bags.append("vq_codes")
        bag_vocab.append(len(vq) + 1)
        bag_rows.append(table[row])
    width = max((b.shape[1] for b in bag_rows), default=1)
    bag = np.zeros((len(inter), len(bag_rows), width), dtype=np.int64)
    for j, b in enumerate(bag_rows):
        bag[:, j, : b.shape[1]] = b

    if cfg.drop:
        from reelrec.config import ConfigError

        protected = {"video_id", "hour", "duration", *(names[j] for j in seq_target)}
        unknown = [f for f in cfg.drop if f not in names]
        if unknown:
            raise ConfigError(f"features.drop: unknown field(s) {unknown}; the fields are {names}")
        kept = [f for f in cfg.drop if f in protected]
        if kept:
            raise ConfigError(
                f"features.drop: {kept} must stay ({sorted(protected)} are always kept: a "
                "behaviour sequence or the request features use them)"
            )
        keep = [j for j, n in enumerate(names) if n not in cfg.drop]
        seq_target = [keep.index(j) for j in seq_target]
        names, cols, vocab = (
            [names[j] for j in keep],
            [cols[j] for j in keep],
            [vocab[j] for j in keep],
        )
    data = CTRData(
        fields=names,
        vocab=vocab,
        sparse=torch.from_numpy(np.stack(cols, 1)),
        sequences=seqs,
        seq_target=seq_target,
        history=torch.from_numpy(np.stack(hist, 1)),
        bags=bags,
        bag_vocab=bag_vocab,
        bag=torch.from_numpy(bag),
        tasks=list(tasks),
        labels=_label_matrix(inter, tasks, watch_ratio_clip),
        groups=uid,
        split=inter["split"].to_numpy(dtype=np.int8),
        source=source,
    )
    data.check()
    return data


def _split_by_time(time: np.ndarray, valid: float = 0.1, test: float = 0.1) -> np.ndarray:
    """Temporal split for the smoke samples: the last ``test`` share of rows by time is test,
    the ``valid`` share before it validation (stable order)."""
    order = np.argsort(time, kind="stable")
    split = np.zeros(len(time), dtype=np.int8)
    n = len(time)
    split[order[int(n * (1 - valid - test)) :]] = 1
    split[order[int(n * (1 - test)) :]] = 2
    return split


def _table_ctr(
    df: pd.DataFrame, label: str, fields: Sequence[str], split: np.ndarray, source: str
) -> CTRData:
    train = split == 0
    cols, vocab = [], []
    for f in fields:
        codes, size = fit_vocab(df[f].replace("", np.nan).to_numpy(dtype=object), train)
        cols.append(codes)
        vocab.append(size)
    y = to_numeric(df, label, Path(source), ",")[0].astype(np.float32)
    data = CTRData(
        fields=list(fields),
        vocab=vocab,
        sparse=torch.from_numpy(np.stack(cols, 1)),
        sequences=[],
        seq_target=[],
        history=torch.zeros((len(df), 0, 1), dtype=torch.long),
        bags=[],
        bag_vocab=[],
        bag=torch.zeros((len(df), 0, 1), dtype=torch.long),
        tasks=["click"],
        labels=torch.from_numpy(y[:, None]),
        groups=np.zeros(len(df), dtype=np.int64),
        split=split,
        source=source,
    )
    data.check()
    return data


def criteo_ctr(folder: Path) -> CTRData:
    """The Criteo sample (``criteo/{train,dev,test}.csv``, tab-separated, no header): label,
    I1..I13 (counts, bucketed by log2), C1..C26 (hashed categoricals); files are the splits.

    Raises:
        FileNotFoundError, DataFormatError: missing or malformed files (named).
    """
    cols = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    parts = [
        read_table(Path(folder) / f"{s}.csv", "\t", columns=cols) for s in ("train", "dev", "test")
    ]
    split = np.concatenate([np.full(len(p), i, dtype=np.int8) for i, p in enumerate(parts)])
    df = pd.concat(parts, ignore_index=True)
    for i in range(1, 14):  # counts: bucket log2 (Criteo winners' trick), missing stays missing
        v = pd.to_numeric(df[f"I{i}"], errors="coerce").to_numpy()
        b = np.floor(np.log2(np.maximum(v, 0) + 1)) * np.sign(v)
        df[f"I{i}"] = pd.Series(b).astype(object).where(~np.isnan(v), np.nan)
    return _table_ctr(df, "label", cols[1:], split, str(folder))


def avazu_ctr(folder: Path) -> CTRData:
    """The Avazu sample (``avazu/{train,dev,test}.csv``; only train has a header): click and 22
    categorical fields (``hour`` becomes hour of day); files are the splits.

    Raises:
        FileNotFoundError, DataFormatError: missing or malformed files (named).
    """
    folder = Path(folder)
    first = read_table(folder / "train.csv", ",")
    cols = list(first.columns)
    parts = [first] + [read_table(folder / f"{s}.csv", ",", columns=cols) for s in ("dev", "test")]
    split = np.concatenate([np.full(len(p), i, dtype=np.int8) for i, p in enumerate(parts)])
    df = pd.concat(parts, ignore_index=True)
    df["hour"] = df["hour"].str[-2:]
    fields = [c for c in cols if c not in ("id", "click")]
    return _table_ctr(df, "click", fields, split, str(folder))


def taobao_ctr(path: Path, max_history: int = 20) -> CTRData:
    """The Taobao UserBehavior head (user, item, category, behaviour, timestamp; no header).

    Smoke task (the file has no negatives): predict whether a logged behaviour is a deeper
    engagement (``cart``, ``fav`` or ``buy``) rather than a page view, from the user, the item,
    its category and the user's earlier items and categories (any behaviour, strictly earlier in
    time). Split by time: the last 10% of rows test, the 10% before validation.

    Raises:
        FileNotFoundError, DataFormatError: missing or malformed file (named).
    """
    path = Path(path)
    cols = ["user_id", "item_id", "category", "behavior", "timestamp"]
    df = read_table(path, ",", columns=cols)
    bad = ~df["behavior"].isin(["pv", "cart", "fav", "buy"])
    if bad.any():
        rec = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(
            f"{path}, line {rec + 1}, column 'behavior': unknown {df['behavior'].iloc[rec]!r}"
        )
    for c in ("user_id", "item_id", "category", "timestamp"):
        df[c] = to_numeric(df, c, path, ",")[0]
    df = df.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    split = _split_by_time(df["timestamp"].to_numpy())
    train = split == 0
    uid = df["user_id"].to_numpy(dtype=np.int64)
    t = df["timestamp"].to_numpy(dtype=np.int64)
    u, vu = fit_vocab(uid, train)
    it, vi = fit_vocab(df["item_id"].to_numpy(), train)
    ca, vc = fit_vocab(df["category"].to_numpy(), train)
    every = np.ones(len(df), dtype=bool)
    hist = np.stack(
        [
            recent_history(uid, t, it, every, max_history),
            recent_history(uid, t, ca, every, max_history),
        ],
        1,
    )
    y = (df["behavior"] != "pv").to_numpy(dtype=np.float32)
    data = CTRData(
        fields=["user_id", "item_id", "category"],
        vocab=[vu, vi, vc],
        sparse=torch.from_numpy(np.stack([u, it, ca], 1)),
        sequences=["hist_item", "hist_category"],
        seq_target=[1, 2],
        history=torch.from_numpy(hist),
        bags=[],
        bag_vocab=[],
        bag=torch.zeros((len(df), 0, 1), dtype=torch.long),
        tasks=["engage"],
        labels=torch.from_numpy(y[:, None]),
        groups=uid,
        split=split,
        source=str(path),
    )
    data.check()
    return data


class RequestFeatures:
    """Ranking features of any (user, video) pair at a request time, laid out as ``data``.

    The samples of :func:`kuairand_ctr` are logged impressions; a generator proposes videos the
    user was never shown, and a reward model must score them with the same features. This class
    keeps what those features depend on: the per-user fields (id, profile) and per-video fields
    (id, duration bucket, semantic-ID codes, VQ bag) as encoded in ``data``, every row's time and
    labels for the real-time counters, and the users' positive rows for the behaviour sequences.
    For a logged row, :meth:`batch` reproduces ``data``'s features of that row exactly
    (tested), so the reward model sees generated videos as it saw impressions.

    Args:
        data: the samples of :func:`kuairand_ctr` built from ``inter``.
        inter: the prepared interactions ``data`` was built from (sorted by user, time).
        cfg: the feature settings ``data`` was built with.

    Raises:
        ValueError: ``data`` and ``inter`` have different numbers of rows.
    """

    def __init__(self, data: CTRData, inter: pd.DataFrame, cfg: FeatureConfig) -> None:
        inter = inter.reset_index(drop=True)
        if len(inter) != len(data):
            raise ValueError(f"data has {len(data):,} rows but the interactions {len(inter):,}")
        self.data, self.cfg = data, cfg
        uid = inter["user_id"].to_numpy(dtype=np.int64)
        vid = inter["item_id"].to_numpy(dtype=np.int64)
        self.time = inter["timestamp_ms"].to_numpy(dtype=np.int64)
        sparse = data.sparse.numpy()
        fields = data.fields
        self.user_cols = [
            j for j, f in enumerate(fields) if f == "user_id" or f.startswith("user_")
        ]
        self.user_cols = [j for j in self.user_cols if not _is_counter(fields[j])]
        self.item_cols = [
            j
            for j, f in enumerate(fields)
            if (f in ("video_id", "duration") or f.startswith(("sid_", "video_")))
            and not _is_counter(f)
        ]
        self.hour_col = fields.index("hour")
        # the scenario (kuairand-pure's tab): given per request, else the most frequent
        # training scenario (a request to the service has no tab)
        self.tab_col = fields.index("tab") if "tab" in fields else None
        if self.tab_col is not None:
            code = sparse[:, self.tab_col]
            raw_tab = inter["tab"].to_numpy(dtype=np.int64)
            self._tab_code = dict(zip(raw_tab.tolist(), code.tolist(), strict=True))
            train_codes = code[data.split == 0]
            self.default_tab = int(np.bincount(train_codes).argmax()) if len(train_codes) else 1

        def first_rows(keys: np.ndarray) -> dict[int, int]:
            _, first = np.unique(keys, return_index=True)
            return {int(keys[i]): int(i) for i in first}

        self._user_row = first_rows(uid)
        self._user_values = sparse[:, self.user_cols]
        # a video's duration may be unknown on some rows: prefer a row where it is known
        dur = fields.index("duration")
        known = sparse[:, dur] != UNKNOWN
        order = np.lexsort((~known, vid))  # per video, rows with a known duration first
        first = order[np.r_[True, vid[order][1:] != vid[order][:-1]]]
        self._item_row = {int(vid[i]): int(i) for i in first}
        self._item_values = sparse[:, self.item_cols]
        self._bag = data.bag.numpy()
        # counters: per key, the sorted times and running label sums of its rows
        lab = inter[["click", "long_view", "like"]].to_numpy(dtype=np.float64)
        self._counters = {
            name: _KeyedHistory(key, self.time, lab)
            for name, key in (("video", vid), ("user", uid))
        }
        positive = np.zeros(len(inter), dtype=bool)
        for name in cfg.history_labels:
            positive |= inter[name].to_numpy() == 1
        pos = np.flatnonzero(positive)
        self._pos_user, self._pos_time = uid[pos], self.time[pos]
        # the history values of each sequence come from the aligned target field of the row
        self._pos_values = sparse[pos][:, data.seq_target]  # (n_pos, S)
        self._pos_by_user = {
            int(u): np.flatnonzero(self._pos_user == u) for u in np.unique(self._pos_user)
        }

    def known_user(self, user: int) -> bool:
        """True when ``user`` has a row in the data (its profile is known)."""
        return int(user) in self._user_row

    def batch(
        self,
        users: np.ndarray,
        items: np.ndarray,
        times: np.ndarray,
        hours: np.ndarray,
        tabs: np.ndarray | None = None,
    ) -> CTRBatch:
        """Features of the pairs ``(users[i], items[i])`` requested at ``times[i]``.

        Args:
            users, items: int64 (n,) raw user and video ids (unknown ones get the "unknown"
                index 1 and, for users, no profile).
            times: int64 (n,) request times in ms: counters and histories use rows strictly
                earlier (the user's counters, under ``user_counters="daily"``, rows of earlier
                days). hours: int64 (n,) hour of day of the request (Beijing time, 0..23).
            tabs: int64 (n,) raw scenario ids where the samples have ``tab`` (a scenario not
                in the data is "unknown"); ``None`` = the most frequent training scenario.

        Returns:
            :class:`CTRBatch` with labels all NaN (shape (n, T)).
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        n, fields = len(users), self.data.fields
        sparse = np.full((n, len(fields)), UNKNOWN, dtype=np.int64)
        urow = np.array([self._user_row.get(int(u), -1) for u in users])
        irow = np.array([self._item_row.get(int(i), -1) for i in items])
        for cols, rows, values in (
            (self.user_cols, urow, self._user_values),
            (self.item_cols, irow, self._item_values),
        ):
            ok = rows >= 0
            sub = sparse[:, cols]
            sub[ok] = values[rows[ok]]
            sparse[:, cols] = sub
        sparse[:, self.hour_col] = np.asarray(hours, dtype=np.int64) + 2
        if self.tab_col is not None:
            sparse[:, self.tab_col] = (
                self.default_tab
                if tabs is None
                else [self._tab_code.get(int(t), UNKNOWN) for t in np.asarray(tabs)]
            )
        for key_name, keys in (("video", items), ("user", users)):
            daily = key_name == "user" and self.cfg.user_counters == "daily"
            count, sums = self._counters[key_name].before(
                keys, day_start_ms(times) if daily else times
            )
            j = fields.index(f"{key_name}_views") if f"{key_name}_views" in fields else None
            if j is None:
                continue
            sparse[:, j] = _log2_bucket(count) + 2
            for k, what in enumerate(("click", "long_view", "like")):
                sparse[:, fields.index(f"{key_name}_{what}_rate")] = (
                    _rate_bucket(sums[:, k], count) + 2
                )
        length, n_seq = self.cfg.max_history, len(self.data.sequences)
        hist = np.zeros((n, n_seq, length), dtype=np.int64)
        for i, (u, t) in enumerate(zip(users, times, strict=True)):
            rows = self._pos_by_user.get(int(u))
            if rows is None:
                continue
            end = int(np.searchsorted(self._pos_time[rows], t, side="left"))
            take = rows[max(0, end - length) : end]
            if len(take):
                hist[i, :, length - len(take) :] = self._pos_values[take].T
        bag = np.zeros((n, *self._bag.shape[1:]), dtype=np.int64)
        ok = irow >= 0
        bag[ok] = self._bag[irow[ok]]
        labels = torch.full((n, len(self.data.tasks)), float("nan"))
        return CTRBatch(
            torch.from_numpy(sparse), torch.from_numpy(hist), torch.from_numpy(bag), labels
        )


def _is_counter(field_name: str) -> bool:
    return field_name.endswith(("_views", "_rate"))


class _KeyedHistory:
    """Rows grouped by key with sorted times and running sums, for counts strictly before t."""

    def __init__(self, keys: np.ndarray, time: np.ndarray, values: np.ndarray) -> None:
        order = np.lexsort((time, keys))
        self.keys, self.time = keys[order], time[order]
        self.csum = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values[order], 0)])
        uniq, start = np.unique(self.keys, return_index=True)
        self.start = dict(zip(uniq.tolist(), start.tolist(), strict=True))
        self.end = dict(zip(uniq.tolist(), np.r_[start[1:], len(order)].tolist(), strict=True))

    def before(self, keys: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count int64 (n,), sums float64 (n, V)) over rows of each key strictly before t."""
        count = np.zeros(len(keys), dtype=np.int64)
        sums = np.zeros((len(keys), self.csum.shape[1]))
        for i, (k, t) in enumerate(zip(keys.tolist(), times.tolist(), strict=True)):
            a = self.start.get(k)
            if a is None:
                continue
            b = a + int(np.searchsorted(self.time[a : self.end[k]], t, side="left"))
            count[i] = b - a
            sums[i] = self.csum[b] - self.csum[a]
        return count, sums
