"""The ``reelrec`` command: one subcommand per pipeline stage (DESIGN.md data flow)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import reelrec


def _commands() -> dict[str, tuple[Callable[[list[str]], int], str]]:
    from reelrec.cli import (
        align,
        clean_text,
        datasets,
        encode,
        evaluate,
        prepare,
        quickstart,
        serve,
        tokenize,
        train,
    )

    return {
        "quickstart": (
            quickstart.main,
            "the main job: prepare KuaiRand, train popularity + SASRec, evaluate, report",
        ),
        "datasets": (
            datasets.main,
            "list datasets (found/missing, rows, users, items); --download NAME",
        ),
        "prepare": (
            prepare.main,
            "raw files -> RUN/data/*.parquet, splits.json, prepare_report.json",
        ),
        "train": (train.main, "train a model: reelrec train CONFIG --run RUN [--a.b=c ...]"),
        "evaluate": (evaluate.main, "full-ranking test metrics -> RUN/metrics.json, RUN/report.md"),
        "encode": (
            encode.main,
            "item content -> RUN/content/item_embeddings.npy (text, metadata or item2vec)",
        ),
        "clean-text": (
            clean_text.main,
            "Chinese text cleaning (CT-LLM's MAP-CC rules + MinHash dedup) -> JSONL + report",
        ),
        "align": (align.main, "QARM item alignment -> RUN/content/aligned_embeddings.npy"),
        "tokenize": (
            tokenize.main,
            "semantic IDs (balanced RQ-Kmeans, RQ-Kmeans, RQ-VAE, VQ) -> RUN/tokenizer/",
        ),
        "serve": (
            serve.main,
            "HTTP service: /recommend (cascade + DCAF), /events (SQLite), /healthz, /metrics",
        ),
    }


def usage() -> str:
    """The top-level help text."""
    lines = [
        f"reelrec {reelrec.__version__}: short-video recommendation, from datasets to ranking.",
        "",
        "usage: reelrec COMMAND [ARGS]   (reelrec COMMAND --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<11} {desc}" for name, (_, desc) in _commands().items()]
    lines += ["", "data: set REELREC_DATA_DIR to the folder holding the dataset folders."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; user errors (bad config, data, files, checkpoints, run
    folders) print one clear line and return 2; anything else is a bug and raises.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        Exit status: 0 success, 2 usage, input or file-system error, 130 interrupted (Ctrl-C).
    """
    import signal

    try:
        from reelrec.config import ConfigError
        from reelrec.data.readers import DataFormatError
        from reelrec.data.sources import DatasetNotFound
        from reelrec.tasks.base import RunError
        from reelrec.training.checkpoint import CheckpointError
    except KeyboardInterrupt:  # Ctrl-C while torch is being imported: nothing started yet
        print("reelrec: interrupted", file=sys.stderr)
        return 130

    def _terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C so temp files are removed
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"reelrec {reelrec.__version__}")
        return 0
    commands = _commands()
    if argv[0] not in commands:
        print(f"reelrec: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return commands[argv[0]][0](argv[1:])
    except (
        ConfigError,
        DataFormatError,
        DatasetNotFound,
        CheckpointError,
        RunError,
        OSError,
        EOFError,
    ) as exc:  # user errors only: any other exception is a bug and keeps its traceback
        if os.environ.get("REELREC_DEBUG"):
            raise
        print(f"reelrec {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("REELREC_DEBUG"):
            raise
        what = (
            "every acknowledged event is in the store"
            if argv and argv[0] == "serve"
            else "every file is written to a temp name and renamed, so nothing is half-written"
        )
        print(f"reelrec {argv[0]}: interrupted; {what}", file=sys.stderr)
        return 130


def console_main() -> None:
    """Entry point of the ``reelrec`` console script."""
    sys.exit(main())
