"""Fixtures for the Spark tests: one SparkSession for the session, exported models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ._support import FEATURES, LIVE_MODEL_SEASON, missing_toolchain, spark_session


def pytest_configure(config: pytest.Config) -> None:
    # Registered in pyproject.toml too; repeated here so that --strict-markers passes on a
    # checkout whose pyproject does not list it yet.
    config.addinivalue_line("markers", "spark: needs pyspark and Java (never skipped in CI)")


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for every Spark test (start-up takes seconds)."""
    if missing_toolchain():
        pytest.skip(missing_toolchain())
    session = spark_session()
    yield session
    session.stop()


def _export(folder: Path, seed: int, cell: str = "lstm", delta: bool = False,
            horizon: int = 1, targets: list[str] | None = None,
            metrics: dict | None = None) -> Path:
    """A 2-layer forecaster (LSTM: h and c states), 2 features, 2 targets, exported by
    export_model; ``delta``: fed changes and predicting changes (a `last` state too);
    ``targets``: their names (default ``<feature>_next``)."""
    import torch

    from rnnstream.export import export_model
    from rnnstream.train.model import Forecaster, ForecasterConfig

    torch.manual_seed(seed)
    mode = "delta" if delta else "level"
    config = ForecasterConfig(cell=cell, n_features=2, n_targets=2, hidden=8, layers=2,
                              feature_names=list(FEATURES), input_mode=mode, target_mode=mode,
                              target_index=[0, 1] if delta else [],
                              target_names=targets or [f"{f}_next" for f in FEATURES],
                              horizon=horizon)
    model = Forecaster(config).eval()
    if delta:
        model.set_normalization(np.zeros(2), np.array([0.5, 0.6]), np.zeros(2),
                                np.array([0.5, 0.6]), np.array([14.0, 16.0]),
                                np.array([2.0, 2.5]))
    else:
        model.set_normalization(np.array([14.0, 16.0]), np.array([2.0, 2.5]),
                                np.array([14.0, 16.0]), np.array([2.0, 2.5]))
    path = folder / f"model-{cell}-{mode}-{seed}-h{horizon}.onnx"
    export_model(model, path, metrics=metrics)
    return path


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("spark-model"), seed=0)


@pytest.fixture(scope="session")
def delta_model(tmp_path_factory) -> Path:
    """A GRU fed changes: states h and `last` (the previous point), carried between batches."""
    return _export(tmp_path_factory.mktemp("spark-model"), seed=2, cell="gru", delta=True)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> Path:
    """Same architecture, other weights: a different fingerprint."""
    return _export(tmp_path_factory.mktemp("spark-model"), seed=1)



@pytest.fixture(scope="session")
def live_model(tmp_path_factory) -> Path:
    """Predicts its own features 2 steps ahead, so the live scores can score every target; its
    contract stores a season and validation half-widths (initial intervals), as training does."""
    calibration = {"levels": [0.5, 0.8, 0.9],
                   "half_widths": {f: [[0.5, 1.0, 1.5]] for f in FEATURES}}
    return _export(tmp_path_factory.mktemp("spark-model"), seed=5, horizon=2,
                   targets=list(FEATURES),
                   metrics={"season": LIVE_MODEL_SEASON, "calibration": calibration})
