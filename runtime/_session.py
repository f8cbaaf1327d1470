"""Open an ONNX file, read and check its contract, and describe its streaming I/O.

Everything here runs once per model; nothing here runs per step. The result is a
:class:`LoadedModel`: one onnxruntime session plus a :class:`ModelIO` saying which input takes
the data point, which output is the prediction, and which outputs feed which inputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from ._generic import BatchAxis, generic_io
from ._io import ORT_ERRORS, ModelIO, OutputBinding, StateBinding, declared_shape
from .contract import METADATA_KEY, ModelContract
from .errors import ContractError, ModelLoadError, UnsupportedError
from .integrity import WireError, initializers
from .integrity import fingerprint as weights_fingerprint
from .spec import STATE_ROLE


def _logger():  # logging is imported on first use: `import rnnstream.runtime` stays light
    import logging

    return logging.getLogger("rnnstream.runtime")

def default_session_options() -> ort.SessionOptions:
    """Options chosen for single-step latency: one thread, sequential, full graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


@dataclass
class LoadedModel:
    path: str
    session: ort.InferenceSession
    io: ModelIO
    contract: ModelContract | None
    fingerprint: str
    note: str  # one line saying how the state pairs were found

    @property
    def generic(self) -> bool:
        return self.contract is None


def load_model(
    path: str | os.PathLike[str],
    *,
    session_options: ort.SessionOptions | None = None,
    providers: Sequence[Any] | None = None,
    state_map: Mapping[str, str] | None = None,
    fixed_inputs: Mapping[str, Any] | None = None,
    batch_axis: BatchAxis = None,
) -> LoadedModel:
    """Open ``path``; every problem becomes a :class:`ModelLoadError` naming the file."""
    path = os.fspath(path)
    _check_file(path)
    session = open_session(path, session_options, providers)
    try:
        return _describe(path, session, state_map, fixed_inputs, batch_axis)
    except UnicodeDecodeError as exc:  # onnxruntime decodes a name or a dim_param on access
        raise ModelLoadError(f"{path}: a name or shape in the graph is not valid UTF-8 ({exc}); "
                             "the file is damaged: re-export or re-copy it") from exc


def _describe(path: str, session: ort.InferenceSession, state_map: Mapping[str, str] | None,
              fixed_inputs: Mapping[str, Any] | None, batch_axis: BatchAxis) -> LoadedModel:
    meta = read_metadata(session, path)
    if METADATA_KEY in meta:
        if state_map or fixed_inputs or batch_axis is not None:
            raise UnsupportedError(
                f"{path}: has an rnnstream contract, which fixes its state pairs and axes; "
                "state_map, fixed_inputs and batch_axis are only for models rnnstream did not "
                "export"
            )
        contract = ModelContract.from_json(meta[METADATA_KEY], source=path)
        io = contract_io(contract, session, path)
        note = "rnnstream contract: " + ", ".join(f"{s.input}->{s.output}" for s in io.states)
        if contract.fingerprint:
            verify_weights(path, contract)
        fingerprint = contract.fingerprint or file_fingerprint(path)
        return LoadedModel(path, session, io, contract, fingerprint, note)
    io, note = generic_io(session, path, state_map, fixed_inputs, batch_axis)
    _logger().info("%s", note)
    return LoadedModel(path, session, io, None, file_fingerprint(path), note)


def contract_missing(path: str | os.PathLike[str]) -> bool:
    """True when onnxruntime opens ``path`` and it carries no rnnstream contract (a foreign
    model: the CLI then says how to give it one); False for a contract or a file that does not
    load (its own error says why)."""
    try:
        session = open_session(os.fspath(path), None, None)
        return METADATA_KEY not in read_metadata(session, os.fspath(path))
    except ModelLoadError:
        return False


def read_metadata(session: ort.InferenceSession, path: str) -> dict[str, str]:
    """The model's metadata_props. onnxruntime hands them to Python as str, so bytes that are not
    UTF-8 (a damaged file) raise UnicodeDecodeError there: refuse the file, typed."""
    try:
        return dict(session.get_modelmeta().custom_metadata_map)
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path}: the model's metadata is not valid UTF-8 ({exc}); the file "
                            "is damaged: re-export or re-copy it") from exc


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"{path}: the file is empty, not an ONNX model")


def open_session(
    path: str, session_options: ort.SessionOptions | None, providers: Sequence[Any] | None
) -> ort.InferenceSession:
    options = session_options if session_options is not None else default_session_options()
    try:
        return ort.InferenceSession(
            path, sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
        )
    except ORT_ERRORS as exc:
        raise ModelLoadError(f"{path}: {_explain_ort_error(str(exc))}") from exc
    except UnicodeDecodeError as exc:  # onnxruntime's message quoted bytes of a damaged file
        raise ModelLoadError(f"{path}: onnxruntime cannot load it, and its error message is "
                             f"not UTF-8 ({exc}); the file is damaged: re-export or re-copy "
                             "it") from exc


def _explain_ort_error(message: str) -> str:
    if "Protobuf parsing failed" in message:
        return "not a valid ONNX file (truncated, corrupt, or not ONNX at all)"
    if "External data" in message or "external data" in message:
        return ("refused its external data: tensors must live in files inside the model's "
                f"folder ({message})")
    return f"onnxruntime cannot load it: {message}"


def verify_weights(path: str, contract: ModelContract) -> None:
    """Recompute the fingerprint from the file's weights; ContractError when it differs.

    ONNX files carry no checksum: a bit flipped on disk or in transit inside a weight loads
    without complaint and silently changes every prediction. The contract's fingerprint covers
    every initializer, so recomputing it here refuses such a file.
    """
    try:
        with open(path, "rb") as f:
            tensors = initializers(f.read())
    except (OSError, WireError) as exc:
        raise ModelLoadError(f"{path}: cannot read its weights to check them ({exc})") from exc
    if any(t.external for t in tensors):
        _logger().info("%s: weights stored outside the file are not fingerprint-checked", path)
        return
    try:
        found = weights_fingerprint(tensors, contract.states)
    except WireError as exc:
        raise ModelLoadError(f"{path}: cannot read its weights to check them ({exc})") from exc
    if found != contract.fingerprint:
        raise ContractError(
            f"{path}: its weights do not match the fingerprint in its contract (found "
            f"{found[:19]}..., expected {contract.fingerprint[:19]}...): the file was modified "
            "or damaged after export. Re-copy it, or re-export it with `rnnstream export`"
        )


def file_fingerprint(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def contract_io(contract: ModelContract, session: ort.InferenceSession, path: str) -> ModelIO:
    """Check the graph against its contract (metadata that lies is refused) and describe it.

    Every name and shape comes from the contract's :meth:`~ModelContract.graph_io` (the one
    spec); a symbolic dimension (batch, time) matches anything the graph declares there.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    want_in, want_out = contract.graph_io()
    if (sorted(inputs) != sorted(t.name for t in want_in)
            or not {t.name for t in want_out} <= set(outputs)):
        raise ContractError(
            f"{path}: the contract (cell={contract.cell}"
            f"{', input_mode=' + contract.input_mode if contract.input_mode != 'level' else ''}) "
            f"implies inputs {[t.name for t in want_in]} and outputs "
            f"{[t.name for t in want_out]}, but the graph has inputs {sorted(inputs)} and "
            f"outputs {sorted(outputs)}"
        )
    for want in (*want_in, *want_out):
        arg = inputs.get(want.name) or outputs[want.name]
        shape = declared_shape(arg)
        fixed = tuple(d if isinstance(d, int) else None for d in want.shape)
        fits = len(shape) == len(fixed) and all(
            w is None or d is None or d == w for d, w in zip(shape, fixed, strict=True))
        if not fits or arg.type != "tensor(float)":
            raise ContractError(
                f"{path}: the graph declares {want.name!r} as {arg.type} {list(arg.shape)}, but "
                f"the contract implies float32 [{', '.join(str(d) for d in want.shape)}]"
            )
    states = tuple(
        StateBinding(s.name, s.input, s.output, (None, *s.row_shape), np.dtype(np.float32), 0)
        for s in contract.states
    )
    x = want_in[0]
    named = tuple(OutputBinding(t.name, t.role, int(t.shape[-1])) for t in want_out
                   if t.role != STATE_ROLE)  # the states' outputs are in `states`
    return ModelIO(x.name, (None, None, contract.n_features), np.dtype(np.float32),
                   named, states)


def load_step_session(
    model: LoadedModel,
    session_options: ort.SessionOptions | None = None,
    providers: Sequence[Any] | None = None,
) -> ort.InferenceSession | None:
    """The single-step companion graph named by the contract, or None when there is none.

    Missing file: logged as a warning, and None (the sequence graph computes the same thing,
    only slower). Present but its SHA-256 differs from the contract's: ContractError -- a stale
    companion from another export must never be used silently; re-export, or delete the file and
    the model's ``step_model`` entry. The bytes hashed are the bytes loaded (no second read).
    """
    contract = model.contract
    if contract is None or not contract.step_model:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(model.path)), contract.step_model["file"])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        _logger().warning("%s: its step graph %s cannot be read (%s); using the sequence graph "
                       "for every call (slower at every batch size measured)", model.path, path,
                       exc.strerror or exc)
        return None
    import hashlib

    digest, want = hashlib.sha256(data).hexdigest(), contract.step_model["sha256"]
    if digest != want:
        raise ContractError(
            f"{path}: SHA-256 {digest[:16]}... differs from the {want[:16]}... that "
            f"{model.path} names: the step graph is stale or from another export. "
            "Re-export the model, or restore the matching file"
        )
    options = session_options if session_options is not None else default_session_options()
    try:
        session = ort.InferenceSession(
            data, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))
    except ORT_ERRORS as exc:
        raise ModelLoadError(f"{path}: {_explain_ort_error(str(exc))}") from exc
    contract_io(contract, session, path)  # same names and shapes as the contract, or refused
    return session
