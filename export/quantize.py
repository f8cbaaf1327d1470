"""Optional dynamic int8 quantisation with onnxruntime's ``quantize_dynamic``.

What onnxruntime 1.32 does with our graphs (measured, see tests/export/test_quantize.py):

* LSTM: each ``LSTM`` node becomes ``com.microsoft.DynamicQuantizeLSTM`` (int8 W and R) and the
  head ``MatMul`` becomes ``MatMulInteger``: the recurrent weights, i.e. nearly all of them, are
  quantised.
* RNN and GRU: there is no quantised kernel; the ``RNN``/``GRU`` nodes stay float32 and only the
  tiny head ``MatMul`` is quantised. That is a lossy file with no real gain, so we refuse it with
  :class:`QuantizationError` instead of writing a half-quantised model.

Input normalisation is *unfolded* before quantising: the float graph folds ``(x - mean) / std``
into the first layer's weights, which is exact in float32 but makes the quantised LSTM quantise
raw ``x`` with one scale for all features -- a feature of std 0.5 next to one of mean 100 then
loses most of its resolution (measured: state error 0.2 instead of 0.003). So the int8 graph
gets explicit ``Sub``/``Div`` nodes and the unfolded first-layer weights.

The refusal is decided from the result, not only from a table: if any float recurrent node is
left after quantisation, the cell is refused (so a future onnxruntime that learns GRU is picked
up by updating :data:`QUANTIZED_OP` and the tests, not by a silent change).

Parity of the int8 model is measured against the float ONNX model (already proven equal to
torch) on the same seeded cases. Tolerance: ``y`` within :data:`Y_TOLERANCE_STD` target
standard deviations (int8 weights carry ~0.4 % relative error per weight; 5 % of a target's
spread is far below a useful forecaster's error yet catches a broken quantisation), states
within :data:`STATE_TOLERANCE` (h is in [-1, 1]; c is O(1) for a trained LSTM).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import QuantizationError
from .graph import onnx_weights
from .verify import (
    DEFAULT_CASES,
    InputSpec,
    ParityReport,
    measure_parity,
    ort_runner,
    session,
)

__all__ = [
    "QUANTIZED_OP",
    "STATE_TOLERANCE",
    "Y_TOLERANCE_STD",
    "quantize_graph",
    "quantized_parity",
    "refuse_unsupported",
    "unfold_input_normalization",
]

# cell -> the op onnxruntime's quantize_dynamic turns its recurrent node into
QUANTIZED_OP = {"lstm": "DynamicQuantizeLSTM"}
FLOAT_RECURRENT_OPS = {"RNN", "GRU", "LSTM"}
Y_TOLERANCE_STD = 0.05
STATE_TOLERANCE = 0.05
QUANT_STREAM_STEPS = 200  # int8 error is not expected to be tiny; a shorter stream shows drift
NATIVE_TIME_MAJOR_INPUT = "x_tbf"  # graph.build_graph's name for x transposed to [T, B, F]


def refuse_unsupported(cell: str) -> None:
    """Raise before doing any work when ``cell`` has no quantised recurrent kernel."""
    if cell not in QUANTIZED_OP:
        raise QuantizationError(
            f"cannot quantise a {cell!r} model: onnxruntime's quantize_dynamic has a quantised "
            f"kernel only for {sorted(QUANTIZED_OP)} (it would leave the {cell.upper()} weights "
            "in float32 and quantise only the output layer). Export without --quantize, or "
            "train an lstm."
        )


@contextlib.contextmanager
def _quiet_quantizer():
    # quantize_dynamic logs "Please consider to run pre-processing before quantization" on the
    # root logger at WARNING for every call. Pre-processing (symbolic shape inference +
    # optimisation) is meant for large vision graphs; our graph is already fully shaped.
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)


def unfold_input_normalization(graph: onnx.ModelProto, model) -> onnx.ModelProto:
    """A copy of a native graph whose first layer sees normalised ``z`` instead of raw ``x``."""
    index = _first_recurrent_node(graph)
    if index is None or graph.graph.node[index].input[0] != NATIVE_TIME_MAJOR_INPUT:
        return graph  # not our native layout (torch's exporter keeps Sub/Div nodes anyway)
    unit = copy.deepcopy(model)
    norm = model.normalization()
    unit.set_normalization(np.zeros(len(norm["feature_mean"])), np.ones(len(norm["feature_std"])),
                           norm["target_mean"], norm["target_std"])
    weights = onnx_weights(unit)
    out = copy.deepcopy(graph)
    replaced = {"W0": weights["W0"], "B0": weights["B0"],
                "x_mean": np.asarray(norm["feature_mean"]),
                "x_std": np.asarray(norm["feature_std"])}
    kept = [t for t in out.graph.initializer if t.name not in replaced]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    out.graph.initializer.extend(numpy_helper.from_array(v.astype(np.float32), k)
                                 for k, v in replaced.items())
    out.graph.node[index].input[0] = "z_tbf"
    out.graph.node.insert(index, helper.make_node("Div", ["x_centered", "x_std"], ["z_tbf"]))
    out.graph.node.insert(index, helper.make_node("Sub", [NATIVE_TIME_MAJOR_INPUT, "x_mean"],
                                                  ["x_centered"]))
    return out


def _first_recurrent_node(graph: onnx.ModelProto) -> int | None:
    for index, node in enumerate(graph.graph.node):
        if node.op_type in FLOAT_RECURRENT_OPS:
            return index
    return None


def quantize_graph(graph: onnx.ModelProto, model) -> onnx.ModelProto:
    """The dynamically int8-quantised version of ``graph``; QuantizationError when refused."""
    cell = model.config.cell
    refuse_unsupported(cell)
    graph = unfold_input_normalization(graph, model)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="rnnstream-quant-") as tmp:
        src, dst = Path(tmp, "float.onnx"), Path(tmp, "int8.onnx")
        onnx.save(graph, src)
        with _quiet_quantizer():
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        quantized = onnx.load(dst)
    _check_quantized(quantized, graph, cell)
    return quantized


def _check_quantized(quantized: onnx.ModelProto, graph: onnx.ModelProto, cell: str) -> None:
    ops = [n.op_type for n in quantized.graph.node]
    left = sorted(FLOAT_RECURRENT_OPS & set(ops))
    if left or QUANTIZED_OP[cell] not in ops:
        raise QuantizationError(
            f"quantisation of the {cell} model left float recurrent node(s) {left} and no "
            f"{QUANTIZED_OP[cell]}; this onnxruntime cannot quantise it. Export without --quantize."
        )
    for kind in ("input", "output"):
        want = [_io_signature(v) for v in getattr(graph.graph, kind)]
        got = [_io_signature(v) for v in getattr(quantized.graph, kind)]
        if want != got:
            raise QuantizationError(
                f"quantisation changed the graph {kind}s from {want} to {got}; the contract "
                "names and shapes must not change. Export without --quantize and report this."
            )


def _io_signature(value: onnx.ValueInfoProto) -> tuple:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
    return value.name, tensor.elem_type, dims


def quantized_parity(
    model, float_graph: onnx.ModelProto, quantized: onnx.ModelProto, *, seed: int = 0
) -> ParityReport:
    """int8 vs float ONNX on seeded cases; raises QuantizationError when out of tolerance."""
    spec = InputSpec.from_model(model)
    target_std = np.asarray(model.normalization()["target_std"], dtype=np.float64)
    tolerance = {name: STATE_TOLERANCE for name in spec.output_names}
    tolerance["y"] = float(Y_TOLERANCE_STD * target_std.min())
    report = measure_parity(
        spec,
        ort_runner(session(float_graph), spec.cell),
        ort_runner(session(quantized), spec.cell),
        tolerance=tolerance,
        seed=seed,
        cases=DEFAULT_CASES,
        stream_steps=QUANT_STREAM_STEPS,
        names=("onnxruntime float32", "onnxruntime int8"),
    )
    failures = report.failures()
    if failures:
        lines = "\n".join(f"  {f}" for f in failures)
        raise QuantizationError(
            f"the int8 model is too far from the float model:\n{lines}\nNothing was written; "
            "export without --quantize (the weights may have outliers int8 cannot represent)."
        )
    return report
