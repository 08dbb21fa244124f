"""Two CPU processes (gloo, torch.multiprocessing) against one: the same step, and a checkpoint
written by 2 ranks resumed by 1. The samples are built in code (a tiny multi-task CTR set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ctr_fixture import tiny_ctr_data

from reelrec.data.ctr import CTRData, CTRTrainSet
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.deepfm import DeepFM
from reelrec.training.checkpoint import load_tensors
from reelrec.training.loop import TrainConfig, fit

N_TRAIN = 8  # one global batch: 4 rows per rank


def _data() -> CTRData:
    return tiny_ctr_data(N_TRAIN)


def _train(out, epochs: int, strategy: str = "ddp", grad_accum: int = 1, mfu: bool = False) -> None:
    data = _data()
    torch.manual_seed(0)
    model = DeepFM(
        CTRSchema.of(data), RankingConfig(embed_dim=4, mlp=[6], dropout=0.0, tasks=data.tasks)
    )
    cfg = TrainConfig(
        strategy=strategy,
        grad_accum=grad_accum,
        epochs=epochs,
        batch_size=N_TRAIN,
        lr=0.05,
        patience=10,
        metric="m",
        progress=False,
        mfu=mfu,
    )
    fit(model, CTRTrainSet(data), lambda m: {"m": 0.0}, cfg, out, log=lambda s: None)


def _worker(
    rank: int, world: int, init: str, out: str, epochs: int, strategy: str, mfu: bool = False
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        _train(Path(out), epochs, strategy, mfu=mfu)
    finally:
        dist.destroy_process_group()


def _weights(folder) -> dict[str, torch.Tensor]:
    """The weights after the last epoch (the checkpoint's, not the best epoch's)."""
    return load_tensors(folder / "checkpoint" / "model.safetensors")


def test_two_ranks_take_the_same_step_as_one_process_and_resume_on_one(tmp_path):
    two = tmp_path / "two"
    mp.spawn(
        _worker, args=(2, f"file://{tmp_path / 'init'}", str(two), 1, "ddp"), nprocs=2, join=True
    )
    one = tmp_path / "one"
    _train(one, 1)
    a, b = _weights(one), _weights(two)
    assert set(a) == set(b)
    moved = False
    init = _weights_at_init()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
        moved |= not torch.equal(a[k], init[k])
    assert moved  # the step changed the weights (the comparison is not of two initial states)
    # the logged loss and per-task losses are means over both ranks: one process's values
    h_one, h_two = (json.loads((f / "history.json").read_text())[0] for f in (one, two))
    for key in ("loss", "loss_click", "loss_like"):
        assert h_two[key] == pytest.approx(h_one[key], rel=1e-5), key
    # the 2-rank checkpoint resumes in one process and ends as a 1-process run of 2 epochs
    _train(two, 2)
    one2 = tmp_path / "one2"
    _train(one2, 2)
    for k, v in _weights(one2).items():
        torch.testing.assert_close(_weights(two)[k], v, rtol=1e-5, atol=1e-6)


def _weights_at_init() -> dict[str, torch.Tensor]:
    data = _data()
    torch.manual_seed(0)
    model = DeepFM(
        CTRSchema.of(data), RankingConfig(embed_dim=4, mlp=[6], dropout=0.0, tasks=data.tasks)
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_takes_the_same_step_as_the_whole_batch(tmp_path):
    _train(tmp_path / "whole", 1)
    _train(tmp_path / "micro", 1, grad_accum=2)
    for k, v in _weights(tmp_path / "whole").items():
        torch.testing.assert_close(_weights(tmp_path / "micro")[k], v, rtol=1e-5, atol=1e-6)


def _eval_inputs():
    from reelrec.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    model = SASRec(13, SASRecConfig(max_len=5, hidden=8, layers=1, heads=2, inner=8)).eval()
    g = torch.Generator().manual_seed(1)
    history = torch.randint(1, 14, (11, 5), generator=g)
    history[::3, :2] = 0
    targets = torch.randint(0, 14, (11,), generator=g)  # some 0: unseen in train
    return model, history, targets


def _eval_worker(rank: int, world: int, init: str, out: str) -> None:
    import json

    from reelrec.tasks.retrieval import gathered_evaluate

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model, history, targets = _eval_inputs()
        metrics = gathered_evaluate(model, history, targets, (5, 10), 4)
        Path(out, f"rank{rank}.json").write_text(json.dumps(metrics))
    finally:
        dist.destroy_process_group()


def test_evaluation_gathered_over_two_ranks_equals_one_process(tmp_path):
    import json

    from reelrec.eval.ranking import evaluate_model

    mp.spawn(_eval_worker, args=(2, f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=2)
    model, history, targets = _eval_inputs()
    expected = evaluate_model(model, history, targets, (5, 10), 4)[0]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got.keys() == expected.keys()
        for k, v in expected.items():
            assert got[k] == pytest.approx(v), k


def test_two_ranks_measuring_mfu_take_the_same_step_as_one_process_without(tmp_path):
    """The meter counts FLOPs on the plain model before the first DDP step and restores every
    RNG and buffer: 2 ranks with ``train.mfu`` on end where 1 process with it off does."""
    two = tmp_path / "two"
    mp.spawn(
        _worker,
        args=(2, f"file://{tmp_path / 'init'}", str(two), 2, "ddp", True),
        nprocs=2,
        join=True,
    )
    assert "mfu" in json.loads((two / "history.json").read_text())[0]
    one = tmp_path / "one"
    _train(one, 2)
    for k, v in _weights(one).items():
        torch.testing.assert_close(_weights(two)[k], v, rtol=1e-5, atol=1e-6)
