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
        (+ Gather(x, target_index) when target_mode == "delta") -> y
    s_in [B,L,H] -Transpose-> [L,B,H] -Split-> L x [1,B,H] -> initial state of each layer
    each layer's final state -> Concat -> [L,B,H] -Transpose-> s_out [B,L,H]

With ``input_mode="delta"`` the layers see changes instead of ``x`` (see
:mod:`rnnstream.runtime.spec`)::

    last_in [B,F+1] -Slice-> prev [B,F], seen [B,1]
    first = seen * prev + (1 - seen) * x[:, 0]        (exact for seen in {0, 1})
    d = x - Concat(first, x[:, :-1])   [B,T,F]  -Transpose-> layer 0
    last_out = Concat(x[:, -1], 1)     [B,F+1]

With ``target_mode="seasonal"`` (season ``S``, horizon ``h``) the head's output is added to
the targets one season before the predicted time, from the ``cycle`` state (see
:mod:`rnnstream.runtime.spec`); every slice index is static, so time stays dynamic::

    seen = Concat(x_targets, 1)                          [B,T,Tg+1]
    c = Concat(cycle_in, seen, axis=1)                   [B,S+T,Tg+1]
    back = c[:, h : -(S-h)]  (c[:, h:] when S == h)      [B,T,Tg+1]
    ref = flag * back[..., :Tg] + (1 - flag) * x_targets  (exact for flag in {0, 1})
    cycle_out = c[:, -S:]

With ``target_mode="ets"`` the head's output is added to an exponential smoothing forecast, a
linear recurrence over the targets (:mod:`rnnstream.train.ets`) run by the native ``RNN`` op
with the identity activation (``Affine``, alpha 1, beta 0)::

    Y, ets_h = RNN(x_targets [T,B,Tg], ets_W, ets_R, ets_B, initial_h = ets_in [1,B,S])
    ref = Y [T,B,S] @ ets_w + ets_c  -Transpose-> [B,T,Tg];  ets_out = ets_h [B,S]

Every tensor name and shape at the edges comes from :func:`rnnstream.runtime.spec.graph_io`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.runtime import spec
from rnnstream.runtime.spec import (
    CYCLE_STATE,
    ETS_STATE,
    INPUT_NAME,
    LAST_STATE,
    OUTPUT_NAME,
    state_input_name,
    state_output_name,
)

from .cells import Builder, native_layer, scan_layer

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


def delta_input_nodes(nodes: list, inits: list, x: str, n_features: int, time_axis: bool
                      ) -> str:
    """Append the nodes that turn ``x`` into changes and write ``last_out``; returns the name of
    the changes (same shape as ``x``). ``time_axis``: x is [B,T,F] (else [B,F], one step)."""
    f = n_features
    last_in, last_out = state_input_name(LAST_STATE), state_output_name(LAST_STATE)

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    ax1 = const("delta_axis1", np.array([1], np.int64))
    prev = node("Slice", [last_in, const("delta_0", np.array([0], np.int64)),
                          const("delta_f", np.array([f], np.int64)), ax1], "delta_prev")
    seen = node("Slice", [last_in, "delta_f", const("delta_f1", np.array([f + 1], np.int64)),
                          ax1], "delta_seen")
    one = const("delta_one", np.array([[1.0]], np.float32))
    if time_axis:
        x0 = node("Squeeze", [node("Slice", [x, "delta_0", const("delta_1", np.array(
            [1], np.int64)), ax1], "delta_x0_3d"), ax1], "delta_x0")
    else:
        x0 = x
    first = node("Add", [node("Mul", [seen, prev], "delta_kept"),
                         node("Mul", [node("Sub", [one, seen], "delta_unseen"), x0],
                              "delta_fresh")], "delta_first")
    if time_axis:
        end = const("delta_end", np.array([np.iinfo(np.int64).max], np.int64))
        minus1 = const("delta_m1", np.array([-1], np.int64))
        shifted = node("Concat", [node("Unsqueeze", [first, ax1], "delta_first_3d"),
                                  node("Slice", [x, "delta_0", minus1, ax1], "delta_head")],
                       "delta_shifted", axis=1)
        newest = node("Squeeze", [node("Slice", [x, minus1, end, ax1], "delta_xl_3d"), ax1],
                      "delta_xl")
    else:
        shifted, newest = first, x
    # a column of ones [B, 1] from plain element-wise ops (seen * 0 + 1 is exactly 1 for a
    # finite flag): Shape/Expand would do it too, but onnxruntime-web's WebGL backend lacks
    # Expand, and the step graph is meant to run there
    zero = const("delta_zero", np.array([[0.0]], np.float32))
    ones = node("Add", [node("Mul", [seen, zero], "delta_seen0"), one], "delta_ones")
    node("Concat", [newest, ones], last_out, axis=1)
    return node("Sub", [x, shifted], "delta_x")


def seasonal_nodes(nodes: list, inits: list, targets: str, cfg) -> str:
    """Append the nodes that read ``cycle_in`` and write ``cycle_out`` for ``targets`` [B,T,Tg]
    (the observed targets of x); returns the name of the seasonal reference [B,T,Tg] (see the
    module doc). Plain ops only (no Split, no Expand), so the step graph can use it too."""
    s, h, tg = cfg.season, cfg.horizon, cfg.n_targets
    big = np.iinfo(np.int64).max

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def ints(name: str, value: int) -> str:
        return const(name, np.array([value], np.int64))

    ax1, ax2 = ints("season_axis1", 1), ints("season_axis2", 2)
    zero = ints("season_0", 0)
    one = const("season_one", np.array(1.0, np.float32))
    first = node("Slice", [targets, zero, ints("season_1", 1), ax2], "season_first")
    ones = node("Add", [node("Mul", [first, const("season_zero", np.array(0.0, np.float32))],
                             "season_first0"), one], "season_ones")
    seen = node("Concat", [targets, ones], "season_seen", axis=2)
    c = node("Concat", [state_input_name(CYCLE_STATE), seen], "season_all", axis=1)
    back = node("Slice", [c, ints("season_h", h), ints("season_end", h - s if s > h else big),
                          ax1], "season_back")
    value = node("Slice", [back, zero, ints("season_tg", tg), ax2], "season_value")
    flag = node("Slice", [back, "season_tg", ints("season_tg1", tg + 1), ax2], "season_flag")
    node("Slice", [c, ints("season_ms", -s), ints("season_big", big), ax1],
         state_output_name(CYCLE_STATE))
    kept = node("Mul", [flag, value], "season_kept")
    stand_in = node("Mul", [node("Sub", [one, flag], "season_unseen"), targets],
                    "season_stand_in")
    return node("Add", [kept, stand_in], "season_ref")


def ets_nodes(nodes: list, inits: list, targets: str, size: int) -> str:
    """Append the ETS recurrence over ``targets`` [B,T,Tg] (initializers ``ets_W``, ``ets_R``,
    ``ets_B``, ``ets_w``, ``ets_c`` from :func:`onnx_weights`; ``size`` the state's length),
    reading ``ets_in`` and writing ``ets_out``; returns the name of the ETS forecasts
    [B,T,Tg]."""
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "ets_axis0"))

    def node(op: str, inputs: list[str], outputs: list[str], **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    tbg = node("Transpose", [targets], ["ets_x"], perm=[1, 0, 2])
    h0 = node("Unsqueeze", [state_input_name(ETS_STATE), "ets_axis0"], ["ets_h0"])
    node("RNN", [tbg, "ets_W", "ets_R", "ets_B", "", h0], ["ets_Y", "ets_h"], name="ets",
         hidden_size=size, activations=["Affine"], activation_alpha=[1.0], activation_beta=[0.0])
    node("Squeeze", ["ets_h", "ets_axis0"], [state_output_name(ETS_STATE)])
    seq = node("Squeeze", ["ets_Y", "axis1"], ["ets_seq"])
    fc = node("Add", [node("MatMul", [seq, "ets_w"], ["ets_mm"]), "ets_c"], ["ets_tbt"])
    return node("Transpose", [fc], ["ets_ref"], perm=[1, 0, 2])


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
    if cfg.target_mode == "ets":  # the ETS recurrence, in ONNX's RNN layout
        out["ets_W"] = sd["ets_input"][None]  # [1, S, Tg]
        out["ets_R"] = sd["ets_recurrent"][None]  # [1, S, S]
        out["ets_B"] = np.concatenate([sd["ets_bias"], np.zeros_like(sd["ets_bias"])])[None]
        out["ets_w"] = sd["ets_output"]  # [S, Tg]
        out["ets_c"] = sd["ets_output_bias"]  # [Tg]
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
    if native or cfg.target_mode == "ets":  # the native ops' and the ETS RNN's Squeeze
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    nodes: list[onnx.NodeProto] = []
    seen = INPUT_NAME
    if cfg.input_mode == "delta":
        seen = delta_input_nodes(nodes, inits, INPUT_NAME, cfg.n_features, time_axis=True)
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
    if cfg.target_mode != "level":
        nodes.append(helper.make_node("Transpose", ["head_tbt"], ["head_btt"], perm=[1, 0, 2]))
        last = _residual_source(cfg, nodes, inits)
        if cfg.target_mode == "seasonal":
            last = seasonal_nodes(nodes, inits, last, cfg)
        elif cfg.target_mode == "ets":
            last = ets_nodes(nodes, inits, last, cfg.n_targets * (cfg.season + 2))
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
