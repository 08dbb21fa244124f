"""Keye-VL adapter: frame sampling, slow/fast keyframes on generated frames, token budget,
thinking-mode prompts and parsing, and the adapter on a tiny random Qwen2-VL (same input
layout as Keye-VL) with a processor fake (reelrec.content.testing). All frames and models are
built in code."""

from __future__ import annotations

import numpy as np
import pytest

from reelrec.content.keye_vl import (
    KeyeVLAdapter,
    allocate_tokens,
    format_prompt,
    frame_similarity,
    parse_output,
    sample_frame_indices,
    select_slow_fast,
)


def scene(seed: int, h: int = 112, w: int = 112) -> np.ndarray:
    """One 'shot' of a video: 7-pixel blocks, each off (black) or lit in a random colour."""
    rng = np.random.default_rng(seed)
    on = rng.random((h // 7, w // 7, 1)) < 0.5
    colour = rng.integers(64, 256, size=(h // 7, w // 7, 3))
    img = np.kron(on * colour, np.ones((7, 7, 1)))
    return img.astype(np.uint8)


def jitter(frame: np.ndarray, seed: int) -> np.ndarray:
    """The same shot a moment later: a small exposure change (HSV hue is unstable on noisy
    near-black pixels, so per-pixel noise on black would be a scene change to this measure)."""
    scale = 1.0 - 0.01 * (seed % 5 + 1)
    return np.clip(frame.astype(np.float32) * scale, 0, 255).astype(np.uint8)


def test_frame_sampling():
    idx = sample_frame_indices(300, 30.0, fps=2.0)  # 10 s at 30 fps -> 20 frames
    assert len(idx) == 20 and idx[0] == 0 and idx[-1] == 299
    assert np.all(np.diff(idx) > 0)
    assert len(sample_frame_indices(300, 30.0, fps=2.0, max_frames=8)) == 8
    # a 1 fps video sampled at 2 fps gives every frame
    assert sample_frame_indices(5, 1.0, fps=2.0).tolist() == [0, 1, 2, 3, 4]
    assert sample_frame_indices(3, 30.0).tolist() == [0]  # 0.1 s: one frame
    with pytest.raises(ValueError):
        sample_frame_indices(0, 30.0)


def test_frame_similarity():
    a, b = scene(0), scene(1)
    assert frame_similarity(a, a) == 1.0
    assert frame_similarity(a, jitter(a, 5)) >= 0.9
    assert frame_similarity(a, b) < 0.9
    black = np.zeros_like(a)
    assert frame_similarity(black, black) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        frame_similarity(a, scene(0, 56, 56))


def test_slow_fast_keyframes_follow_the_cuts():
    a, b = scene(0), scene(1)
    frames = [a, jitter(a, 1), jitter(a, 2), b, jitter(b, 3), a]
    assert select_slow_fast(frames).tolist() == [0, 1, 1, 0, 1, 0]
    # threshold 0: no frame is less similar than that, so only the first is slow
    assert select_slow_fast([a, b, a, b], min_similarity=0.0).tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="at least one frame"):
        select_slow_fast([])


def test_token_budget_by_hand():
    # 10 slow + 20 fast within 10,000 tokens: 10 T + 20 int(0.3 T) <= 10,000 -> T = 626
    assert allocate_tokens(10, 20, total=10_000) == (626, 187)
    # a budget above the most expensive allocation: every frame at the maximum
    assert allocate_tokens(2, 2, total=10**6) == (768, 230)
    # 1 slow + 10 fast in 1,000: T + 10 int(0.3 T) <= 1,000 -> T = 250 (251 costs 1,001)
    assert allocate_tokens(1, 10, total=1000) == (250, 75)
    # the fast floor of 48 tokens: 1 slow + 20 fast in 1,100 -> T + 960 <= 1,100 -> T = 140
    assert allocate_tokens(1, 20, total=1100) == (140, 48)
    with pytest.raises(ValueError, match="sample fewer frames"):
        allocate_tokens(100, 100, total=1000)


def test_thinking_prompts():
    assert format_prompt("Describe this video.", "think") == "Describe this video./think"
    assert format_prompt("Describe this video. ", "no_think") == "Describe this video./no_think"
    assert format_prompt("Describe this video.", "auto") == "Describe this video."
    with pytest.raises(ValueError, match="thinking mode"):
        format_prompt("x", "deep")
    with pytest.raises(ValueError, match="already ends"):
        format_prompt("x/think", "no_think")


def test_parse_auto_think_that_chose_no_think():
    out = parse_output(
        "<analysis>This question is straightforward and asks for a description of the video. "
        "Therefore, /no_think mode is more appropriate.</analysis>A kitten sleeps on a sofa."
    )
    assert out.mode == "no_think"
    assert out.answer == "A kitten sleeps on a sofa."
    assert out.analysis.startswith("This question") and out.thinking is None


def test_parse_think_mode_with_answer_and_boxed():
    out = parse_output(
        "<analysis>Counting needs reasoning. Therefore, /think mode is more appropriate."
        "</analysis><think>The video shows three dogs, then one more enters.</think>\n"
        "<answer>There are \\boxed{4} dogs.</answer>"
    )
    assert out.mode == "think" and out.boxed == "4"
    assert out.answer == "There are \\boxed{4} dogs."
    assert out.thinking.startswith("The video shows")
    plain = parse_output("<think>先看画面。</think>视频里一位厨师在做面条。")
    assert plain.mode == "think" and plain.answer == "视频里一位厨师在做面条。"
    # the chat template may open <think> in the prompt: the output starts inside it
    opened = parse_output("先看画面。</think>视频里一位厨师在做面条。")
    assert opened.thinking == "先看画面。" and opened.answer == "视频里一位厨师在做面条。"
    assert opened.mode == "think"


def test_parse_nested_boxed_and_empty_think_after_no_think_analysis():
    out = parse_output("<answer>\\boxed{\\frac{\\sqrt{2}}{2}} or \\boxed{x</answer>")
    assert out.boxed == "\\frac{\\sqrt{2}}{2}"
    out = parse_output("<analysis>easy, /no_think</analysis><think>\n\n</think>Just a dog.")
    assert out.mode == "no_think" and out.thinking == "" and out.answer == "Just a dog."
    assert parse_output("<think></think>A dog.").mode == "no_think"
    with pytest.raises(ValueError, match="empty"):
        format_prompt("  ", "think")
    with pytest.raises(TypeError, match="string"):
        format_prompt(None, "think")


def test_parse_plain_and_truncated():
    plain = parse_output("一只小猫在沙发上睡觉。")
    assert plain.mode == "no_think" and plain.answer == "一只小猫在沙发上睡觉。"
    cut = parse_output("<think>The user asks about the dogs and I need to count")
    assert cut.truncated and cut.answer == "" and cut.mode == "think"
    assert parse_output("").mode == "unknown"


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from reelrec.content.testing import VIDEO_ID, TinyVideoProcessor, tiny_qwen2_vl  # noqa: E402


@pytest.fixture(scope="module")
def tiny_vl():
    return tiny_qwen2_vl()


def test_adapter_embeds_over_the_video_tokens(tiny_vl):
    proc = TinyVideoProcessor()
    video = np.stack([scene(0, 56, 56)] * 4 + [scene(1, 56, 56)] * 4)
    adapter = KeyeVLAdapter(model=tiny_vl, processor=proc, device="cpu", fps=2.0, max_frames=4)
    frames, types = adapter.sample(video, video_fps=2.0)
    assert frames.shape == (4, 56, 56, 3) and types.tolist() == [0, 1, 0, 1]
    x = adapter.embed(frames, frame_types=types)
    assert x.shape == (32,) and x.dtype == np.float32
    assert abs(np.linalg.norm(x) - 1) < 1e-5
    assert proc.last_frame_types[0].tolist() == [0, 1, 0, 1]  # handed to a processor taking it
    # reference: the mean of the last layer over exactly the video placeholder positions
    batch = proc(text=[proc.last_text], videos=[frames])
    with torch.no_grad():
        h = tiny_vl(**batch, output_hidden_states=True).hidden_states[-1][0]
    mask = batch["input_ids"][0] == VIDEO_ID
    assert int(mask.sum()) == 2 * 4 * 4 // 4  # t=2 frame pairs, 4 x 4 patches, 2 x 2 merge
    ref = h[mask].mean(0).numpy()
    np.testing.assert_allclose(x, ref / np.linalg.norm(ref), atol=1e-5)
    last = KeyeVLAdapter(model=tiny_vl, processor=proc, device="cpu", pooling="last")
    y = last.embed(frames)
    ref_last = h[-1].numpy()
    np.testing.assert_allclose(y, ref_last / np.linalg.norm(ref_last), atol=1e-5)


def test_adapter_caption_uses_the_mode_suffix(tiny_vl):
    proc = TinyVideoProcessor()
    adapter = KeyeVLAdapter(model=tiny_vl, processor=proc, device="cpu", max_new_tokens=6)
    frames = np.stack([scene(2, 56, 56)] * 2)
    out = adapter.caption(frames, "Describe this video.", mode="think")
    assert proc.last_text.endswith("Describe this video./think\nA:")
    assert len(out.answer) == 6  # six generated tokens, decoded by the fake


def test_adapter_errors(tmp_path, tiny_vl):
    with pytest.raises(FileNotFoundError, match="Kwai-Keye/Keye-VL-1_5-8B"):
        KeyeVLAdapter(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="pooling"):
        KeyeVLAdapter(model=tiny_vl, processor=TinyVideoProcessor(), pooling="cls")
    with pytest.raises(ValueError, match="both model and processor"):
        KeyeVLAdapter(model=tiny_vl)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"vision_config": {}}')
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a GPU"):
            KeyeVLAdapter(tmp_path / "ckpt")
    adapter = KeyeVLAdapter(model=tiny_vl, processor=TinyVideoProcessor(), device="cpu")
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        adapter.sample(np.zeros((4, 56, 56), dtype=np.uint8), 2.0)
    for bad in (np.zeros((0, 56, 56, 3), np.uint8), np.zeros((2, 56, 56, 3), np.float32)):
        with pytest.raises(ValueError, match=r"\(n >= 1, H, W, 3\) uint8"):
            adapter.embed(bad)
    with pytest.raises(ValueError, match="at least 28x28"):
        adapter.embed(np.zeros((2, 14, 14, 3), np.uint8))
    with pytest.raises(ValueError, match="3 frame types for 2 frames"):
        adapter.embed(np.zeros((2, 56, 56, 3), np.uint8), frame_types=np.zeros(3))
    with pytest.raises(ValueError, match="max_new_tokens"):
        KeyeVLAdapter(model=tiny_vl, processor=TinyVideoProcessor(), max_new_tokens=0)


def test_a_text_only_checkpoint_is_not_taken_for_keye_vl(tiny_ct_llm):
    with pytest.raises(ValueError, match="no vision_config .*'llama'"):
        KeyeVLAdapter(tiny_ct_llm, device="cpu")


def test_numeric_arguments_are_checked():
    nan = float("nan")
    for args in [(10, 30.0, nan), (10, nan, 2.0), (10, float("inf"), 2.0), (10.5, 30.0, 2.0)]:
        with pytest.raises(ValueError):
            sample_frame_indices(*args)
    with pytest.raises(ValueError, match="max_frames"):
        sample_frame_indices(10, 30.0, 2.0, max_frames=2.5)
    with pytest.raises(ValueError, match="integers"):
        allocate_tokens(nan, 0)
    with pytest.raises(ValueError, match="finite"):
        allocate_tokens(1, 0, fast_ratio=nan)
    with pytest.raises(ValueError, match="patch_cosine"):
        frame_similarity(scene(0), scene(0), patch_cosine=nan)


def test_saved_checkpoint_loads_through_the_adapter(tiny_vl, tmp_path, monkeypatch):
    # the weights go through save_pretrained / AutoModel.from_pretrained as a real checkpoint
    # would; the processor is the fake (a real one needs the checkpoint's tokenizer files)
    tiny_vl.save_pretrained(tmp_path / "ckpt")
    monkeypatch.setattr(
        transformers.AutoProcessor, "from_pretrained", lambda *a, **k: TinyVideoProcessor()
    )
    loaded = KeyeVLAdapter(tmp_path / "ckpt", device="cpu")
    memory = KeyeVLAdapter(model=tiny_vl, processor=TinyVideoProcessor(), device="cpu")
    frames = np.stack([scene(0, 56, 56), scene(1, 56, 56)])
    np.testing.assert_allclose(loaded.embed(frames), memory.embed(frames), atol=1e-5)
