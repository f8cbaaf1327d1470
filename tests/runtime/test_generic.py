"""Foreign stateful models: pairs found by convention or given, compared with numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnnstream.runtime import ContractError, Predictor, StreamPool, UnsupportedError


def _save(graph, path):
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def accumulator(tmp_path):
    """hn = h0 + x; y = 2 * hn, declared [batch, 4]."""
    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("Add", ["h0", "x"], ["hn"]),
         helper.make_node("Mul", ["hn", "two"], ["y"])],
        "acc",
        [helper.make_tensor_value_info("x", f, ["batch", 4]),
         helper.make_tensor_value_info("h0", f, ["batch", 4])],
        [helper.make_tensor_value_info("y", f, ["batch", 4]),
         helper.make_tensor_value_info("hn", f, ["batch", 4])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return _save(g, tmp_path / "acc.onnx")


@pytest.fixture
def silero_like_gru(tmp_path):
    """A GRU over [1, 1, 3] input with state `state` -> `stateN` [1, 1, 5] and a fixed `gain`."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(1, 15, 3)).astype(np.float32)
    r = rng.normal(size=(1, 15, 5)).astype(np.float32)
    b = rng.normal(size=(1, 30)).astype(np.float32)
    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("Mul", ["input", "gain"], ["scaled"]),
         helper.make_node("GRU", ["scaled", "W", "R", "B", "", "state"], ["Y", "stateN"],
                          hidden_size=5, linear_before_reset=1),
         helper.make_node("ReduceSum", ["Y"], ["out"], keepdims=0)],
        "gru",
        [helper.make_tensor_value_info("input", f, [1, 1, 3]),
         helper.make_tensor_value_info("state", f, [1, 1, 5]),
         helper.make_tensor_value_info("gain", f, [1])],
        [helper.make_tensor_value_info("out", f, None),
         helper.make_tensor_value_info("stateN", f, [1, 1, 5])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))])
    return _save(g, tmp_path / "gru.onnx"), (w[0], r[0], b[0])


def _gru_ref(x, h, w, r, b):
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    hs = 5
    gx = w @ x + b[:15]
    gh = r @ h + b[15:]
    z = sig(gx[:hs] + gh[:hs])
    rr = sig(gx[hs:2 * hs] + gh[hs:2 * hs])
    n = np.tanh(gx[2 * hs:] + rr * gh[2 * hs:])
    return (1 - z) * n + z * h


def test_accumulator_pairs_by_convention_and_streams(accumulator):
    p = Predictor(accumulator)
    assert p.state_pairs == {"h0": "hn"}
    assert "h0->hn" in p.pairing
    assert "found by naming convention" in p.pairing
    xs = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    total = np.zeros(4, np.float32)
    for x in xs:
        total = total + x
        np.testing.assert_array_equal(p.step(x), 2 * total)
    np.testing.assert_array_equal(p.get_state()["h0"], total)
    p.reset()
    np.testing.assert_array_equal(p.step(xs[0]), 2 * xs[0])
    np.testing.assert_allclose(p.prime(xs[1:3]), 2 * np.cumsum(xs[:3], 0)[1:], rtol=1e-6)
    with pytest.raises(UnsupportedError, match="foreign model"):
        p.forecast(2)


def test_run_sequence_of_a_foreign_model_equals_its_steps(accumulator):
    p = Predictor(accumulator)
    xs = np.arange(20, dtype=np.float32).reshape(5, 4)
    stepped = np.stack([p.step(v) for v in xs])
    y, after = Predictor(accumulator).run_sequence(xs)
    assert y.shape == (5, 4)
    assert y.tobytes() == stepped.tobytes()
    assert y[-1].tolist() == (2 * xs.sum(axis=0)).tolist()
    for name in after:
        assert after[name].tobytes() == p.get_state()[name].tobytes()


def test_accumulator_pool_batches_streams(accumulator):
    pool = StreamPool(accumulator, auto_add=True)
    a = np.arange(4, dtype=np.float32)
    pool.step_many(["u", "v"], np.stack([a, -a]))
    y = pool.step_many(["v", "u"], np.stack([a, a]))
    np.testing.assert_array_equal(y, np.stack([0 * a, 4 * a]))


def test_gru_with_state_stateN_and_fixed_input(silero_like_gru):
    path, (w, r, b) = silero_like_gru
    with pytest.raises(ContractError, match="fixed_inputs"):
        Predictor(path)
    p = Predictor(path, fixed_inputs={"gain": [0.5]})
    assert p.state_pairs == {"state": "stateN"}
    q = Predictor(path, state_map={"state": "stateN"}, fixed_inputs={"gain": [0.5]})
    assert "given by state_map" in q.pairing
    h = np.zeros(5, np.float32)
    for x in np.random.default_rng(2).normal(size=(10, 3)).astype(np.float32):
        h = _gru_ref(0.5 * x, h, w, r, b)
        np.testing.assert_allclose(p.step(x), h.sum(), atol=1e-5)
        np.testing.assert_allclose(q.step(list(x)), h.sum(), atol=1e-5)
    np.testing.assert_allclose(p.get_state()["state"], h.reshape(1, 1, 5), atol=1e-5)
    with pytest.raises(ContractError, match="state_map pairs input 'nope'"):
        Predictor(path, state_map={"nope": "stateN"}, fixed_inputs={"gain": [0.5]})
    with pytest.raises(UnsupportedError, match="dynamic batch axis"):
        StreamPool(path, fixed_inputs={"gain": [0.5]})
