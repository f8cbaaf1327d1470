"""The KServe v2 inference protocol, as rnnstream models speak it: request in, :class:`Infer` out.

Tensors. Input ``x``: FP32 ``[B, T, F]``: ``B`` sequences, ``T >= 1`` points each (``T > 1``
primes), ``F`` the model's features. Output ``y``: FP32 ``[B, T, targets]``, the prediction
after every point; with ``--coverage`` also ``lower`` and ``upper``, the same shape, the
prediction interval after every point. The request's ``outputs`` list selects some of them, in
the order given (the model's service checks the names); without it every output is sent.

Sequences (Triton's sequence extension). ``B == 1``: the request parameters ``sequence_id``
(uint64 > 0 or a non-empty string), ``sequence_start``, ``sequence_end``. ``B > 1`` (many
sequences in one request): an input ``sequence_id`` of shape ``[B]`` (INT64/UINT64/INT32 or
BYTES) names the sequence of each row of ``x``, and optional BOOL inputs ``sequence_start`` /
``sequence_end`` of shape ``[B]`` flag each row (tritonclient refuses those reserved names as
custom parameters, so per-row inputs are the way it can send them); without them the request
parameters apply to every row. Integer and string ids are different sequences, as in Triton.

HTTP bodies are JSON, or JSON followed by binary tensor data (the binary data extension:
header ``Inference-Header-Content-Length``, input parameter ``binary_data_size``; an output is
sent as binary when its ``binary_data`` parameter or the request's ``binary_data_output``
parameter is true, which tritonclient's HTTP client sets by default; when any output asks for
binary data every output is sent binary, in the order of the response's ``outputs``). gRPC
requests carry tensors in ``raw_input_contents`` (tritonclient) or typed ``contents``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from rnnstream.runtime.spec import INPUT_NAME, OUTPUT_NAME

from .errors import ServeError
from .sequences import Infer, Outputs

__all__ = ["grpc_request", "grpc_response", "http_request", "http_response"]

INPUT, OUTPUT, IDS = INPUT_NAME, OUTPUT_NAME, "sequence_id"  # names from the one spec
FLAGS = ("sequence_start", "sequence_end")  # optional BOOL [B] inputs: per-row flags
ID_TYPES: dict[str, np.dtype] = {"INT64": np.dtype("<i8"), "UINT64": np.dtype("<u8"),
                                 "INT32": np.dtype("<i4")}
MAX_ID_BYTES = 256


# -- shared checks ---------------------------------------------------------------------------------
def _shape(value: Any, name: str) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(type(d) is int and d >= 0 for d in value)):
        raise ServeError("bad_request", f"input {name!r}: shape {value!r} is not a list of "
                         "non-negative integers")
    return value


def _check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in (INPUT, IDS, *FLAGS)]
    if unknown:
        raise ServeError("bad_request", f"unknown input(s) {unknown}; this model takes {INPUT!r} "
                         f"(FP32 [sequences, time, features]) and optionally {IDS!r} "
                         "([sequences] INT64 or BYTES), 'sequence_start' and 'sequence_end' "
                         "([sequences] BOOL)")
    if INPUT not in names:
        raise ServeError("bad_request", f"no input {INPUT!r} in the request (got {names}); "
                         "expected FP32 [sequences, time, features]")
    if len(set(names)) != len(names):
        raise ServeError("bad_request", f"an input is given twice: {names}")


def _x_array(datatype: str, shape: list[int], values: Any) -> np.ndarray:
    if datatype != "FP32":
        raise ServeError("bad_request", f"input {INPUT!r} has datatype {datatype!r}; expected "
                         "'FP32'")
    if len(shape) != 3:
        raise ServeError("bad_request", f"input {INPUT!r} has shape {shape}; expected 3 "
                         "dimensions [sequences, time, features]")
    return _reshape(values, shape, INPUT)


def _reshape(values: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    count = math.prod(shape)  # Python ints: a shape such as [2**32, 2**32, 1] cannot wrap to 0
    if values.size != count:
        raise ServeError("bad_request", f"input {name!r}: {values.size} values for shape "
                         f"{shape}, which holds {count}")
    return values.reshape(shape)


def _flag(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if type(value) is not bool:
        raise ServeError("bad_request", f"parameter {name!r} is {value!r}; expected true or "
                         "false")
    return value


def _param_id(value: Any) -> Hashable | None:
    """A sequence_id parameter: uint64 or string; 0 and "" mean "no sequence"."""
    if value is None or value == 0 or value == "":
        return None
    if type(value) is int and 0 < value < 1 << 64:
        return value
    if type(value) is str and len(value.encode()) <= MAX_ID_BYTES:
        return value
    raise ServeError("bad_request", f"parameter 'sequence_id' is {value!r}; expected an "
                     f"unsigned 64-bit integer or a string of at most {MAX_ID_BYTES} bytes")


def _keys(param_id: Hashable | None, ids: list[Hashable] | None, batch: int) -> list[Hashable]:
    if ids is not None:
        if param_id is not None:
            raise ServeError("bad_request", "both the 'sequence_id' parameter and the "
                             "'sequence_id' input are given; use the parameter for one "
                             "sequence, the input for many")
        if len(ids) != batch:
            raise ServeError("bad_request", f"input 'sequence_id' has {len(ids)} ids for "
                             f"{batch} rows of 'x'; expected one id per row")
        bad = [k for k in ids if k in (0, "")]
        if bad:
            raise ServeError("bad_request", "input 'sequence_id' holds 0 or an empty string; "
                             "every row needs a non-zero id")
        return ids
    if param_id is None:
        raise ServeError("bad_request", "no sequence_id: this model keeps a state per sequence; "
                         "set the request parameter 'sequence_id' (with sequence_start=true on "
                         "a sequence's first request), or the input 'sequence_id' for many "
                         "sequences at once")
    if batch != 1:
        raise ServeError("bad_request", f"'x' has {batch} sequences but one sequence_id "
                         "parameter; give an input 'sequence_id' with one id per row")
    return [param_id]


def _bools(name: str, datatype: str, shape: list[int], raw: bytes | None, listed: Any
           ) -> list[bool]:
    if datatype != "BOOL":
        raise ServeError("bad_request", f"input {name!r} has datatype {datatype!r}; expected "
                         "'BOOL' (one flag per sequence)")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise ServeError("bad_request", f"input {name!r} has shape {shape}; expected "
                         "[sequences]")
    if raw is not None:
        if any(v not in (0, 1) for v in raw):
            raise ServeError("bad_request", f"input {name!r}: BOOL bytes must be 0 or 1")
        values = [bool(v) for v in raw]
    else:
        given = list(_leaves(listed)) if isinstance(listed, list) else [None]
        if any(type(v) is not bool for v in given):
            raise ServeError("bad_request", f"input {name!r}: expected true/false values")
        values = [bool(v) for v in given]
    if len(values) != shape[0]:
        raise ServeError("bad_request", f"input {name!r}: {len(values)} values for shape "
                         f"{shape}")
    return values


def _flags(params: Mapping[str, Any], given: dict[str, list[bool]], batch: int
           ) -> tuple[list[bool], list[bool]]:
    out = []
    for name in FLAGS:
        if name in given:
            if name in params:
                raise ServeError("bad_request", f"both the {name!r} parameter and input are "
                                 "given; use one")
            if len(given[name]) != batch:
                raise ServeError("bad_request", f"input {name!r} has {len(given[name])} flags "
                                 f"for {batch} rows of 'x'")
            out.append(given[name])
        else:
            out.append([_flag(params, name)] * batch)
    return out[0], out[1]


def _ids_array(datatype: str, shape: list[int], raw: bytes | None, listed: Any) -> list:
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise ServeError("bad_request", f"input 'sequence_id' has shape {shape}; expected "
                         "[sequences] or [sequences, 1]")
    count = shape[0]
    if datatype == "BYTES":
        if raw is not None:
            out, pos = [], 0
            for _ in range(count):
                if pos + 4 > len(raw):
                    raise ServeError("bad_request", "input 'sequence_id': BYTES data ends early")
                n = int.from_bytes(raw[pos:pos + 4], "little")
                out.append(_text_id(raw[pos + 4:pos + 4 + n]))
                pos += 4 + n
            return out
        if not isinstance(listed, list) or len(listed) != count:
            raise ServeError("bad_request", f"input 'sequence_id': expected {count} strings")
        return [_text_id(v) for v in listed]
    dtype = ID_TYPES.get(datatype)
    if dtype is None:
        raise ServeError("bad_request", f"input 'sequence_id' has datatype {datatype!r}; "
                         f"expected one of {[*ID_TYPES, 'BYTES']}")
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise ServeError("bad_request", f"input 'sequence_id': {len(raw)} bytes for "
                             f"{count} {datatype} values")
        values = np.frombuffer(raw, dtype)
    else:
        values = _numbers(listed, np.int64 if datatype != "UINT64" else np.uint64, IDS)
        if values.size != count:
            raise ServeError("bad_request", f"input 'sequence_id': {values.size} values for "
                             f"shape {shape}")
    if (values < 0).any():
        raise ServeError("bad_request", "input 'sequence_id' holds a negative id")
    return [int(v) for v in values.tolist()]


def _text_id(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise ServeError("bad_request", "input 'sequence_id': an id is not UTF-8") from None
    if not isinstance(value, str) or len(value.encode()) > MAX_ID_BYTES:
        raise ServeError("bad_request", f"input 'sequence_id': {value!r} is not a string of at "
                         f"most {MAX_ID_BYTES} bytes")
    return value


def _numbers(listed: Any, dtype: Any, name: str) -> np.ndarray:
    """JSON 'data' (flat or nested, row-major) as a flat array; only real numbers pass."""
    if not isinstance(listed, list):
        raise ServeError("bad_request", f"input {name!r}: 'data' is {type(listed).__name__}; "
                         "expected a (nested) JSON list of numbers")
    flat = list(_leaves(listed))
    wanted = (int, float) if dtype == np.float32 else (int,)
    bad = [v for v in flat if type(v) not in wanted]
    if bad:
        raise ServeError("bad_request", f"input {name!r}: {bad[0]!r} in 'data' is not "
                         f"{'a number' if dtype == np.float32 else 'an integer'}")
    if dtype != np.float32:
        try:
            return np.array(flat, dtype=dtype)
        except OverflowError:
            raise ServeError("bad_request", f"input {name!r}: an id is out of range") from None
    with np.errstate(over="ignore"):  # 1e39 -> inf: the finiteness check names it
        return np.array(flat, np.float64).astype(np.float32)


def _leaves(listed: list) -> Any:
    for v in listed:
        if isinstance(v, list):
            yield from _leaves(v)
        else:
            yield v


# -- HTTP ------------------------------------------------------------------------------------------
def http_request(body: bytes, header_length: int | None) -> tuple[Infer, str, bool]:
    """Parse an infer body; returns (request, request id, answer y as binary?)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise ServeError("bad_request", f"Inference-Header-Content-Length is {header_length} "
                         f"for a body of {len(body)} bytes")
    head = body if header_length is None else body[:header_length]
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServeError("bad_request", f"the request body is not valid JSON ({exc}); expected "
                         "a KServe v2 inference request") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ServeError("bad_request", "expected a JSON object with an 'inputs' list (KServe "
                         "v2 inference request)")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ServeError("bad_request", "'parameters' must be a JSON object")
    inputs = doc["inputs"]
    if not all(isinstance(t, dict) for t in inputs):
        raise ServeError("bad_request", "every entry of 'inputs' must be a JSON object")
    _check_names([t.get("name") for t in inputs])
    offset, x, ids = 0, None, None
    flags: dict[str, list[bool]] = {}
    for t in inputs:
        name, datatype = t["name"], t.get("datatype")
        shape = _shape(t.get("shape"), name)
        tparams = t.get("parameters") or {}
        size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        raw = None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise ServeError("bad_request", f"input {name!r}: binary_data_size {size!r} "
                                 f"runs past the {len(binary)} binary bytes of the body")
            raw = bytes(binary[offset:offset + size])
            offset += size
        elif "data" not in t:
            raise ServeError("bad_request", f"input {name!r} has neither 'data' nor a "
                             "'binary_data_size' parameter")
        if name == INPUT:
            if raw is not None:
                if datatype == "FP32" and len(raw) % 4:
                    raise ServeError("bad_request", f"input 'x': {len(raw)} bytes is not a "
                                     "whole number of FP32 values")
                values = np.frombuffer(raw, "<f4") if datatype == "FP32" else np.empty(0)
            else:
                values = (_numbers(t["data"], np.float32, INPUT) if datatype == "FP32"
                          else np.empty(0))
            x = _x_array(datatype, shape, values)
        elif name == IDS:
            ids = _ids_array(datatype, shape, raw, t.get("data"))
        else:
            flags[name] = _bools(name, datatype, shape, raw, t.get("data"))
    if offset != len(binary):
        raise ServeError("bad_request", f"{len(binary) - offset} binary bytes after the JSON "
                         "header are not claimed by any input's binary_data_size")
    asked = doc.get("outputs") or []
    if not isinstance(asked, list):
        raise ServeError("bad_request", "'outputs' must be a JSON list of objects with a 'name'")
    outputs = _output_names([o.get("name") if isinstance(o, dict) else o for o in asked])
    as_binary = bool(params.get("binary_data_output", False)) or any(
        isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data")
        for o in doc.get("outputs") or [])
    if x is None:  # _check_names made sure there is an 'x'; this tells the type checker
        raise ServeError("bad_request", f"no input {INPUT!r} in the request")
    keys = _keys(_param_id(params.get("sequence_id")), ids, x.shape[0])
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise ServeError("bad_request", "'id' must be a string")
    x = np.ascontiguousarray(x, np.float32)
    starts, ends = _flags(params, flags, x.shape[0])
    return Infer(x, keys, starts, ends, "http", outputs), request_id, as_binary


def _output_names(names: list[Any]) -> tuple[str, ...]:
    """The requested output names, each once, in order (the service checks they exist)."""
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ServeError("bad_request", f"an entry of 'outputs' has name {bad[0]!r}; expected "
                         f"an output name such as {OUTPUT!r}")
    return tuple(dict.fromkeys(names))


def _chosen(outputs: Outputs, names: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    return [(n, outputs[n]) for n in names] if names else list(outputs.items())


def http_response(model: str, request_id: str, outputs: Outputs, binary: bool,
                  names: tuple[str, ...] = ()) -> tuple[bytes, int | None]:
    """Encode the outputs ``names`` (all when empty); returns (body,
    Inference-Header-Content-Length or None for plain JSON)."""
    tensors, raws = [], []
    for name, value in _chosen(outputs, names):
        out: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(value.shape)}
        if binary:
            raws.append(value.astype("<f4", copy=False).tobytes())
            out["parameters"] = {"binary_data_size": len(raws[-1])}
        else:
            out["data"] = value.reshape(-1).tolist()
        tensors.append(out)
    raw = b"".join(raws)
    doc: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": tensors}
    if request_id:
        doc["id"] = request_id
    head = json.dumps(doc, separators=(",", ":")).encode()
    return (head + raw, len(head)) if binary else (head, None)


# -- gRPC ------------------------------------------------------------------------------------------
def _grpc_param(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def grpc_request(request: Any) -> Infer:
    """A ModelInferRequest (tritonclient's service_pb2) as an :class:`Infer`."""
    names = [t.name for t in request.inputs]
    _check_names(names)
    raws = list(request.raw_input_contents)
    if raws and len(raws) != len(request.inputs):
        raise ServeError("bad_request", f"{len(raws)} raw_input_contents for "
                         f"{len(request.inputs)} inputs; expected one per input")
    x, ids = None, None
    flags: dict[str, list[bool]] = {}
    for i, t in enumerate(request.inputs):
        shape = _shape(list(t.shape), t.name)
        raw = raws[i] if raws else None
        if t.name == INPUT:
            if raw is not None:
                if t.datatype == "FP32" and len(raw) % 4:
                    raise ServeError("bad_request", f"input 'x': {len(raw)} bytes is not a "
                                     "whole number of FP32 values")
                values = np.frombuffer(raw, "<f4") if t.datatype == "FP32" else np.empty(0)
            else:
                values = np.array(t.contents.fp32_contents, np.float32)
            x = _x_array(t.datatype, shape, values)
        elif t.name in FLAGS:
            flags[t.name] = _bools(t.name, t.datatype, shape, raw,
                                   None if raw is not None else list(t.contents.bool_contents))
        else:
            listed: list = []
            if raw is None:
                c = t.contents
                listed = (list(c.bytes_contents) if t.datatype == "BYTES"
                          else list(c.uint64_contents) if t.datatype == "UINT64"
                          else list(c.int64_contents) or list(c.int_contents))
            ids = _ids_array(t.datatype, shape, raw, listed)
    outputs = _output_names([o.name for o in request.outputs])
    params = {k: _grpc_param(v) for k, v in request.parameters.items()}
    if x is None:  # _check_names made sure there is an 'x'; this tells the type checker
        raise ServeError("bad_request", f"no input {INPUT!r} in the request")
    keys = _keys(_param_id(params.get("sequence_id")), ids, x.shape[0])
    starts, ends = _flags(params, flags, x.shape[0])
    return Infer(np.ascontiguousarray(x, np.float32), keys, starts, ends, "grpc", outputs)


def grpc_response(pb: Any, model: str, request_id: str, outputs: Outputs,
                  names: tuple[str, ...] = ()) -> Any:
    """A ModelInferResponse carrying the outputs ``names`` (all when empty) as
    raw_output_contents (what tritonclient reads)."""
    resp = pb.ModelInferResponse(model_name=model, model_version="1", id=request_id)
    for name, value in _chosen(outputs, names):
        out = resp.outputs.add()
        out.name, out.datatype = name, "FP32"
        out.shape.extend(value.shape)
        resp.raw_output_contents.append(value.astype("<f4", copy=False).tobytes())
    return resp
