"""GRU4Rec tiny config (STYLE.md): shapes, gradients, overfit, causality, padding, full ranking."""

from __future__ import annotations

import pytest
import torch
from model_checks import assert_gradients_reach_every_parameter, overfit

from reelrec.config import ConfigError
from reelrec.models.base import EmbeddingScorer, NextItemBatch, PaddingInvariant
from reelrec.models.gru4rec import GRU4Rec, GRU4RecConfig

V = 13


def tiny(seed: int = 0) -> GRU4Rec:
    torch.manual_seed(seed)
    return GRU4Rec(V, GRU4RecConfig(max_len=7, hidden=16, gru_hidden=12, layers=2, dropout=0.0))


def windows(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(1, V + 1, (3, 8), generator=g)
    w[0, :3] = 0  # left padding
    w[1, :6] = 0
    return w


def test_shapes_and_declared_capabilities():
    model = tiny().eval()
    w = windows()
    assert model(w[:, :-1]).shape == (3, 7, 16)
    assert isinstance(model, EmbeddingScorer) and isinstance(model, PaddingInvariant)
    scores = model.score_all(w[:, :-1])
    assert scores.shape == (3, V + 1) and torch.isinf(scores[:, 0]).all()
    assert (model(w[:, :-1])[0, :3] == 0).all()  # padding positions are zero


def test_gradients_reach_every_parameter_and_one_batch_overfits():
    model = tiny()
    batch = NextItemBatch.of_windows(windows())
    model.loss(batch).loss.backward()
    assert_gradients_reach_every_parameter(model)
    first, last = overfit(tiny(), batch, steps=120)
    assert last < 0.5 * first


def test_future_items_do_not_change_the_past():
    model = tiny().eval()
    x = windows()[:, :-1]
    y = x.clone()
    y[:, -1] = (y[:, -1] % V) + 1  # change only the last item
    with torch.no_grad():
        assert torch.equal(model(x)[:, :-1], model(y)[:, :-1])
        assert not torch.equal(model(x)[:, -1], model(y)[:, -1])


def test_left_padding_does_not_change_the_representation():
    model = tiny().eval()
    x = windows()[:, :-1]
    wider = torch.cat([torch.zeros(3, 4, dtype=torch.long), x], dim=1)
    with torch.no_grad():
        assert torch.allclose(
            model.user_representation(x), model.user_representation(wider), atol=1e-6
        )
        empty = model.user_representation(torch.zeros(2, 5, dtype=torch.long))
    assert torch.equal(empty, torch.zeros_like(empty))


def test_bad_config_values_name_the_key():
    with pytest.raises(ConfigError, match="gru4rec.dropout"):
        GRU4RecConfig(dropout=1.0).validate()
