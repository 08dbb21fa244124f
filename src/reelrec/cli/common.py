"""Pieces the subcommands share: run folders, prepared data, building and scoring models."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from reelrec.config import ConfigError
from reelrec.data import sources
from reelrec.data.prepare import Prepared, prepare, read_prepared, write_prepared
from reelrec.data.sequences import SequenceData, build_sequences
from reelrec.data.splits import get_protocol
from reelrec.io import atomic_write_json, run_metadata


def add_data_args(
    parser: argparse.ArgumentParser, dataset_default: str | None = "kuairand"
) -> None:
    """Add ``--dataset``, ``--protocol`` and ``--data-dir`` to a subcommand.

    Args:
        parser: the subcommand's parser.
        dataset_default: default of ``--dataset``; None: no default (the stage only prepares a
            run when the user names the dataset).
    """
    from reelrec.data.splits import PROTOCOLS

    parser.add_argument(
        "--dataset",
        default=dataset_default,
        choices=list(sources.DATASETS),
        help=f"dataset name (default: {dataset_default})"
        if dataset_default
        else "dataset to prepare into RUN when it has no data yet",
    )
    parser.add_argument(
        "--protocol",
        default="",
        choices=["", *PROTOCOLS],
        metavar="PROTOCOL",
        help=f"evaluation protocol: {', '.join(PROTOCOLS)} (default: the dataset's own)",
    )
    parser.add_argument(
        "--data-dir",
        default="",
        help=f"data root holding the dataset folders (default: ${sources.ENV_VAR}, "
        f"else {sources.CACHE_DIR})",
    )


def parse_with_overrides(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, list[str]]:
    """Parse known arguments; the rest must be ``--section.key=value`` config overrides.

    Raises:
        ConfigError: a leftover argument is not of the override form.
    """
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--") or "=" not in o]
    if bad:
        raise ConfigError(
            f"unexpected argument(s) {bad}; config overrides look like --section.key=value"
        )
    return args, overrides


def prepare_run(
    run_dir: Path, dataset: str, protocol: str = "", data_dir: str = "", log=print
) -> Prepared:
    """Load, clean and split ``dataset`` into ``run_dir/data`` and record ``run_dir/run.json``.

    Raises:
        DatasetNotFound, DataFormatError, KeyError: from the loaders / registry.
    """
    spec = sources.get_spec(dataset)
    proto = get_protocol(protocol or spec.protocol)
    run_dir = Path(run_dir)
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
    t0 = time.perf_counter()
    raw = sources.load(dataset, data_dir or None)
    prep = prepare(raw, proto, dataset)
    write_prepared(prep, run_dir / "data")
    meta = {
        "dataset": dataset,
        "protocol": proto.name,
        "data_root": str(sources.data_root(data_dir or None)),
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
    """Read ``run_dir/data`` (written by ``reelrec prepare``).

    Raises:
        FileNotFoundError: the run has no prepared data (says which command makes it).
    """
    return read_prepared(run_dir / "data")


def sequences_for(prep: Prepared, max_len: int, step: int | None = None) -> SequenceData:
    """Training windows and evaluation instances for a sequential model (``step``: see
    :func:`reelrec.data.sequences.windows`)."""
    return build_sequences(prep.interactions, prep.protocol, max_len, step)


def read_json(path: Path) -> dict:
    """Read a JSON file, naming it in the error."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None
