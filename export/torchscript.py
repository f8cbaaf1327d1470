"""Alternative graph builder: torch's own (TorchScript-based) ONNX exporter.

Used as a cross-check only -- tests prove that :func:`rnnstream.export.graph.build_graph` computes
what torch's exporter computes -- and selectable with ``export_model(..., exporter="torchscript")``.

Why it is not the default (measured with torch 2.13, hidden 32; run ``bench/export_compare.py``):

* it is the legacy exporter: deprecated, slated for removal, and loud (four kinds of warnings);
* it keeps normalisation as ``Sub``/``Div``/``Mul``/``Add`` nodes and wraps each recurrent op
  in ``Slice``/``Transpose``/``Squeeze``/``Constant`` nodes: 17 nodes for a one-layer LSTM against
  our 10, 38 against 16 for two layers (RNN/GRU: 15 vs 8, 27 vs 12) -- a graph that is harder to
  read, review and port. Speed is *not* a reason: onnxruntime folds the constants, and a
  streaming step (batch 1, time 1, one thread) costs the same within noise (e.g. LSTM 1 layer
  25 vs 27 µs, 2 layers 41 vs 37 µs);
* the dynamo exporter (torch's default) fixes the time axis to the example length and writes a
  side ``.data`` file, which breaks the one-file, any-length contract.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import Tensor, nn

from rnnstream.runtime.contract import (
    INPUT_NAME,
    OUTPUT_NAME,
    state_input_name,
    state_output_name,
)

__all__ = ["build_graph_torchscript"]

# The exact warnings torch 2.13 emits for this one call, and why each is harmless here:
_KNOWN_WARNINGS = (
    # we use the legacy exporter on purpose, as a cross-check (see module docstring)
    (DeprecationWarning, "You are using the legacy TorchScript-based ONNX export"),
    (DeprecationWarning, "The feature will be removed"),
    # nn.RNNBase checks its input shapes with Python ifs; the trace is shape-generic anyway
    # because the recurrent layer is exported as one native op (proven by the parity tests)
    (torch.jit.TracerWarning, "Converting a tensor to a Python boolean"),
    # the warning's own advice -- "define the initial states as inputs" -- is what we do
    (UserWarning, "Exporting a model to ONNX with a batch_size other than 1"),
)


class _FlatForecaster(nn.Module):
    """Positional tensors in and out, so that every state gets its own graph input/output.

    States are batch-first ``[B, L, H]`` like the rnnstream contract; the Forecaster transposes
    them to torch's ``[L, B, H]`` inside, so the transposes land inside the exported graph.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        y, next_state = self.model(x, tuple(states))
        return (y, *next_state)


def build_graph_torchscript(model, opset: int = 17) -> onnx.ModelProto:
    """The ONNX model of ``model.forward`` as torch's TorchScript exporter writes it."""
    cfg = model.config
    names = cfg.state_names
    x = torch.zeros(2, 3, cfg.n_features)
    states = tuple(model.initial_state(2))
    inputs = [INPUT_NAME, *(state_input_name(s) for s in names)]
    outputs = [OUTPUT_NAME, *(state_output_name(s) for s in names)]
    axes = {n: {0: "batch", 1: "time"} for n in (INPUT_NAME, OUTPUT_NAME)}
    axes.update({n: {0: "batch"} for n in inputs[1:] + outputs[1:]})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        for category, message in _KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", category=category, message=message)
        torch.onnx.export(
            # a file object is accepted (torch.onnx.utils), though the stubs say a path only
            _FlatForecaster(model).eval(), (x, *states), buffer,  # type: ignore[arg-type]
            dynamo=False,
            input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=opset,
        )
    return onnx.load_from_string(buffer.getvalue())
