"""``reelrec prepare``: raw files -> RUN/data/{interactions,items,users}.parquet, splits.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.cli.common import add_data_args, prepare_run
from reelrec.config import ConfigError
from reelrec.data.prepare import prepare_own_log_run

EXAMPLE = "docs/own-data.md"


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec prepare``."""
    p = argparse.ArgumentParser(
        prog="reelrec prepare",
        description="Read a dataset's official files (--dataset) or your own log "
        "(--interactions with a --columns map), drop duplicate events, stable-sort by "
        "(user, time), assign the protocol's train/valid/test split and write canonical "
        "parquet tables plus a data-quality report into RUN/data.",
        epilog="Your own log: reelrec prepare --interactions log.csv --items videos.csv "
        "--columns columns.yaml --out runs/mine. The map names, per table, your column for "
        f"each canonical one (user_id, item_id, timestamp_s, title, ...); see {EXAMPLE}.",
    )
    add_data_args(
        p, None, "built-in dataset name (default: kuairand, unless --interactions is given)"
    )
    p.add_argument("--out", required=True, type=Path, help="run folder to write (RUN)")
    own = p.add_argument_group("your own log (instead of --dataset)")
    own.add_argument(
        "--interactions", type=Path, help="CSV, TSV or Parquet file: one row per event"
    )
    own.add_argument("--items", type=Path, help="item file (titles, durations), optional")
    own.add_argument("--users", type=Path, help="user file (profile features), optional")
    own.add_argument(
        "--columns",
        type=Path,
        metavar="MAP.yaml",
        help="column map: canonical name -> your column name, per table",
    )
    own.add_argument(
        "--name", default="own-log", help="dataset name the run records (default: own-log)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec prepare``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    own = args.interactions is not None
    if own and args.dataset:
        parser.error("give --dataset or --interactions, not both")
    if not own and (args.items or args.users or args.columns):
        parser.error("--items, --users and --columns go with --interactions")
    if own:
        if args.columns is None:
            parser.error(f"--interactions needs --columns MAP.yaml (see {EXAMPLE})")
        if args.data_dir:
            raise ConfigError("--data-dir is for --dataset; --interactions names its files")
        prepare_own_log_run(
            args.out,
            args.interactions,
            args.columns,
            args.items,
            args.users,
            args.name,
            args.protocol or "leave-one-out",
        )
        return 0
    prepare_run(args.out, args.dataset or "kuairand", args.protocol, args.data_dir)
    return 0
