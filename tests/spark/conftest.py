"""Fixtures for the Spark tests: one SparkSession for the session, exported models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ._support import FEATURES, missing_toolchain, spark_session


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


def _export(folder: Path, seed: int) -> Path:
    """A 2-layer LSTM (h and c states), 2 features, 2 targets, exported by export_model."""
    import torch

    from rnnstream.export import export_model
    from rnnstream.train.model import Forecaster, ForecasterConfig

    torch.manual_seed(seed)
    config = ForecasterConfig(cell="lstm", n_features=2, n_targets=2, hidden=8, layers=2,
                              feature_names=list(FEATURES),
                              target_names=[f"{f}_next" for f in FEATURES])
    model = Forecaster(config).eval()
    model.set_normalization(np.array([14.0, 16.0]), np.array([2.0, 2.5]),
                            np.array([14.0, 16.0]), np.array([2.0, 2.5]))
    path = folder / f"model-{seed}.onnx"
    export_model(model, path)
    return path


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("spark-model"), seed=0)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> Path:
    """Same architecture, other weights: a different fingerprint."""
    return _export(tmp_path_factory.mktemp("spark-model"), seed=1)
