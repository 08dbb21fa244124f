"""``reelrec encode --run RUN``: item content -> RUN/content/item_embeddings.npy (+ item_ids.npy,
encoder.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.cli.common import add_data_args, load_prepared, prepare_run
from reelrec.config import ConfigError
from reelrec.content.stage import (
    ENCODERS,
    EncoderOptions,
    encode_run,
)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec encode``."""
    p = argparse.ArgumentParser(
        prog="reelrec encode",
        description="Embed every item of a prepared run: text encoders read the item titles "
        "(and genres), metadata the categorical content fields (kuairand-pure: tags, types, "
        "duration), item2vec training-split behaviour only. Writes "
        "RUN/content/item_embeddings.npy (N, D) float32 L2-normalised, item_ids.npy (N,) and "
        "encoder.json. Text embeddings are cached by encoder + content hash in "
        "$REELREC_CACHE_DIR/embeddings (default ~/.cache/reelrec/embeddings).",
        epilog="encoders: " + "; ".join(f"{k}: {d}" for k, (_, d) in ENCODERS.items()),
    )
    p.add_argument(
        "--run",
        required=True,
        type=Path,
        help="run folder (prepared with --dataset when it has no data)",
    )
    p.add_argument(
        "--encoder",
        default="auto",
        choices=["auto", *ENCODERS],
        help="auto (default): e5-small when at least half the items have a title or genres "
        "(amazon-beauty/toys, ml-*), else metadata when the items have tags or type fields "
        "(kuairand-pure), else item2vec (kuairand, amazon-sports); the run says so",
    )
    p.add_argument("--dim", type=int, default=0, help="width for hashing / item2vec (default 64)")
    p.add_argument(
        "--model-path",
        type=Path,
        default=None,
        help="ct-llm / keye-vl: local folder of the model's weights (never downloaded)",
    )
    p.add_argument(
        "--device", default="auto", help="ct-llm / keye-vl: auto (default), cpu or cuda[:i]"
    )
    p.add_argument(
        "--video-dir",
        type=Path,
        default=None,
        help="keye-vl / --ocr: per item id, a sub-folder of frame images (DIR/<id>/*.jpg) or a "
        "video file (DIR/<id>.mp4, .mkv, .webm, .mov, .avi; decoded at 2 fps), e.g. "
        "microlens-50k/videos",
    )
    p.add_argument(
        "--ocr",
        action="store_true",
        help="text encoders: append the on-screen text of each item's key frames in "
        "--video-dir (RapidOCR, models inside the package: pip install 'reelrec[ocr]')",
    )
    p.add_argument(
        "--video-fps",
        type=float,
        default=2.0,
        help="keye-vl / --ocr: the rate the frame folders in --video-dir were extracted at "
        "(default 2; video files know their own)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for item2vec's SVD (default 0)")
    p.add_argument(
        "--missing-text",
        default="placeholder",
        choices=["placeholder", "error"],
        help="items with no title: embed the text 'unknown item' and count them in encoder.json "
        "(default), or stop with an error listing them",
    )
    add_data_args(p, dataset_default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec encode``; returns the exit status."""
    args = build_parser().parse_args(argv)
    given = args.dataset is not None
    if not (args.run / "data" / "interactions.parquet").exists():
        if not given:
            raise ConfigError(
                f"{args.run / 'data'} not found: pass --dataset NAME to prepare it, or run "
                f"`reelrec prepare --dataset NAME --out {args.run}` first"
            )
        print(f"{args.run / 'data'} not found: preparing {args.dataset} first")
        prepare_run(args.run, args.dataset, args.protocol, args.data_dir)
    elif given:
        prepared = load_prepared(args.run).report.get("dataset")
        if prepared and prepared != args.dataset:
            raise ConfigError(
                f"{args.run} holds {prepared}, not {args.dataset}: drop --dataset or use another --run"
            )
    options = EncoderOptions(
        dim=args.dim,
        model_path=args.model_path,
        device=args.device,
        video_dir=args.video_dir,
        video_fps=args.video_fps,
        ocr=args.ocr,
    )
    encode_run(args.run, args.encoder, args.dim, args.seed, args.missing_text, options=options)
    return 0
