"""Checkpoints: safetensors only, reload in a fresh process, pickles refused, resume equals an
uninterrupted run (CASES.md C20). Training data are tiny random windows built in code."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reelrec.eval.ranking import evaluate_next_item
from reelrec.models.sasrec import SASRec, SASRecConfig
from reelrec.training.checkpoint import CheckpointError, load_model, load_tensors, save_model
from reelrec.training.loop import TrainConfig, fit

V, L = 11, 5


def _windows(n: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    w = torch.randint(1, V + 1, (n, L + 1), generator=g)
    w[::3, :2] = 0  # some left padding
    return w


def _model(seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(
        V,
        SASRecConfig(
            max_len=L, hidden=8, layers=1, heads=2, inner=12, dropout=0.3, attn_dropout=0.3
        ),
    )


def _evaluator():
    hist = _windows(9)[:, :-1]
    tgt = _windows(9)[:, -1]
    return lambda m: evaluate_next_item(m.score_all, hist, tgt, ks=(5, 10))[0]


def _cfg(epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=5, lr=1e-2, patience=100, progress=False, seed=7)


def test_reload_in_fresh_process_is_bit_identical(tmp_path):
    model = _model()
    fit(model, _windows(), _evaluator(), _cfg(1), tmp_path, log=lambda s: None)
    model.eval()
    hist = _windows(4)[:, :-1]
    expected = model.score_all(hist)
    save_model(model, tmp_path / "m.safetensors")
    torch.save(hist, tmp_path / "hist.pt")
    np.save(tmp_path / "expected.npy", expected.detach().numpy())
    code = f"""
import numpy as np, torch
from reelrec.models.sasrec import SASRec, SASRecConfig
from reelrec.training.checkpoint import load_model
m = SASRec({V}, SASRecConfig(max_len={L}, hidden=8, layers=1, heads=2, inner=12, dropout=0.3, attn_dropout=0.3))
load_model(m, r"{tmp_path / "m.safetensors"}").eval()
hist = torch.load(r"{tmp_path / "hist.pt"}")
got = m.score_all(hist).detach().numpy()
assert np.array_equal(got, np.load(r"{tmp_path / "expected.npy"}")), "scores differ"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_checkpoint_folder_holds_no_pickle(tmp_path):
    fit(_model(), _windows(), _evaluator(), _cfg(1), tmp_path, log=lambda s: None)
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == [
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "trainer_state.json",
    ]
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert state["trainer"]["epoch"] == 1


class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_crafted_pickle_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"weights": _Boom()}))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(_model(), bad)
    assert not (tmp_path / "PWNED").exists()


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    save_model(_model(), tmp_path / "m.safetensors")
    other = SASRec(V + 1, SASRecConfig(max_len=L, hidden=8, layers=1, heads=2, inner=12))
    with pytest.raises(CheckpointError, match="does not match") as err:
        load_model(other, tmp_path / "m.safetensors")
    msg = str(err.value)
    assert "\n" not in msg and "1 shape differences" in msg and "(12, 8) vs (13, 8)" in msg


def test_resume_equals_uninterrupted(tmp_path):
    full = _model()
    r_full = fit(full, _windows(), _evaluator(), _cfg(3), tmp_path / "a", log=lambda s: None)

    part = _model()
    fit(part, _windows(), _evaluator(), _cfg(1), tmp_path / "b", log=lambda s: None)
    torch.manual_seed(12345)  # a fresh process would have another RNG state: resume restores it
    resumed = _model()
    r_res = fit(resumed, _windows(), _evaluator(), _cfg(3), tmp_path / "b", log=lambda s: None)

    assert [h["loss"] for h in r_res.history] == [h["loss"] for h in r_full.history]
    assert r_res.best_epoch == r_full.best_epoch
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_early_stopping_keeps_best_epoch(tmp_path):
    calls = iter([0.5, 0.7, 0.6, 0.6, 0.1])
    r = fit(
        _model(),
        _windows(),
        lambda m: {"ndcg@10": next(calls)},
        TrainConfig(epochs=10, batch_size=8, patience=2, progress=False),
        tmp_path,
        log=lambda s: None,
    )
    assert r.best_epoch == 2 and r.stopped == "patience" and len(r.history) == 4


def test_a_nan_validation_metric_is_a_clear_error_not_a_silent_no_improvement(tmp_path):
    with pytest.raises(ValueError, match="validation ndcg@10 is NaN at epoch 1"):
        fit(
            _model(),
            _windows(),
            lambda m: {"ndcg@10": float("nan")},
            _cfg(2),
            tmp_path,
            log=lambda s: None,
        )


def test_resume_after_epochs_without_a_finite_best(tmp_path):
    """-inf (no epoch better than nothing yet) is stored as JSON null; resuming must read it."""
    calls = iter([float("-inf"), 0.3])
    fit(_model(), _windows(), lambda m: {"ndcg@10": next(calls)}, _cfg(1), tmp_path, log=print)
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert state["trainer"]["best"] is None
    r = fit(_model(), _windows(), lambda m: {"ndcg@10": next(calls)}, _cfg(2), tmp_path, log=print)
    assert r.best_epoch == 2


# --- a run killed in one process and resumed in another -------------------------------------

_RUN = """
import sys, time
import torch
torch.set_num_threads(1)
from reelrec.eval.ranking import evaluate_next_item
from reelrec.models.sasrec import SASRec, SASRecConfig
from reelrec.training import meter
from reelrec.training.loop import TrainConfig, fit

meter.PEAK_MATRIX = 128  # the benchmark draws its random matrices all the same
g = torch.Generator().manual_seed(3)
windows = torch.randint(1, 12, (40, 6), generator=g)
windows[::3, :2] = 0
hist, tgt = windows[:9, :-1], windows[:9, -1]
torch.manual_seed(0)  # the initialisation (a resumed run restores the RNG afterwards)
model = SASRec(11, SASRecConfig(max_len=5, hidden=8, layers=1, heads=2, inner=12, dropout=0.3,
                                attn_dropout=0.3, loss="bce"))

def evaluate(m):
    time.sleep(0.2)  # room for the parent to kill this process in the middle of the run
    return evaluate_next_item(m.score_all, hist, tgt, ks=(5, 10))[0]

cfg = TrainConfig(epochs=4, batch_size=5, lr=1e-2, patience=100, progress=False, seed=7,
                  mfu=True)
fit(model, windows, evaluate, cfg, sys.argv[1], log=lambda s: None)
print("done")
"""


def _run(script: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), str(out)], capture_output=True, text=True, check=False
    )


def _epoch_done(out: Path) -> int:
    try:
        state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return int(state["trainer"]["epoch"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("uninterrupted")
    script = root / "run.py"
    script.write_text(_RUN)
    done = _run(script, root / "out")
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
    return script, root / "out"


@pytest.mark.parametrize("kill_after", [1, 2])
def test_killed_with_sigkill_and_resumed_in_a_fresh_process_equals_uninterrupted(
    uninterrupted, tmp_path, kill_after
):
    """SIGKILL once the checkpoint shows epoch ``kill_after`` finished (wherever the child is
    then: training, measuring, evaluating or saving), resume with the same command in a new
    process: the weights equal those of an uninterrupted run in another process, bit for bit.
    The child measures MFU (``train.mfu``), whose benchmark once drew from the global RNG."""
    script, full = uninterrupted
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        while _epoch_done(out) < kill_after and child.poll() is None:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert kill_after <= _epoch_done(out) < 4
    resumed = _run(script, out)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "done", resumed.stderr
    for name in ("checkpoint/model.safetensors", "model.safetensors"):
        a, b = load_tensors(full / name), load_tensors(out / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    history = [json.loads((f / "history.json").read_text()) for f in (full, out)]
    assert [h["loss"] for h in history[0]] == [h["loss"] for h in history[1]]
