"""Training quality, measured on the future: the defaults against naive forecasts.

The series are synthetic stand-ins for what users bring (bench/quality.py runs the real ones):
a trending seasonal series that leaves its training range, and a random walk that persistence
is hard to beat. Each is trained with default settings on its first 80 %, and the one-step
predictions on the last 20 % (never seen in training or validation) are compared with
persistence.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnstream.train import ConfigError, ForecasterConfig, TrainConfig, from_arrays, train
from rnnstream.train.quality import detect_season, long_season


def held_out_ratio(values: np.ndarray) -> tuple[float, dict]:
    cut = round(0.8 * len(values))
    result = train(from_arrays(values[:cut, None]), ForecasterConfig(),
                   TrainConfig(progress=False))
    with torch.no_grad():
        y, _ = result.model(torch.tensor(values[None, :-1, None], dtype=torch.float32))
    pred = y[0, cut - 1:, 0].double().numpy()
    truth = values[cut:]
    return (float(np.mean((pred - truth) ** 2) / np.mean((values[cut - 1:-1] - truth) ** 2)),
            result.metrics)


@pytest.mark.slow
def test_trending_seasonal_series_beats_persistence_on_its_future() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(240)
    values = 100 + 1.5 * t + 20 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 2, t.size)
    ratio, metrics = held_out_ratio(values)
    assert metrics["season"] == 12
    # the level leaves the training range: a target relative to the past (a change, one
    # season back, or an ETS forecast), never the level itself
    assert metrics["target_mode"] != "level"
    assert ratio <= 0.75, ratio


@pytest.mark.slow
def test_random_walk_is_no_worse_than_persistence() -> None:
    values = 50 + np.cumsum(np.random.default_rng(1).normal(0, 1, 600))
    ratio, metrics = held_out_ratio(values)
    assert ratio <= 1.02, (ratio, metrics["candidates"])


def test_detect_season() -> None:
    t = np.arange(400)
    rng = np.random.default_rng(2)
    assert detect_season(np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=t.size)) == 24
    assert detect_season(rng.normal(size=400)) is None


def test_a_season_must_repeat_four_times() -> None:
    # a 19-step cycle in 72 points (3.8 cycles, lynx's case) is no season; in 80 points it is
    t = np.arange(80)
    cycle = np.sin(2 * np.pi * t / 19) + 0.05 * np.random.default_rng(4).normal(size=t.size)
    assert detect_season(cycle[:72]) != 19
    assert detect_season(cycle) == 19


def test_a_week_of_hours_is_found_beside_the_day() -> None:
    t = np.arange(24 * 7 * 6)
    rng = np.random.default_rng(5)
    day = np.sin(2 * np.pi * t / 24)
    noise = 0.05 * rng.normal(size=t.size)
    week = day * np.where((t // 24) % 7 >= 5, 0.3, 1.0) + noise  # a quieter weekend
    assert detect_season(week) == 24
    assert long_season(week, 24) == 168
    # the day alone: its multiples only fade, so no longer season
    assert long_season(day + noise, 24) is None
    # four weeks are needed (672 points): in 600 the week cannot be told
    assert long_season(week[:600], 24) is None
    assert long_season(week, None) is None


def test_every_target_is_scored_in_its_own_units() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(300)
    price = 50 + np.sin(t / 5) + 0.05 * rng.normal(size=t.size)
    volume = 1e10 * (1 + 0.3 * rng.random(t.size))
    result = train(from_arrays(np.stack([price, volume], 1), feature_names=["price", "volume"]),
                   ForecasterConfig(hidden=8), TrainConfig(epochs=3, progress=False))
    per = result.metrics["per_target"]
    assert set(per) == {"price", "volume"}
    for name, scores in per.items():
        assert scores["vs_persistence"] == pytest.approx(
            scores["mse"] / scores["persistence_mse"]), name
    assert per["volume"]["mse"] > 1e15 > per["price"]["mse"]  # never pooled into one figure


def test_multi_step_errors_start_at_the_one_step_figures() -> None:
    t = np.arange(300)
    result = train(from_arrays(np.sin(t / 4)), ForecasterConfig(hidden=8),
                   TrainConfig(epochs=2, progress=False, forecast_steps=5))
    multi, m = result.metrics["multi_step"], result.metrics
    assert multi["steps"] == [1, 2, 3, 4, 5]
    assert multi["origins"] == m["n_val"] - 4
    assert multi["persistence"][4] > multi["persistence"][0]  # further ahead is harder
    assert multi["model"][0] == pytest.approx(m["val_mse_norm"], rel=0.2)


def test_train_leaves_global_generators_and_the_config_alone() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    deterministic = torch.are_deterministic_algorithms_enabled()
    config = ForecasterConfig(hidden=4)
    train(from_arrays(np.sin(np.arange(200) / 3)), config, TrainConfig(epochs=1, progress=False))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert config == ForecasterConfig(hidden=4)


def test_data_fields_that_disagree_with_the_series_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ForecasterConfig.n_features=3 but the series has 1"):
        train(from_arrays(np.sin(np.arange(200) / 3)), ForecasterConfig(n_features=3),
              TrainConfig(epochs=1, progress=False))
