"""Stepping one time step at a time with the state fed back equals one full-sequence forward."""

from __future__ import annotations

import pytest
import torch

from rnnstream.train import CELLS, Forecaster, ForecasterConfig


def _model(cell: str, layers: int, mode: str) -> Forecaster:
    torch.manual_seed(1)
    config = ForecasterConfig(cell=cell, n_features=3, n_targets=2, hidden=8, layers=layers,
                              target_mode=mode, target_index=[2, 0] if mode == "delta" else [])
    model = Forecaster(config).eval()
    # Non-trivial normalisation, so a bug in applying or inverting it would show.
    model.set_normalization([0.5, -1.0, 2.0], [2.0, 0.5, 3.0], [1.0, -2.0], [0.25, 4.0])
    return model


@pytest.mark.parametrize("mode", ["level", "delta"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_stepwise_equals_full_sequence(cell: str, layers: int, mode: str) -> None:
    model = _model(cell, layers, mode)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 15, 3, generator=gen) * 3
    state0 = tuple(torch.randn(4, layers, 8, generator=gen) * 0.5 for _ in
                   model.config.state_names)
    with torch.no_grad():
        y_full, s_full = model(x, state0)
        state, steps = state0, []
        for t in range(x.shape[1]):
            y_t, state = model(x[:, t:t + 1], state)
            steps.append(y_t)
    y_step = torch.cat(steps, dim=1)
    assert y_full.shape == (4, 15, 2)
    torch.testing.assert_close(y_step, y_full, atol=1e-6, rtol=0)
    assert len(state) == len(s_full) == len(model.config.state_names)
    for a, b in zip(state, s_full, strict=True):
        assert a.shape == (4, layers, 8)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_delta_mode_adds_last_observed_value() -> None:
    model = _model("gru", 1, "delta")
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        y, _ = model(x)
        u, _ = model.forward_normalized(x)
    expected = u * model.y_std + model.y_mean + x[..., [2, 0]]
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.target_to_normalized(x, y), u, atol=1e-5, rtol=0)
