"""The model fingerprint: defined here once, computed by the exporter, re-checked at load.

``sha256:<hex>`` over the initializers (sorted by name: a JSON header ``[name, data_type,
shape]`` then the tensor's bytes, little-endian) and the state layout. A snapshot carries it, so
a state is never restored into a different model; and the runtime recomputes it from the file's
bytes, so a model whose weights were modified or corrupted after export (a flipped bit on disk
or in transit; ONNX files carry no checksum of their own) is refused at load.

The runtime has neither the ``onnx`` package nor the ONNX schema, so this module reads the few
protobuf fields it needs straight from the wire format (ModelProto.graph -> GraphProto.initializer
-> TensorProto dims/data_type/name/data). Big payloads are sliced, never copied field by field.

Part of the small core: importing it loads only the standard library (numpy is imported on first
use, and only for the rare tensor stored in typed fields instead of raw bytes), so the exporter,
the runtime and any tool share one definition without pulling in the engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import RnnStreamError

if TYPE_CHECKING:
    from .contract import StateSpec

__all__ = ["Tensor", "WireError", "fingerprint", "initializers", "layout_json"]

# TensorProto.DataType -> numpy dtype name (the types an initializer of ours can have)
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
           7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}
_FLOAT16 = 10


class WireError(RnnStreamError, ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass
class Tensor:
    """An initializer as the fingerprint sees it."""

    name: str = ""
    data_type: int = 0
    dims: list[int] = field(default_factory=list)
    data: bytes = b""
    external: bool = False  # data stored outside the file: cannot be fingerprinted here


# The state fields the fingerprint covers, by fingerprint version. An explicit list, never the
# class's __dict__: adding a field to StateSpec must not change the fingerprint of every model
# already exported (they would all be refused as "modified or damaged"). Version 1 is what
# rnnstream 0.1.0 hashed (then every field of StateSpec); a new version would be written beside
# it and chosen by a version the contract records.
LAYOUT_FIELDS_V1 = ("batch_axis", "dtype", "initial", "input", "name", "output", "shape")


def layout_json(states: Sequence[StateSpec]) -> str:
    layout = [{f: (list(s.shape) if f == "shape" else getattr(s, f)) for f in LAYOUT_FIELDS_V1}
              for s in states]
    return json.dumps(layout, sort_keys=True)


def fingerprint(tensors: Iterable[Tensor], states: Sequence[StateSpec]) -> str:
    import hashlib  # imported when first needed, not by `import rnnstream.runtime`

    digest = hashlib.sha256()
    for t in sorted(tensors, key=lambda t: t.name):
        digest.update(json.dumps([t.name, int(t.data_type), list(t.dims)]).encode())
        digest.update(t.data)
    digest.update(layout_json(states).encode())
    return f"sha256:{digest.hexdigest()}"


# -- protobuf wire format ---------------------------------------------------------------------
def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) for each field of one message."""
    pos, end = 0, len(buf)
    value: int | memoryview
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise WireError("a length-delimited field runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise WireError(f"unsupported wire type {wire}")
        if pos > end:
            raise WireError("truncated field")
        yield number, wire, value


def _packed_varints(value: int | memoryview) -> list[int]:
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _tensor(buf: memoryview) -> Tensor:
    t = Tensor()
    typed: dict[int, list] = {}
    for number, _wire, value in _fields(buf):
        if number == 1:  # dims (int64, packed or not)
            t.dims.extend(_signed(v) for v in _packed_varints(value))
        elif number == 2:
            t.data_type = int(value)
        elif number == 8:
            t.name = bytes(value).decode("utf-8", "replace")
        elif number == 9:
            t.data = bytes(value)
        elif number in (4, 5, 7, 10, 11):  # float/int32/int64/double/uint64 _data
            typed.setdefault(number, []).append(value)
        elif number == 14:
            t.external = value == 1
    if typed and not t.data:
        t.data = _typed_bytes(t.data_type, typed)
    return t


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _typed_bytes(data_type: int, typed: dict[int, list]) -> bytes:
    """Bytes of a tensor stored in the typed repeated fields, as numpy would lay them out."""
    dtype = _DTYPES.get(data_type)
    if dtype is None:
        raise WireError(f"unsupported tensor data type {data_type}")
    import numpy as np  # typed fields are rare (our exporter writes raw bytes): load it here
    if 4 in typed:  # float_data: packed fixed32
        raw = b"".join(bytes(v) if not isinstance(v, int) else v.to_bytes(4, "little")
                       for v in typed[4])
        return np.frombuffer(raw, "<f4").astype(dtype).tobytes()
    if 10 in typed:  # double_data: packed fixed64
        raw = b"".join(bytes(v) if not isinstance(v, int) else v.to_bytes(8, "little")
                       for v in typed[10])
        return np.frombuffer(raw, "<f8").astype(dtype).tobytes()
    number = next(iter(typed))
    values = [x for v in typed[number] for x in _packed_varints(v)]
    if data_type == _FLOAT16:  # stored as the uint16 bit pattern
        return np.array(values, np.uint16).tobytes()
    if number == 7:
        values = [_signed(v) for v in values]
    elif number == 5:
        values = [v - (1 << 64) if v >= 1 << 63 else v for v in values]
    return np.array(values, np.int64).astype(dtype).tobytes()


def initializers(model_bytes: bytes) -> list[Tensor]:
    """The initializers of a serialized ModelProto; WireError when the bytes are malformed."""
    buf = memoryview(model_bytes)
    # a length-delimited field (wire type 2) is the only one whose value is a memoryview
    graphs = [v for number, _wire, v in _fields(buf) if number == 7 and isinstance(v, memoryview)]
    if not graphs:
        raise WireError("no graph in the model")
    tensors = []
    for number, _wire, value in _fields(graphs[-1]):
        if number == 5 and isinstance(value, memoryview):
            tensors.append(_tensor(value))
    return tensors
