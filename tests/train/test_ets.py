"""ETS fitted in training (rnnstream.train.ets): the linear recurrence equals the textbook
recursion, the fit finds a season that is there, and a model with its correction off is exactly
its ETS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnstream.train import Forecaster, ForecasterConfig, TrainConfig, from_arrays, train
from rnnstream.train.ets import ets_forecasts, ets_matrices, fit_ets, state_size

T = np.arange(160)
SEASONAL = 20 + 0.1 * T + 3 * np.sin(2 * np.pi * T / 8) + np.random.default_rng(1).normal(
    0, 0.3, T.size)


def _textbook(y: np.ndarray, fit, horizon: int = 1) -> np.ndarray:
    """Forecasts of y[t + horizon] after seeing y[t], by the ETS recursion written out."""
    z = (y - fit.mean) / fit.std
    m = fit.season
    level, trend = fit.initial[0], fit.initial[1]
    past = list(fit.initial[2:2 + m])[::-1]  # past[k]: the effect for time k - m
    out = []
    for t, value in enumerate(z):
        s_now = past[t] if m else 0.0
        e = value - (level + fit.phi * trend + s_now)
        level, trend = level + fit.phi * trend + fit.alpha * e, fit.phi * trend + fit.beta * e
        if m:
            past.append(s_now + fit.gamma * e)
        damp = sum(fit.phi ** i for i in range(1, horizon + 1))
        season = past[t + m + horizon - m * int(np.ceil(horizon / m))] if m else 0.0
        out.append(level + damp * trend + season)
    return np.asarray(out) * fit.std + fit.mean


@pytest.mark.parametrize("horizon", [1, 3, 10])
def test_the_linear_recurrence_is_the_ets_recursion(horizon: int) -> None:
    fit = fit_ets(SEASONAL[:120], 8)
    assert fit.form.endswith(",A")
    assert fit.season == 8
    g, a, bias, w, c = ets_matrices(fit, 8, horizon)
    h = np.zeros(state_size(8))
    got = []
    for value in SEASONAL:
        h = a @ h + g * value + bias
        got.append(w @ h + c)
    np.testing.assert_allclose(got, _textbook(SEASONAL, fit, horizon), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("horizon", [1, 3])
def test_ets_forecasts_are_the_recursion(horizon: int) -> None:
    fit = fit_ets(SEASONAL[:120], 8)
    np.testing.assert_allclose(ets_forecasts(fit, SEASONAL, horizon),
                               _textbook(SEASONAL, fit, horizon), rtol=1e-9, atol=1e-9)


def test_a_long_season_keeps_the_heuristic_start_and_adapts() -> None:
    # 40 slots (more than LEAST_SQUARES_SLOTS): a least-squares start would learn the first
    # part's profile and fix it (gamma 0); the profile drifts, so the season must adapt
    from rnnstream.train import ets

    rng = np.random.default_rng(3)
    t = np.arange(400)
    profile = rng.normal(size=40)  # a jagged season: no trend can follow it step by step
    y = 10 + (1 + t / 200) * profile[t % 40] + 0.05 * rng.normal(size=t.size)
    fit = fit_ets(y, 40)
    assert fit.season == 40 > ets.LEAST_SQUARES_SLOTS
    assert fit.gamma > 0
    z = (y[:80] - fit.mean) / fit.std  # the start is the first cycles' own (heuristic)
    assert fit.initial[2:] == pytest.approx((z[:40] - z[:40].mean())[::-1].tolist())


def test_the_fit_beats_persistence_on_a_seasonal_series_and_keeps_to_its_slots() -> None:
    fit = fit_ets(SEASONAL[:120], 8)
    g, a, bias, w, c = ets_matrices(fit, 12)  # a state longer than the fit's season: unused
    h = np.zeros(state_size(12))
    pred = []
    for value in SEASONAL:
        h = a @ h + g * value + bias
        pred.append(w @ h + c)
    err = np.mean((np.asarray(pred)[119:-1] - SEASONAL[120:]) ** 2)
    assert err < 0.5 * np.mean((SEASONAL[119:-1] - SEASONAL[120:]) ** 2)
    assert fit_ets(np.cumsum(np.random.default_rng(2).normal(size=200)), None).season == 0


def test_a_model_with_its_correction_off_is_exactly_its_ets() -> None:
    fit = fit_ets(SEASONAL[:120], 8)
    cfg = ForecasterConfig(n_features=2, target_index=[1], hidden=4, target_mode="ets",
                           season=8)
    model = Forecaster(cfg)
    model.set_ets([ets_matrices(fit, 8)])
    with torch.no_grad():
        model.out_layer.weight.zero_()
        model.out_layer.bias.zero_()
        x = np.stack([np.zeros_like(SEASONAL), SEASONAL], 1)
        y, state = model(torch.as_tensor(x[None], dtype=torch.float32))
    np.testing.assert_allclose(y[0, :, 0].numpy(), _textbook(SEASONAL, fit), rtol=1e-4)
    assert state[-1].shape == (1, state_size(8))


def test_train_ships_the_ets_on_a_short_series_and_reports_it() -> None:
    result = train(from_arrays(SEASONAL), ForecasterConfig(hidden=8),
                   TrainConfig(epochs=3, progress=False))
    m = result.metrics
    assert m["season"] == 8
    assert "level/ets" in m["candidates"]
    (fit,) = m["ets"].values()
    assert fit["form"].endswith(",A")
    # 32 validation pairs: fewer than network_min_val, so the best simple forecaster ships
    assert m["baseline"]["model_is_baseline"]
    assert "cannot tell a network's gain from luck" in m["target_mode_reason"]
    assert m["baseline"]["best"] in {"ETS", "seasonal naive", "persistence"}
    if m["target_mode"] == "ets":
        (refit,) = m["ets_refit"].values()
        assert refit["season"] in (0, 8)
