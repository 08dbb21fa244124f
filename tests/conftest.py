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


#: the smallest models of the content chain (one epoch each): enough to run every stage
TINY_CHAIN = [
    "--train.epochs=1",
    "--train.progress=false",
    "--sasrec.hidden=16",
    "--sasrec.inner=16",
    "--sasrec.prefixes=false",
    "--onerec.hidden=32",
    "--onerec.inner=32",
    "--onerec.heads=2",
    "--onerec.kv_heads=2",
    "--onerec.decoder_layers=1",
]


@pytest.fixture(scope="session")
def microlens_chain(tmp_path_factory, data_root) -> tuple[Path, str]:
    """``reelrec quickstart --dataset microlens`` on the real MicroLens-50K with the hashing
    encoder (e5-small takes minutes), one QARM epoch, tiny one-epoch models and 300 test
    users, run once per session: ``(run folder, what it printed)``. The quickstart test
    checks it; the serving tests serve it (OneRec-V2 candidates, SASRec ranker)."""
    import contextlib
    import io

    from reelrec.cli import quickstart

    out = tmp_path_factory.mktemp("microlens-chain") / "qs"
    args = ["--dataset", "microlens", "--data-dir", str(data_root), "--out", str(out)]
    args += ["--encoder", "hashing", "--align-epochs", "1", "--eval-users", "300", *TINY_CHAIN]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert quickstart.main(args) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="session")
def tiny_ct_llm(tmp_path_factory) -> Path:
    """A tiny random CT-LLM-shaped checkpoint folder, built in code
    (:func:`reelrec.content.testing.tiny_ct_llm`)."""
    pytest.importorskip("sentencepiece")
    pytest.importorskip("transformers")
    from reelrec.content import testing

    return testing.tiny_ct_llm(tmp_path_factory.mktemp("ct-llm"))


def pytest_collection_finish(session: pytest.Session) -> None:
    full_run = not session.config.args or session.config.args == ["tests"]
    if full_run and not session.config.option.keyword and len(session.items) < MIN_TESTS:
        raise pytest.UsageError(
            f"only {len(session.items)} tests collected (expected >= {MIN_TESTS}): "
            "a broken collection must not pass"
        )
