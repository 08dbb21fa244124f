"""``reelrec evaluate RUN``: score every trained model of a run on the test split (full ranking)
from its saved weights, and write RUN/metrics.json and RUN/report.md (+ plots)
(:meth:`reelrec.run.Run.evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.run import Run


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec evaluate``."""
    p = argparse.ArgumentParser(
        prog="reelrec evaluate",
        description="Reload each RUN/models/NAME from model.safetensors + config.yaml, rank "
        "all items for every test instance (ranking models: AUC, GAUC and LogLoss per task on the "
        "test impressions), and write RUN/metrics.json, RUN/report.md and "
        "RUN/plots/training_curves.png.",
    )
    p.add_argument("run", type=Path, help="run folder (RUN)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec evaluate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    Run(args.run).evaluate()
    return 0
