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
