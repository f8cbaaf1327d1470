"""Foreign models exported by torch: an nn.LSTM, time first, with h0, c0 -> hn, cn.

The runtime finds their axes (batch probed with onnxruntime, time from the prediction's rows),
checks the state pairs by a load-time round trip, primes in one call along the time axis, and
pools streams along the probed batch axis.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnstream.runtime import (  # noqa: E402
    ContractError,
    InputError,
    Predictor,
    StreamPool,
    UnsupportedError,
)

LAYERS, HIDDEN, FEATURES = 2, 8, 2


class _Net(torch.nn.Module):
    """nn.LSTM time first ([time, batch, features]), states [layers, batch, hidden]."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(FEATURES, HIDDEN, num_layers=LAYERS)
        self.head = torch.nn.Linear(HIDDEN, 1)

    def forward(self, x, h0, c0):
        out, (hn, cn) = self.lstm(x, (h0, c0))
        return self.head(out), hn, cn


def _export(net, path, outputs=("y", "hn", "cn"), time=5, dynamic_time=True):
    x = torch.zeros(time, 3, FEATURES)
    h = torch.zeros(LAYERS, 3, HIDDEN)
    axes = {"x": {0: "time", 1: "batch"} if dynamic_time else {1: "batch"},
            "h0": {1: "batch"}, "c0": {1: "batch"}}
    axes.update({outputs[0]: dict(axes["x"]), outputs[1]: {1: "batch"}, outputs[2]: {1: "batch"}})
    import warnings

    with warnings.catch_warnings():  # torch warns about LSTM batch sizes; states are inputs here
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x, h, h.clone()), str(path), dynamo=False,
                          input_names=["x", "h0", "c0"], output_names=list(outputs),
                          dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def net():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _Net().eval()


@pytest.fixture(scope="module")
def time_first(net, tmp_path_factory):
    return _export(net, tmp_path_factory.mktemp("foreign") / "time_first.onnx")


def _points(n=12, seed=1):
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)


def _torch_run(net, xs):
    """Predictions [time, batch] and final (h, c) of torch for ``xs`` [time, (batch,) F], from
    zero states."""
    x = torch.from_numpy(xs.reshape(len(xs), -1, FEATURES))
    with torch.no_grad():
        h = torch.zeros(LAYERS, x.shape[1], HIDDEN)
        y, hn, cn = net(x, h, h.clone())
    return y[..., 0].numpy(), hn.numpy(), cn.numpy()


def test_axes_are_probed_and_the_pairs_round_trip(time_first):
    p = Predictor(time_first)
    assert p.state_pairs == {"h0": "hn", "c0": "cn"}
    assert "batch axis 1 of 'x', 1 of 'h0', 1 of 'c0'" in p.pairing
    assert "time axis 0 of 'x'; the state pairs round-trip" in p.pairing


def test_a_swapped_state_map_is_refused_naming_the_pairs(time_first):
    with pytest.raises(ContractError) as info:
        Predictor(time_first, state_map={"h0": "cn", "c0": "hn"})
    text = str(info.value)
    assert "the state pairs do not round-trip" in text
    assert "h0->cn: max |diff|" in text
    assert "c0->hn: max |diff|" in text
    assert "A pair is swapped" in text
    assert "e.g. state_map={'h0': 'hn', 'c0': 'cn'}" in text
    assert "rnnstream wrap" in text


def test_pairs_found_by_naming_convention_are_checked_too(net, tmp_path):
    # the file names c's next value "hn" and h's "cn": the convention pairs them wrongly
    path = _export(net, tmp_path / "misnamed.onnx", outputs=("y", "cn", "hn"))
    with pytest.raises(ContractError, match=r"do not round-trip.*h0->hn: max \|diff\|"):
        Predictor(path)
    p = Predictor(path, state_map={"h0": "cn", "c0": "hn"})
    assert "round-trip" in p.pairing


def test_steps_equal_torch_and_prime_equals_the_steps(net, time_first):
    xs = _points()
    want, hn, cn = _torch_run(net, xs)
    stepper = Predictor(time_first)
    stepped = np.array([stepper.step(x) for x in xs])
    np.testing.assert_allclose(stepped, want[:, 0], rtol=1e-5, atol=1e-6)
    primer = Predictor(time_first)
    primed = primer.prime(xs)
    assert primed.shape == (len(xs),)
    np.testing.assert_allclose(primed, stepped, rtol=1e-6, atol=1e-7)
    for name in ("h0", "c0"):
        np.testing.assert_allclose(primer.get_state()[name], stepper.get_state()[name],
                                   rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(primer.get_state()["h0"], hn[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(primer.get_state()["c0"], cn[:, 0], rtol=1e-5, atol=1e-6)
    # and stepping on from a prime continues the same stream
    np.testing.assert_allclose(primer.step(xs[0]), stepper.step(xs[0]), rtol=1e-6, atol=1e-7)
    y, state = Predictor(time_first).run_sequence(xs)
    np.testing.assert_allclose(y[:, 0], primed, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state["c0"], cn[:, 0], rtol=1e-5, atol=1e-6)


def test_a_refused_prime_leaves_the_state_unchanged(time_first):
    p = Predictor(time_first)
    p.prime(_points(4))
    before = {k: v.copy() for k, v in p.get_state().items()}
    with pytest.raises(InputError):
        p.prime(np.ones((3, FEATURES + 1), np.float32))
    with pytest.raises(InputError):
        p.prime([[1.0, float("nan")]])
    for name, value in p.get_state().items():
        assert value.tobytes() == before[name].tobytes()


def test_time_fixed_to_1_skips_the_check_and_primes_step_by_step(net, tmp_path):
    path = _export(net, tmp_path / "step.onnx", time=1, dynamic_time=False)
    p = Predictor(path)
    assert "time fixed to 1: prime runs one call per point" in p.pairing
    xs = _points(6)
    stepped = np.array([p.step(x) for x in xs])
    p.reset()
    np.testing.assert_allclose(p.prime(xs), stepped, rtol=1e-6, atol=1e-7)
    # the pool finds its batch axis all the same
    pool = StreamPool(path, auto_add=True)
    np.testing.assert_allclose(pool.step_many(["a"], xs[:1])[0, 0], stepped[0], rtol=1e-6)


def test_the_pool_batches_along_the_probed_axis(net, time_first):
    xs = _points(10).reshape(5, 2, FEATURES)  # 5 steps of 2 streams
    pool = StreamPool(time_first, auto_add=True)
    a, b = Predictor(time_first), Predictor(time_first)
    for step in xs:
        y = pool.step_many(["a", "b"], step)
        assert y.shape == (2, 1)
        np.testing.assert_allclose(y[:, 0], [a.step(step[0]), b.step(step[1])],
                                   rtol=1e-5, atol=1e-6)
    want, _, cn = _torch_run(net, xs)
    np.testing.assert_allclose(y[:, 0], want[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pool.get_state("b")["c0"], cn[:, 1], rtol=1e-5, atol=1e-6)
    # a third stream joins later, in another row order
    y = pool.step_many(["c", "b"], xs[0])
    np.testing.assert_allclose(y[0, 0], Predictor(time_first).step(xs[0, 0]), rtol=1e-5, atol=1e-6)


def test_batch_axis_given_or_refused(time_first):
    pool = StreamPool(time_first, auto_add=True, batch_axis=1)
    assert pool.step_many(["a"], _points(1)).shape == (1, 1)
    StreamPool(time_first, batch_axis={"x": 1, "h0": 1, "c0": -2})
    with pytest.raises(ContractError, match=r"batch_axis=\{'x': 0\}: onnxruntime does not run"):
        StreamPool(time_first, batch_axis=0)
    with pytest.raises(ContractError, match=r"batch_axis gives axis 2 of 'x'.*fixed to 2"):
        Predictor(time_first, batch_axis=2)
    with pytest.raises(ContractError, match="batch_axis names 'hn'"):
        Predictor(time_first, batch_axis={"hn": 1})


def test_an_ambiguous_batch_axis_is_refused_by_the_pool_naming_the_argument(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("Add", ["h0", "x"], ["hn"]), helper.make_node("Identity", ["hn"], ["y"])],
        "acc", [helper.make_tensor_value_info("x", f, ["a", "b"]),
                helper.make_tensor_value_info("h0", f, ["a", "b"])],
        [helper.make_tensor_value_info("y", f, ["a", "b"]),
         helper.make_tensor_value_info("hn", f, ["a", "b"])])
    path = tmp_path / "either.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedError, match=r"free axes \[0, 1\].*batch_axis="):
        StreamPool(path)
    p = Predictor(path, batch_axis={"x": 0, "h0": 0})
    assert "batch axis 0 of 'x', 0 of 'h0'" in p.pairing
    with pytest.raises(UnsupportedError, match="a free axis besides the batch and time axes"):
        StreamPool(path, batch_axis={"x": 0, "h0": 0})


def test_the_runtime_checks_the_pairs_without_torch(time_first):
    code = (
        "import sys, numpy as np\n"
        "from rnnstream.runtime import Predictor, StreamPool\n"
        f"p = Predictor({str(time_first)!r})\n"
        "p.prime(np.ones((3, 2), np.float32))\n"
        f"StreamPool({str(time_first)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_axis_is_for_foreign_models_only(lstm):
    with pytest.raises(UnsupportedError, match="state_map, fixed_inputs and batch_axis are only"):
        Predictor(lstm[0], batch_axis=0)
