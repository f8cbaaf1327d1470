"""rnnstream.export: ONNX export with explicit state, proven equal to torch before it is written.

Public API::

    report = export_model(model, "model.onnx", metrics={...})   # also writes model.onnx.json
    print(report.summary())   # parity ... max |diff| = 1.3e-07 (... 15% of the bound) ... ok
    report = export_checkpoint("runs/x/model.pt", "runs/x/model.onnx", quantize=True)
    contract = load_contract("model.onnx")      # rnnstream.runtime.contract.ModelContract
    text = read_metadata("model.onnx")          # the embedded contract JSON

    report = export_module(my_module, "model.onnx", sample=series)  # forward(x, h) -> (y, h)
    report = export_darts(darts_model, "model.onnx", scaler=scaler)  # a trained darts RNNModel

    report = wrap_onnx("lstm.onnx", "model.onnx", state_map={"h0": "hn", "c0": "cn"})  # foreign

Errors (nothing is written when any is raised): ExportError > GraphError, ParityError,
QuantizationError. Needs the 'train' extra (torch, onnx).
"""

from __future__ import annotations

from .darts import export_darts  # imports darts (and torch) only when called
from .errors import ExportError, GraphError, ParityError, ParityFailure, QuantizationError
from .exporter import EXPORTERS, ExportReport, check_graph, export_checkpoint, export_model
from .graph import DEFAULT_OPSET, build_graph
from .metadata import fingerprint, load_contract, read_metadata
from .module import export_module
from .verify import DEFAULT_ATOL, ParityReport, verify_parity
from .wrap import WrapParityError, WrapReport, wrap_onnx

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "EXPORTERS",
    "ExportError",
    "ExportReport",
    "GraphError",
    "ParityError",
    "ParityFailure",
    "ParityReport",
    "QuantizationError",
    "WrapParityError",
    "WrapReport",
    "build_graph",
    "check_graph",
    "export_checkpoint",
    "export_darts",
    "export_model",
    "export_module",
    "fingerprint",
    "load_contract",
    "read_metadata",
    "verify_parity",
    "wrap_onnx",
]
