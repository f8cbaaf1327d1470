"""The training side of the cell registry: each cell's torch module, by cell name.

A cell is three entries, one per stage, each looked up by the cell's name:

* :data:`rnnstream.runtime.spec.CELLS` -- the runtime facts (states, gate blocks, ONNX op or
  none), which the runtime reads without torch or onnx;
* :data:`TORCH_CELLS` here -- the torch module the :class:`~rnnstream.train.Forecaster` runs;
* :data:`rnnstream.export.cells.EXPORT_CELLS` -- its sequence graph and its step equations.

Every cell module follows torch's ``nn.RNN`` calling convention, so the forecaster never
branches on the cell: ``module(input_size=, hidden_size=, num_layers=, dropout=,
batch_first=True)``; ``forward(z [B, T, F], state) -> (out [B, T, H], state)`` where the state
is one ``[L, B, H]`` tensor for a one-state cell and a tuple of them otherwise (as ``nn.LSTM``);
and per layer ``k`` the parameters ``weight_ih_l{k}`` ``[G*H, in]``, ``weight_hh_l{k}`` ``[G*H,
H]``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``[G*H]`` (``G`` gate blocks of ``H`` rows, in the
spec's torch gate order). :func:`weight_names` spells those names once for every stage that
reads the weights (graph building, int8 quantisation, the parity baselines).

A cell with no torch class is a module here; :class:`MinGRU` is one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rnnstream.runtime import spec

__all__ = ["TORCH_CELLS", "MinGRU", "WeightNames", "weight_names"]


class WeightNames(NamedTuple):
    """One recurrent layer's parameters: keys of ``Forecaster.state_dict()``."""

    w_ih: str
    w_hh: str
    b_ih: str
    b_hh: str


def weight_names(layer: int, prefix: str = "rnn.") -> WeightNames:
    """The names of layer ``layer``'s weights (``prefix``: the forecaster's recurrent module)."""
    return WeightNames(f"{prefix}weight_ih_l{layer}", f"{prefix}weight_hh_l{layer}",
                       f"{prefix}bias_ih_l{layer}", f"{prefix}bias_hh_l{layer}")


class MinGRU(nn.Module):
    """A minimal GRU: a GRU without its reset gate (two gate blocks instead of three).

    Per layer, ``x`` its input and ``h`` its state (``[B, in]``, ``[B, H]``)::

        z  = sigmoid(W_z x + b_iz + U_z h + b_hz)        gate block 0
        n  = tanh(W_n x + b_in + U_n h + b_hn)           gate block 1
        h' = (1 - z) * h + z * n,  computed as  h + z * (n - h)

    The update gate interpolates between the old state and the candidate, as in a GRU; with no
    reset gate the candidate always sees the whole state. ONNX has no op for it, so its sequence
    graph is a ``Scan`` over the same equations (:mod:`rnnstream.export.cells`). Initialised
    like torch's recurrent layers: every weight uniform in ``+-1/sqrt(H)``. The time loop is
    Python (the input's part is one matmul before it): forward and backward over 1,000 steps
    at hidden 32 took 5x nn.GRU's fused kernel (measured once, same run, loaded machine).
    """

    gates = 2

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, batch_first: bool = True) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError("MinGRU is batch-first only (batch_first=True)")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.dropout = num_layers, dropout
        g, bound = self.gates * hidden_size, 1.0 / math.sqrt(hidden_size)
        for k in range(num_layers):
            names = weight_names(k, prefix="")
            shapes = ((g, input_size if k == 0 else hidden_size), (g, hidden_size), (g,), (g,))
            for name, shape in zip(names, shapes, strict=True):
                self.register_parameter(name, nn.Parameter(
                    torch.empty(shape).uniform_(-bound, bound)))

    def forward(self, z: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        """z [B, T, in], h0 [L, B, H] -> (out [B, T, H] of the last layer, h_n [L, B, H])."""
        seq, finals = z, []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(self, n) for n in weight_names(k, prefix=""))
            if k > 0 and self.training and self.dropout:
                seq = nn.functional.dropout(seq, self.dropout)
            pushed = seq @ w_ih.T + b_ih  # [B, T, 2H]: the input's part of every step at once
            h, steps = h0[k], []
            for t in range(seq.shape[1]):
                g = pushed[:, t] + h @ w_hh.T + b_hh
                gz, gn = g.chunk(2, dim=-1)
                h = h + torch.sigmoid(gz) * (torch.tanh(gn) - h)
                steps.append(h)
            seq = torch.stack(steps, dim=1)
            finals.append(h)
        return seq, torch.stack(finals)


# The torch module of each cell in the one spec: same keys (checked at import), each a class
# (or factory) with nn.RNN's calling convention (module doc).
TORCH_CELLS: dict[str, Callable[..., nn.Module]] = {
    "rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU, "mingru": MinGRU,
}
if set(TORCH_CELLS) != set(spec.CELLS):  # pragma: no cover - a developer's mistake
    raise ImportError(f"train.cells.TORCH_CELLS {sorted(TORCH_CELLS)} != runtime.spec.CELLS "
                      f"{sorted(spec.CELLS)}")
