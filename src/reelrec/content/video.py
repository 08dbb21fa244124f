"""Video files as a frame source: decode, sample at a frame rate, and read subtitle files.

Decoding uses OpenCV's bundled FFmpeg (``opencv-python``, installed with ``reelrec[ocr]``), so
MP4/MKV/WebM files work without a system FFmpeg. Frames are kept at ``fps`` (default 2, Keye-VL
1.5's rate, :data:`reelrec.content.keye_vl.FPS`): one every ``video_fps / fps`` source frames,
counted while streaming, since container frame counts are estimates.
Subtitle tracks stored as images (PGS) are not decoded here; an ``.srt`` beside a video is read
by :func:`read_srt` (the ground truth of OCR tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelrec.content.encoders import optional_import
from reelrec.content.keye_vl import FPS
from reelrec.data.readers import DataFormatError

#: file suffixes :func:`read_video_frames` is asked to open (others: decoded if OpenCV can)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")


@dataclass
class VideoFrames:
    """Frames sampled from one video.

    Attributes:
        frames: uint8 (T, H, W, 3) RGB.
        times_s: float64 (T,) presentation time of each frame in seconds (index / video fps).
        video_fps: the file's frame rate. total_frames: frames decoded from the file.
    """

    frames: np.ndarray
    times_s: np.ndarray
    video_fps: float
    total_frames: int


def read_video_frames(
    path: str | Path, fps: float = FPS, max_frames: int | None = None
) -> VideoFrames:
    """Decode ``path`` and keep frames evenly spaced at ``fps``.

    Args:
        path: a video file. fps: frames per second to keep (capped at the file's rate).
        max_frames: at most this many frames (default: as many as ``fps`` gives).

    Returns:
        :class:`VideoFrames`.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not a decodable video, or no frame in it (names the file).
        ImportError: OpenCV is not installed (``pip install 'reelrec[ocr]'``).
    """
    cv2 = optional_import("cv2", "ocr", "reading video files")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataFormatError(f"{path}: not a video OpenCV can decode")
        video_fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
        step = video_fps / min(fps, video_fps)  # source frames per kept frame
        kept: list[np.ndarray] = []
        index: list[int] = []
        i = 0
        # streamed: only kept frames are converted and held (a 1080p minute decoded whole
        # would take gigabytes); container frame counts are estimates, so none is trusted
        while cap.grab():
            if i >= len(index) * step - 1e-9:
                ok, frame = cap.retrieve()
                if not ok:
                    raise DataFormatError(f"{path}: frame {i} cannot be decoded")
                kept.append(frame[:, :, ::-1])  # BGR -> RGB
                index.append(i)
            i += 1
    finally:
        cap.release()
    if not kept:
        raise DataFormatError(f"{path}: no decodable frame")
    if max_frames is not None and len(kept) > max_frames:
        pick = np.linspace(0, len(kept) - 1, max_frames).round().astype(int)
        kept, index = [kept[j] for j in pick], [index[j] for j in pick]
    frames = np.ascontiguousarray(np.stack(kept))
    return VideoFrames(frames, np.asarray(index) / video_fps, video_fps, i)


@dataclass(frozen=True)
class Cue:
    """One subtitle: ``start_s``/``end_s`` in seconds and its text (lines joined by a space)."""

    start_s: float
    end_s: float
    text: str


_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{3})")


def read_srt(path: str | Path) -> list[Cue]:
    """Parse a SubRip (``.srt``) file.

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: a cue without a valid ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` line, or an
            end before its start (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: subtitle file not found")
    lines = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")
    cues: list[Cue] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        start_line = i + 1
        if lines[i].strip().isdigit():  # the cue number
            i += 1
        times = _TIME.findall(lines[i]) if i < len(lines) else []
        if "-->" not in (lines[i] if i < len(lines) else "") or len(times) != 2:
            raise DataFormatError(f"{path}, line {start_line}: expected a cue timing line")
        start, end = (
            int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms in times
        )
        if end < start:
            raise DataFormatError(f"{path}, line {i + 1}: cue ends before it starts")
        i += 1
        text = []
        while i < len(lines) and lines[i].strip():
            text.append(lines[i].strip())
            i += 1
        cues.append(Cue(start, end, " ".join(text)))
    return cues
