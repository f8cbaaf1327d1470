"""wrap_onnx: foreign ONNX files (torch exports, hand-built graphs) given the rnnstream contract.

Every foreign file here is built in the test: torch.onnx.export (the legacy exporter, as users
still call it) or onnx.helper. The wrapped file is then streamed by the runtime and compared with
the foreign model itself: torch in float64 as the truth, held to a bound derived from torch
float32's own error on the same stream (as export/verify.py does).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from rnnstream.export import ExportError, WrapParityError, wrap_onnx
from rnnstream.export.verify import BoundRule
from rnnstream.runtime import Predictor, StreamPool
from rnnstream.runtime.contract import sidecar_path

STEPS = 200


class TorchLSTM(nn.Module):
    """nn.LSTM(3, 8, 2, batch_first=True) + Linear: (x, h0, c0) -> (y, hn, cn), torch layouts."""

    def __init__(self, features=3, hidden=8, layers=2, targets=1):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, targets)

    def forward(self, x, h0, c0):
        out, (hn, cn) = self.rnn(x, (h0, c0))
        return self.head(out), hn, cn


class TimeFirstGRU(nn.Module):
    """x [T, B, F], h [1, B, H] -> y [T, B, 1], hn, and an unrelated tanh(hn) of hn's shape."""

    def __init__(self, features=2, hidden=6):
        super().__init__()
        self.rnn = nn.GRU(features, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x, h):
        out, hn = self.rnn(x, h)
        return self.head(out), hn, torch.tanh(hn) * 0.5


class LessonRNN(nn.Module):
    """The classic lesson: batch-first RNN, output flattened to [B*T, K] before the head."""

    def __init__(self, features=1, hidden=5):
        super().__init__()
        self.hidden = hidden
        self.rnn = nn.RNN(features, hidden, 1, batch_first=True)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x, hidden):
        out, hidden = self.rnn(x, hidden)
        return self.fc(out.reshape(-1, self.hidden)), hidden


def _export(module, args, path, names_in, names_out, axes):
    with warnings.catch_warnings():  # the legacy exporter warns that it is legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=names_in,
                          output_names=names_out, dynamic_axes=axes, opset_version=17,
                          dynamo=False)
    return path


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    """(module, path): a torch LSTM exported with h0/c0 -> hn/cn and torch's own layouts."""
    torch.manual_seed(0)
    module = TorchLSTM().eval()
    path = tmp_path_factory.mktemp("wrap") / "lstm.onnx"
    batch = {1: "batch"}
    _export(module, (torch.randn(2, 4, 3), torch.zeros(2, 2, 8), torch.zeros(2, 2, 8)), path,
            ["input", "h0", "c0"], ["output", "hn", "cn"],
            {"input": {0: "batch", 1: "time"}, "output": {0: "batch", 1: "time"},
             "h0": batch, "c0": batch, "hn": batch, "cn": batch})
    return module, path


def _torch_stream(module, xs: np.ndarray):
    """The module stepped one point at a time, carrying (h, c): y [N, K] and the final state."""
    dtype = next(module.parameters()).dtype
    h = torch.zeros(2, 1, 8, dtype=dtype)
    c = torch.zeros(2, 1, 8, dtype=dtype)
    ys = []
    with torch.no_grad():
        for row in xs:
            y, h, c = module(torch.from_numpy(row).to(dtype).reshape(1, 1, -1), h, c)
            ys.append(y.reshape(-1).numpy())
    return np.stack(ys), h[:, 0].numpy(), c[:, 0].numpy()


def test_torch_lstm_streams_like_the_module(lstm, tmp_path):
    module, src = lstm
    rng = np.random.default_rng(3)
    sample = rng.standard_normal((120, 3)).astype(np.float32)
    out = tmp_path / "model.onnx"
    report = wrap_onnx(src, out, features=["a", "b", "c"], targets=["a"], sample=sample)
    contract = report.contract
    assert contract.cell == "custom"
    assert not contract.step_only
    assert contract.declared_states == (("h", (2, 8)), ("c", (2, 8)))
    assert report.plan.how["pairs"] == "found by naming convention"
    assert report.exact.max_abs_diff <= report.exact.bounds["batch3_time50"]["y"]
    assert report.streaming is not None
    assert not report.streaming.failures()
    assert report.predictor is not None
    assert not report.predictor.failures()
    assert contract.calibration is not None
    assert contract.calibration.info["source"] == "sample"
    assert (tmp_path / "model.onnx.json").read_text() == out.with_suffix(".onnx.json").read_text()

    xs = rng.standard_normal((STEPS, 3)).astype(np.float32)
    predictor = Predictor(out)
    got_y = np.stack([np.atleast_1d(predictor.step(r)) for r in xs])
    state = predictor.get_state()
    truth = _torch_stream(copy.deepcopy(module).double(), xs)
    torch32 = _torch_stream(module, xs)
    rule = BoundRule()
    for name, got, t32, want in zip(("y", "h", "c"), (got_y, state["h"], state["c"]), torch32,
                                    truth, strict=True):
        err_torch = float(np.max(np.abs(t32 - want)))
        err = float(np.max(np.abs(got - want)))
        assert err <= rule.bound(err_torch, want), (name, err, err_torch)

    pool = StreamPool(out, auto_add=True)  # many streams: each equals its own Predictor
    for r in xs[:5]:
        pool.step({"s1": r, "s2": r * 2})
    solo = Predictor(out)
    ref = [solo.step(r * 2) for r in xs[:5]]
    np.testing.assert_array_equal(pool.get_state("s2")["c"], solo.get_state()["c"])
    assert np.isfinite(ref).all()


@pytest.mark.parametrize(("axes", "made_free"), [
    ({"input": {0: "batch", 1: "time"}, "output": {0: "batch", 1: "time"}},
     "h0 axis 1, c0 axis 1"),
    ({}, "input axis 0, h0 axis 1, c0 axis 1"),  # no dynamic_axes at all: one step a call
])
def test_exported_with_a_fixed_batch_of_1(tmp_path, axes, made_free):
    torch.manual_seed(4)
    module = TorchLSTM(hidden=4, layers=1).eval()  # h0 [1, 1, 4]: which 1 is the batch?
    time = 4 if axes else 1
    src = _export(module, (torch.randn(1, time, 3), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)),
                  tmp_path / "fixed.onnx", ["input", "h0", "c0"], ["output", "hn", "cn"], axes)
    report = wrap_onnx(src, tmp_path / "m.onnx")
    assert report.plan.how["relaxed"] == made_free
    assert f"made free: {made_free}" in report.summary()
    assert report.contract.step_only == (not axes)
    assert report.streaming is None or not report.streaming.failures()
    xs = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    got, _ = Predictor(tmp_path / "m.onnx").run_sequence(xs)
    with torch.no_grad():
        want = module(torch.from_numpy(xs)[None], torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))[0]
    np.testing.assert_allclose(got.reshape(-1), want.numpy().reshape(-1), rtol=1e-5, atol=1e-6)


def test_swapped_h_and_c_are_refused_and_nothing_is_written(lstm, tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(WrapParityError, match=r"h0->cn as h, c0->hn as c.*check --state") as e:
        wrap_onnx(lstm[1], out, state_map={"h0": "cn", "c0": "hn"})
    assert {f.output for f in e.value.failures} >= {"y", "h_out", "c_out"}
    assert all(f.case.startswith("streaming") for f in e.value.failures)
    assert not out.exists()
    assert not (tmp_path / "model.onnx.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_numeric_names_time_first_and_a_bad_map(tmp_path):
    torch.manual_seed(1)
    module = TimeFirstGRU().eval()
    src = _export(module, (torch.randn(4, 2, 2), torch.zeros(1, 2, 6)), tmp_path / "gru.onnx",
                  ["i0", "i1"], ["o2", "o3", "o4"],
                  {"i0": {0: "t", 1: "b"}, "i1": {1: "b"}, "o2": {0: "t", 1: "b"},
                   "o3": {1: "b"}, "o4": {1: "b"}})
    _numeric_names(src)  # torch refuses them; other tools write them
    with pytest.raises(ExportError, match="--state IN=OUT"):
        wrap_onnx(src, tmp_path / "m.onnx")  # "1" pairs with nothing by name
    with pytest.raises(WrapParityError, match="1->4 as h"):  # same shape, not the next state
        wrap_onnx(src, tmp_path / "m.onnx", state_map={"1": "4"}, output="2")
    report = wrap_onnx(src, tmp_path / "m.onnx", state_map={"1": "3"},
                       state_names={"1": "hidden"}, output="2")
    plan = report.plan
    assert (plan.x.batch, plan.x.time) == (1, 0)
    assert plan.dropped == ["4"]
    assert report.contract.declared_states == (("hidden", (1, 6)),)
    xs = np.random.default_rng(0).standard_normal((30, 2)).astype(np.float32)
    p = Predictor(tmp_path / "m.onnx")
    got = np.array([p.step(r) for r in xs])
    with torch.no_grad():
        y, hn, _ = module(torch.from_numpy(xs)[:, None], torch.zeros(1, 1, 6))
    np.testing.assert_allclose(got, y.numpy().reshape(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p.get_state()["hidden"], hn[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    y_seq, _ = Predictor(tmp_path / "m.onnx").run_sequence(xs)  # one call: time is dynamic
    np.testing.assert_allclose(y_seq.reshape(-1), got, rtol=1e-5, atol=1e-6)
    # a state named like a Python keyword is fine (inspect --code keys states by name); the
    # names the contract reserves are not
    kw = wrap_onnx(src, tmp_path / "kw.onnx", state_map={"1": "3"}, state_names={"1": "in"},
                   output="2")
    assert kw.contract.declared_states == (("in", (1, 6)),)
    with pytest.raises(ExportError, match="not x, y or cycle, ets, last"):
        wrap_onnx(src, tmp_path / "no.onnx", state_map={"1": "3"}, state_names={"1": "last"},
                  output="2")


def _numeric_names(path):
    """Rename i0, i1 -> "0", "1" and o2.. -> "2".. everywhere in the graph."""
    model = onnx.load(str(path))
    rename = {n: n[1:] for n in ("i0", "i1", "o2", "o3", "o4")}
    for v in [*model.graph.input, *model.graph.output]:
        v.name = rename.get(v.name, v.name)
    for node in model.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    onnx.save(model, str(path))


def test_lesson_style_flattened_output(tmp_path):
    torch.manual_seed(2)
    module = LessonRNN().eval()
    src = _export(module, (torch.randn(2, 4, 1), torch.zeros(1, 2, 5)), tmp_path / "l.onnx",
                  ["x", "hidden"], ["output", "hidden_out"],
                  {"x": {0: "batch", 1: "seq"}, "hidden": {1: "batch"},
                   "output": {0: "rows"}, "hidden_out": {1: "batch"}})
    report = wrap_onnx(src, tmp_path / "m.onnx", features=["v"], targets=["v"])
    assert report.plan.y.flat == 0
    assert not report.plan.y.time_major
    assert report.contract.declared_states == (("h", (1, 5)),)  # hidden -> hidden_out by name
    xs = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
    got = np.array([Predictor(tmp_path / "m.onnx").run_sequence(xs)[0].reshape(-1)])
    with torch.no_grad():
        want = module(torch.from_numpy(xs)[None], torch.zeros(1, 1, 5))[0].numpy().reshape(-1)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def _cell_graph(path, rate_input: bool):
    """A hand-built RNN cell without a time axis: x [B, F=2], h [B, 4] -> y [B, 1], h_out,
    optionally scaled by a constant input ``sr`` (int64, like an audio model's sample rate)."""
    rng = np.random.default_rng(5)
    w = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.normal(0, 0.5, (2, 4))), ("U", rng.normal(0, 0.5, (4, 4))),
        ("V", rng.normal(0, 0.5, (4, 1))))]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("MatMul", ["h", "U"], ["hu"]),
             helper.make_node("Add", ["xw", "hu"], ["pre"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT, ["B", 4])]
    if rate_input:
        inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
        nodes += [helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["pre", "srf"], ["pre2"])]
    nodes += [helper.make_node("Tanh", ["pre2" if rate_input else "pre"], ["h_out"]),
              helper.make_node("MatMul", ["h_out", "V"], ["y"])]
    graph = helper.make_graph(nodes, "cell", inputs, [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 1]),
        helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["B", 4])], w)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, w


def test_step_only_cell_with_a_fixed_input_and_scaling(tmp_path):
    src, (w, u, v) = _cell_graph(tmp_path / "cell.onnx", rate_input=True)
    with pytest.raises(ExportError, match="--fixed NAME=VALUE"):
        wrap_onnx(src, tmp_path / "m.onnx", state_map={"h": "h_out"})
    scaling = {"feature_mean": [1.0, -2.0], "feature_std": [2.0, 0.5],
               "target_mean": [10.0], "target_std": [3.0]}
    report = wrap_onnx(src, tmp_path / "m.onnx", fixed_inputs={"sr": 1}, scaling=scaling,
                       features=["a", "b"])
    assert report.contract.step_only
    assert report.streaming is None
    assert "not checked: the graph's time axis is fixed to 1" in report.summary()
    assert report.contract.normalization["target_std"] == [3.0]
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in graph.graph.input] == ["x", "h_in"]

    xs = np.random.default_rng(1).normal([1, -2], [2, 0.5], (25, 2)).astype(np.float32)
    p = Predictor(tmp_path / "m.onnx")
    got = np.array([p.step(r) for r in xs])
    wf, uf, vf = (numpy_helper.to_array(t).astype(np.float64) for t in (w, u, v))
    h = np.zeros(4)
    want = []
    for r in xs.astype(np.float64):
        h = np.tanh(((r - [1, -2]) / [2, 0.5]) @ wf + h @ uf)
        want.append((h @ vf)[0] * 3 + 10)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    y_seq, _ = Predictor(tmp_path / "m.onnx").run_sequence(xs)  # primed one row a call
    np.testing.assert_array_equal(y_seq.reshape(-1), got)


def test_sequence_to_one_output_becomes_step_only(tmp_path):
    """x [T, B, 2] through an ONNX RNN, but only the last step's prediction [B, 1] comes out
    (as from a Keras return_sequences=False model): wrapped to take one step per call."""
    rng = np.random.default_rng(6)
    w = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("W", rng.normal(0, 0.5, (1, 4, 2))), ("R", rng.normal(0, 0.5, (1, 4, 4))),
        ("V", rng.normal(0, 0.5, (4, 1))))]
    w.append(numpy_helper.from_array(np.array([-1, 4], np.int64), "flat"))
    nodes = [helper.make_node("RNN", ["x", "W", "R", "", "", "h"], ["", "h_out"], hidden_size=4),
             helper.make_node("Reshape", ["h_out", "flat"], ["last"]),
             helper.make_node("MatMul", ["last", "V"], ["y"])]
    graph = helper.make_graph(nodes, "seq2one", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", 2]),
        helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "B", 4])], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 1]),
        helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, "B", 4])], w)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "s.onnx"))
    report = wrap_onnx(tmp_path / "s.onnx", tmp_path / "m.onnx")
    assert report.contract.step_only
    assert (report.plan.x.batch, report.plan.x.time) == (1, 0)
    assert report.streaming is None
    xs = rng.standard_normal((15, 2)).astype(np.float32)
    p = Predictor(tmp_path / "m.onnx")
    got = [p.step(r) for r in xs]
    wi, ri, v = (numpy_helper.to_array(t).astype(np.float64) for t in w[:3])
    wi, ri = wi[0], ri[0]
    h = np.zeros(4)
    want = []
    for r in xs.astype(np.float64):
        h = np.tanh(wi @ r + ri @ h)
        want.append((h @ v)[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_float64_io_is_cast_and_integers_refused(tmp_path):
    """A float64 graph (x + h -> h_out, y = -h_out): wrapped with Casts, float32 outside."""
    def save(dtype, name):
        graph = helper.make_graph(
            [helper.make_node("Add", ["x", "h"], ["h_out"]),
             helper.make_node("Neg", ["h_out"], ["y"])],
            "f64", [helper.make_tensor_value_info("x", dtype, ["B", 3]),
                    helper.make_tensor_value_info("h", dtype, ["B", 3])],
            [helper.make_tensor_value_info("y", dtype, ["B", 3]),
             helper.make_tensor_value_info("h_out", dtype, ["B", 3])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(tmp_path / name))
        return tmp_path / name

    with pytest.raises(ExportError, match=r"'x' \(tensor\(int64\)\).* are not floating"):
        wrap_onnx(save(TensorProto.INT64, "i.onnx"), tmp_path / "m.onnx")
    report = wrap_onnx(save(TensorProto.DOUBLE, "d.onnx"), tmp_path / "m.onnx")
    assert report.plan.dtypes["x"] == np.float64
    p = Predictor(tmp_path / "m.onnx")
    xs = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    h = np.zeros(3, np.float32)  # carried as float32 between calls: rounded after each sum
    for r in xs:
        y = p.step(r)
        h = (h.astype(np.float64) + r).astype(np.float32)
        np.testing.assert_array_equal(y, -h)


def test_plan_errors_say_what_to_pass(lstm, tmp_path):
    src = lstm[1]
    with pytest.raises(ExportError, match=r"--state h0=nope names no such"):
        wrap_onnx(src, tmp_path / "m.onnx", state_map={"h0": "nope", "c0": "cn"})
    with pytest.raises(ExportError, match="--batch-axis 2"):
        wrap_onnx(src, tmp_path / "m.onnx", batch_axis=2)
    with pytest.raises(ExportError, match="2 features do not fit"):
        wrap_onnx(src, tmp_path / "m.onnx", features=["a", "b"])
    with pytest.raises(ExportError, match="the foreign file itself"):
        wrap_onnx(src, src)
    assert not (tmp_path / "m.onnx").exists()
    assert not any(p.name.endswith(".json") for p in tmp_path.iterdir())
    assert sidecar_path(str(src)) not in [str(p) for p in src.parent.iterdir()]
