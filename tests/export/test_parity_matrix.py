"""torch vs onnxruntime on every cell x layers x F/T x batch x time, plus a 1,000-step stream."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from export_helpers import (
    ATOL,
    disagreements,
    feeds,
    inputs,
    make_model,
    max_diff,
    ort_opinion,
    output_names,
    reference_opinion,
    torch_opinion,
)

from rnnstream.export import build_graph
from rnnstream.export.torchscript import build_graph_torchscript
from rnnstream.export.verify import stream_outputs
from rnnstream.runtime.contract import CELL_STATES
from rnnstream.runtime.spec import CELLS as SPEC_CELLS
from rnnstream.train.model import CELLS

MATRIX_CELLS = tuple(sorted(CELLS))  # the registry: a new cell is in the matrix by registering
# cells with a native ONNX op, which torch's own (TorchScript) exporter also emits
NATIVE_CELLS = tuple(c for c in MATRIX_CELLS if SPEC_CELLS[c].onnx_op)
MATRIX = [(c, n, ft) for c in MATRIX_CELLS for n in (1, 2, 3) for ft in (1, 3)]


def test_every_registered_cell_is_in_the_parity_matrix():
    missing = set(CELLS) - set(MATRIX_CELLS)
    assert not missing, f"cells {sorted(missing)} are registered but have no export parity test"


@pytest.fixture(scope="module", params=MATRIX, ids=lambda p: f"{p[0]}-L{p[1]}-F{p[2]}")
def exported(request):
    cell, layers, ft = request.param
    model = make_model(cell, layers, ft, seed=layers * 10 + ft)
    sess = ort.InferenceSession(build_graph(model).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return model, sess


@pytest.mark.parametrize(("batch", "time"), [(1, 1), (1, 50), (7, 1), (7, 50)])
def test_parity(exported, batch, time):
    model, sess = exported
    cell = model.config.cell
    x, states = inputs(model, batch, time, seed=batch * 100 + time)
    assert np.abs(states[0]).min() > 0  # a non-zero initial state really is used
    want = torch_opinion(model, x, states)
    got = dict(zip(output_names(cell), sess.run(output_names(cell), feeds(cell, x, states)),
                   strict=True))
    diffs = max_diff(want, got)
    assert max(diffs.values()) <= ATOL, diffs
    assert got["y"].shape == (batch, time, model.config.n_targets)


def test_stream_1000_steps_matches_one_full_sequence(exported):
    model, sess = exported
    cell = model.config.cell
    x, states = inputs(model, 2, 1000, seed=7)
    names = output_names(cell)

    def run(xs, ss):
        return dict(zip(names, sess.run(names, feeds(cell, xs, ss)), strict=True))

    streamed = stream_outputs(run, x, states, CELL_STATES[cell])
    diffs = max_diff(torch_opinion(model, x, states), streamed)
    assert max(diffs.values()) <= ATOL, diffs


@pytest.mark.parametrize("cell", MATRIX_CELLS)
def test_three_opinions_agree(cell):
    """torch, onnxruntime and onnx's ReferenceEvaluator: if one is wrong, the pairs say which."""
    model = make_model(cell, layers=2, ft=3, seed=5)
    graph = build_graph(model)
    x, states = inputs(model, 3, 6)
    opinions = {
        "torch": torch_opinion(model, x, states),
        "onnxruntime": ort_opinion(graph, cell, x, states),
        "reference": reference_opinion(graph, cell, x, states),
    }
    assert disagreements(opinions) == []


def test_disagreement_helper_names_the_odd_one_out():
    model = make_model("lstm", layers=1, ft=1)
    graph = build_graph(model)
    x, states = inputs(model, 2, 4)
    wrong = ort_opinion(graph, "lstm", x, states)
    wrong["y"] = wrong["y"] + 0.01
    found = disagreements({"torch": torch_opinion(model, x, states), "onnxruntime": wrong,
                           "reference": reference_opinion(graph, "lstm", x, states)})
    assert len(found) == 2
    assert all("onnxruntime" in f and ": y " in f for f in found)


@pytest.mark.parametrize("cell", NATIVE_CELLS)
def test_native_graph_computes_what_torch_exporter_computes(cell):
    model = make_model(cell, layers=2, ft=3, seed=9)
    x, states = inputs(model, 7, 20)
    native = ort_opinion(build_graph(model), cell, x, states)
    torchscript = ort_opinion(build_graph_torchscript(model), cell, x, states)
    diffs = max_diff(native, torchscript)
    assert max(diffs.values()) <= ATOL, diffs


@pytest.mark.parametrize(("ft", "targets", "index"), [(3, 3, [0, 1, 2]), (3, 2, [2, 0])])
def test_delta_mode_parity(ft, targets, index):
    model = make_model("gru", layers=2, ft=ft, n_targets=targets, delta_index=index, seed=3)
    graph = build_graph(model)
    x, states = inputs(model, 7, 30)
    opinions = {"torch": torch_opinion(model, x, states),
                "onnxruntime": ort_opinion(graph, "gru", x, states),
                "reference": reference_opinion(graph, "gru", x, states)}
    assert disagreements(opinions) == []
    # the residual really is added: y differs from the level model's output by x[..., index]
    level = make_model("gru", layers=2, ft=ft, n_targets=targets, seed=3)
    y_level = torch_opinion(level, x, states)["y"]
    np.testing.assert_allclose(opinions["onnxruntime"]["y"] - y_level, x[..., index], atol=1e-4)
