"""Shared fixtures for the training-stage tests: one short sine training reused by many tests."""

from __future__ import annotations

import pytest

from rnnstream.train import ForecasterConfig, TrainConfig, TrainResult, sine_series, train

# A short budget that still reaches val MSE ~1e-5 (normalised) on the sine demo.
FAST = {"epochs": 20, "target_mode": "level", "progress": False}


@pytest.fixture(scope="session")
def sine_result() -> TrainResult:
    return train(sine_series(), ForecasterConfig(cell="lstm", hidden=32), TrainConfig(**FAST))
