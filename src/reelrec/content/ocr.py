"""On-screen text of video frames (OCR) to add to an item's text.

Engine: RapidOCR (``rapidocr-onnxruntime``, Apache-2.0), PaddleOCR's PP-OCR detection,
direction and recognition models (Chinese + English) converted to ONNX and shipped inside the
PyPI package: nothing is downloaded. ``pip install 'reelrec[ocr]'``.

Short videos repeat their captions over many frames, so :func:`video_text` reads only the slow
(key) frames of Keye-VL 1.5's split (:func:`reelrec.content.keye_vl.select_slow_fast`) by
default and keeps each distinct line once, in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reelrec.content.encoders import optional_import


@dataclass(frozen=True)
class OcrLine:
    """One line of text found in a frame.

    Attributes:
        text: the recognised text.
        score: recognition confidence in [0, 1].
        box: ``(x0, y0, x1, y1)`` pixel bounds of the line.
    """

    text: str
    score: float
    box: tuple[float, float, float, float]


class FrameOCR:
    """Reads the text lines of RGB frames.

    Args:
        min_score: lines recognised with lower confidence are dropped (0..1).

    Raises:
        ValueError: ``min_score`` outside [0, 1].
        ImportError: on first use, when ``rapidocr-onnxruntime`` is missing.
    """

    def __init__(self, min_score: float = 0.5) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        self.min_score = min_score
        self._engine = None

    def _load(self):
        if self._engine is None:
            self._engine = optional_import("rapidocr_onnxruntime", "ocr", "OCR").RapidOCR()
        return self._engine

    def read(self, frame: np.ndarray) -> list[OcrLine]:
        """Text lines of one frame, top to bottom then left to right.

        Args:
            frame: ``(H, W, 3)`` uint8 RGB.

        Raises:
            ValueError: not an ``(H, W, 3)`` uint8 array.
        """
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"a frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}"
            )
        # RapidOCR expects OpenCV's BGR channel order for arrays
        result, _ = self._load()(np.ascontiguousarray(frame[..., ::-1]))
        lines = []
        for box, text, score in result or []:
            pts = np.asarray(box, dtype=np.float64)
            if float(score) < self.min_score or not str(text).strip():
                continue
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            lines.append(OcrLine(str(text).strip(), float(score), (x0, y0, x1, y1)))
        return sorted(lines, key=lambda ln: (round(ln.box[1] / 10), ln.box[0]))


def video_text(
    frames: Sequence[np.ndarray],
    ocr: FrameOCR | None = None,
    frame_types: np.ndarray | None = None,
    separator: str = " ",
) -> str:
    """The distinct on-screen text lines of a video's frames, in order of first appearance.

    Args:
        frames: T ``(H, W, 3)`` uint8 RGB frames.
        ocr: the reader (default ``FrameOCR()``).
        frame_types: Keye-VL slow/fast types ``(T,)``; only slow frames (0) are read. Default:
            computed by :func:`reelrec.content.keye_vl.select_slow_fast`.
        separator: joins the lines.

    Returns:
        The text (``""`` when nothing was read).
    """
    from reelrec.content.keye_vl import select_slow_fast

    if len(frames) == 0:
        return ""
    ocr = ocr or FrameOCR()
    types = select_slow_fast(frames) if frame_types is None else np.asarray(frame_types)
    if len(types) != len(frames):
        raise ValueError(f"{len(types)} frame types for {len(frames)} frames")
    seen: dict[str, None] = {}
    for frame, kind in zip(frames, types, strict=True):
        if kind == 0:
            for line in ocr.read(frame):
                seen.setdefault(line.text, None)
    return separator.join(seen)
