"""The multi-task structures (shared bottom, MMoE, PLE) on the tiny ranking samples of
``test_ranking_models.py`` (built in code): one expert is the shared bottom, one PLE level without
task experts is MMoE, the gates are softmax distributions wired to the right experts, gradients
reach every parameter, tiny models overfit, and the config / registry refuse bad values."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_checks import assert_ranker_trains
from test_ranking_models import TASKS, tiny_data

from reelrec.config import ConfigError
from reelrec.data.ctr import CTRBatch
from reelrec.models.can import CAN, CANConfig
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.deepfm import DeepFM
from reelrec.models.din import DIN, DINConfig
from reelrec.models.multitask import (
    PLE,
    EmbeddingMLP,
    GateMonitor,
    MMoE,
    SharedBottom,
    gate_epoch_stats,
    multitask_bottom,
)
from reelrec.models.reward import PScoreModel, RewardConfig
from reelrec.tasks.registry import MODELS, resolve_config

#: odd sizes; experts narrower than the shared bottom so that expert_mlp is exercised
CFG = RankingConfig(
    embed_dim=6,
    mlp=[10, 5],
    expert_mlp=[9, 7],
    experts=3,
    task_experts=2,
    levels=2,
    dropout=0.1,
    tasks=TASKS,
)


def build(name: str, cfg: RankingConfig, seed: int = 0) -> torch.nn.Module:
    """``name`` in embedding-mlp / deepfm / din / can, on the tiny schema."""
    torch.manual_seed(seed)
    schema = CTRSchema.of(tiny_data())
    if name == "embedding-mlp":
        return EmbeddingMLP(schema, cfg)
    if name == "deepfm":
        return DeepFM(schema, cfg)
    if name == "din":
        return DIN(schema, cfg, DINConfig(attention_mlp=[5]))
    return CAN(schema, cfg, DINConfig(attention_mlp=[5]), CANConfig(feed_dim=3, layers=[4, 2]))


def shared_bottom_copy(name: str, model: torch.nn.Module, expert: torch.nn.Module, cfg):
    """The shared-bottom form of ``model`` with ``expert`` as its bottom and every other weight
    (embeddings, towers, FM terms...) copied; loaded strictly, so the layouts must match."""
    widths = cfg.expert_mlp or cfg.mlp
    sb = build(name, replace(cfg, multitask="shared_bottom", mlp=widths), seed=1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("bottom.")}
    state.update({f"bottom.{k}": v for k, v in expert.state_dict().items()})
    sb.load_state_dict(state)
    return sb.eval()


def test_the_shared_bottom_keeps_the_checkpoint_layout():
    """DeepFM's parameters as before MMoE / PLE existed: names and shapes (checkpoints load) in
    the same order (the optimizer state is keyed by parameter index). The bottom is
    Linear, ReLU, Dropout per layer: bottom.0 and bottom.3."""
    model = build("deepfm", replace(CFG, multitask="shared_bottom"))
    assert isinstance(model.bottom, SharedBottom)
    assert [(n, tuple(p.shape)) for n, p in model.named_parameters()] == [
        ("fm_scale", (3,)),
        ("tables.0.weight", (9, 6)),
        ("tables.1.weight", (13, 6)),
        ("tables.2.weight", (6, 6)),
        ("bag_tables.0.weight", (10, 6)),
        ("first_order.0.weight", (9, 3)),
        ("first_order.1.weight", (13, 3)),
        ("first_order.2.weight", (6, 3)),
        ("bottom.0.weight", (10, 5 * 6)),
        ("bottom.0.bias", (10,)),
        ("bottom.3.weight", (5, 10)),
        ("bottom.3.bias", (5,)),
        ("heads.linear.weight", (3, 5)),
        ("heads.linear.bias", (3,)),
    ]


@pytest.mark.parametrize("name", ["embedding-mlp", "deepfm", "can"])
@pytest.mark.parametrize("tower", [[], [4]])
def test_mmoe_with_one_expert_is_the_shared_bottom(name, tower):
    cfg = replace(CFG, multitask="mmoe", experts=1, tower=tower)
    model = build(name, cfg).eval()
    batch = tiny_data().batch(np.arange(11))
    sb = shared_bottom_copy(name, model, model.bottom.experts[0], cfg)
    torch.testing.assert_close(model(batch), sb(batch))
    assert model(batch).shape == (11, len(TASKS))


@pytest.mark.parametrize("name", ["embedding-mlp", "din"])
@pytest.mark.parametrize("tower", [[], [4]])
def test_one_ple_level_with_one_shared_expert_is_the_shared_bottom(name, tower):
    cfg = replace(CFG, multitask="ple", levels=1, experts=1, task_experts=0, tower=tower)
    model = build(name, cfg).eval()
    batch = tiny_data().batch(np.arange(11))
    sb = shared_bottom_copy(name, model, model.bottom.levels[0].shared[0], cfg)
    torch.testing.assert_close(model(batch), sb(batch))


def test_one_ple_level_without_task_experts_is_mmoe():
    """Same shared experts and gates (PLE's shared experts <-> MMoE's experts): same outputs;
    a test of the gate wiring that one expert cannot make (its gate is always 1)."""
    ple = build("embedding-mlp", replace(CFG, multitask="ple", levels=1, task_experts=0)).eval()
    mmoe = build("embedding-mlp", replace(CFG, multitask="mmoe"), seed=1).eval()
    state = {}
    for k, v in ple.state_dict().items():
        state[
            k.replace("bottom.levels.0.shared.", "bottom.experts.").replace(".levels.0.", ".")
        ] = v
    mmoe.load_state_dict(state)
    batch = tiny_data().batch(np.arange(13))
    torch.testing.assert_close(ple(batch), mmoe(batch))


def test_gates_are_softmax_over_the_experts_they_mix():
    batch = tiny_data().batch(np.arange(9))
    t, e, m = len(TASKS), CFG.experts, CFG.task_experts
    mmoe = build("embedding-mlp", replace(CFG, multitask="mmoe")).eval()
    w = mmoe.bottom.gate_weights(mmoe.represent(batch))
    assert w.shape == (9, t, e)
    ple = build("embedding-mlp", replace(CFG, multitask="ple", levels=3)).eval()
    levels = ple.bottom.gate_weights(ple.represent(batch))
    assert len(levels) == 3 and levels[-1][1] is None  # no shared gate at the last level
    gates = [w] + [g for tasks, shared in levels for g in (tasks, shared) if g is not None]
    for g in gates:
        assert bool((g > 0).all())
        torch.testing.assert_close(g.sum(-1), torch.ones(g.shape[:-1]))
    for tasks, shared in levels[:-1]:
        assert tasks.shape == (9, t, m + e) and shared.shape == (9, t * m + e)
    assert levels[-1][0].shape == (9, t, m + e)


def test_each_ple_branch_reaches_the_tasks_it_should():
    """Level 2's experts of task 1 feed task 1's gate alone; level 1's gate of task 0 gives the
    input of task 0's branch alone at level 2; level 1's experts of task 1 also feed the shared
    gate, hence the shared experts of level 2 and every task."""
    model = build("embedding-mlp", replace(CFG, multitask="ple", levels=2)).eval()
    batch = tiny_data().batch(np.arange(9))
    levels = model.bottom.levels
    for module, moved in (
        (levels[1].task[1], [1]),
        (levels[0].gates[0], [0]),
        (levels[0].task[1], [0, 1, 2]),
    ):
        before = model(batch)
        with torch.no_grad():
            for p in module.parameters():  # not a constant: a gate's softmax ignores one
                p += torch.linspace(0.0, 1.0, p.numel()).view_as(p)
        diff = (model(batch) - before).abs().amax(0)
        assert [t for t in range(len(TASKS)) if diff[t] > 1e-6] == moved


@pytest.mark.parametrize(
    ("name", "multitask"),
    [("embedding-mlp", "mmoe"), ("embedding-mlp", "ple"), ("can", "ple"), ("deepfm", "mmoe")],
)
def test_tiny_config_gradients_and_overfit(name, multitask):
    data = tiny_data()
    model = build(name, replace(CFG, multitask=multitask, dropout=0.0))
    assert_ranker_trains(model, data.batch(np.arange(30)), TASKS)


@pytest.mark.parametrize("multitask", ["mmoe", "ple"])
def test_extra_left_padding_does_not_change_predictions(multitask):
    data = tiny_data()
    model = build("embedding-mlp", replace(CFG, multitask=multitask)).eval()
    batch = data.batch(np.arange(10))
    longer = torch.cat([torch.zeros(10, 1, 5, dtype=torch.long), batch.history], 2)
    wide = CTRBatch(batch.sparse, longer, batch.bag, batch.labels)
    torch.testing.assert_close(model.predict(batch), model.predict(wide))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"multitask": "x"}, "ranking.multitask must be 'shared_bottom' or 'mmoe' or 'ple'"),
        ({"experts": 0}, "ranking.experts must be >= 1"),
        ({"levels": 0}, "ranking.levels must be >= 1"),
        ({"task_experts": -1}, "ranking.task_experts must be >= 0"),
        ({"expert_mlp": [4, 0]}, "ranking.expert_mlp must be widths >= 1"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        replace(CFG, **change).validate()
    replace(CFG, multitask="ple", task_experts=0).validate()  # no task experts is allowed


def test_the_structures_refuse_bad_values_without_validate():
    with pytest.raises(ConfigError, match="ranking.multitask"):
        multitask_bottom(8, replace(CFG, multitask="x"), 3)
    with pytest.raises(ValueError, match="experts >= 1"):
        MMoE(8, [4], 0, 3, 0.0)
    with pytest.raises(ValueError, match="levels >= 1"):
        PLE(8, [4], 2, 1, 0, 3, 0.0)


def test_registry_models_fix_their_structure_and_rankers_take_any():
    data = tiny_data()
    for name, cls in (("mmoe", MMoE), ("ple", PLE)):
        cfg = resolve_config(name, [])
        assert cfg.ranking.multitask == name and MODELS[name].sections == ("features", "ranking")
        model = MODELS[name].build(cfg, data, None)
        assert isinstance(model, EmbeddingMLP) and isinstance(model.bottom, cls)
    with pytest.raises(ConfigError, match="ranking.multitask must be 'mmoe' for model 'mmoe'"):
        resolve_config("mmoe", ["--ranking.multitask=ple"])
    with pytest.raises(ConfigError, match="must be 'shared_bottom' for model 'pscore'"):
        resolve_config("pscore", ["--ranking.multitask=mmoe"])
    cfg = resolve_config("can", ["--ranking.multitask=ple", "--ranking.levels=3"])
    assert cfg.ranking.multitask == "ple" and cfg.ranking.levels == 3


def test_the_pscore_model_refuses_another_structure():
    with pytest.raises(ValueError, match="ranking.multitask must be 'shared_bottom'"):
        PScoreModel(
            CTRSchema.of(tiny_data()),
            replace(CFG, tower=[4], multitask="mmoe"),
            RewardConfig(),
        )


def _c27_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """CASES.md C27's smallest input: 256 rows of 5 N(0, 1) features; task 1's label x0 > 0,
    task 2's label x1 * x2 > 0."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((256, 5)))
    y = torch.stack([x[:, 0] > 0, x[:, 1] * x[:, 2] > 0], 1).double()
    return x, y


def _c27_train(constant: float | None) -> tuple[MMoE, torch.nn.Linear, list[float]]:
    """CASES.md C27's model: MMoE of 3 experts (linear 5 -> 4, ReLU), 2 tasks with a softmax
    gate and a logistic tower each, full-batch SGD lr 0.1 for 200 steps; every weight set to
    ``constant`` (PaddleRec's fault) or the default independent init. Returns the model, the
    towers and the gates' largest gradient at the last step."""
    torch.manual_seed(0)
    mmoe = MMoE(5, [4], experts=3, tasks=2, dropout=0.0).double()
    towers = torch.nn.Linear(4, 2).double()  # row t: task t's logistic tower
    params = [*mmoe.parameters(), *towers.parameters()]
    if constant is not None:
        with torch.no_grad():
            for p in params:
                p.fill_(constant)
    x, y = _c27_problem()
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(200):
        h = mmoe(x)  # (256, 2, 4)
        logits = (h * towers.weight).sum(-1) + towers.bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        gate_grad = max(float(g.weight.grad.abs().max()) for g in mmoe.gates)
        opt.step()
    return mmoe, towers, gate_grad


def _largest_expert_difference(mmoe: MMoE) -> float:
    flat = [torch.cat([p.detach().flatten() for p in e.parameters()]) for e in mmoe.experts]
    return max(float((a - b).abs().max()) for a in flat for b in flat)


def test_c27_constant_init_keeps_experts_identical_and_the_gate_monitor_warns():
    """CASES.md C27 (PaddleRec #721): with every weight 0.1 the experts end 200 steps exactly
    identical, the gates get no gradient and stay at 1/3 (entropy log2 3 = 1.585 bits), and the
    epoch statistics warn; with reelrec's init the experts differ and the gates learn."""
    bad, _, gate_grad = _c27_train(0.1)
    assert _largest_expert_difference(bad) == 0.0
    assert gate_grad < 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad.gate_stats(["t1", "t2"])  # drop the training steps' rows; now one pass on its own
    x, _ = _c27_problem()
    bad.train()(x)
    with pytest.warns(RuntimeWarning, match="stayed exactly uniform"):
        stats = bad.gate_stats(["t1", "t2"])
    assert stats["gate_entropy_t1"] == pytest.approx(np.log2(3), abs=1e-9)
    assert [stats[f"gate_weight_t2_{i}"] for i in range(3)] == pytest.approx([1 / 3] * 3)

    good, _, gate_grad = _c27_train(None)
    assert _largest_expert_difference(good) > 0.1
    assert gate_grad > 0
    good.gate_stats(["t1", "t2"])
    good.train()(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither uniform nor collapsed: no warning
        stats = good.gate_stats(["t1", "t2"])
    assert 0 < stats["gate_entropy_t1"] < np.log2(3) - 0.01


@pytest.mark.parametrize("multitask", ["mmoe", "ple"])
def test_c27_experts_start_different_and_every_gate_gets_a_gradient(multitask):
    """reelrec's MMoE / PLE at init: no two experts give the same output on a batch, and one
    backward pass reaches every gate."""
    model = build("embedding-mlp", replace(CFG, multitask=multitask, dropout=0.0))
    batch = tiny_data().batch(np.arange(30))
    h = model.represent(batch)
    if multitask == "mmoe":
        experts = list(model.bottom.experts)
        gates = list(model.bottom.gates)
    else:
        level = model.bottom.levels[0]
        experts = [*level.shared, *(e for task in level.task for e in task)]
        gates = [g for lv in model.bottom.levels for g in lv.gates]
        gates += [lv.shared_gate for lv in model.bottom.levels if lv.shared_gate is not None]
    outs = [e(h) for e in experts]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert (outs[i] - outs[j]).abs().max() > 1e-4, (i, j)
    model.loss(batch).loss.backward()
    for g in gates:
        assert g.weight.grad is not None and g.weight.grad.abs().max() > 0


def test_gate_statistics_are_logged_per_task_and_collapse_warns():
    """The training log's gate entries: entropy and mean weight per expert for each task's gate
    (PLE: per level, and the shared gate), accumulated over training-mode rows only; a gate
    that gives one expert nearly all its weight on every row warns (CASES.md C27)."""
    model = build("embedding-mlp", replace(CFG, multitask="ple", levels=2, dropout=0.0))
    batch = tiny_data().batch(np.arange(30))
    model.eval()(batch)
    assert model.epoch_stats() == {}  # evaluation rows are not counted
    model.train()(batch)
    stats = model.epoch_stats()
    e = CFG.task_experts + CFG.experts
    for task in TASKS:
        assert 0 < stats[f"gate_entropy_{task}"] <= np.log2(e)
        assert 0 < stats[f"gate_entropy_{task}_l1"] <= np.log2(e)
        weights = [stats[f"gate_weight_{task}_l1_{i}"] for i in range(e)]
        assert sum(weights) == pytest.approx(1.0)
    assert "gate_entropy_shared" in stats and "gate_entropy_shared_l1" not in stats
    assert model.epoch_stats() == {}  # taken: reset
    task0, shared = GateMonitor(3), GateMonitor(2)
    task0.add(torch.tensor([[0.96, 0.03, 0.01], [0.97, 0.02, 0.01]]))
    task0.add(torch.tensor([[0.99, 0.005, 0.005]]))
    shared.add(torch.tensor([[0.5, 0.5]]))  # exactly uniform
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = gate_epoch_stats({TASKS[0]: task0.take(), "shared_l1": shared.take()})
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith(f"the gate {TASKS[0]} gave one expert more than 0.95")
    assert messages[1].startswith("the gate shared_l1 stayed exactly uniform (1/2 per expert")
    assert stats[f"gate_weight_{TASKS[0]}_0"] == pytest.approx((0.96 + 0.97 + 0.99) / 3)
    assert task0.take() is None  # taken: reset
    task0.add(torch.tensor([[0.96, 0.02, 0.02], [0.02, 0.96, 0.02]]))  # a different expert
    with warnings.catch_warnings():  # per row: not collapsed
        warnings.simplefilter("error")
        gate_epoch_stats({TASKS[0]: task0.take()})
    # a half-precision softmax of equal logits is uniform to its own precision; NaN is not
    task0.add(torch.softmax(torch.zeros(4, 3, dtype=torch.bfloat16), -1))
    assert task0.take()["uniform"]
    task0.add(torch.full((2, 3), float("nan")))
    task0.add(torch.full((2, 3), 1 / 3))
    g = task0.take()
    assert not g["uniform"] and not g["finite"]
    with pytest.warns(RuntimeWarning, match="non-finite"):
        gate_epoch_stats({TASKS[0]: g})
    assert DeepFM(CTRSchema.of(tiny_data()), CFG).epoch_stats() == {}  # shared bottom
    # the reward model builds its own towers (no ``bottom``): nothing to report, no error
    reward = PScoreModel(CTRSchema.of(tiny_data()), replace(CFG, tower=[4]), RewardConfig())
    assert reward.train().epoch_stats() == {}


@pytest.mark.parametrize("multitask", ["mmoe", "ple"])
def test_gate_monitors_leave_checkpoints_and_outputs_alone_and_follow_the_buffers(multitask):
    """The monitors' accumulators are non-persistent buffers: the state_dict keys are those of
    the model without them, and the training loop's throughput measurement (which restores every
    buffer) leaves the counts as they were."""
    from reelrec.training.meter import isolated

    model = build("embedding-mlp", replace(CFG, multitask=multitask, dropout=0.0))
    assert not any("monitor" in k for k in model.state_dict())
    assert any("monitor" in name for name, _ in model.named_buffers())
    batch = tiny_data().batch(np.arange(30))
    model.train()(batch)
    with isolated(model, torch.device("cpu")):
        model.loss(batch).loss.backward()  # what the meter runs: rolled back on exit
    model.zero_grad()
    rows = {n: int(b) for n, b in model.named_buffers() if n.endswith("monitors.0.rows")}
    assert rows and set(rows.values()) == {30}
