"""The export side of the cell registry: each cell's step equations and its sequence graph.

A cell is one entry in each stage's table, looked up by name (:data:`rnnstream.runtime.spec.
CELLS` for the runtime facts, :data:`rnnstream.train.cells.TORCH_CELLS` for the torch module,
:data:`EXPORT_CELLS` here). An entry here holds the cell's **step equations** -- one time step,
from the gate pre-activations ``g = [x, h] @ [Wt; Rt] + bias`` ``[B, columns]`` to the new
states -- and, when the Gemm columns differ from the ONNX gate blocks (GRU), how the weights
are laid out for that Gemm. Both graphs are derived from it:

* the single-step graph (:mod:`rnnstream.export.step_graph`) runs the equations once;
* the sequence graph (:mod:`rnnstream.export.graph`) runs the cell's native ONNX op where
  ``spec.CELLS[cell].onnx_op`` names one (:func:`native_layer`), and otherwise a ``Scan`` whose
  body is the same equations (:func:`scan_layer`): the input's part of every step is one MatMul
  before the loop, the body adds ``h @ Rt`` and applies the equations.

So a new cell with no native op is an entry in the spec, a torch module in
:mod:`rnnstream.train.cells` and a step function here. What the Scan costs (measured once,
hidden 32, batch 1, one thread, on a loaded 2-core machine, same run; a one-off, not a
benchmark): a 1,000-step sequence 8.4 ms for ``mingru``'s Scan against 0.42 ms for the native
GRU op (about 8 us of overhead per iteration), while their step graphs take 11.0 and 12.2 us a
step. Streaming runs the step graph; the Scan is paid where a sequence is primed or replayed.

Step equations, ``G`` gate blocks in ONNX gate order, ``x`` [B,in], ``h``/``c`` [B,H]::

    rnn:    h' = tanh(g)
    lstm:   (i, o, f) = sigmoid(g[:, :3H]); u = tanh(g[:, 3H:]); c' = f * c + i * u;
            h' = o * tanh(c')
    gru:    g has 4H columns [z r | x part of n | h part of n, with its own bias]
            (torch's linear_before_reset): (z, r) = sigmoid(g[:, :2H]);
            n = tanh(g_xn + r * g_hn); h' = n + z * (h - n)
    mingru: z = sigmoid(g[:, :H]); n = tanh(g[:, H:]); h' = h + z * (n - h)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnstream.runtime import spec

__all__ = ["EXPORT_CELLS", "Builder", "ExportCell", "native_layer", "scan_layer",
           "sequence_op", "step_weights"]


class Builder:
    """Collects nodes and initializers; ``op`` returns the output name(s) of a new node."""

    def __init__(self, nodes: list[onnx.NodeProto] | None = None,
                 inits: list[onnx.TensorProto] | None = None) -> None:
        self.nodes: list[onnx.NodeProto] = [] if nodes is None else nodes
        self.inits: list[onnx.TensorProto] = [] if inits is None else inits

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: list[str] | str, **attrs) -> list[str]:
        outs = [outputs] if isinstance(outputs, str) else outputs
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def split(self, src: str, sizes: list[int], axis: int, outs: list[str]) -> list[str]:
        """One Slice per part: onnxruntime-web's WebGL backend has Split only up to opset 12
        (it refuses ours), and Slices were no slower on the CPU (measured: LSTM h32 Predictor.step
        9.1 us vs 12.8 us with Split, within noise at batch 1,024)."""
        ax = self.const(f"{src}_axis", np.array([axis], np.int64))
        start = 0
        for out, size in zip(outs, sizes, strict=True):
            begin = self.const(f"{out}_begin", np.array([start], np.int64))
            end = self.const(f"{out}_end", np.array([start + size], np.int64))
            self.op("Slice", [src, begin, end, ax], out)
            start += size
        return outs


# (builder, name prefix, g [B, columns], the cell's states [B, H] in spec order, hidden)
# -> the new states, same order
StepFn = Callable[[Builder, str, str, tuple[str, ...], int], tuple[str, ...]]
# (wt [in, G*H], rt [H, G*H], input bias, recurrent bias, hidden) -> the Gemm's
# (wt [in, columns], rt [H, columns], bias [columns]), float64
WeightsFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int],
                     tuple[np.ndarray, np.ndarray, np.ndarray]]


def summed_bias(wt, rt, wb, rb, hidden):
    """The usual layout: the gate blocks as they are, both biases summed in float64."""
    return wt, rt, wb + rb


@dataclass(frozen=True)
class ExportCell:
    """What the graph builders need of one cell (module doc)."""

    step: StepFn
    weights: WeightsFn = summed_bias  # the step Gemm's column layout (GRU's differs)


def _rnn_step(b: Builder, p: str, g: str, states: tuple[str, ...], hh: int) -> tuple[str, ...]:
    return (b.op("Tanh", [g], p + "h")[0],)


def _lstm_step(b: Builder, p: str, g: str, states: tuple[str, ...], hh: int
               ) -> tuple[str, ...]:
    c = states[1]
    b.split(g, [3 * hh, hh], 1, [p + "g_iof", p + "g_u"])
    b.op("Sigmoid", [p + "g_iof"], p + "iof")
    b.split(p + "iof", [hh, hh, hh], 1, [p + "i", p + "o", p + "f"])
    b.op("Tanh", [p + "g_u"], p + "u")
    b.op("Mul", [p + "f", c], p + "fc")
    b.op("Mul", [p + "i", p + "u"], p + "iu")
    b.op("Add", [p + "fc", p + "iu"], p + "c")
    b.op("Tanh", [p + "c"], p + "tc")
    return b.op("Mul", [p + "o", p + "tc"], p + "h")[0], p + "c"


def _gru_weights(wt, rt, wb, rb, hh):
    """Columns [z r | n from x | n from h]: the n gate's recurrent part stays apart, because
    torch's GRU applies the reset gate after R·h + b_hn (ONNX linear_before_reset=1)."""
    zeros_x, zeros_h = np.zeros((wt.shape[0], hh)), np.zeros((hh, hh))
    wt = np.concatenate([wt, zeros_x], axis=1)
    rt = np.concatenate([rt[:, :2 * hh], zeros_h, rt[:, 2 * hh:]], axis=1)
    bias = np.concatenate([wb[:2 * hh] + rb[:2 * hh], wb[2 * hh:], rb[2 * hh:]])
    return wt, rt, bias


def _gru_step(b: Builder, p: str, g: str, states: tuple[str, ...], hh: int) -> tuple[str, ...]:
    h = states[0]
    b.split(g, [2 * hh, hh, hh], 1, [p + "g_zr", p + "gx_n", p + "gh_n"])
    b.op("Sigmoid", [p + "g_zr"], p + "zr")
    b.split(p + "zr", [hh, hh], 1, [p + "z", p + "r"])
    b.op("Mul", [p + "r", p + "gh_n"], p + "rn")
    b.op("Add", [p + "gx_n", p + "rn"], p + "a_n")
    b.op("Tanh", [p + "a_n"], p + "n")
    b.op("Sub", [h, p + "n"], p + "hmn")
    b.op("Mul", [p + "z", p + "hmn"], p + "zd")
    return (b.op("Add", [p + "n", p + "zd"], p + "h")[0],)


def _mingru_step(b: Builder, p: str, g: str, states: tuple[str, ...], hh: int
                 ) -> tuple[str, ...]:
    h = states[0]
    b.split(g, [hh, hh], 1, [p + "g_z", p + "g_n"])
    b.op("Sigmoid", [p + "g_z"], p + "z")
    b.op("Tanh", [p + "g_n"], p + "n")
    b.op("Sub", [p + "n", h], p + "nmh")
    b.op("Mul", [p + "z", p + "nmh"], p + "zd")
    return (b.op("Add", [h, p + "zd"], p + "h")[0],)


EXPORT_CELLS: dict[str, ExportCell] = {
    "rnn": ExportCell(_rnn_step),
    "lstm": ExportCell(_lstm_step),
    "gru": ExportCell(_gru_step, _gru_weights),
    "mingru": ExportCell(_mingru_step),
}
if set(EXPORT_CELLS) != set(spec.CELLS):  # pragma: no cover - a developer's mistake
    raise ImportError(f"export.cells.EXPORT_CELLS {sorted(EXPORT_CELLS)} != runtime.spec.CELLS "
                      f"{sorted(spec.CELLS)}")


def sequence_op(cell: str) -> str:
    """The op of one layer's node in the sequence graph: the native op, or ``Scan``."""
    return spec.CELLS[cell].onnx_op or "Scan"


def step_weights(cell: str, w: dict[str, np.ndarray], layer: int, hidden: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer ``layer``'s step Gemm weights from :func:`~rnnstream.export.graph.onnx_weights`
    (ONNX layout, float64): ``(wt [in, columns], rt [H, columns], bias [columns])``."""
    g = spec.CELLS[cell].gates
    wt = w[f"W{layer}"][0].T  # [in, G*H]
    rt = w[f"R{layer}"][0].T  # [H, G*H]
    wb, rb = w[f"B{layer}"][0, :g * hidden], w[f"B{layer}"][0, g * hidden:]
    return EXPORT_CELLS[cell].weights(wt, rt, wb, rb, hidden)


def native_layer(b: Builder, cfg, layer: int, seq: str, init: dict[str, str],
                 w: dict[str, np.ndarray]) -> tuple[str, dict[str, str]]:
    """One layer as the cell's native ONNX op over ``seq`` [T,B,in] (initializers ``W{layer}``,
    ``R{layer}``, ``B{layer}``; ``init``: each state's [1,B,H]); returns ([T,B,H], each state's
    final [1,B,H])."""
    cell = spec.CELLS[cfg.cell]
    states = cell.states
    inputs = [seq, f"W{layer}", f"R{layer}", f"B{layer}", "", *(init[s] for s in states)]
    outputs = [f"Y{layer}", *(f"{s}_final{layer}" for s in states)]
    attrs = {"hidden_size": cfg.hidden}
    if cell.linear_before_reset:
        attrs["linear_before_reset"] = 1  # torch's GRU applies the reset gate after R·h
    b.op(sequence_op(cfg.cell), inputs, outputs, name=f"{cfg.cell}{layer}", **attrs)
    b.op("Squeeze", [f"Y{layer}", "axis1"], f"seq{layer}")
    return f"seq{layer}", {s: f"{s}_final{layer}" for s in states}


def scan_layer(b: Builder, cfg, layer: int, seq: str, init: dict[str, str],
               w: dict[str, np.ndarray]) -> tuple[str, dict[str, str]]:
    """One layer as a ``Scan`` of the cell's step equations over ``seq`` [T,B,in]; same
    contract as :func:`native_layer`. The input's part of every step, ``seq @ Wt + bias``
    [T,B,columns], is one MatMul before the loop; the body computes ``g = xw_t + h @ Rt`` and
    the step equations (its constants are the outer graph's initializers)."""
    states, hh, p = spec.CELLS[cfg.cell].states, cfg.hidden, f"l{layer}_"
    wt, rt, bias = step_weights(cfg.cell, w, layer, hh)
    ax0 = b.const(p + "axis0", np.array([0], np.int64))
    xw = b.op("Add", [b.op("MatMul", [seq, b.const(p + "Wt", wt.astype(np.float32))],
                           p + "xw_mm")[0], b.const(p + "b", bias.astype(np.float32))],
              p + "xw")[0]
    b.const(p + "Rt", rt.astype(np.float32))
    body = Builder(inits=b.inits)  # the body's constants live in the outer graph
    sp = p + "scan_"
    prev = tuple(sp + s + "_prev" for s in states)
    g = body.op("Add", [sp + "xw_t", body.op("MatMul", [prev[0], p + "Rt"], sp + "hr")[0]],
                sp + "g")[0]
    new = EXPORT_CELLS[cfg.cell].step(body, sp, g, prev, hh)
    body.op("Identity", [new[0]], sp + "y_t")

    def info(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

    graph = helper.make_graph(body.nodes, f"{cfg.cell}{layer}_step",
                              [info(n) for n in (*prev, sp + "xw_t")],
                              [info(n) for n in (*new, sp + "y_t")])
    starts = [b.op("Squeeze", [init[s], ax0], f"{p}{s}0")[0] for s in states]
    lasts = [f"{p}{s}_last" for s in states]
    b.op("Scan", [*starts, xw], [*lasts, f"seq{layer}"], name=f"{cfg.cell}{layer}",
         body=graph, num_scan_inputs=1)
    finals = {s: b.op("Unsqueeze", [last, ax0], f"{s}_final{layer}")[0]
              for s, last in zip(states, lasts, strict=True)}
    return f"seq{layer}", finals
