"""OCR of on-screen text: frames rendered in code with Pillow's bundled font (no dataset)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rapidocr_onnxruntime")

from reelrec.content.ocr import FrameOCR, video_text  # noqa: E402


def caption_frame(text: str, size=(480, 160)) -> np.ndarray:
    """A dark frame with ``text`` in white, as a burnt-in caption."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (20, 20, 20))
    ImageDraw.Draw(img).text((20, 50), text, fill=(255, 255, 255), font=ImageFont.load_default(40))
    return np.asarray(img)


@pytest.fixture(scope="module")
def ocr():
    return FrameOCR()


def test_reads_a_caption(ocr):
    lines = ocr.read(caption_frame("SHORT VIDEO 2026"))
    assert [ln.text for ln in lines] == ["SHORT VIDEO 2026"]
    assert 0.5 <= lines[0].score <= 1.0
    x0, y0, x1, y1 = lines[0].box
    assert 0 <= x0 < x1 <= 480 and 30 <= y0 < y1 <= 110
    assert ocr.read(np.full((160, 480, 3), 20, dtype=np.uint8)) == []


def test_video_text_reads_key_frames_once(ocr):
    a, b = caption_frame("HELLO WORLD"), caption_frame("GOOD NIGHT")
    assert video_text([a, a, b, b], ocr) == "HELLO WORLD GOOD NIGHT"
    # with given frame types only the slow frames (0) are read
    assert video_text([a, b], ocr, frame_types=np.array([0, 1])) == "HELLO WORLD"
    assert video_text([], ocr) == ""


def test_bad_input(ocr):
    with pytest.raises(ValueError, match="min_score"):
        FrameOCR(min_score=2)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        ocr.read(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="2 frame types for 1 frames"):
        video_text([caption_frame("X")], ocr, frame_types=np.array([0, 1]))
