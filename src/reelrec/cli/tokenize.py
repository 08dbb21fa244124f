"""``reelrec tokenize --run RUN``: item embeddings -> semantic IDs in RUN/tokenizer/."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.cli.common import parse_with_overrides
from reelrec.config import apply_overrides, to_dict
from reelrec.tokenizer.semantic_ids import (
    METHODS,
    TokenizerConfig,
)
from reelrec.tokenizer.stage import (
    TokenizeStage,
    tokenize_run,
)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec tokenize``."""
    p = argparse.ArgumentParser(
        prog="reelrec tokenize",
        description="Quantise item embeddings into semantic IDs: L levels x K codes by residual "
        "k-means (balanced, OneRec; or plain, faiss) or RQ-VAE (TIGER), plus a disambiguation "
        "level so every item's ID is unique; or QARM VQ codes (top-K nearest items). Writes "
        "OUT/codebooks.safetensors, semantic_ids.parquet (item_id, code_1..code_L+1), "
        "stats.json (per level: utilisation, entropy in bits, recon loss, collision rate), "
        "config.yaml and plots/tokenizer.png; the vq method writes vq_codes.parquet and "
        "vq_stats.json.",
        epilog=f"Methods: {', '.join(METHODS)}. Overrides: --tokenizer.KEY=VALUE; keys and defaults: "
        + ", ".join(f"{k}={v}" for k, v in to_dict(TokenizerConfig()).items())
        + ". Example: reelrec tokenize --run runs/beauty --method rq-vae --out runs/beauty/tok-vae",
    )
    p.add_argument("--run", required=True, type=Path, help="run folder with RUN/content")
    p.add_argument("--method", choices=METHODS, help="shortcut for --tokenizer.method")
    p.add_argument("--out", type=Path, help="output folder (default RUN/tokenizer)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec tokenize``; returns the exit status."""
    args, overrides = parse_with_overrides(build_parser(), argv)
    cfg = apply_overrides(TokenizeStage(), overrides)
    if args.method:
        cfg.tokenizer.method = args.method
    tokenize_run(args.run, cfg, args.out)
    return 0
