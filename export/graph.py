"""Build the ONNX graph of a :class:`~rnnstream.train.Forecaster` directly from its weights.

Why not ``torch.onnx.export``? Measured with torch 2.13 (see docs/api.md, "Export"): the dynamo
exporter fixes the time axis to the example length and writes a side ``.data`` file; the
TorchScript exporter gives native recurrent ops with dynamic axes but wraps them in Transpose,
Slice, Unsqueeze and normalisation nodes (17 nodes for a one-layer LSTM) and is deprecated.
Writing the graph ourselves gives the native ``RNN``/``LSTM``/``GRU`` op, truly dynamic batch
and time, normalisation folded into the weights, and nothing else -- and the export is then
proven equal to torch by :mod:`rnnstream.export.verify` before a file is written. A cell ONNX
has no op for (``mingru``) gets a ``Scan`` of its step equations per layer instead
(:mod:`rnnstream.export.cells`).

Graph, for ``L`` layers (onnxruntime's CPU kernels only support ``layout=0``, i.e.
``[time, batch, ...]``, so batch-first I/O costs one Transpose per tensor at the edges)::

    x [B,T,F] -Transpose-> [T,B,F] -> layer 0 -> Squeeze -> ... layer L-1 -> Squeeze [T,B,H]
        -> MatMul/Add (head, denormalisation folded in) [T,B,Tg] -Transpose-> [B,T,Tg]
        (+ the target mode's reference, from Gather(x, target_index)) -> y
    s_in [B,L,H] -Transpose-> [L,B,H] -Split-> L x [1,B,H] -> initial state of each layer
    each layer's final state -> Concat -> [L,B,H] -Transpose-> s_out [B,L,H]

An input mode's nodes (``input_mode="delta"``: the changes of x, from the ``last`` state) come
before layer 0; a target mode with a reference adds it to the head's output (``y = head +
ref``: the observed targets for "delta", the targets one season back from the ``cycle`` state
for "seasonal", an ETS forecast from the ``ets`` state for "ets"). Each mode's nodes are its
entry in :mod:`rnnstream.export.modes` (which draws them), looked up by name.

Every tensor name and shape at the edges comes from :func:`rnnstream.runtime.spec.graph_io`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.runtime import spec
from rnnstream.runtime.spec import (
    INPUT_NAME,
    OUTPUT_NAME,
    state_input_name,
    state_output_name,
)

from .cells import Builder, native_layer, scan_layer
from .modes import EXPORT_INPUT_MODES, EXPORT_TARGET_MODES

__all__ = ["DEFAULT_OPSET", "build_graph", "graph_value_infos", "head_hidden_nodes", "onnx_weights",
           "pin_ir_version"]

DEFAULT_OPSET = 17


def _reorder(w: np.ndarray, cell: str, hidden: int) -> np.ndarray:
    """torch's gate blocks of ``hidden`` rows in ONNX's order (spec.CELLS[cell].gate_order)."""
    blocks = [w[g * hidden:(g + 1) * hidden] for g in spec.CELLS[cell].gate_order]
    return np.concatenate(blocks, axis=0)


def graph_value_infos(cfg, time: str | int = spec.TIME
                      ) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """The graph's inputs and outputs as ONNX value infos, from the one spec."""
    ins, outs = spec.graph_io(cfg.cell, layers=cfg.layers, hidden=cfg.hidden,
                              n_features=cfg.n_features, n_targets=cfg.n_targets,
                              input_mode=cfg.input_mode, target_mode=cfg.target_mode,
                              season=cfg.season, time=time)

    def info(t: spec.TensorSpec) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape))

    return [info(t) for t in ins], [info(t) for t in outs]


def onnx_weights(model) -> dict[str, np.ndarray]:
    """Float64 weights of ``model`` in ONNX layout, normalisation folded in.

    Input normalisation ``z = (x - m) / s`` folds into layer 0: ``W' = W / s``,
    ``b' = b - W (m / s)``. Output denormalisation ``y = u * s_y + m_y`` folds into the head.
    Both are exact in real arithmetic; float32 rounding differences are what parity measures.
    """
    from rnnstream.train.cells import weight_names  # here: importing export loads no torch

    cfg = model.config
    sd = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
    x_mean, x_std = sd["x_mean"], sd["x_std"]
    y_mean, y_std = sd["y_mean"], sd["y_std"]
    out: dict[str, np.ndarray] = {}
    for layer in range(cfg.layers):
        w_ih, w_hh, b_ih, b_hh = (sd[name] for name in weight_names(layer))
        if layer == 0:
            b_ih = b_ih - w_ih @ (x_mean / x_std)
            w_ih = w_ih / x_std[None, :]
        h = cfg.hidden
        out[f"W{layer}"] = _reorder(w_ih, cfg.cell, h)[None]
        out[f"R{layer}"] = _reorder(w_hh, cfg.cell, h)[None]
        out[f"B{layer}"] = np.concatenate([_reorder(b_ih, cfg.cell, h),
                                           _reorder(b_hh, cfg.cell, h)])[None]
    last = "head" if not cfg.head_hidden else f"head.{2 * len(cfg.head_hidden)}"
    for i in range(len(cfg.head_hidden)):  # hidden head layers: Linear i is module 2 i
        out[f"head{i}_W"] = sd[f"head.{2 * i}.weight"].T  # [in, size]
        out[f"head{i}_b"] = sd[f"head.{2 * i}.bias"]
    out["head_W"] = (sd[f"{last}.weight"] * y_std[:, None]).T  # [H or last size, Tg]
    out["head_b"] = sd[f"{last}.bias"] * y_std + y_mean
    mode_weights = EXPORT_TARGET_MODES[cfg.target_mode].weights
    if mode_weights is not None:  # the target mode's constants (ETS: its recurrence)
        out.update(mode_weights(sd, cfg))
    return out


def head_hidden_nodes(cfg, nodes: list, seq: str, op: str = "MatMul") -> str:
    """Append the head's hidden layers (``head{i}_W``/``head{i}_b`` from :func:`onnx_weights`,
    each followed by the activation); returns what the last linear layer reads. ``op``:
    ``MatMul`` + ``Add`` for [T,B,H] sequences, ``Gemm`` for [B,H] steps."""
    act = spec.HEAD_ACTIVATIONS[cfg.head_activation]
    for i in range(len(cfg.head_hidden)):
        if op == "Gemm":
            nodes.append(helper.make_node("Gemm", [seq, f"head{i}_W", f"head{i}_b"],
                                          [f"head{i}_lin"]))
        else:
            nodes.append(helper.make_node("MatMul", [seq, f"head{i}_W"], [f"head{i}_mm"]))
            nodes.append(helper.make_node("Add", [f"head{i}_mm", f"head{i}_b"],
                                          [f"head{i}_lin"]))
        nodes.append(helper.make_node(act, [f"head{i}_lin"], [f"head{i}_out"]))
        seq = f"head{i}_out"
    return seq


def build_graph(model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The ONNX model (without rnnstream metadata) computing ``model.forward`` in raw units."""
    cfg = model.config
    weights = onnx_weights(model)
    states = spec.CELLS[cfg.cell].states
    # a cell without a native op takes its weights in the step layout (scan_layer), not these
    native = spec.CELLS[cfg.cell].onnx_op is not None
    recurrent = {f"{n}{k}" for n in "WRB" for k in range(cfg.layers)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()
             if native or k not in recurrent]
    input_mode = EXPORT_INPUT_MODES[cfg.input_mode]
    target_mode = EXPORT_TARGET_MODES[cfg.target_mode]
    if native or target_mode.squeezes:  # the native ops' and a mode's (ETS's RNN) Squeeze
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    nodes: list[onnx.NodeProto] = []
    seen = INPUT_NAME
    if input_mode.nodes is not None:  # the layers see what the input mode makes of x
        seen = input_mode.nodes(nodes, inits, INPUT_NAME, cfg.n_features, True)
    nodes.append(helper.make_node("Transpose", [seen], ["x_tbf"], perm=[1, 0, 2]))

    per_layer: dict[str, list[str]] = {}
    for s in states:
        nodes.append(helper.make_node("Transpose", [state_input_name(s)], [f"{s}_lbh"],
                                      perm=[1, 0, 2]))
        if cfg.layers == 1:
            per_layer[s] = [f"{s}_lbh"]
        else:
            per_layer[s] = [f"{s}_init{i}" for i in range(cfg.layers)]
            nodes.append(helper.make_node("Split", [f"{s}_lbh"], per_layer[s], axis=0,
                                          num_outputs=cfg.layers) if opset >= 18 else
                         helper.make_node("Split", [f"{s}_lbh"], per_layer[s], axis=0))

    seq = "x_tbf"
    finals: dict[str, list[str]] = {s: [] for s in states}
    layer_graph = native_layer if native else scan_layer
    b = Builder(nodes, inits)
    for layer in range(cfg.layers):
        seq, final = layer_graph(b, cfg, layer, seq, {s: per_layer[s][layer] for s in states},
                                 weights)
        for s in states:
            finals[s].append(final[s])

    for s in states:
        stacked = finals[s][0]
        if cfg.layers > 1:
            stacked = f"{s}_stacked"
            nodes.append(helper.make_node("Concat", finals[s], [stacked], axis=0))
        nodes.append(helper.make_node("Transpose", [stacked], [state_output_name(s)],
                                      perm=[1, 0, 2]))

    seq = head_hidden_nodes(cfg, nodes, seq)
    nodes.append(helper.make_node("MatMul", [seq, "head_W"], ["head_mm"]))
    nodes.append(helper.make_node("Add", ["head_mm", "head_b"], ["head_tbt"]))
    if spec.TARGET_MODE_SPECS[cfg.target_mode].reference:  # y = head + the mode's reference
        nodes.append(helper.make_node("Transpose", ["head_tbt"], ["head_btt"], perm=[1, 0, 2]))
        last = _residual_source(cfg, nodes, inits)
        if target_mode.sequence is not None:
            last = target_mode.sequence(b, last, cfg, weights)
        nodes.append(helper.make_node("Add", ["head_btt", last], [OUTPUT_NAME]))
    else:
        nodes.append(helper.make_node("Transpose", ["head_tbt"], [OUTPUT_NAME], perm=[1, 0, 2]))

    graph_inputs, graph_outputs = graph_value_infos(cfg)
    graph = helper.make_graph(nodes, "rnnstream_forecaster", graph_inputs, graph_outputs, inits)
    return pin_ir_version(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def pin_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    """Declare the lowest IR version the model's opsets allow (8 for opset 17).

    onnx 1.23 stamps IR version 14 by default, which onnxruntime-node 1.30 (the newest on npm)
    and older C++/C#/Java runtimes refuse ("Unsupported model IR version: 14, max supported IR
    version: 13"); nothing in our graphs needs a newer IR.
    """
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import),
                                                      ignore_unknown=True)
    return model


def _residual_source(cfg, nodes: list, inits: list) -> str:
    """The last observed value of each target's series, [B, T, Tg], for target_mode='delta'
    (and 'seasonal', whose reference starts from it)."""
    index = list(cfg.target_index)
    if index == list(range(cfg.n_features)):
        return INPUT_NAME  # targets are exactly the features, in order: add x itself
    inits.append(numpy_helper.from_array(np.array(index, dtype=np.int64), "target_index"))
    nodes.append(helper.make_node("Gather", [INPUT_NAME, "target_index"], ["x_targets"], axis=2))
    return "x_targets"
