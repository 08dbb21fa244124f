"""``reelrec prepare``: raw files -> RUN/data/{interactions,items,users}.parquet, splits.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.cli.common import add_data_args, prepare_run


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec prepare``."""
    p = argparse.ArgumentParser(
        prog="reelrec prepare",
        description="Read a dataset's official files, drop duplicate events, stable-sort by "
        "(user, time), assign the protocol's train/valid/test split and write canonical "
        "parquet tables plus a data-quality report into RUN/data.",
    )
    add_data_args(p)
    p.add_argument("--out", required=True, type=Path, help="run folder to write (RUN)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec prepare``; returns the exit status."""
    args = build_parser().parse_args(argv)
    prepare_run(args.out, args.dataset, args.protocol, args.data_dir)
    return 0
