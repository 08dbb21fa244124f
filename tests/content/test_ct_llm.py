"""CT-LLM adapter on a tiny random Llama (``tiny_ct_llm`` in tests/conftest.py: built in code, a
SentencePiece model trained on a few hand-written lines and a 2-layer ``LlamaForCausalLM``,
saved like a real checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

from reelrec.content.ct_llm import CTLLMEncoder, masked_mean  # noqa: E402
from reelrec.content.testing import TINY_LINES as LINES  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tiny_ct_llm):
    return tiny_ct_llm


def test_embeddings_shape_norm_and_batch_independence(ckpt):
    enc = CTLLMEncoder(ckpt, device="cpu", batch_size=4)
    x = enc.encode(LINES)
    assert x.shape == (4, 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # right padding + causal attention: a text alone == the same text padded in a batch
    alone = enc.encode([LINES[1]])
    np.testing.assert_allclose(alone[0], x[1], atol=1e-5)
    assert not np.allclose(x[0], x[1])


def test_embedding_is_the_masked_mean_of_the_saved_model(ckpt):
    enc = CTLLMEncoder(ckpt, device="cpu")
    ids, mask = enc.tokenize(LINES[:2])
    assert ids[0, 0].item() == 1 and ids[1, 0].item() == 1  # BOS first
    assert mask[1].sum() < mask.shape[1] or mask[0].sum() < mask.shape[1]  # one row padded
    model = transformers.LlamaForCausalLM.from_pretrained(ckpt).model.eval()
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    ref = []
    for i in range(2):
        n = int(mask[i].sum())
        ref.append(h[i, :n].mean(0).numpy())
    ref = np.stack(ref)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode(LINES[:2]), ref, atol=1e-5)


def test_masked_mean_by_hand_and_errors():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    assert masked_mean(h, m).tolist() == [[2.0, 3.0]]
    with pytest.raises(ValueError, match="selects no position"):
        masked_mean(h, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="must be"):
        masked_mean(h, torch.ones(1, 2))


def test_truncation_and_cache_key(ckpt):
    enc = CTLLMEncoder(ckpt, device="cpu", max_length=4)
    ids, _ = enc.tokenize([LINES[2]])
    assert ids.shape == (1, 4)
    assert enc.cache_key != CTLLMEncoder(ckpt, device="cpu", max_length=8).cache_key


def test_missing_weights_say_what_is_needed(tmp_path, ckpt):
    with pytest.raises(FileNotFoundError, match="m-a-p/CT-LLM-Base"):
        CTLLMEncoder(None)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        CTLLMEncoder(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="missing tokenizer.model"):
        CTLLMEncoder(tmp_path / "half")
    (tmp_path / "half" / "tokenizer.model").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="missing the weights"):
        CTLLMEncoder(tmp_path / "half")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda"):
        CTLLMEncoder(ckpt, device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        CTLLMEncoder(ckpt, device="cpu", dtype="float8")
    with pytest.raises(ValueError, match="integers"):
        CTLLMEncoder(ckpt, device="cpu", max_length=float("nan"))
    (tmp_path / "half" / "model.safetensors").write_bytes(b"")
    (tmp_path / "half" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"half/config.json: not a Llama config"):
        CTLLMEncoder(tmp_path / "half", device="cpu")


def test_max_length_is_capped_at_the_model_context(ckpt):
    enc = CTLLMEncoder(ckpt, device="cpu", max_length=100_000)
    assert enc.max_length == 128  # the tiny model's max_position_embeddings
    ids, _ = enc.tokenize(["今年春天，孩子们每天放学后都会来到图书角。" * 2000])
    assert ids.shape == (1, 128)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no GPU"):
            CTLLMEncoder(ckpt, device="cuda")
