"""The single-step graph: one time step of a :class:`~rnnstream.train.Forecaster` from plain ops.

Why a second graph? The native ``LSTM``/``GRU``/``RNN`` op of :mod:`rnnstream.export.graph` is
built for sequences: every call pays its per-sequence set-up, the Transposes at the edges, and
at large batches it walks the whole batch through each time step (cache thrash). A streaming
step is one time step, so the cell written out with Gemm/MatMul and elementwise ops is faster
at every batch size measured (``bench/bench_runtime.py``: 1.03-1.07x at batch 1, up to 1.5x at
batch 1,024; the figures are in :mod:`rnnstream.runtime.pool`). It uses only ops that
onnxruntime-web's WebGL backend has too (no ``Split``, no ``Expand``). The contract is the same
as the sequence graph's -- same names, same states (from :mod:`rnnstream.runtime.spec`),
normalisation folded by the same :func:`~rnnstream.export.graph.onnx_weights` -- except that
``time`` is fixed to 1.

One layer, ``G`` gates (ONNX gate order, see graph.py), ``x`` [B,in], ``h``/``c`` [B,H]::

    g = Concat(x, h) @ [Wt; Rt] + bias    (input and recurrent biases summed in float64)
    then the cell's step equations, written once per cell in :mod:`rnnstream.export.cells`
    (whose ``Scan`` form is the sequence graph of a cell without a native op)

Edges: x [B,1,F] -Reshape-> [B,F]; s_in [B,L,H] -Slice(axis 1)/Reshape-> L x [B,H];
new layer states -Concat(axis 1)-> [B,L*H] -Reshape-> s_out [B,L,H]; head Gemm -> [B,Tg]
(+ the target mode's reference, from the observed targets [B,Tg]: its step nodes in
:mod:`rnnstream.export.modes`) -Reshape-> y [B,1,Tg]; the input mode's nodes (the changes of x
for "delta") come before layer 0, the same as the sequence graph's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from rnnstream.runtime import spec
from rnnstream.runtime.spec import (
    INPUT_NAME,
    OUTPUT_NAME,
    state_input_name,
    state_output_name,
)

from .cells import EXPORT_CELLS, Builder, step_weights
from .graph import (
    DEFAULT_OPSET,
    graph_value_infos,
    head_hidden_nodes,
    onnx_weights,
)
from .modes import EXPORT_INPUT_MODES, EXPORT_TARGET_MODES

__all__ = ["STEP_SUFFIX", "build_step_graph", "step_path"]

STEP_SUFFIX = ".step.onnx"  # model.onnx -> model.step.onnx


def step_path(model_path: str) -> str:
    """Where the step graph of ``model_path`` lives: ``model.onnx`` -> ``model.step.onnx``."""
    stem = model_path[:-5] if model_path.endswith(".onnx") else model_path
    return stem + STEP_SUFFIX


def _layer(b: Builder, cell: str, layer: int, x: str, states: tuple[str, ...],
           w: dict[str, np.ndarray], hidden: int) -> tuple[str, ...]:
    """Emit one cell step (its equations: :data:`rnnstream.export.cells.EXPORT_CELLS`); returns
    the names of the new states [B, H], in the spec's order.

    ``[x, h]`` is concatenated and multiplied once: one Gemm beat ``x @ Wt + h @ Rt`` by 10-14%
    at batch 1024 (hidden 32), and was no slower at batch 1 and 64.
    """
    wt, rt, bias = step_weights(cell, w, layer, hidden)
    p = f"l{layer}_"
    b.op("Concat", [x, states[0]], p + "xh", axis=1)
    weight = np.concatenate([wt, rt], axis=0).astype(np.float32)  # [in + H, columns]
    b.op("Gemm", [p + "xh", b.const(p + "WR", weight), b.const(p + "b", bias.astype(np.float32))],
         p + "g")
    return EXPORT_CELLS[cell].step(b, p, p + "g", states, hidden)


def build_step_graph(model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """One time step of ``model.forward`` in raw units (no rnnstream metadata); see module doc."""
    cfg = model.config
    w = onnx_weights(model)
    states = spec.CELLS[cfg.cell].states
    layers, hidden, f, t = cfg.layers, cfg.hidden, cfg.n_features, cfg.n_targets
    b = Builder()
    b.op("Reshape", [INPUT_NAME, b.const("shape_bf", np.array([-1, f], np.int64))], "x_bf")
    seen = "x_bf"
    input_nodes = EXPORT_INPUT_MODES[cfg.input_mode].nodes
    if input_nodes is not None:  # the layers see what the input mode makes of x (a change)
        seen = input_nodes(b.nodes, b.inits, "x_bf", f, False)
    b.const("shape_bh", np.array([-1, hidden], np.int64))
    per_layer: dict[str, list[str]] = {}
    for s in states:
        name = state_input_name(s)
        if layers == 1:
            parts = [name]
        else:
            parts = b.split(name, [1] * layers, 1, [f"{s}_in{i}" for i in range(layers)])
        per_layer[s] = [b.op("Reshape", [p, "shape_bh"], f"{s}_l{i}")[0]
                        for i, p in enumerate(parts)]
    seq, finals = seen, {s: list[str]() for s in states}
    for layer in range(layers):
        new = _layer(b, cfg.cell, layer, seq, tuple(per_layer[s][layer] for s in states), w,
                     hidden)
        for s, name in zip(states, new, strict=True):
            finals[s].append(name)
        seq = new[0]
    b.const("shape_blh", np.array([-1, layers, hidden], np.int64))
    for s in states:
        flat = finals[s][0]
        if layers > 1:
            flat = b.op("Concat", finals[s], f"{s}_cat", axis=1)[0]
        b.op("Reshape", [flat, "shape_blh"], state_output_name(s))
    for i in range(len(cfg.head_hidden)):
        b.const(f"head{i}_W", w[f"head{i}_W"].astype(np.float32))
        b.const(f"head{i}_b", w[f"head{i}_b"].astype(np.float32))
    seq = head_hidden_nodes(cfg, b.nodes, seq, op="Gemm")
    head = b.op("Gemm", [seq, b.const("head_W", w["head_W"].astype(np.float32)),
                         b.const("head_b", w["head_b"].astype(np.float32))], "head_bt")[0]
    if spec.TARGET_MODE_SPECS[cfg.target_mode].reference:  # y = head + the mode's reference
        last = "x_bf"
        if list(cfg.target_index) != list(range(f)):
            idx = b.const("target_index", np.array(list(cfg.target_index), np.int64))
            last = b.op("Gather", ["x_bf", idx], "x_targets", axis=1)[0]
        step = EXPORT_TARGET_MODES[cfg.target_mode].step
        if step is not None:
            last = step(b, last, cfg, w)
        head = b.op("Add", [head, last], "y_bt")[0]
    b.op("Reshape", [head, b.const("shape_b1t", np.array([-1, 1, t], np.int64))], OUTPUT_NAME)

    inputs, outputs = graph_value_infos(cfg, time=1)
    graph = helper.make_graph(b.nodes, "rnnstream_forecaster_step", inputs, outputs, b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
