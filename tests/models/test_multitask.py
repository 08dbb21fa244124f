"""The multi-task structures (shared bottom, MMoE, PLE) on the tiny ranking samples of
``test_ranking_models.py`` (built in code): one expert is the shared bottom, one PLE level without
task experts is MMoE, the gates are softmax distributions wired to the right experts, gradients
reach every parameter, tiny models overfit, and the config / registry refuse bad values."""

from __future__ import annotations

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
from reelrec.models.multitask import PLE, EmbeddingMLP, MMoE, SharedBottom, multitask_bottom
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
