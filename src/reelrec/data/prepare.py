"""``reelrec prepare``: raw tables -> cleaned, stable-sorted, split canonical tables on disk.

Steps, each counted in ``prepare_report.json`` (CASES.md C08, C09, C11):

1. duplicate events (same user, item, timestamp and feedback labels) are collapsed to the first;
   rows without timestamps (S3-Rec order-only files) are never collapsed: a repeat there is a
   repeat purchase;
2. rows are stable-sorted by (user, time): rows with equal timestamps keep file order (never
   item order), all columns move together; rows that were out of time order are counted;
3. (user, timestamp) tie groups are counted (they decide next-item targets);
4. the protocol's split is stored in column ``split`` (0 train, 1 valid, 2 test); dropped rows
   (after the last test day) are removed and counted.

Output (every file written to a temp name, then renamed): ``RUN/data/interactions.parquet``,
``items.parquet``, ``users.parquet``, ``splits.json``, ``prepare_report.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import DataFormatError
from reelrec.data.splits import DROPPED, SPLIT_NAMES, Protocol, assign_splits, positive_mask
from reelrec.data.tables import LABEL_COLUMNS, RawTables
from reelrec.io import atomic_path, atomic_write_json


@dataclass
class Prepared:
    """Prepared tables plus the report.

    Attributes:
        interactions: canonical interactions sorted by (user_id, time), column ``split`` (int8).
        items, users: as loaded.
        protocol: the protocol whose split is stored.
        report: counts (rows, duplicates, ties, out-of-order rows, per-split rows...).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    protocol: Protocol
    report: dict[str, object]


def _hashable(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with list/array cells turned into tuples, so rows can be compared."""
    out = df.copy()
    for col in out.columns:
        if (
            out[col].dtype == object
            and len(out)
            and isinstance(out[col].iloc[0], list | np.ndarray)
        ):
            out[col] = out[col].map(tuple)
    return out


def prepare(raw: RawTables, protocol: Protocol, dataset: str) -> Prepared:
    """Clean, sort and split ``raw`` under ``protocol`` (see module docstring).

    Raises:
        KeyError: a column the protocol needs is missing.
        DataFormatError: no rows left, or a split without positive rows.
    """
    inter = raw.interactions.reset_index(drop=True)
    report: dict[str, object] = {
        "dataset": dataset,
        "protocol": protocol.name,
        "rows_raw": len(inter),
    }

    key = ["user_id", "item_id", "timestamp_ms"] + [
        c for c in (*LABEL_COLUMNS, "rating", "label_1d") if c in inter.columns
    ]
    if inter["timestamp_ms"].notna().all():
        dup = _hashable(inter[key]).duplicated(keep="first").to_numpy()
    else:
        dup = np.zeros(len(inter), dtype=bool)
    report["duplicate_events_removed"] = int(dup.sum())
    report["duplicate_key"] = key
    inter = inter.loc[~dup].reset_index(drop=True)

    users = inter["user_id"].to_numpy()
    has_time = inter["timestamp_ms"].notna().all()
    if has_time:
        ts = inter["timestamp_ms"].to_numpy(dtype="int64")
        same_user = users[1:] == users[:-1]
        report["rows_out_of_time_order"] = int((same_user & (ts[1:] < ts[:-1])).sum())
        order = np.lexsort((ts, users))  # lexsort is stable: ties keep file order
        inter = inter.iloc[order].reset_index(drop=True)
        users, ts = users[order], ts[order]
        key_change = np.r_[True, (users[1:] != users[:-1]) | (ts[1:] != ts[:-1])]
        group = np.cumsum(key_change)
        sizes = np.bincount(group)
        report["tie_groups"] = int((sizes > 1).sum())
        report["rows_in_tie_groups"] = int(sizes[sizes > 1].sum())
        report["tie_row_share"] = round(float(sizes[sizes > 1].sum()) / max(len(inter), 1), 4)
    else:
        order = np.argsort(users, kind="stable")
        inter = inter.iloc[order].reset_index(drop=True)
        report["timestamps"] = "none: file order is the time order"

    split = assign_splits(inter, protocol)
    report["rows_dropped_after_test_period"] = int((split == DROPPED).sum())
    inter = inter.loc[split != DROPPED].reset_index(drop=True)
    inter["split"] = split[split != DROPPED]

    pos = positive_mask(inter, protocol)
    split_pos = {
        code: int(((inter["split"] == code).to_numpy() & pos).sum()) for code in SPLIT_NAMES
    }
    empty = [SPLIT_NAMES[c] for c, n in split_pos.items() if n == 0]
    if len(inter) == 0 or empty:
        what = f"positive rows ({protocol.positive} == 1)" if protocol.positive else "rows"
        raise DataFormatError(
            f"{dataset}: no {what} in the {', '.join(empty) or 'any'} split(s) under protocol "
            f"{protocol.name!r} ({len(inter)} rows after cleaning): nothing to train or evaluate on"
            + (
                " (leave-one-out takes a user's last row for test and the one before for "
                "validation once the user has 3 or more)"
                if protocol.kind == "leave_one_out"
                else ""
            )
        )
    report["rows"] = len(inter)
    report["users"] = int(inter["user_id"].nunique())
    report["items"] = int(inter["item_id"].nunique())
    report["positive_rows"] = int(pos.sum())
    report["rows_per_split"] = {
        name: int((inter["split"] == code).sum()) for code, name in SPLIT_NAMES.items()
    }
    report["positive_rows_per_split"] = {SPLIT_NAMES[c]: n for c, n in split_pos.items()}
    report["loader"] = raw.notes
    return Prepared(inter, raw.items, raw.users, protocol, report)


def write_prepared(prep: Prepared, out_dir: Path) -> None:
    """Write the prepared tables and reports under ``out_dir`` (atomically, file by file)."""
    out_dir = Path(out_dir)
    for name, table in (
        ("interactions", prep.interactions),
        ("items", prep.items),
        ("users", prep.users),
    ):
        with atomic_path(out_dir / f"{name}.parquet") as tmp:
            table.to_parquet(tmp, index=False)
    counts = prep.report["rows_per_split"]
    atomic_write_json(
        out_dir / "splits.json",
        {"protocol": prep.protocol.to_dict(), "split_codes": SPLIT_NAMES, "rows": counts},
    )
    atomic_write_json(out_dir / "prepare_report.json", prep.report)


def read_prepared(data_dir: Path) -> Prepared:
    """Read what :func:`write_prepared` wrote.

    Raises:
        FileNotFoundError: ``data_dir`` holds no prepared data (names the missing file).
    """

    from reelrec.data.splits import Protocol

    data_dir = Path(data_dir)
    for f in ("interactions.parquet", "items.parquet", "users.parquet", "splits.json"):
        if not (data_dir / f).exists():
            raise FileNotFoundError(f"{data_dir / f}: missing; run `reelrec prepare` first")
    report_path = data_dir / "prepare_report.json"
    try:
        splits = read_json(data_dir / "splits.json")
        protocol = Protocol(**splits["protocol"])
        report = read_json(report_path) if report_path.exists() else {}
        tables = [
            pd.read_parquet(data_dir / f"{n}.parquet") for n in ("interactions", "items", "users")
        ]
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataFormatError(
            f"{data_dir}: the prepared data is damaged ({type(exc).__name__}: {exc}); prepare it "
            "again with `reelrec prepare` into a new folder"
        ) from None
    return Prepared(*tables, protocol, report)


def read_json(path: Path) -> dict:
    """Read a JSON file.

    Raises:
        DataFormatError: the file is not valid UTF-8 JSON (names the file).
    """
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: invalid JSON ({exc})") from None


def prepare_run(
    run_dir: Path, dataset: str, protocol: str = "", data_dir: str = "", log=print
) -> Prepared:
    """Load, clean and split ``dataset`` into ``run_dir/data`` and record ``run_dir/run.json``.

    Args:
        run_dir: the run folder (created when missing).
        dataset: a name of :data:`reelrec.data.sources.DATASETS`.
        protocol: an evaluation protocol name; "" = the dataset's own.
        data_dir: data root; "" = ``$REELREC_DATA_DIR``, else ``~/.cache/reelrec``.
        log: receives one summary line.

    Raises:
        ConfigError: the run folder is unnamed, a file, or holds models of another dataset.
        DatasetNotFound, DataFormatError, KeyError: from the loaders / registry.
    """
    from reelrec.data import sources

    spec = sources.get_spec(dataset)
    return _prepare_into(
        Path(run_dir),
        dataset,
        protocol or spec.protocol,
        lambda: sources.load(dataset, data_dir or None),
        {"data_root": str(sources.data_root(data_dir or None))},
        log,
    )


def prepare_own_log_run(
    run_dir: Path,
    interactions: str | Path,
    columns: str | Path,
    items: str | Path | None = None,
    users: str | Path | None = None,
    name: str = "own-log",
    protocol: str = "leave-one-out",
    log=print,
) -> Prepared:
    """:func:`prepare_run` for a user's own files (:mod:`reelrec.data.own_log`).

    Args:
        run_dir: the run folder. interactions, columns, items, users: the files and the
            column map of :func:`reelrec.data.own_log.load_own_log`. name: the dataset name
            the run records (lower-case letters, digits, ``-``/``_``; not a built-in dataset).
        protocol: an evaluation protocol name (``leave-one-out`` unless the log has the
            columns of another).

    Raises:
        ConfigError: a bad name or run folder (as :func:`prepare_run`).
        FileNotFoundError, DataFormatError: from :func:`~reelrec.data.own_log.load_own_log`.
    """
    import re

    from reelrec.config import ConfigError
    from reelrec.data import sources
    from reelrec.data.own_log import load_own_log

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or name in sources.DATASETS:
        raise ConfigError(
            f"dataset name {name!r}: use lower-case letters, digits, '-' or '_', and not a "
            f"built-in dataset ({', '.join(sources.DATASETS)})"
        )
    from reelrec.io import sha256_file

    files = {"interactions": interactions, "columns": columns, "items": items, "users": users}
    given = {k: Path(v) for k, v in files.items() if v is not None}
    digests = {k: sha256_file(v) for k, v in given.items() if v.is_file()}
    return _prepare_into(
        Path(run_dir),
        name,
        protocol,
        lambda: load_own_log(interactions, columns, items, users),
        {"files": {k: str(v.resolve()) for k, v in given.items()}, "files_sha256": digests},
        log,
    )


def _prepare_into(run_dir: Path, dataset: str, protocol: str, load, source: dict, log) -> Prepared:
    """The body of :func:`prepare_run`: check the folder, ``load()`` raw tables, prepare,
    write ``run_dir/data`` and ``run.json`` (with ``source``)."""
    import time

    from reelrec.config import ConfigError
    from reelrec.data.splits import get_protocol
    from reelrec.io import run_metadata

    proto = get_protocol(protocol)
    if str(run_dir) in ("", "."):
        raise ConfigError("the run folder must be named (--out RUN)")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder")
    if (run_dir / "run.json").exists() and any((run_dir / "models").glob("*/config.yaml")):
        old = read_json(run_dir / "run.json")
        if (old.get("dataset"), old.get("protocol")) != (dataset, proto.name):
            raise ConfigError(
                f"{run_dir} holds models trained on {old.get('dataset')} ({old.get('protocol')}); "
                f"preparing {dataset} ({proto.name}) there would leave them stale: use another --out"
            )
        if "files_sha256" in source and old.get("files_sha256") != source["files_sha256"]:
            raise ConfigError(
                f"{run_dir} holds models trained on other files (or other contents) than these; "
                "preparing them there would leave the models stale: use another --out"
            )
    t0 = time.perf_counter()
    prep = prepare(load(), proto, dataset)
    write_prepared(prep, run_dir / "data")
    meta = {
        "dataset": dataset,
        "protocol": proto.name,
        **source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **run_metadata(),
    }
    atomic_write_json(run_dir / "run.json", meta)
    r = prep.report
    log(
        f"prepared {dataset} ({proto.name}) in {time.perf_counter() - t0:.1f}s: "
        f"{r['rows']:,} rows, {r['users']:,} users, {r['items']:,} items, "
        f"{r['duplicate_events_removed']} duplicate events removed -> {run_dir / 'data'}"
    )
    return prep


def load_prepared(run_dir: Path) -> Prepared:
    """Read ``run_dir/data`` (written by :func:`prepare_run`).

    Raises:
        FileNotFoundError: the run has no prepared data (says which command makes it).
    """
    return read_prepared(Path(run_dir) / "data")
