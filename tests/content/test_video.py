"""Video files as a frame source, on the two redistributable clips of
``video-clips-permissive`` (Sintel: a title card; Popeye: an SRT ground truth) and on broken
files written by the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from reelrec.content.video import read_srt, read_video_frames  # noqa: E402
from reelrec.data.readers import DataFormatError  # noqa: E402

CLIPS = "video-clips-permissive"
SINTEL = "sintel_clip-408p-mpeg4-mp3.mp4"


def test_sintel_frames_at_two_per_second(data_root):
    v = read_video_frames(data_root / CLIPS / SINTEL)
    # 249 frames at 25 fps = 9.96 s: one frame kept every 12.5 source frames
    assert v.total_frames == 249 and v.video_fps == 25.0
    assert v.frames.shape == (20, 408, 960, 3) and v.frames.dtype == np.uint8
    assert np.allclose(np.diff(v.times_s), 0.5, atol=0.021)
    few = read_video_frames(data_root / CLIPS / SINTEL, max_frames=4)
    assert few.frames.shape[0] == 4 and few.times_s[0] == 0.0


def test_ocr_reads_the_sintel_title_card(data_root):
    pytest.importorskip("rapidocr_onnxruntime")
    from reelrec.content.ocr import FrameOCR, video_text

    v = read_video_frames(data_root / CLIPS / SINTEL, fps=1.0)
    text = video_text(list(v.frames), FrameOCR())
    assert "BLENDER FOUNDATION" in text.replace("BLENDERFOUNDATION", "BLENDER FOUNDATION")
    assert "presents" in text


def test_srt_ground_truths(data_root):
    popeye = read_srt(data_root / CLIPS / "popeye_1936_T00-1.eng.srt")
    assert len(popeye) == 15
    assert popeye[2].text == "Oh! Oh! W-What happened?" and popeye[2].start_s == 31.448
    assert popeye[11].text == "I gotta take another look at that thing"  # two lines joined
    sintel = read_srt(data_root / CLIPS / "sintel_trailer_en.srt")
    assert [c.start_s for c in sintel] == [0.001, 11.25, 18.8, 35.0]


def test_bad_files_are_named(tmp_path):
    fake = tmp_path / "7.mp4"
    fake.write_bytes(b"not a video at all")
    with pytest.raises(DataFormatError, match=r"7.mp4: not a video|7.mp4: no decodable frame"):
        read_video_frames(fake)
    with pytest.raises(FileNotFoundError, match="video file not found"):
        read_video_frames(tmp_path / "missing.mp4")
    srt = tmp_path / "bad.srt"
    srt.write_text("1\n00:00:01,000 -> 00:00:02,000\nhello\n")
    with pytest.raises(DataFormatError, match=r"bad.srt, line 1: expected a cue timing line"):
        read_srt(srt)
    srt.write_text("1\n00:00:03,000 --> 00:00:02,000\nhello\n")
    with pytest.raises(DataFormatError, match="ends before it starts"):
        read_srt(srt)


def test_encode_ocr_reads_video_files_in_video_dir(data_root, tmp_path):
    """``reelrec encode --ocr --video-dir DIR`` takes ``DIR/<item_id>.mp4``: the 20-row own-log
    example with the Sintel clip as the video of item 103."""
    pytest.importorskip("rapidocr_onnxruntime")
    from reelrec.run import Run

    example = Path(__file__).resolve().parents[1] / "fixtures" / "own-log"
    run = Run.prepare_own_log(
        tmp_path / "run",
        example / "interactions.csv",
        example / "columns.yaml",
        items=example / "videos.csv",
        log=lambda _: None,
    )
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(data_root / CLIPS / SINTEL, videos / "103.mp4")
    info = run.encode("hashing", ocr=True, video_dir=videos, log=lambda _: None)
    assert info["ocr_items_with_frames"] == 1 and info["ocr_items_with_text"] == 1
