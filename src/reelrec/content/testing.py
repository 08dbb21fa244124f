"""Tiny random models with the input layouts of the content adapters, built in code (no download).

For the adapters' tests and ``bench/gpu_content.py``: they check shapes, pooling masks, save /
load and device agreement, never quality.

* :func:`tiny_ct_llm`: a CT-LLM-shaped checkpoint folder: a SentencePiece ``tokenizer.model``
  trained on a few hand-written lines, ``config.json`` + ``model.safetensors`` of a 2-layer,
  32-wide random ``LlamaForCausalLM`` (CT-LLM-Base is a stock Llama).
* :func:`tiny_qwen2_vl` + :class:`TinyVideoProcessor`: a 2-layer random
  ``Qwen2VLForConditionalGeneration`` (video placeholder tokens, ``pixel_values_videos``,
  ``video_grid_thw``: Keye-VL's input layout) and a processor fake with Keye-VL's call signature.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

#: hand-written lines the tiny tokenizer is trained on
TINY_LINES = [
    "今年春天，我们在山区小学开展了阅读推广活动。",
    "孩子们每天放学后都会来到图书角。",
    "这家面馆开在老城区的一条小巷里，已经经营了二十多年。",
    "short video recommendation with semantic IDs",
]
VIDEO_ID, START_ID, END_ID = 121, 122, 123


def tiny_ct_llm(folder: Path, seed: int = 0) -> Path:
    """Write a tiny CT-LLM-shaped checkpoint into ``folder`` (created); returns it."""
    import sentencepiece as spm
    import torch
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_LINES * 10),
        model_writer=buf,
        vocab_size=90,
        character_coverage=1.0,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    cfg = transformers.LlamaConfig(
        vocab_size=sp.get_piece_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def tiny_qwen2_vl(seed: int = 0):
    """A random 2-layer, 32-wide ``Qwen2VLForConditionalGeneration`` in eval mode (CPU)."""
    import torch
    import transformers

    cfg = transformers.Qwen2VLConfig(
        text_config=dict(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
            bos_token_id=1,
            eos_token_id=2,
        ),
        vision_config=dict(
            depth=1,
            embed_dim=16,
            hidden_size=32,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        ),
        image_token_id=120,
        video_token_id=VIDEO_ID,
        vision_start_token_id=START_ID,
        vision_end_token_id=END_ID,
    )
    torch.manual_seed(seed)
    return transformers.Qwen2VLForConditionalGeneration(cfg).eval()


class TinyVideoProcessor:
    """A processor fake with Keye-VL's / Qwen2-VL's call signature.

    Text characters map to ids ``10 + ord(c) % 100``; the frames (``(T, H, W, 3)`` uint8, H and
    W multiples of 28) become 14-pixel patches of frame pairs (temporal patch 2), with one
    video placeholder token per 2 x 2 merged patch. Records the last text and frame types.
    """

    def __init__(self) -> None:
        self.last_text: str | None = None
        self.last_frame_types = None

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        parts = []
        for m in messages:
            for c in m["content"]:
                parts.append("<V>" if c["type"] == "video" else c["text"])
        return "U:" + "".join(parts) + ("\nA:" if add_generation_prompt else "")

    def __call__(self, text, videos, return_tensors="pt", frame_types=None) -> dict:
        import torch

        self.last_text, self.last_frame_types = text[0], frame_types
        frames = np.asarray(videos[0], dtype=np.float32) / 255.0
        if len(frames) % 2:
            frames = np.concatenate([frames, frames[-1:]])
        t, h, w = len(frames) // 2, frames.shape[1] // 14, frames.shape[2] // 14
        x = frames.reshape(t, 2, h, 14, w, 14, 3).transpose(0, 2, 4, 6, 1, 3, 5)
        pixels = torch.tensor(x.reshape(t * h * w, 3 * 2 * 14 * 14))
        n_video = t * h * w // 4
        ids: list[int] = []
        for k, piece in enumerate(text[0].split("<V>")):
            if k:
                ids += [START_ID] + [VIDEO_ID] * n_video + [END_ID]
            ids += [10 + ord(ch) % 100 for ch in piece]
        input_ids = torch.tensor([ids])
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": pixels,
            "video_grid_thw": torch.tensor([[t, h, w]]),
            "mm_token_type_ids": (input_ids == VIDEO_ID).long() * 2,
        }

    def batch_decode(self, ids, skip_special_tokens=False) -> list[str]:
        return ["".join(chr(65 + int(i) % 26) for i in row) for row in ids]
