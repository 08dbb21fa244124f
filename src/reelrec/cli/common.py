"""Pieces the subcommands share: run folders, prepared data, building and scoring models."""

from __future__ import annotations

import argparse

from reelrec.config import ConfigError
from reelrec.data import sources
from reelrec.data.prepare import Prepared, load_prepared, prepare_run, read_json
from reelrec.data.sequences import SequenceData, build_sequences

__all__ = [
    "add_data_args",
    "load_prepared",
    "parse_with_overrides",
    "prepare_run",
    "read_json",
    "sequences_for",
]


def add_data_args(
    parser: argparse.ArgumentParser,
    dataset_default: str | None = "kuairand",
    dataset_help: str = "",
) -> None:
    """Add ``--dataset``, ``--protocol`` and ``--data-dir`` to a subcommand.

    Args:
        parser: the subcommand's parser.
        dataset_default: default of ``--dataset``; None: no default (the stage only prepares a
            run when the user names the dataset).
        dataset_help: help of ``--dataset`` ("" = one that follows from the default).
    """
    from reelrec.data.splits import PROTOCOLS

    parser.add_argument(
        "--dataset",
        default=dataset_default,
        choices=list(sources.DATASETS),
        help=dataset_help
        or (
            f"dataset name (default: {dataset_default})"
            if dataset_default
            else "dataset to prepare into RUN when it has no data yet"
        ),
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


def sequences_for(prep: Prepared, max_len: int, step: int | None = None) -> SequenceData:
    """Training windows and evaluation instances for a sequential model (``step``: see
    :func:`reelrec.data.sequences.windows`)."""
    return build_sequences(prep.interactions, prep.protocol, max_len, step)
