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

Parity of the int8 model: how far from the float model may it be? That depends on the model
(how far int8 rounding of its weights moves its outputs), so the bound is derived per model and
case, the way the float parity is (:mod:`rnnstream.export.verify`). The reference is the torch
model in float64; the baseline is the same float64 model with the weights onnxruntime actually
quantises (``W``, ``R`` of every layer and the head) rounded to the int8 grid it uses (symmetric,
per tensor, :func:`int8_grid`; derived from the float weights, not read from the graph, which
must not vouch for itself): the error int8 *weights* alone cause, without float32 rounding.
onnxruntime's int8 kernels also quantise the activations (x and h of every step to uint8, per
call), an error of the same kind that this
baseline does not simulate and that grows with the hidden size, so the int8 graph is held to
:data:`INT8_FACTOR` times the weights-only error (+ the float floor). Measured on random LSTMs
(seeded, ``make_model`` of tests/export): int8-graph error / weights-only error, worst case and
output, was 1.7 at hidden 32, 2.7 at 128, 4.4 at 256 (3.7 with 2 layers) and 10.5 at 512; 16
leaves a margin at 512. A broken quantisation (a wrong scale, a swapped gate) moves the outputs
by the size of the weights themselves, 0.1-1, against a bound of ~0.1 at most.

onnxruntime's quantiser warns "Please consider to run pre-processing before quantization" on
the root logger unless the model carries its pre-processing mark, so we run its own
pre-processing (ONNX shape inference only: the graph is small and already fully shaped, its
optimiser is meant for large vision graphs) and leave every logger's level as it was. The
quantiser also calls ``logging.info(...)`` on the root logger, which runs ``basicConfig()`` and
leaves a stderr handler on the root logger of a program that configured none; while it runs,
a root logger without handlers gets a ``NullHandler``, removed afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rnnstream.runtime.spec import CELLS

from .errors import QuantizationError
from .graph import onnx_weights
from .verify import (
    DEFAULT_CASES,
    BoundRule,
    InputSpec,
    ParityReport,
    float64_model,
    measure_parity,
    ort_runner,
    session,
    torch_runner,
)

__all__ = [
    "INT8_FACTOR",
    "QUANTIZED_OP",
    "quantize_graph",
    "quantized_parity",
    "refuse_unsupported",
    "unfold_input_normalization",
]

# cell -> the op onnxruntime's quantize_dynamic turns its recurrent node into
QUANTIZED_OP = {name: c.int8_op for name, c in CELLS.items() if c.int8_op}
FLOAT_RECURRENT_OPS = {"RNN", "GRU", "LSTM"}
INT8_FACTOR = 16.0  # int8 graph error / int8-weights-only error: measured <= 10.5 (docstring)
QUANT_STREAM_STEPS = 200  # int8 error is not expected to be tiny; a shorter stream shows drift
NATIVE_TIME_MAJOR_INPUT = "x_tbf"  # graph.build_graph's name for x transposed to [T, B, F]


def refuse_unsupported(cell: str, head_hidden: Sequence[int] = ()) -> None:
    """Raise before doing any work when ``cell`` has no quantised recurrent kernel, or the head
    has hidden layers (the int8 head is written for one linear layer)."""
    if head_hidden:
        raise QuantizationError(
            f"cannot quantise a model whose head has hidden layers {list(head_hidden)}: the "
            "int8 export handles a one-layer head only. Export without quantize=True"
        )
    if cell not in QUANTIZED_OP:
        raise QuantizationError(
            f"cannot quantise a {cell!r} model: onnxruntime's quantize_dynamic has a quantised "
            f"kernel only for {sorted(QUANTIZED_OP)} (it would leave the {cell.upper()} weights "
            "in float32 and quantise only the output layer). Export without --quantize, or "
            "train an lstm."
        )


@contextlib.contextmanager
def _no_basic_config() -> Iterator[None]:
    """Keep onnxruntime's module-level ``logging.info`` from installing a root handler."""
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard is not None:
            root.removeHandler(guard)


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
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="rnnstream-quant-") as tmp:
        src, pre, dst = (Path(tmp, n) for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(graph, src)
        with _no_basic_config():
            quant_pre_process(src, pre, skip_optimization=True, skip_symbolic_shape=True)
            quantize_dynamic(pre, dst, weight_type=QuantType.QInt8)
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


def int8_grid(w: np.ndarray) -> np.ndarray:
    """``w`` rounded to the int8 grid onnxruntime's ``quantize_dynamic`` puts weights on.

    QInt8 weights are symmetric and per tensor (``per_channel=False``): ``scale = max|w| / 127``,
    zero point 0, ``q = round(w / scale)`` in [-127, 127]; returns ``q * scale`` (float64).
    """
    w = np.asarray(w, dtype=np.float64)
    scale = float(np.max(np.abs(w))) / 127 if w.size else 0.0
    if scale == 0.0:
        return w.copy()
    return np.clip(np.round(w / scale), -127, 127) * scale


def int8_weight_model(model):
    """A float64 copy of ``model`` whose quantised weights sit on onnxruntime's int8 grid.

    Derived from the float weights, never read from the quantised graph, so a graph with a
    wrong scale or shuffled weights cannot vouch for itself. The weights onnxruntime quantises:
    every layer's input and recurrent matrices (per-tensor rounding does not care about the
    ONNX gate order) and the head with the target scale folded in (``head.weight * y_std``).
    """
    import torch

    from rnnstream.train.cells import weight_names

    ref = float64_model(model)
    params = dict(ref.named_parameters())
    y_std = ref.y_std.detach().numpy()[:, None]
    with torch.no_grad():
        for layer in range(model.config.layers):
            for name in weight_names(layer)[:2]:  # the input and recurrent matrices
                params[name].copy_(torch.from_numpy(int8_grid(params[name].numpy())))
        head = params["head.weight"].numpy() * y_std
        params["head.weight"].copy_(torch.from_numpy(int8_grid(head) / y_std))
    return ref


def quantized_parity(
    model, quantized: onnx.ModelProto, *, seed: int = 0, sample: np.ndarray | None = None
) -> ParityReport:
    """int8 graph vs the float64 model, bound by the int8 weights' own effect (docstring).

    Raises QuantizationError when any case and output is out of its bound.
    """
    spec = InputSpec.from_model(model, sample)
    report = measure_parity(
        spec,
        torch_runner(float64_model(model)),
        ort_runner(session(quantized), spec.state_names),
        baseline=torch_runner(int8_weight_model(model)),
        rule=BoundRule(factor=INT8_FACTOR),
        seed=seed,
        cases=DEFAULT_CASES,
        stream_steps=QUANT_STREAM_STEPS,
        names=("torch float64", "onnxruntime int8", "int8 weights in float64"),
    )
    failures = report.failures()
    if failures:
        lines = "\n".join(f"  {f}" for f in failures)
        raise QuantizationError(
            f"the int8 model is too far from the float model:\n{lines}\nNothing was written; "
            "export without --quantize (the weights may have outliers int8 cannot represent)."
        )
    return report
