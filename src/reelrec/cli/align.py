"""``reelrec align --run RUN``: QARM item alignment -> RUN/content/aligned_embeddings.npy."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.cli.common import parse_with_overrides
from reelrec.config import apply_overrides, to_dict
from reelrec.tokenizer.align import AlignConfig
from reelrec.tokenizer.align_stage import (
    AlignStage,
    align_run,
)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec align``."""
    p = argparse.ArgumentParser(
        prog="reelrec align",
        description="QARM item alignment: mine U2I and I2I item pairs from training-split "
        "behaviour, train a residual projection head on the frozen item embeddings "
        "(RUN/content/item_embeddings.npy, from `reelrec encode`) with in-batch InfoNCE, and "
        "write RUN/content/aligned_embeddings.npy, align_head.safetensors, align_config.yaml "
        "and align.json (pair Recall@K before and after, on held-out pairs, full ranking).",
        epilog="Overrides: --align.KEY=VALUE; keys and defaults: "
        + ", ".join(f"{k}={v}" for k, v in to_dict(AlignConfig()).items())
        + ". Example: reelrec align --run runs/beauty --align.temperature=0.1",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder with RUN/content")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec align``; returns the exit status."""
    args, overrides = parse_with_overrides(build_parser(), argv)
    cfg = apply_overrides(AlignStage(), overrides)
    align_run(args.run, cfg)
    return 0
