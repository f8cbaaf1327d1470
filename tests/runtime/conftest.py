"""Fixtures: rnnstream model files built from seeded torch forecasters.

The files are made with ``build_graph`` plus the contract written here, so the runtime tests do
not depend on the exporter's parity step; ``rnnstream.export.export_model`` can replace
``write_model`` once it is stable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from runtime_helpers import contract_for, fingerprint, make_forecaster, write_model  # noqa: F401

from rnnstream.train.model import Forecaster


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """make(cell=..., features=..., ...) -> (path, torch model); cached per argument set."""
    cache: dict = {}
    folder = tmp_path_factory.mktemp("models")

    def make(**kw):
        key = tuple(sorted(kw.items()))
        if key not in cache:
            model = make_forecaster(**kw)
            path = folder / ("m" + str(len(cache)) + ".onnx")
            cache[key] = (write_model(model, path), model)
        return cache[key]

    return make


@pytest.fixture
def lstm(model_file):
    return model_file(cell="lstm", hidden=8, seed=3)


@pytest.fixture(scope="session")
def torch_run():
    return _torch_run


def _torch_run(model: Forecaster, xs: np.ndarray, state=None):
    """Full-sequence torch reference: xs [B, T, F] -> (y [B, T, Tg], state arrays [B, L, H])."""
    with torch.no_grad():
        st = None if state is None else tuple(torch.from_numpy(s) for s in state)
        y, new = model(torch.from_numpy(xs), st)
    return y.numpy(), [s.numpy() for s in new]
