"""The single-step graph: three opinions agree for every cell, and export_model writes it (with
its hash in the contract) only after proving it, atomically with the model."""

from __future__ import annotations

import hashlib
import os

import onnx
import pytest
from export_helpers import (
    inputs,
    make_model,
    max_diff,
    ort_opinion,
    reference_opinion,
    torch_opinion,
)

from rnnstream.cli.main import main
from rnnstream.export import ParityError, build_graph, export_model
from rnnstream.export import exporter as exporter_module
from rnnstream.export.step_graph import build_step_graph
from rnnstream.runtime.contract import ModelContract
from rnnstream.train.checkpoint import save_checkpoint
from rnnstream.train.model import CELLS

ATOL = 1e-5


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("mode", ["level", "delta"])
def test_step_graph_equals_torch_sequence_graph_and_reference(cell, layers, mode):
    delta = {"delta_index": [2, 0], "n_targets": 2} if mode == "delta" else {}
    model = make_model(cell, layers, ft=3, seed=layers, **delta)
    step = build_step_graph(model)
    onnx.checker.check_model(step, full_check=True)
    for batch in (1, 7):
        x, states = inputs(model, batch, 1, seed=batch)
        got = ort_opinion(step, cell, x, states)
        for other in (torch_opinion(model, x, states),
                      ort_opinion(build_graph(model), cell, x, states),
                      reference_opinion(step, cell, x, states)):
            assert max(max_diff(other, got).values()) <= ATOL


def test_step_graph_declares_time_one_and_no_recurrent_op():
    step = build_step_graph(make_model("lstm", 2, ft=3))
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*step.graph.input, *step.graph.output)]
    assert dims == [["batch", 1, 3], ["batch", 2, 16], ["batch", 2, 16],
                    ["batch", 1, 3], ["batch", 2, 16], ["batch", 2, 16]]
    assert not {"LSTM", "GRU", "RNN"} & {n.op_type for n in step.graph.node}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = make_model("gru", layers=2, ft=3, seed=5)
    return model, export_model(model, tmp_path_factory.mktemp("s") / "model.onnx")


def test_export_writes_the_step_graph_named_by_hash(exported):
    _, report = exported
    assert report.step_path == report.path.parent / "model.step.onnx"
    data = report.step_path.read_bytes()
    contract = ModelContract.from_json(report.sidecar.read_text())
    assert contract.step_model == {"file": "model.step.onnx",
                                   "sha256": hashlib.sha256(data).hexdigest()}
    assert not onnx.load_from_string(data).metadata_props  # the contract lives in model.onnx


def test_step_parity_figures_are_recorded(exported):
    _, report = exported
    figures = report.contract.parity["step_graph"]
    assert set(figures) == {"vs_sequence", "vs_torch"}
    for f in figures.values():
        assert set(f["cases"]) == {"batch1_time1", "batch7_time1", "stream1000_batch3"}
        assert 0 <= f["max_abs_diff"] <= ATOL
    assert "step graph" in report.summary()


def test_written_step_graph_streams_like_torch(exported):
    model, report = exported
    x, states = inputs(model, 3, 1)
    got = ort_opinion(onnx.load(str(report.step_path)), "gru", x, states)
    assert max(max_diff(torch_opinion(model, x, states), got).values()) <= ATOL


def test_no_step_graph_when_asked_or_quantized(tmp_path):
    report = export_model(make_model("lstm", 1, ft=1), tmp_path / "a.onnx", step_graph=False)
    assert report.step_path is None
    assert report.contract.step_model == {}
    report = export_model(make_model("lstm", 1, ft=1, hidden=32), tmp_path / "q.onnx",
                          quantize=True)
    assert report.step_path is None
    assert report.contract.step_model == {}
    assert "step_graph" not in report.contract.parity
    assert sorted(os.listdir(tmp_path)) == ["a.onnx", "a.onnx.json", "q.onnx", "q.onnx.json"]


def test_wrong_step_graph_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    def perturbed(model, opset):
        step = build_step_graph(model, opset)
        for init in step.graph.initializer:
            if init.name == "l0_WR":
                w = onnx.numpy_helper.to_array(init).copy()
                w[-1, 0] += 0.5  # one recurrent weight
                init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
        return step

    monkeypatch.setattr(exporter_module, "build_step_graph", perturbed)
    with pytest.raises(ParityError, match="step graph vs sequence graph stream1000") as info:
        export_model(make_model("lstm", 1, ft=2), tmp_path / "bad.onnx")
    cases = {f.case for f in info.value.failures}
    assert any(c.startswith("step graph vs sequence graph ") for c in cases)
    assert any(c.startswith("step graph stream1000") for c in cases)  # vs torch float64
    assert not any(c.startswith("sequence graph") for c in cases)  # that one is right
    assert os.listdir(tmp_path) == []


def test_cli_no_step_graph(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "m.pt", make_model("rnn", 1, ft=1))
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--no-step-graph"]) == 0
    assert not (tmp_path / "m.step.onnx").exists()
    assert main(["export", str(ckpt), "--out", str(tmp_path / "n.onnx")]) == 0
    assert f"wrote {tmp_path / 'n.step.onnx'}" in capsys.readouterr().out
