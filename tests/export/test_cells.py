"""The cell registry, and the cell added through it alone: a minimal GRU with no torch class and
no native ONNX op (rnnstream.train.cells.MinGRU; its sequence graph is a Scan of its step
equations). It trains, exports with the derived parity proof (batch 3, non-zero initial state)
and streams in the runtime as every other cell does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from export_helpers import (
    assert_streams_like,
    inputs,
    make_model,
    max_diff,
    ort_opinion,
    reference_opinion,
    torch_opinion,
)

from rnnstream.export import ExportError, build_graph, export_model
from rnnstream.export.cells import EXPORT_CELLS, sequence_op
from rnnstream.export.step_graph import build_step_graph
from rnnstream.export.verify import ParityCase, verify_parity, verify_step_parity
from rnnstream.runtime import spec
from rnnstream.train import ForecasterConfig, TrainConfig, from_arrays, train
from rnnstream.train.cells import TORCH_CELLS, MinGRU, weight_names

ATOL = 1e-5


def test_every_stage_registers_the_same_cells():
    assert set(spec.CELLS) == set(TORCH_CELLS) == set(EXPORT_CELLS)


def test_native_cells_keep_their_op_and_the_others_scan():
    assert {c: sequence_op(c) for c in spec.CELLS} == {
        "rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "mingru": "Scan"}


def test_mingru_is_its_documented_equations():
    """h' = (1 - z) * h + z * n with z = sigmoid(gate block 0), n = tanh(gate block 1)."""
    torch.manual_seed(0)
    cell = MinGRU(input_size=3, hidden_size=4, num_layers=1).double()
    x, h0 = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)
    w_ih, w_hh, b_ih, b_hh = (cell.get_parameter(n) for n in weight_names(0, prefix=""))
    h, want = h0[0], []
    for t in range(5):
        g = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        z, n = torch.sigmoid(g[:, :4]), torch.tanh(g[:, 4:])
        h = (1 - z) * h + z * n
        want.append(h)
    with torch.no_grad():
        out, h_n = cell(x, h0)
    torch.testing.assert_close(out, torch.stack(want, 1), atol=1e-12, rtol=0)
    torch.testing.assert_close(h_n[0], h, atol=1e-12, rtol=0)


def test_mingru_refuses_the_torchscript_exporter(tmp_path):
    with pytest.raises(ExportError, match="exporter='native'"):
        export_model(make_model("mingru"), tmp_path / "m.onnx", exporter="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_mingru_refuses_time_first_input():
    with pytest.raises(ValueError, match="batch_first=True"):
        MinGRU(2, 3, batch_first=False)


@pytest.mark.parametrize("layers", [1, 3])
def test_mingru_graphs_agree_with_torch_and_the_reference(layers):
    """Sequence graph (Scan) and step graph: torch, onnxruntime and onnx's ReferenceEvaluator."""
    model = make_model("mingru", layers, ft=3, seed=layers)
    graph, step = build_graph(model), build_step_graph(model)
    onnx.checker.check_model(graph, full_check=True)
    assert [n.op_type for n in graph.graph.node].count("Scan") == layers
    x, states = inputs(model, 3, 12)
    assert np.abs(states[0]).min() > 0  # a non-zero initial state really is used
    want = torch_opinion(model, x, states)
    for got in (ort_opinion(graph, "mingru", x, states),
                reference_opinion(graph, "mingru", x, states)):
        assert max(max_diff(want, got).values()) <= ATOL
    x1 = x[:, :1]
    got = ort_opinion(step, "mingru", x1, states)
    assert max(max_diff(torch_opinion(model, x1, states), got).values()) <= ATOL


def test_mingru_export_proves_parity_at_batch_3_from_a_non_zero_state():
    model = make_model("mingru", layers=2, ft=2, seed=4)
    graph = build_graph(model)
    case = ParityCase(3, 50)
    report = verify_parity(model, graph, cases=(case,))
    assert report.baseline == "torch float32"  # the derived bound, not an atol
    assert report.cases
    assert all(report.cases[k][o] <= report.bounds[k][o]
                                for k in report.cases for o in report.cases[k])
    steps = verify_step_parity(model, graph, build_step_graph(model))
    assert steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    t = np.arange(400, dtype=np.float64)
    wave = np.sin(t / 6) + 0.05 * np.random.default_rng(0).standard_normal(400)
    series = from_arrays(wave[:, None], wave, feature_names=["v"], target_names=["v"])
    result = train(series, ForecasterConfig(cell="mingru", hidden=8, layers=2),
                   TrainConfig(epochs=3, target_mode="level", progress=False))
    path = tmp_path_factory.mktemp("mingru") / "model.onnx"
    return result, export_model(result.model, path, sample=series.features), series


def test_mingru_trains_exports_and_streams(trained):
    result, report, series = trained
    assert report.contract.cell == "mingru"
    assert report.nodes.get("Scan") == 2
    assert report.step_path is not None
    losses = result.history["train_loss"]
    assert losses[-1] < losses[0]  # it learnt something
    x = series.features[:60].astype(np.float32)
    with torch.no_grad():
        want, _ = result.model(torch.from_numpy(x)[None])
    assert_streams_like(report.path, x, want.numpy(), ATOL)
