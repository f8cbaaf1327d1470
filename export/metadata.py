"""The rnnstream contract of an exported model: built, fingerprinted, embedded and read back.

The contract itself (names, layout, JSON form) is defined once in
:mod:`rnnstream.runtime.contract`; this module only fills it in from a trained model and puts it
in the two places the runtime reads it from: ``metadata_props[METADATA_KEY]`` inside the ONNX file
and the ``<model>.onnx.json`` sidecar (same text, byte for byte).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import onnx

from rnnstream.runtime.contract import (
    METADATA_KEY,
    ModelContract,
)
from rnnstream.runtime.errors import ContractError
from rnnstream.runtime.integrity import fingerprint as _fingerprint
from rnnstream.runtime.integrity import initializers as _initializers

from .errors import ExportError
from .graph import pin_ir_version

__all__ = [
    "PRODUCER_NAME",
    "attach_metadata",
    "build_contract",
    "describe",
    "fingerprint",
    "load_contract",
    "read_metadata",
    "tool_versions",
]

PRODUCER_NAME = "rnnstream"


def fingerprint(graph: onnx.ModelProto, contract: ModelContract) -> str:
    """``sha256:<hex>`` over the weights (sorted initializers) and the state layout.

    A state snapshot carries this value, so it is never restored into a different model: any
    change of a weight, of a weight's dtype or shape, or of the state layout changes it. Metadata
    is not part of it (re-exporting the same weights with new metrics keeps the fingerprint).
    The algorithm lives in the runtime (:mod:`rnnstream.runtime._integrity`), which recomputes it
    from the file's bytes at load; computing it from the same serialized bytes here means the
    two can never disagree on how a tensor is laid out.
    """
    return _fingerprint(_initializers(graph.SerializeToString()), contract.states)


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def tool_versions(opset: int) -> dict[str, str]:
    """Versions of everything that shaped the file (all strings, as the contract wants)."""
    import onnxruntime
    import torch

    return {
        "rnnstream": _package_version("rnnstream"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": str(opset),
    }


def json_safe(value: Any, where: str) -> Any:
    """Plain JSON values (numpy scalars/arrays converted); NaN/inf refused with a clear error."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(list(value))]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ExportError(f"{where} is {value}; metadata must be finite numbers "
                          "(drop or fix that value before exporting)")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ExportError(f"{where} has type {type(value).__name__}, which JSON cannot hold; "
                      "pass plain numbers, strings, lists or dicts")


def build_contract(
    model,
    *,
    metrics: Mapping[str, Any] | None = None,
    parity: Mapping[str, Any] | None = None,
    versions: Mapping[str, str] | None = None,
    quantized: bool = False,
) -> ModelContract:
    """The contract of ``model`` (fingerprint left empty: it needs the final graph)."""
    cfg = model.config
    contract = ModelContract(
        cell=cfg.cell,
        layers=cfg.layers,
        hidden=cfg.hidden,
        features=list(cfg.feature_names),
        targets=list(cfg.target_names),
        horizon=cfg.horizon,
        target_mode=cfg.target_mode,
        input_mode=cfg.input_mode,
        season=cfg.season,
        normalization=json_safe(model.normalization(), "normalization"),
        metrics=json_safe(dict(metrics or {}), "metrics"),
        parity=json_safe(dict(parity or {}), "parity"),
        versions=dict(versions or {}),
        quantized=quantized,
    )
    _adopt_facts(contract)
    return contract


def _adopt_facts(contract: ModelContract) -> None:
    """The trained season and the calibration moved from ``metrics`` into their typed
    contract fields (ExportError when malformed)."""
    try:
        contract.adopt_metrics_facts("export")
    except ContractError as exc:
        raise ExportError(f"{exc}") from exc


def describe(contract: ModelContract) -> str:
    """A short human description for the ONNX ``doc_string``."""
    states = ", ".join(f"{s.input}->{s.output} {list(s.shape)}" for s in contract.states)
    kind = "int8-quantised " if contract.quantized else ""
    return (
        f"rnnstream {kind}{contract.cell.upper()} forecaster: {contract.layers} layer(s) x "
        f"{contract.hidden} hidden; {', '.join(contract.features)} -> "
        f"{', '.join(contract.targets)} ({contract.target_mode}, horizon {contract.horizon}). "
        f"Feed x [batch, time, {contract.n_features}] in raw units with the state ({states}); "
        "start from zeros, pass each *_out back as the matching *_in on the next call. "
        + _other_outputs(contract)
        + f"Full contract: metadata key {METADATA_KEY!r} or the .onnx.json sidecar."
    )


def _other_outputs(contract: ModelContract) -> str:
    """The outputs beyond the prediction and the states by name and role ('' when none, so
    that other models keep their exact doc string)."""
    other = [f"{name} ({role}) [batch, time, {width}]"
             for name, role, width in contract.extra_outputs]
    return f"Other outputs: {', '.join(other)}. " if other else ""


def attach_metadata(graph: onnx.ModelProto, contract: ModelContract) -> str:
    """Embed the contract JSON and fill producer/version/doc fields; returns the JSON text.

    The trained season and the calibration, where a trainer or caller put them in ``metrics``,
    are moved into their typed contract fields first (checked: ExportError when malformed).
    """
    _adopt_facts(contract)
    text = contract.to_json()
    del graph.metadata_props[:]
    onnx.helper.set_model_props(graph, {METADATA_KEY: text})
    graph.producer_name = PRODUCER_NAME
    graph.producer_version = contract.versions.get("rnnstream", "unknown")
    graph.model_version = contract.schema_version
    graph.doc_string = describe(contract)
    pin_ir_version(graph)  # whichever path built it (native, torchscript, quantized)
    return text


def read_metadata(source: str | onnx.ModelProto) -> str:
    """The contract JSON embedded in an ONNX file (path) or model; ContractError if absent."""
    graph = source if isinstance(source, onnx.ModelProto) else onnx.load(source)
    props = {p.key: p.value for p in graph.metadata_props}
    if METADATA_KEY not in props:
        raise ContractError(
            f"{source if isinstance(source, str) else 'model'}: no {METADATA_KEY!r} metadata; "
            "was it exported by rnnstream? Re-export with `rnnstream export CHECKPOINT`."
        )
    return props[METADATA_KEY]


def load_contract(source: str | onnx.ModelProto) -> ModelContract:
    """The validated contract of an exported model."""
    name = source if isinstance(source, str) else "model"
    return ModelContract.from_json(read_metadata(source), source=name)
