"""``export_model``: build the graph, check it, prove it equal to torch, then write it atomically.

Order (nothing touches the destination until every check has passed)::

    build (EXPORTERS[exporter]) -> check_graph -> verify_parity (onnxruntime vs torch float64)
      -> [quantize_graph -> check_graph -> quantized_parity]
      -> [build_step_graph -> check_step_graph -> verify_step_parity]  (float exports only)
      -> contract (+ step_model: file name and SHA-256) + fingerprint
      -> embed metadata, read it back
      -> write step graph, model, sidecar (all temp files first, then fsync + replace in order)

The step graph (``model.step.onnx``, see :mod:`rnnstream.export.step_graph`) is the runtime's
faster path for streaming steps. Quantized exports get none: the int8 model's accuracy is its
own (quantized parity), and a float step graph beside it would compute a different function.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rnnstream.runtime import spec
from rnnstream.runtime.atomic import write_files
from rnnstream.runtime.contract import ModelContract, sidecar_path

from .cells import sequence_op
from .errors import ExportError, GraphError
from .graph import DEFAULT_OPSET, build_graph, pin_ir_version
from .metadata import (
    PRODUCER_NAME,
    attach_metadata,
    build_contract,
    fingerprint,
    load_contract,
    tool_versions,
)
from .quantize import quantize_graph, quantized_parity, refuse_unsupported
from .step_graph import build_step_graph, step_path
from .verify import DEFAULT_ATOL, DEFAULT_CASES, ParityReport, verify_parity, verify_step_parity

__all__ = ["EXPORTERS", "ExportReport", "check_graph", "check_step_graph", "check_valid",
           "export_checkpoint", "export_model"]


def _torchscript(model, opset: int) -> onnx.ModelProto:
    from .torchscript import build_graph_torchscript  # imports torch.onnx only when chosen

    return build_graph_torchscript(model, opset)


# The one place the graph builder is chosen. "native" is the default; see torchscript.py for
# why torch's own exporter is kept only as a cross-check.
EXPORTERS: dict[str, Callable[[Any, int], onnx.ModelProto]] = {
    "native": build_graph,
    "torchscript": _torchscript,
}


@dataclass
class ExportReport:
    """What ``export_model`` wrote and the figures that prove it."""

    path: Path
    sidecar: Path
    contract: ModelContract
    parity: ParityReport
    quantized_parity: ParityReport | None = None
    seconds: float = 0.0
    nodes: dict[str, int] = field(default_factory=dict)  # op type -> count
    step_path: Path | None = None  # the single-step graph, when one was written
    step_parity: dict[str, ParityReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how a user's module was understood

    def summary(self) -> str:
        lines = [*self.notes, self.parity.summary()]
        if self.quantized_parity is not None:
            lines.append(self.quantized_parity.summary())
        lines.extend(r.summary() for r in self.step_parity.values())
        return "\n".join(lines)


# -- checks ---------------------------------------------------------------------------------
def check_graph(graph: onnx.ModelProto, model) -> None:
    """ONNX validity plus the structure the contract promises; GraphError otherwise."""
    check_valid(graph, "ONNX graph")
    _check_io(graph, model)
    _check_recurrent_nodes(graph, model.config)
    _check_self_contained(graph)


def check_step_graph(graph: onnx.ModelProto, model) -> None:
    """ONNX validity and the contract's names for the single-step graph; GraphError otherwise."""
    check_valid(graph, "step graph")
    _check_io(graph, model)
    _check_self_contained(graph)


def check_valid(graph: onnx.ModelProto, what: str) -> None:
    """onnx.checker (full check) and strict shape inference."""
    try:
        onnx.checker.check_model(graph, full_check=True)
        onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GraphError(f"the built {what} is invalid: {exc}") from exc


def _check_io(graph: onnx.ModelProto, model) -> None:
    cfg = model.config
    ins, outs = spec.graph_io(cfg.cell, layers=cfg.layers, hidden=cfg.hidden,
                              n_features=cfg.n_features, n_targets=cfg.n_targets,
                              input_mode=cfg.input_mode, target_mode=cfg.target_mode,
                              season=cfg.season)
    want_in, want_out = [t.name for t in ins], [t.name for t in outs]
    got_in = [v.name for v in graph.graph.input]
    got_out = [v.name for v in graph.graph.output]
    if got_in != want_in or got_out != want_out:
        raise GraphError(
            f"graph inputs {got_in} / outputs {got_out} differ from the contract's "
            f"{want_in} / {want_out}; the graph builder must use rnnstream.runtime.contract names"
        )


def _check_recurrent_nodes(graph: onnx.ModelProto, cfg) -> None:
    cell = spec.CELLS[cfg.cell]
    op = sequence_op(cfg.cell)  # the native op, or Scan for a cell without one
    nodes = [n for n in graph.graph.node if n.op_type in {op, cell.int8_op or ""}
             and n.name not in cfg.state_names]  # a mode's own node is named after its state
    if len(nodes) != cfg.layers:
        raise GraphError(
            f"expected {cfg.layers} {'native ' if cell.onnx_op else ''}{op} node(s) (one per "
            f"layer), found {len(nodes)}; the graph builder did not emit the cell's "
            "recurrent node"
        )
    if cell.linear_before_reset:
        for node in nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("linear_before_reset", 0) != 1:
                raise GraphError(
                    f"GRU node {node.name!r} lacks linear_before_reset=1; torch's GRU applies "
                    "the reset gate after the recurrent matmul, so the graph would compute a "
                    "different function"
                )


def _check_self_contained(graph: onnx.ModelProto) -> None:
    external = [t.name for t in graph.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise GraphError(f"initializers {external} use external data; the model must be one file")


# -- writing --------------------------------------------------------------------------------
def write_atomically(files: Mapping[Path, bytes]) -> None:
    """Write every file to a temp file in its folder, fsync, then replace them in order.

    If anything fails before the replaces, the temp files are removed and nothing changed
    (one implementation for every stage: :mod:`rnnstream.runtime._atomic`).
    """
    write_files(files)


# -- orchestration --------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _validate_args(model, path: Path, exporter: str, atol: float | None) -> None:
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r} is not one of {sorted(EXPORTERS)}")
    if atol is not None and not atol > 0:
        raise ExportError(f"atol={atol!r}: expected None (the bound derived from float64) or a "
                          "positive tolerance such as 1e-5")
    if not path.parent.is_dir():
        raise ExportError(f"{path.parent} does not exist; create the folder first")
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file name such as {path / 'model.onnx'}")
    if not hasattr(model, "config") or model.config.cell not in spec.CELLS:
        raise ExportError("model must be an rnnstream.train.Forecaster")
    if exporter != "native" and spec.CELLS[model.config.cell].onnx_op is None:
        raise ExportError(f"exporter {exporter!r} emits native recurrent ops, and ONNX has none "
                          f"for cell {model.config.cell!r}; use exporter='native' (a Scan of "
                          "the cell's step equations)")


def export_model(
    model,
    path: str | os.PathLike,
    *,
    metrics: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
    exporter: str = "native",
    atol: float | None = DEFAULT_ATOL,
    seed: int = 0,
    step_graph: bool = True,
    sample: np.ndarray | None = None,
    reference=None,
) -> ExportReport:
    """Export ``model`` to ``path`` (+ ``path.json``) after proving parity with torch.

    Parity (see :mod:`rnnstream.export.verify`): with ``atol=None`` onnxruntime is held to a
    bound derived from torch float32's own error against a float64 run of the same model;
    a number restores the absolute ``max |onnxruntime - torch| <= atol``. ``sample``: raw inputs
    of the real series, ``[time, n_features]`` (time >= 50), used for the parity inputs instead
    of random values at the model's scale (e.g. ``series.x``).

    Unless ``quantize`` or ``step_graph=False``, also writes the single-step graph as
    ``<stem>.step.onnx`` (model.onnx -> model.step.onnx), proven equal to the sequence graph and
    to torch, and names it with its SHA-256 in the contract's ``step_model``.

    ``reference``: the torch module the files must equal when ``model`` was rebuilt from it
    (:func:`rnnstream.export.export_module`): every parity proof then runs it in float64 as the
    truth; it has the Forecaster's calling convention ``forward(x, states) -> (y, states)``.

    Raises :class:`ParityError`, :class:`GraphError`, :class:`QuantizationError` or
    :class:`ExportError`; when it raises, nothing has been written.
    """
    start = time.perf_counter()
    path = Path(path)
    _validate_args(model, path, exporter, atol)
    if quantize:
        refuse_unsupported(model.config.cell, model.config.head_hidden)
    with eval_mode(model):
        graph = EXPORTERS[exporter](model, opset)
        check_graph(graph, model)
        parity = verify_parity(model, graph, atol=atol, seed=seed, sample=sample,
                               reference=reference)
        qparity = None
        if quantize:
            graph = quantize_graph(graph, model)
            check_graph(graph, model)
            qparity = quantized_parity(model, graph, seed=seed, sample=sample)
        step_bytes: bytes | None = None
        sparity: dict[str, ParityReport] = {}
        if step_graph and not quantize:
            step_bytes, sparity = _step_graph(model, graph, path, opset, atol, seed, sample,
                                              reference)
    contract = _final_contract(model, graph, metrics, parity, qparity, exporter, opset, sparity)
    files: dict[Path, bytes] = {}
    spath = None
    if step_bytes is not None:
        spath = Path(step_path(str(path)))
        contract.step_model = {"file": spath.name,
                               "sha256": hashlib.sha256(step_bytes).hexdigest()}
        files[spath] = step_bytes  # first: the model never names a file not yet in place
    text = attach_metadata(graph, contract)
    if load_contract(graph) != contract:
        raise ExportError("the contract read back from the graph differs from the one written")
    files[path] = graph.SerializeToString()
    files[Path(sidecar_path(str(path)))] = text.encode()
    write_atomically(files)
    nodes: dict[str, int] = {}
    for node in graph.graph.node:
        nodes[node.op_type] = nodes.get(node.op_type, 0) + 1
    return ExportReport(path, Path(sidecar_path(str(path))), contract, parity, qparity,
                        time.perf_counter() - start, nodes, spath, sparity)


def _step_graph(model, graph, path: Path, opset: int, atol: float | None, seed: int,
                sample, reference=None) -> tuple[bytes, dict[str, ParityReport]]:
    """Build, check and prove the single-step graph; its serialised bytes and parity reports."""
    # the sequence graph's rule (lowest IR for the opset), so every runtime that loads one
    # loads the other: onnxruntime-node/-web 1.30 refuse the IR 14 onnx stamps by default
    step = pin_ir_version(build_step_graph(model, opset))
    check_step_graph(step, model)
    reports = verify_step_parity(model, graph, step, atol=atol, seed=seed, sample=sample,
                                 reference=reference)
    step.producer_name = PRODUCER_NAME
    step.doc_string = (f"rnnstream single-step companion of {path.name} (time fixed to 1); its "
                       f"contract, with this file's SHA-256, is in {path.name}.")
    return step.SerializeToString(), reports


def _final_contract(model, graph, metrics, parity, qparity, exporter, opset,
                    sparity) -> ModelContract:
    figures = {**parity.to_dict(), "exporter": exporter}
    if qparity is not None:
        figures["quantized"] = qparity.to_dict()
    if sparity:
        figures["step_graph"] = {key: r.to_dict() for key, r in sparity.items()}
    contract = build_contract(model, metrics=metrics, parity=figures,
                              versions=tool_versions(opset), quantized=qparity is not None)
    contract.fingerprint = fingerprint(graph, contract)
    return contract


def export_checkpoint(
    checkpoint_path: str | os.PathLike[str], out_path: str | os.PathLike[str], **kwargs: Any
) -> ExportReport:
    """Load a training checkpoint and :func:`export_model` it with its stored metrics; parity is
    proven on the training inputs the checkpoint keeps (``sample``) unless one is given."""
    from rnnstream.train.checkpoint import load_checkpoint

    model, info = load_checkpoint(os.fspath(checkpoint_path))
    kwargs.setdefault("metrics", info.get("metrics") or {})
    stored = info.get("sample")
    longest = max(c.time for c in DEFAULT_CASES)
    if kwargs.get("sample") is None and stored is not None and len(stored) >= longest:
        kwargs["sample"] = stored
    return export_model(model, out_path, **kwargs)
