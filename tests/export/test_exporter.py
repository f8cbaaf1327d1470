"""export_model: what it writes, what it refuses, and that a refusal leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_helpers import inputs, make_model, max_diff, ort_opinion, torch_opinion

from rnnstream.export import (
    EXPORTERS,
    ExportError,
    GraphError,
    ParityError,
    build_graph,
    export_model,
    fingerprint,
    load_contract,
    read_metadata,
)
from rnnstream.runtime.contract import METADATA_KEY, ModelContract
from rnnstream.runtime.spec import CELLS

METRICS = {"val_mae": 0.125, "val_rmse": np.float32(0.25), "epochs": 3}


@pytest.fixture(scope="module")
def lstm_export(tmp_path_factory):
    model = make_model("lstm", layers=2, ft=3, seed=11)
    path = tmp_path_factory.mktemp("lstm") / "model.onnx"
    return model, export_model(model, path, metrics=METRICS)


def test_metadata_and_sidecar_are_the_same_contract(lstm_export):
    _, report = lstm_export
    meta = ort.InferenceSession(str(report.path)).get_modelmeta().custom_metadata_map
    embedded = meta[METADATA_KEY]
    side = report.sidecar.read_text()
    assert embedded == side == read_metadata(str(report.path))
    assert ModelContract.from_json(embedded) == ModelContract.from_json(side) == report.contract
    assert load_contract(str(report.path)) == report.contract
    assert ModelContract.from_json(report.contract.to_json()).to_json() == side


def test_contract_holds_what_the_model_is(lstm_export):
    model, report = lstm_export
    c = ModelContract.from_json(report.sidecar.read_text())
    assert (c.cell, c.layers, c.hidden, c.horizon, c.target_mode) == ("lstm", 2, 16, 1, "level")
    assert c.features == ["f0", "f1", "f2"]
    assert c.targets == ["t0", "t1", "t2"]
    assert c.normalization["feature_std"] == pytest.approx(model.x_std.tolist())
    assert c.metrics == {"val_mae": 0.125, "val_rmse": 0.25, "epochs": 3}
    assert [(s.input, s.output, list(s.shape)) for s in c.states] == [
        ("h_in", "h_out", ["batch", 2, 16]), ("c_in", "c_out", ["batch", 2, 16])]
    assert set(c.versions) == {"rnnstream", "torch", "onnx", "onnxruntime", "opset"}
    assert c.versions["opset"] == "17"
    assert not c.quantized
    assert c.fingerprint.startswith("sha256:")
    assert len(c.fingerprint) == 7 + 64


def test_parity_figures_are_recorded(lstm_export):
    _, report = lstm_export
    parity = report.contract.parity
    assert set(parity["cases"]) == {"batch1_time1", "batch1_time50", "batch7_time1",
                                    "batch7_time50", "stream1000_batch3"}
    assert all(set(d) == {"y", "h_out", "c_out"} for d in parity["cases"].values())
    assert parity["criterion"] == "derived"
    assert (parity["reference"], parity["candidate"], parity["baseline"]) == (
        "torch float64", "onnxruntime", "torch float32")
    assert 0 < parity["max_abs_diff"] <= 1e-5
    for case, diffs in parity["cases"].items():
        for out, diff in diffs.items():
            torch_err = parity["baseline_error"][case][out]
            assert 0 < torch_err < 1e-5
            floor = parity["bound"][case][out] - torch_err * 8  # 8 ulps of max |output|
            assert 8 * np.spacing(np.float32(1e-3)) < floor < 8 * np.spacing(np.float32(200))
            assert diff <= parity["bound"][case][out]
    assert 0 < parity["bound_used"] <= 1
    assert parity["rule"] == {"factor": 8.0, "floor_ulps": 8}
    assert parity["exporter"] == "native"


def test_explicit_atol_keeps_the_absolute_criterion(tmp_path):
    report = export_model(make_model("gru", layers=1, ft=2, seed=3), tmp_path / "m.onnx",
                          atol=1e-5, step_graph=False)
    parity = report.contract.parity
    assert parity["criterion"] == "atol"
    assert parity["reference"] == "torch"
    assert parity["atol"]["h_out"] == 1e-5
    assert "baseline_error" not in parity
    assert "(atol " in report.summary()


def test_onnx_model_fields(lstm_export):
    _, report = lstm_export
    graph = onnx.load(str(report.path))
    assert graph.producer_name == "rnnstream"
    assert graph.producer_version
    assert graph.model_version == report.contract.schema_version == 1  # level inputs: schema 1
    assert "LSTM" in graph.doc_string
    assert "h_in" in graph.doc_string
    assert [p.key for p in graph.metadata_props] == [METADATA_KEY]


def test_single_self_contained_file(lstm_export):
    _, report = lstm_export
    folder = report.path.parent
    # no .data, no temp; the step graph is its own self-contained file
    assert sorted(os.listdir(folder)) == ["model.onnx", "model.onnx.json", "model.step.onnx"]
    graph = onnx.load(str(report.path), load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t)
                   for t in graph.graph.initializer)
    assert [n.op_type for n in graph.graph.node].count("LSTM") == 2


def test_written_file_computes_what_torch_computes(lstm_export):
    model, report = lstm_export
    x, states = inputs(model, 7, 30)
    diffs = max_diff(torch_opinion(model, x, states),
                     ort_opinion(onnx.load(str(report.path)), "lstm", x, states))
    assert max(diffs.values()) <= 1e-5


def test_gru_nodes_carry_linear_before_reset(tmp_path):
    report = export_model(make_model("gru", layers=3, ft=1), tmp_path / "g.onnx")
    nodes = [n for n in onnx.load(str(report.path)).graph.node if n.op_type == "GRU"]
    assert len(nodes) == 3
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["linear_before_reset"] == 1


def _assert_nothing_written(folder):
    assert os.listdir(folder) == []


def _perturbed_builder(model, opset):
    graph = build_graph(model, opset)
    for init in graph.graph.initializer:
        if init.name == "R0":  # recurrent weights of layer 0
            w = onnx.numpy_helper.to_array(init).copy()
            w[0, 0, 0] += 0.5
            init.CopyFrom(onnx.numpy_helper.from_array(w, "R0"))
    return graph


def _gate_swapped_builder(model, opset):
    graph = build_graph(model, opset)
    hidden = model.config.hidden
    for init in graph.graph.initializer:
        if init.name == "W0":  # swap LSTM gates i and o
            w = onnx.numpy_helper.to_array(init).copy()
            w[0, :hidden], w[0, hidden:2 * hidden] = w[0, hidden:2 * hidden].copy(), w[0, :hidden]
            init.CopyFrom(onnx.numpy_helper.from_array(w, "W0"))
    return graph


@pytest.mark.parametrize("builder", [_perturbed_builder, _gate_swapped_builder])
def test_wrong_graph_is_refused_and_nothing_is_written(tmp_path, monkeypatch, builder):
    monkeypatch.setitem(EXPORTERS, "native", builder)
    with pytest.raises(ParityError, match=r"y max \|diff\|") as info:
        export_model(make_model("lstm", layers=2, ft=3), tmp_path / "bad.onnx")
    failing = {f.output for f in info.value.failures}
    assert {"y", "h_out", "c_out"} <= failing
    # each bound is 8x torch float32's own error + 8 ulps: ~1e-6, the fault up to 1e-1
    assert max(f.max_abs_diff / f.atol for f in info.value.failures) > 1000
    assert all(0 < f.atol < 1e-4 and f.baseline_error < f.atol for f in info.value.failures)
    assert "stream1000_batch3" in {f.case for f in info.value.failures}
    assert "Nothing was written" in str(info.value)
    _assert_nothing_written(tmp_path)


def test_gru_without_linear_before_reset_is_refused(tmp_path, monkeypatch):
    def builder(model, opset):
        graph = build_graph(model, opset)
        for node in graph.graph.node:
            for attr in node.attribute:
                if attr.name == "linear_before_reset":
                    attr.i = 0
        return graph

    monkeypatch.setitem(EXPORTERS, "native", builder)
    with pytest.raises(GraphError, match="linear_before_reset=1"):
        export_model(make_model("gru", layers=2, ft=1), tmp_path / "bad.onnx")
    _assert_nothing_written(tmp_path)


def test_graph_without_native_op_is_refused(tmp_path, monkeypatch):
    def builder(model, opset):
        graph = build_graph(model, opset)
        for node in graph.graph.node:
            if node.op_type == "RNN":
                node.op_type = "GRU"  # still valid ONNX, but not the cell's op
                node.attribute.append(onnx.helper.make_attribute("linear_before_reset", 1))
        return graph

    monkeypatch.setitem(EXPORTERS, "native", builder)
    with pytest.raises(GraphError, match="native RNN"):
        export_model(make_model("rnn"), tmp_path / "bad.onnx")
    _assert_nothing_written(tmp_path)


def test_non_finite_metric_is_refused(tmp_path):
    with pytest.raises(ExportError, match=r"metrics\.val_mae is nan"):
        export_model(make_model("rnn"), tmp_path / "m.onnx", metrics={"val_mae": float("nan")})
    _assert_nothing_written(tmp_path)


def test_bad_arguments_are_refused(tmp_path):
    model = make_model("rnn")
    with pytest.raises(ExportError, match="exporter 'dynamo' is not one of"):
        export_model(model, tmp_path / "m.onnx", exporter="dynamo")
    with pytest.raises(ExportError, match="does not exist"):
        export_model(model, tmp_path / "no" / "m.onnx")
    with pytest.raises(ExportError, match="positive tolerance"):
        export_model(model, tmp_path / "m.onnx", atol=0)
    _assert_nothing_written(tmp_path)


def test_fingerprint_tracks_weights_and_layout(tmp_path):
    model = make_model("gru", layers=2, ft=1)
    contract = load_contract_of(export_model(model, tmp_path / "a.onnx"))
    graph = build_graph(model)
    assert fingerprint(graph, contract) == contract.fingerprint  # deterministic
    model.head.bias.data[0] += 1e-3
    assert fingerprint(build_graph(model), contract) != contract.fingerprint
    other = make_model("gru", layers=2, ft=1)
    other_contract = load_contract_of(export_model(other, tmp_path / "b.onnx", metrics={"a": 1}))
    assert other_contract.fingerprint == contract.fingerprint  # metadata is not part of it


def load_contract_of(report):
    return ModelContract.from_json(report.sidecar.read_text())


def test_training_mode_is_restored(tmp_path):
    model = make_model("lstm", layers=2)
    model.train()
    export_model(model, tmp_path / "m.onnx")
    assert model.training


def test_torchscript_exporter_path(tmp_path):
    report = export_model(make_model("lstm", layers=2, ft=3), tmp_path / "t.onnx",
                          exporter="torchscript")
    assert report.contract.parity["exporter"] == "torchscript"
    assert report.parity.max_abs_diff <= 1e-5
    assert "Slice" in report.nodes
    assert report.nodes["LSTM"] == 2


def test_delta_model_exports(tmp_path):
    model = make_model("lstm", layers=1, ft=3, n_targets=1, delta_index=[2])
    report = export_model(model, tmp_path / "d.onnx")
    assert report.contract.target_mode == "delta"
    assert report.contract.targets == ["t0"]
    assert report.parity.max_abs_diff <= 1e-5


ORT_LOG_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
ort.set_default_logger_severity(0)
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
names = [i.name for i in sess.get_inputs()]
layers, hidden = sess.get_inputs()[1].shape[1:]
for batch in (1, 2, 7):
    for time in (1, 3, 50):
        feeds = {"x": np.ones((batch, time, 3), np.float32)}
        feeds.update({n: np.zeros((batch, layers, hidden), np.float32) for n in names[1:]})
        sess.run(None, feeds)
"""


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_onnxruntime_logs_no_shape_warning(tmp_path, cell):
    report = export_model(make_model(cell, layers=2, ft=3), tmp_path / "m.onnx")
    done = subprocess.run([sys.executable, "-c", ORT_LOG_SCRIPT, str(report.path)],
                          capture_output=True, text=True, timeout=60, check=True)
    log = done.stdout + done.stderr
    assert "[I:onnxruntime" in log  # verbose logging really was on
    bad = [line for line in log.splitlines()
           if "mismatch" in line.lower() or " W:" in line or "[W:" in line]
    assert bad == []


def test_contract_read_back_is_plain_json(lstm_export):
    _, report = lstm_export
    data = json.loads(report.sidecar.read_text())
    assert data["parity"]["cases"]["stream1000_batch3"]["c_out"] <= 1e-5


def test_large_valued_series_export_with_a_bound_that_follows_the_scale(tmp_path):
    """A price-like model (values ~5,000) cannot meet 1e-5 in float32 raw units: y's bound
    follows torch float32's own error on y and y's scale (8 ulps of ~5,000 = 3.9e-3)."""
    model = make_model("lstm", layers=1, ft=1, seed=5)
    model.set_normalization([5000.0], [40.0], [5000.0], [40.0])
    report = export_model(model, tmp_path / "px.onnx")
    parity = report.parity
    for case, bounds in parity.bounds.items():
        y_scale = float(np.float32(np.max(np.abs(report.parity.cases[case]["y"]))))
        assert bounds["y"] >= 8 * float(np.spacing(np.float32(4000.0)))  # |y| >= 4,000 here
        assert bounds["h_out"] < 1e-4
        assert bounds["c_out"] < 1e-4
        assert y_scale < bounds["y"]
    assert parity.failures() == []
    assert report.contract.parity["bound"] == parity.bounds


def test_sample_of_the_series_drives_the_parity_inputs(tmp_path):
    model = make_model("lstm", layers=1, ft=2, seed=6)
    t = np.arange(400.0)
    sample = np.stack([10 + 3 * np.sin(t / 7), -5 + np.cos(t / 3)], axis=1)
    report = export_model(model, tmp_path / "s.onnx", sample=sample)
    assert report.parity.failures() == []
    assert "stream400_batch3" in report.parity.cases  # the whole sample, one step at a time
    with pytest.raises(ExportError, match=r"sample of shape \(10, 2\): expected \[time, 2\]"):
        export_model(model, tmp_path / "t.onnx", sample=sample[:10])
    assert not (tmp_path / "t.onnx").exists()
