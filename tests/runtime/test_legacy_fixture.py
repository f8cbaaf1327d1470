"""A model exported by rnnstream 0.1.0 keeps loading and predicting exactly as it did.

``tests/data/legacy_v0_1_0`` holds an LSTM (hidden 8, 2 layers) exported by release 0.1.0 with
its step graph and sidecar, and ``expected.csv``: 40 points streamed through the 0.1.0 runtime
and the prediction after each. Any change to the contract, the fingerprint algorithm or the
loader that would refuse or alter such a file fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnstream.runtime import Predictor, StreamPool

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "legacy_v0_1_0"


def _expected() -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(FIXTURE / "expected.csv", delimiter=",", skiprows=1, dtype=np.float32)
    return table[:, 0], table[:, 1]


def test_predictor_loads_and_reproduces_0_1_0_predictions():
    xs, ys = _expected()
    p = Predictor(FIXTURE / "model.onnx")
    assert p.uses_step_graph
    got = np.array([p.step(float(x)) for x in xs], np.float32)
    np.testing.assert_array_equal(got, ys)


def test_pool_loads_0_1_0_model_and_matches():
    xs, ys = _expected()
    pool = StreamPool(FIXTURE / "model.onnx", auto_add=True)
    got = np.array([pool.step({"a": float(x)})["a"] for x in xs], np.float32)
    np.testing.assert_array_equal(got, ys)
