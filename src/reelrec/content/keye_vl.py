"""Keye-VL adapter: item embeddings and captions of short videos from a local Keye-VL checkpoint.

Sources: Kwai Keye Team, "Kwai Keye-VL Technical Report" (arXiv 2507.01949) and "Kwai Keye-VL 1.5
Technical Report" (arXiv 2509.01563); the released ``keye-vl-utils`` (``vision_process.py``) for
the frame-sampling constants. Checkpoints: ``Kwai-Keye/Keye-VL-8B-Preview`` and
``Kwai-Keye/Keye-VL-1_5-8B`` (Qwen3-8B decoder, hidden size 4096, SigLIP-400M vision encoder,
2 x 2 patch merge; loaded with ``trust_remote_code=True``).

What is here:

* **Frame sampling** (:func:`sample_frame_indices`): ``min(frames / video_fps x min(fps,
  video_fps), max_frames)`` frames, evenly spaced (``np.linspace``), default 2 fps.
* **Slow/fast keyframe selection** (Keye-VL 1.5, Section 2.2; :func:`select_slow_fast`): the
  first frame is slow; every later frame is compared with the latest slow frame, patch by
  patch (28 x 28 pixels, HSV, at most 256 patches per frame): a patch is similar when its
  cosine is > 0.7, a frame when the share of similar patches (all-black patches of both
  frames ignored) is >= ``min_similarity`` (0.9, the released code; the paper says 95%);
  otherwise it becomes the new slow frame.
* **Token budget** (:func:`allocate_tokens`): the largest slow-frame budget T in [48, 768]
  with ``n_slow x T + n_fast x max(int(0.3 T), 48) <= total`` (binary search; total 65,536
  tokens in the released code, about 75K in the paper); fast frames get ``max(int(0.3 T), 48)``.
* **Thinking modes** (:func:`format_prompt`, :func:`parse_output`): ``/think`` and
  ``/no_think`` suffixes, or none (auto-think: the model writes ``<analysis>...</analysis>``
  saying which mode it chose); outputs ``<think>...</think>`` then the answer, possibly in
  ``<answer>...</answer>`` and ``\\boxed{...}``.
* **The adapter** (:class:`KeyeVLAdapter`): an item embedding = the last layer's hidden states
  pooled over the video tokens (``pooling="video"``) or the prompt's last token
  (``pooling="last"``), and a caption by greedy generation, parsed.

Deviations and limits:

* Frame similarity is computed with Pillow's HSV conversion (the released code uses OpenCV's),
  whose hue scale is 0-255 instead of 0-179: cosines differ slightly.
* The adapter passes the sampled frames to the checkpoint's own processor; the slow/fast split
  is computed here and handed over as ``frame_types`` only when the processor accepts it. The
  real 8B path has not been run in this repository (no weights, no GPU at hand); everything
  else is tested with a tiny random ``Qwen2VLForConditionalGeneration`` (same input layout:
  video placeholder tokens, ``pixel_values_videos``, ``video_grid_thw``) and a processor fake.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reelrec.content.ct_llm import check_model_dir, masked_mean, resolve_device
from reelrec.content.encoders import optional_import
from reelrec.data.readers import DataFormatError

KEYE_REPOS = ("Kwai-Keye/Keye-VL-1_5-8B", "Kwai-Keye/Keye-VL-8B-Preview")
PATCH = 28  # pixels per merged patch side (14-pixel ViT patches, 2 x 2 merge)
FPS = 2.0
MIN_FRAME_SIMILARITY = 0.9
PATCH_COSINE = 0.7
SIMILARITY_MAX_TOKENS = 256
FAST_TOKEN_RATIO = 0.3
VIDEO_MIN_TOKENS = 48
VIDEO_MAX_TOKENS = 768
VIDEO_TOTAL_TOKENS = 65_536
THINKING_MODES = ("think", "no_think", "auto")


def sample_frame_indices(
    total_frames: int, video_fps: float, fps: float = FPS, max_frames: int | None = None
) -> np.ndarray:
    """Indices of the frames to keep from a decoded video.

    Args:
        total_frames: frames in the video (>= 1).
        video_fps: the video's frame rate (> 0).
        fps: sampling rate wanted (> 0); capped at ``video_fps``.
        max_frames: at most this many frames (default: no cap but the video's length).

    Returns:
        ``(n,)`` int64 increasing indices in ``[0, total_frames)``, ``n >= 1``.

    Raises:
        ValueError: a non-positive argument.
    """
    if not _is_int(total_frames) or total_frames < 1:
        raise ValueError(f"total_frames must be an integer >= 1, got {total_frames!r}")
    if not (_is_pos(video_fps) and _is_pos(fps)):
        raise ValueError(f"video_fps ({video_fps}) and fps ({fps}) must be finite and > 0")
    if max_frames is not None and (not _is_int(max_frames) or max_frames < 1):
        raise ValueError(f"max_frames must be an integer >= 1, got {max_frames!r}")
    n = int(total_frames / video_fps * min(fps, video_fps))
    n = max(1, min(n, total_frames, max_frames or total_frames))
    return np.unique(np.round(np.linspace(0, total_frames - 1, n)).astype(np.int64))


def _is_int(x) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_pos(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and math.isfinite(x) and x > 0


def check_frames(frames, frame_types=None) -> np.ndarray:
    """``frames`` as an ``(n, H, W, 3)`` uint8 array with n >= 1 and H, W >= 28.

    Raises:
        ValueError: another shape or dtype, too small, or ``frame_types`` of another length.
    """
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8 or len(x) == 0:
        raise ValueError(f"frames must be (n >= 1, H, W, 3) uint8 RGB, got {x.shape} {x.dtype}")
    if min(x.shape[1:3]) < PATCH:
        raise ValueError(f"frames of {x.shape[1]}x{x.shape[2]} pixels: at least {PATCH}x{PATCH}")
    if frame_types is not None and len(frame_types) != len(x):
        raise ValueError(f"{len(frame_types)} frame types for {len(x)} frames")
    return x


def smart_resize(height: int, width: int, max_tokens: int, factor: int = PATCH) -> tuple[int, int]:
    """``(h, w)``: multiples of ``factor``, aspect ratio kept, at most ``max_tokens`` patches."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if (h // factor) * (w // factor) > max_tokens:
        scale = (height * width / (max_tokens * factor * factor)) ** 0.5
        h = max(factor, int(height / scale / factor) * factor)
        w = max(factor, int(width / scale / factor) * factor)
    return h, w


def _hsv_patches(frame: np.ndarray) -> np.ndarray:
    """``(P, PATCH*PATCH*3)`` float32 HSV patches of one RGB frame, resized to <= 256 patches."""
    from PIL import Image

    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    h, w = smart_resize(frame.shape[0], frame.shape[1], SIMILARITY_MAX_TOKENS)
    img = Image.fromarray(frame).resize((w, h), Image.BICUBIC).convert("HSV")
    x = np.asarray(img, dtype=np.float32)
    x = x.reshape(h // PATCH, PATCH, w // PATCH, PATCH, 3).transpose(0, 2, 1, 3, 4)
    return x.reshape(-1, PATCH * PATCH * 3)


def frame_similarity(a: np.ndarray, b: np.ndarray, patch_cosine: float = PATCH_COSINE) -> float:
    """Share of patches of two frames whose HSV cosine is > ``patch_cosine``.

    Args:
        a, b: ``(H, W, 3)`` uint8 RGB frames of the same size.
        patch_cosine: cosine above which a patch pair counts as similar.

    Returns:
        A float in [0, 1]; patches black in both frames are left out (1.0 when all are).

    Raises:
        ValueError: frames of different shapes or not ``(H, W, 3)`` uint8.
    """
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    if not -1.0 <= patch_cosine <= 1.0:  # also refuses NaN
        raise ValueError(f"patch_cosine must be in [-1, 1], got {patch_cosine}")
    pa, pb = _hsv_patches(a), _hsv_patches(b)
    na, nb = np.linalg.norm(pa, axis=1), np.linalg.norm(pb, axis=1)
    both_black = (na == 0) & (nb == 0)
    if both_black.all():
        return 1.0
    cos = (pa * pb).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return float((cos[~both_black] > patch_cosine).mean())


def select_slow_fast(
    frames: Sequence[np.ndarray], min_similarity: float = MIN_FRAME_SIMILARITY
) -> np.ndarray:
    """Keye-VL 1.5's slow/fast split of sampled frames.

    Args:
        frames: T ``(H, W, 3)`` uint8 RGB frames in time order (T >= 1).
        min_similarity: a frame less similar than this to the latest slow frame is slow.

    Returns:
        ``(T,)`` int8 frame types: 0 slow (key) frame, 1 fast frame; the first is 0.

    Raises:
        ValueError: no frames, frames of different sizes, ``min_similarity`` not in [0, 1].
    """
    if len(frames) == 0:
        raise ValueError("select_slow_fast needs at least one frame")
    if not 0.0 <= min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be in [0, 1], got {min_similarity}")
    types = np.zeros(len(frames), dtype=np.int8)
    slow = frames[0]
    for i in range(1, len(frames)):
        if frame_similarity(slow, frames[i]) < min_similarity:
            slow = frames[i]
        else:
            types[i] = 1
    return types


def allocate_tokens(
    n_slow: int,
    n_fast: int,
    total: int = VIDEO_TOTAL_TOKENS,
    min_tokens: int = VIDEO_MIN_TOKENS,
    max_tokens: int = VIDEO_MAX_TOKENS,
    fast_ratio: float = FAST_TOKEN_RATIO,
) -> tuple[int, int]:
    """Visual tokens per slow and per fast frame under a per-video budget.

    The largest T in ``[min_tokens, max_tokens]`` with ``n_slow * T + n_fast * max(int(fast_ratio
    * T), min_tokens) <= total``, by bisection (the cost is non-decreasing in T).

    Returns:
        ``(slow_tokens, fast_tokens)``.

    Raises:
        ValueError: even ``min_tokens`` per frame exceeds ``total`` (sample fewer frames), or a
            bad argument.
    """
    ints = (n_slow, n_fast, total, min_tokens, max_tokens)
    if not all(map(_is_int, ints)) or not _is_pos(fast_ratio):
        raise ValueError(
            f"token counts must be integers and fast_ratio finite, got {ints}, {fast_ratio}"
        )
    if n_slow < 1 or n_fast < 0 or not 0 < fast_ratio <= 1 or not 0 < min_tokens <= max_tokens:
        raise ValueError(
            f"need n_slow >= 1, n_fast >= 0, 0 < fast_ratio <= 1, 0 < min_tokens <= max_tokens; got "
            f"{n_slow}, {n_fast}, {fast_ratio}, {min_tokens}, {max_tokens}"
        )

    def cost(t: int) -> int:
        return n_slow * t + n_fast * max(int(fast_ratio * t), min_tokens)

    if cost(min_tokens) > total:
        raise ValueError(
            f"{n_slow} slow + {n_fast} fast frames need at least {cost(min_tokens)} tokens, over "
            f"the budget of {total}: sample fewer frames (lower fps or max_frames)"
        )
    lo, hi = min_tokens, max_tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= total:
            lo = mid
        else:
            hi = mid - 1
    return lo, max(int(fast_ratio * lo), min_tokens)


def format_prompt(text: str, mode: str = "no_think") -> str:
    """The user text with Keye-VL's thinking-mode suffix.

    Args:
        text: the instruction, e.g. ``"Describe this video."``.
        mode: ``think`` (append ``/think``), ``no_think`` (``/no_think``) or ``auto`` (nothing:
            the model decides and says so in ``<analysis>``).

    Raises:
        ValueError: unknown mode, an empty text, or one that already ends with a mode suffix.
        TypeError: ``text`` is not a string.
    """
    if mode not in THINKING_MODES:
        raise ValueError(f"thinking mode must be one of {THINKING_MODES}, got {mode!r}")
    if not isinstance(text, str):
        raise TypeError(f"the prompt must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("the prompt is empty")
    stripped = text.rstrip()
    if stripped.endswith(("/think", "/no_think")):
        raise ValueError(f"the prompt already ends with a mode suffix: {text[-20:]!r}")
    return stripped if mode == "auto" else f"{stripped}/{mode}"


@dataclass(frozen=True)
class KeyeOutput:
    """A parsed Keye-VL generation.

    Attributes:
        answer: the final answer (inside ``<answer>`` when present, else the text after the
            reasoning); for a truncated thinking output, ``""``.
        mode: ``think`` or ``no_think`` (what the model did: a ``<think>`` block, or the mode
            its auto-think ``<analysis>`` chose), ``unknown`` when neither shows.
        analysis: the auto-think ``<analysis>`` text, or ``None``.
        thinking: the ``<think>`` text, or ``None``.
        boxed: the last ``\\boxed{...}`` content of the answer, or ``None``.
        truncated: a ``<think>`` or ``<answer>`` block was opened and never closed.
    """

    answer: str
    mode: str
    analysis: str | None = None
    thinking: str | None = None
    boxed: str | None = None
    truncated: bool = False


_ANALYSIS = re.compile(r"<analysis>(.*?)</analysis>", re.S)
_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` in ``text``, braces matched to any depth (an
    unclosed one is left out)."""
    out = []
    start = text.find("\\boxed{")
    while start >= 0:
        i, depth = start + len("\\boxed{"), 1
        j = i
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            out.append(text[i : j - 1])
        start = text.find("\\boxed{", j if depth == 0 else i)
    return out


def parse_output(text: str) -> KeyeOutput:
    """Split a Keye-VL generation into analysis, thinking and answer (see :class:`KeyeOutput`).

    Order as VLMEvalKit's Keye post-processing: drop what precedes ``</analysis>``, take what
    follows ``</think>``, then the last ``<answer>...</answer>``, then ``\\boxed{}``.
    """
    if not isinstance(text, str):
        raise TypeError(f"a generation must be a string, got {type(text).__name__}")
    analysis = thinking = None
    mode = "unknown"
    truncated = False
    rest = text
    m = _ANALYSIS.search(rest)
    if m:
        analysis = m.group(1).strip()
        rest = rest[m.end() :]
        if "/no_think" in analysis:
            mode = "no_think"
        elif "/think" in analysis:
            mode = "think"
    elif "<analysis>" in rest:
        return KeyeOutput("", mode, analysis=rest.split("<analysis>", 1)[1].strip(), truncated=True)
    m = _THINK.search(rest)
    if m:
        thinking = m.group(1).strip()
        rest = rest[m.end() :]
        if mode == "unknown":  # the analysis, when there is one, says what the model chose
            mode = "think" if thinking else "no_think"
    elif "<think>" in rest:
        thinking = rest.split("<think>", 1)[1].strip()
        return KeyeOutput("", "think", analysis=analysis, thinking=thinking, truncated=True)
    elif "</think>" in rest:  # the chat template opened <think> in the prompt
        thinking, rest = (x.strip() for x in rest.split("</think>", 1))
        if mode == "unknown":
            mode = "think" if thinking else "no_think"
    elif mode == "unknown" and analysis is None:
        mode = "no_think" if rest.strip() else "unknown"
    answers = _ANSWER.findall(rest)
    if answers:
        answer = answers[-1].strip()
    elif "<answer>" in rest:
        answer, truncated = rest.split("<answer>", 1)[1].strip(), True
    else:
        answer = rest.strip()
    boxes = boxed_contents(answer)
    return KeyeOutput(
        answer=answer,
        mode=mode,
        analysis=analysis,
        thinking=thinking,
        boxed=boxes[-1].strip() if boxes else None,
        truncated=truncated,
    )


def video_messages(frames: Sequence[np.ndarray], prompt: str, fps: float) -> list[dict]:
    """The chat messages of one video and one instruction (Keye-VL / Qwen-VL layout)."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": list(frames), "fps": fps},
                {"type": "text", "text": prompt},
            ],
        }
    ]


def _check_vision_config(path: Path) -> None:
    """Refuse a checkpoint whose config has no vision part (e.g. a text-only LLM)."""
    import json

    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path / 'config.json'}: not readable JSON ({exc})") from None
    if not isinstance(cfg, dict) or "vision_config" not in cfg:
        kind = cfg.get("model_type") if isinstance(cfg, dict) else None
        raise DataFormatError(
            f"{path / 'config.json'}: no vision_config (model_type {kind!r}): not a Keye-VL "
            f"checkpoint ({' or '.join(KEYE_REPOS)})"
        )


class KeyeVLAdapter:
    """Embeddings and captions of videos from a Keye-VL checkpoint (or any model with its layout).

    Args:
        model_path: local checkpoint folder (``config.json`` + weights + processor files); not
            needed when ``model`` and ``processor`` are given.
        device: ``auto`` (the GPU; refused on a CPU-only machine, an 8B model is impractical
            there), ``cuda[:i]``, or ``cpu`` (explicit, e.g. for tiny test models).
        pooling: ``video`` (mean of the last layer over the video placeholder tokens) or
            ``last`` (the last prompt token's state).
        fps, max_frames: frame sampling (:func:`sample_frame_indices`).
        min_similarity: slow/fast threshold (:func:`select_slow_fast`).
        max_new_tokens: caption length cap.
        model, processor: an already loaded model and processor (tests, or a caller that
            loads them itself). The processor must offer ``apply_chat_template(messages,
            tokenize=False, add_generation_prompt=True)``, ``__call__(text=[...],
            videos=[...], return_tensors="pt")`` and ``batch_decode``.

    Raises:
        FileNotFoundError: no weights at ``model_path`` (says how to get them).
        RuntimeError: no GPU and ``device`` is not ``cpu``.
        ValueError: unknown pooling.
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        device: str = "auto",
        pooling: str = "video",
        fps: float = FPS,
        max_frames: int | None = 64,
        min_similarity: float = MIN_FRAME_SIMILARITY,
        max_new_tokens: int = 128,
        dtype: str | None = None,
        model=None,
        processor=None,
    ) -> None:
        if pooling not in ("video", "last"):
            raise ValueError(f"pooling must be 'video' or 'last', got {pooling!r}")
        if not _is_int(max_new_tokens) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        sample_frame_indices(1, 1.0, fps, max_frames)  # checks fps and max_frames now
        self.pooling = pooling
        self.fps = fps
        self.max_frames = max_frames
        self.min_similarity = min_similarity
        self.max_new_tokens = max_new_tokens
        if (model is None) != (processor is None):
            raise ValueError("give both model and processor, or neither")
        if model is None:
            path = check_model_dir(model_path, "Keye-VL", KEYE_REPOS[0], ("config.json",))
            _check_vision_config(path)
            if device == "auto":
                device = resolve_device("auto", "Keye-VL")
                if device == "cpu":
                    raise RuntimeError(
                        "the Keye-VL adapter runs an 8B model and needs a GPU (torch sees none); "
                        "pass --device cpu (device='cpu' in Python) to force it anyway"
                    )
            self.device = resolve_device(device, "Keye-VL")
            model, processor = self._load(path, dtype)
        else:
            self.device = resolve_device(device if device != "auto" else "cpu", "Keye-VL")
        self.model = model.to(self.device).eval()
        self.processor = processor

    def _load(self, path: Path, dtype: str | None):
        import torch

        transformers = optional_import("transformers", "llm", "the keye-vl adapter")
        AutoModel, AutoProcessor = transformers.AutoModel, transformers.AutoProcessor  # noqa: N806
        dt = getattr(torch, dtype or ("bfloat16" if self.device != "cpu" else "float32"))
        try:
            model = AutoModel.from_pretrained(
                path, dtype=dt, trust_remote_code=True, local_files_only=True
            )
            processor = AutoProcessor.from_pretrained(
                path, trust_remote_code=True, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise DataFormatError(
                f"{path}: could not load a Keye-VL checkpoint ({type(exc).__name__}: {exc}); "
                f"expected a copy of {' or '.join(KEYE_REPOS)}"
            ) from None
        if not hasattr(processor, "apply_chat_template"):
            raise DataFormatError(f"{path}: its processor has no chat template; is it Keye-VL?")
        return model, processor

    def sample(self, video: np.ndarray, video_fps: float) -> tuple[np.ndarray, np.ndarray]:
        """Sampled frames and their slow/fast types.

        Args:
            video: ``(T, H, W, 3)`` uint8 RGB frames of the whole video.
            video_fps: its frame rate.

        Returns:
            ``(frames (n, H, W, 3) uint8, frame_types (n,) int8)``.
        """
        video = np.asarray(video)
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(
                f"video must be (T, H, W, 3) uint8 RGB, got {video.shape} {video.dtype}"
            )
        idx = sample_frame_indices(len(video), video_fps, self.fps, self.max_frames)
        frames = video[idx]
        return frames, select_slow_fast(list(frames), self.min_similarity)

    def inputs(self, frames: np.ndarray, prompt: str, frame_types: np.ndarray | None = None):
        """The model inputs (a dict of tensors on the adapter's device) for frames + prompt."""
        import inspect

        frames = check_frames(frames, frame_types)
        messages = video_messages(frames, prompt, self.fps)
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        kwargs = {}
        params = inspect.signature(self.processor.__call__).parameters
        if frame_types is not None and "frame_types" in params:
            kwargs["frame_types"] = [frame_types]
        batch = self.processor(text=[text], videos=[frames], return_tensors="pt", **kwargs)
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}

    def _video_token_id(self) -> int:
        cfg = self.model.config
        tid = getattr(cfg, "video_token_id", None)
        if tid is None:
            tok = getattr(self.processor, "tokenizer", None)
            tid = tok.convert_tokens_to_ids("<|video_pad|>") if tok is not None else None
        if tid is None:
            raise ValueError("the model config names no video_token_id; use pooling='last'")
        return int(tid)

    def embed(
        self,
        frames: np.ndarray,
        prompt: str = "Describe this video.",
        frame_types: np.ndarray | None = None,
    ) -> np.ndarray:
        """One item embedding of sampled frames.

        Args:
            frames: ``(n, H, W, 3)`` uint8 RGB frames (from :meth:`sample`).
            prompt: the instruction placed after the video.
            frame_types: slow/fast types for a processor that takes them.

        Returns:
            ``(D,)`` float32, L2-normalised (D = the decoder's hidden size).

        Raises:
            ValueError: ``pooling="video"`` and the inputs hold no video token.
        """
        import torch

        batch = self.inputs(frames, prompt, frame_types)
        with torch.inference_mode():
            out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (1, L, D)
        ids = batch["input_ids"]
        if self.pooling == "video":
            mask = ids == self._video_token_id()
            if not bool(mask.any()):
                raise ValueError("no video token in the inputs: the processor dropped the video?")
        else:
            att = batch.get("attention_mask", torch.ones_like(ids))
            last = att.sum(dim=1) - 1
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[torch.arange(len(ids)), last] = True
        x = masked_mean(hidden, mask)[0].cpu().numpy().astype(np.float32)
        n = np.linalg.norm(x)
        return x / n if n > 0 else x

    def caption(
        self,
        frames: np.ndarray,
        prompt: str = "Describe this video in one sentence.",
        mode: str = "no_think",
        frame_types: np.ndarray | None = None,
    ) -> KeyeOutput:
        """A caption by greedy decoding, parsed (:func:`parse_output`).

        Args:
            frames: ``(n, H, W, 3)`` uint8 RGB frames.
            prompt: the instruction; ``mode`` adds the thinking suffix (:func:`format_prompt`).
            mode: ``think``, ``no_think`` or ``auto``.
            frame_types: slow/fast types for a processor that takes them.
        """
        import torch

        batch = self.inputs(frames, format_prompt(prompt, mode), frame_types)
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, batch["input_ids"].shape[1] :]
        text = self.processor.batch_decode(new, skip_special_tokens=False)[0]
        for tok in ("<|im_end|>", "<|endoftext|>"):
            text = text.split(tok)[0]
        return parse_output(text)
