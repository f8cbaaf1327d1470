"""Models fed with changes (input_mode="delta"): the `last` state through export and runtime.

A price near 5,000 that trends out of its training range is the case this mode exists for. The
checks: the graph's I/O is what the one spec says, the export's parity proof passes, and the
runtime (Predictor step by step, prime, StreamPool, snapshots, forecast) computes exactly what
the torch model computes over the same stream, the first point included (its change is 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from rnnstream.export import export_model
from rnnstream.runtime import Predictor, StateError, StreamPool
from rnnstream.runtime.spec import graph_io
from rnnstream.train import ForecasterConfig, TrainConfig, from_arrays, train

PRICE = 5000 + np.cumsum(np.random.default_rng(3).normal(0.8, 6.0, 300))


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn"])
def exported(request, tmp_path_factory) -> tuple:
    cell = request.param
    series = from_arrays(np.stack([PRICE, PRICE * 0.01 + 3], 1), feature_names=["px", "aux"],
                         target_names=["px"], targets=PRICE)
    result = train(series, ForecasterConfig(cell=cell, hidden=12, layers=2),
                   TrainConfig(epochs=3, input_mode="delta", target_mode="delta",
                               progress=False))
    path = tmp_path_factory.mktemp(cell) / "model.onnx"
    report = export_model(result.model, path)
    return result.model, path, report, series


def test_graph_io_is_the_spec(exported) -> None:
    model, path, report, _ = exported
    cfg = model.config
    ins, outs = graph_io(cfg.cell, layers=2, hidden=12, n_features=2, n_targets=1,
                         input_mode="delta")
    graph = onnx.load(str(path))
    assert [v.name for v in graph.graph.input] == [t.name for t in ins]
    assert [v.name for v in graph.graph.output] == [t.name for t in outs]
    assert (ins[-1].name, ins[-1].shape) == ("last_in", ("batch", 3))
    assert (report.contract.input_mode, report.contract.schema_version) == ("delta", 2)
    assert [s.name for s in report.contract.states][-1] == "last"


def test_runtime_streams_exactly_what_torch_computes(exported) -> None:
    model, path, _, series = exported
    x = series.features.astype(np.float32)
    with torch.no_grad():
        ref, _ = model(torch.from_numpy(x[None]))
    p = Predictor(path)
    steps = np.array([p.step(row) for row in x], np.float32)
    np.testing.assert_allclose(steps, ref[0, :, 0].numpy(), rtol=0, atol=2e-3)  # ~4 ulps @5000
    # the last state is exact: the previous point (copied, not computed) and the seen flag
    np.testing.assert_array_equal(p.get_state()["last"], np.r_[x[-1], 1.0].astype(np.float32))
    primed = Predictor(path)
    np.testing.assert_array_equal(primed.prime(x), steps)  # one call == step by step, bitwise
    pool = StreamPool(path, auto_add=True)
    pooled = np.array([pool.step({"a": list(map(float, row))})["a"] for row in x], np.float32)
    np.testing.assert_array_equal(pooled, steps)


def test_first_point_is_change_zero_and_reset_forgets_the_last_point(exported) -> None:
    _, path, _, series = exported
    x = series.features.astype(np.float32)
    p = Predictor(path)
    first = p.step(x[0])
    p.step(x[1])
    p.reset()
    assert p.get_state()["last"][-1] == 0.0  # flag back to "nothing seen"
    assert p.step(x[0]) == first


def test_snapshot_restores_the_last_point(exported, tmp_path: Path) -> None:
    _, path, _, series = exported
    x = series.features.astype(np.float32)
    p = Predictor(path)
    p.prime(x[:100])
    p.save_state(tmp_path / "s.npz")
    expected = [p.step(r) for r in x[100:120]]
    q = Predictor(path)
    q.load_state(tmp_path / "s.npz")
    assert [q.step(r) for r in x[100:120]] == expected
    bad = dict(q.get_state())
    bad["last"] = np.zeros(5, np.float32)
    with pytest.raises(StateError, match="state 'last'"):
        q.set_state(bad)
