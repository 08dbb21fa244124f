"""Shared fixtures. Tests that read the real datasets use ``data_root``: they are skipped only
when REELREC_DATA_DIR is unset (a developer without data); when it is set (CI, `make test`)
a missing dataset folder is a failure, not a silent skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: make test must run at least this many tests: an empty collection can never pass silently.
MIN_TESTS = 100


@pytest.fixture(scope="session")
def data_root() -> Path:
    env = os.environ.get("REELREC_DATA_DIR")
    if not env:
        pytest.skip("REELREC_DATA_DIR is not set: real-data tests skipped")
    root = Path(env)
    assert root.is_dir(), f"REELREC_DATA_DIR={env} does not exist"
    return root


@pytest.fixture(scope="session")
def kuairand_prepared(tmp_path_factory, data_root):
    """Factory: ``make(name)`` returns a new run folder holding KuaiRand prepared by
    ``reelrec prepare`` (prepared once per session, then copied)."""
    import shutil

    from reelrec.cli import prepare

    base = tmp_path_factory.mktemp("kuairand-prepared") / "run"
    args = ["--dataset", "kuairand", "--data-dir", str(data_root), "--out", str(base)]
    assert prepare.main(args) == 0

    def make(name: str) -> Path:
        dest = tmp_path_factory.mktemp(name) / "run"
        shutil.copytree(base, dest)
        return dest

    return make


#: hand-written lines the tiny CT-LLM tokenizer is trained on
TINY_LINES = [
    "今年春天，我们在山区小学开展了阅读推广活动。",
    "孩子们每天放学后都会来到图书角。",
    "这家面馆开在老城区的一条小巷里，已经经营了二十多年。",
    "short video recommendation with semantic IDs",
]


@pytest.fixture(scope="session")
def tiny_ct_llm(tmp_path_factory) -> Path:
    """A CT-LLM-shaped checkpoint folder built in code: ``tokenizer.model`` (SentencePiece trained
    on :data:`TINY_LINES`), ``config.json`` and ``model.safetensors`` of a 2-layer, 32-wide
    random ``LlamaForCausalLM``."""
    import io

    spm = pytest.importorskip("sentencepiece")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("ct-llm")
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
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def pytest_collection_finish(session: pytest.Session) -> None:
    full_run = not session.config.args or session.config.args == ["tests"]
    if full_run and not session.config.option.keyword and len(session.items) < MIN_TESTS:
        raise pytest.UsageError(
            f"only {len(session.items)} tests collected (expected >= {MIN_TESTS}): "
            "a broken collection must not pass"
        )
