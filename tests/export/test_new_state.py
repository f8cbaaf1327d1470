"""A new state, added through the cell registry alone, by a test-only cell.

``memgru`` is the minimal GRU with a second, slower state ``m`` (a running mean of ``h`` that
feeds the candidate): per layer, with the gate pre-activations ``g`` of ``[x, h]``::

    z = sigmoid(g[:, :H]);  n = tanh(g[:, H:] + m);  h' = h + z * (n - h);  m' = m + (h' - m) / 2

It exists only here: one entry in each stage's table (``spec.CELLS``, ``train.cells.
TORCH_CELLS``, ``export.cells.EXPORT_CELLS``), registered for the test's duration. Nothing else
names ``m``: the graphs get ``m_in``/``m_out`` from the spec, the parity proof draws it non-zero,
the runtime streams it like ``h``. (``runtime.contract.CELL_STATES`` is the contract's copy of
the spec's cell states, taken at import; a cell registered in the source is in it, one
registered by a test must be added to it too.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from export_helpers import assert_streams_like, make_model
from torch import Tensor, nn

from rnnstream.export import cells as export_cells
from rnnstream.export import export_model
from rnnstream.export.verify import InputSpec, random_states
from rnnstream.runtime import contract, spec
from rnnstream.train import cells as train_cells

ATOL = 1e-5


class MemGRU(nn.Module):
    """The torch side of ``memgru`` (module doc), with nn.RNN's calling convention."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, batch_first: bool = True) -> None:
        super().__init__()
        self.num_layers, bound = num_layers, 1.0 / math.sqrt(hidden_size)
        for k in range(num_layers):
            shapes = ((2 * hidden_size, input_size if k == 0 else hidden_size),
                      (2 * hidden_size, hidden_size), (2 * hidden_size,), (2 * hidden_size,))
            for name, shape in zip(train_cells.weight_names(k, prefix=""), shapes, strict=True):
                self.register_parameter(name, nn.Parameter(
                    torch.empty(shape).uniform_(-bound, bound)))

    def forward(self, z: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        seq, hs, ms = z, [], []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (self.get_parameter(n)
                                      for n in train_cells.weight_names(k, prefix=""))
            pushed, h, m, steps = seq @ w_ih.T + b_ih, state[0][k], state[1][k], []
            for t in range(seq.shape[1]):
                gz, gn = (pushed[:, t] + h @ w_hh.T + b_hh).chunk(2, dim=-1)
                h = h + torch.sigmoid(gz) * (torch.tanh(gn + m) - h)
                m = m + 0.5 * (h - m)
                steps.append(h)
            seq = torch.stack(steps, dim=1)
            hs.append(h)
            ms.append(m)
        return seq, (torch.stack(hs), torch.stack(ms))


def memgru_step(b, p: str, g: str, states: tuple[str, ...], hh: int) -> tuple[str, ...]:
    """The export side of ``memgru``: its step equations (module doc)."""
    h, m = states
    b.split(g, [hh, hh], 1, [p + "g_z", p + "g_n"])
    b.op("Sigmoid", [p + "g_z"], p + "z")
    b.op("Tanh", [b.op("Add", [p + "g_n", m], p + "gm")[0]], p + "n")
    b.op("Mul", [p + "z", b.op("Sub", [p + "n", h], p + "nmh")[0]], p + "zd")
    new_h = b.op("Add", [h, p + "zd"], p + "h")[0]
    half = b.const(p + "half", np.array(0.5, np.float32))
    b.op("Mul", [half, b.op("Sub", [new_h, m], p + "hmm")[0]], p + "dm")
    return new_h, b.op("Add", [m, p + "dm"], p + "m")[0]


@pytest.fixture
def memgru(monkeypatch):
    """Register the cell in each stage's table for one test."""
    cell = spec.CellSpec("memgru", None, ("h", "m"), gates=2, gate_order=(0, 1), step_columns=2)
    monkeypatch.setitem(spec.CELLS, "memgru", cell)
    monkeypatch.setitem(train_cells.TORCH_CELLS, "memgru", MemGRU)
    monkeypatch.setitem(export_cells.EXPORT_CELLS, "memgru", export_cells.ExportCell(memgru_step))
    monkeypatch.setitem(contract.CELL_STATES, "memgru", cell.states)


def test_a_new_state_goes_through_export_and_the_runtime(memgru, tmp_path):
    model = make_model("memgru", layers=2, ft=2, seed=3)
    assert model.config.state_names == ("h", "m")
    report = export_model(model, tmp_path / "model.onnx")  # derived bound, step graph too
    assert "m_out" in report.parity.cases["stream1000_batch3"]  # proven like h
    drawn = random_states(InputSpec.from_model(model), 3, np.random.default_rng(0))
    assert np.abs(drawn[1]).min() > 0  # from a non-zero m, as h
    assert [s.name for s in report.contract.states] == ["h", "m"]
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    with torch.no_grad():
        want, state = model(torch.from_numpy(x)[None])
    assert_streams_like(report.path, x, want.numpy(), ATOL)
    assert np.abs(state[1].numpy()).max() > 0.01  # m really moved
