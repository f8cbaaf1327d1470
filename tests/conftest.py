"""Fixtures shared by every test folder: seeded rnnstream model files (see model_files.py)."""

from __future__ import annotations

import pytest
from model_files import make_forecaster, write_model
from model_files import torch_run as _torch_run


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
