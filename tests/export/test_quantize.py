"""Dynamic int8 quantisation: LSTM gets its own parity figure; RNN and GRU are refused."""

from __future__ import annotations

import os

import onnx
import pytest
from export_helpers import inputs, make_model, max_diff, ort_opinion, torch_opinion

from rnnstream.export import QuantizationError, build_graph, export_model
from rnnstream.export.quantize import quantize_graph
from rnnstream.runtime.contract import ModelContract


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    model = make_model("lstm", layers=2, ft=3, hidden=32, seed=4)
    path = tmp_path_factory.mktemp("q") / "q.onnx"
    return model, export_model(model, path, quantize=True)


def test_lstm_quantizes_with_its_own_parity_figure(quantized):
    model, report = quantized
    c = ModelContract.from_json(report.sidecar.read_text())
    assert c.quantized
    q = c.parity["quantized"]
    assert q["reference"] == "onnxruntime float32"
    assert q["candidate"] == "onnxruntime int8"
    # the float graph was proven first, at full precision
    assert c.parity["max_abs_diff"] <= 1e-5
    # int8 is close but not exact: measured ~1e-2 on y (target std >= 0.2), ~1e-3 on states
    assert 0 < q["max_abs_diff"] <= 0.05
    assert q["atol"]["y"] == pytest.approx(0.05 * float(model.y_std.min()))
    ops = [n.op_type for n in onnx.load(str(report.path)).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2
    assert "LSTM" not in ops


def test_quantized_file_keeps_the_contract_io(quantized):
    model, report = quantized
    graph = onnx.load(str(report.path))
    float_graph = build_graph(model)
    assert [v.SerializeToString() for v in graph.graph.input] == [
        v.SerializeToString() for v in float_graph.graph.input]
    assert [v.SerializeToString() for v in graph.graph.output] == [
        v.SerializeToString() for v in float_graph.graph.output]
    x, states = inputs(model, 7, 40)
    diffs = max_diff(torch_opinion(model, x, states), ort_opinion(graph, "lstm", x, states))
    assert 1e-5 < diffs["y"] <= 0.05 * float(model.y_std.min())  # really quantised, still close


def test_normalisation_is_unfolded_before_quantising():
    """Folded normalisation would make int8 quantise raw x with one scale for all features."""
    model = make_model("lstm", layers=1, ft=3, hidden=32, seed=4)
    model.set_normalization([10.0, -5.0, 100.0], [2.0, 0.5, 30.0], [0.0] * 3, [1.0] * 3)
    q = quantize_graph(build_graph(model), model)
    ops = [n.op_type for n in q.graph.node]
    assert ops.index("Sub") < ops.index("Div") < ops.index("DynamicQuantizeLSTM")
    x, states = inputs(model, 7, 40)
    diffs = max_diff(torch_opinion(model, x, states), ort_opinion(q, "lstm", x, states))
    assert max(diffs["h_out"], diffs["c_out"]) < 0.02, diffs


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_cells_without_int8_kernel_are_refused(tmp_path, cell):
    with pytest.raises(QuantizationError, match=f"cannot quantise a '{cell}' model"):
        export_model(make_model(cell, layers=2, ft=3), tmp_path / "q.onnx", quantize=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_onnxruntime_really_leaves_these_cells_in_float(monkeypatch, cell):
    """The refusal table matches what quantize_dynamic does (it only quantises the head)."""
    from rnnstream.export import quantize as q

    monkeypatch.setitem(q.QUANTIZED_OP, cell, "DynamicQuantizeLSTM")  # pretend it could
    model = make_model(cell, layers=1, ft=1)
    with pytest.raises(QuantizationError, match="left float recurrent node"):
        q.quantize_graph(build_graph(model), model)
