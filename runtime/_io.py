"""How a model is streamed: its data input, prediction output and state pairs (no I/O here).

These plain descriptions are shared by the loader (:mod:`._session`), the pairing of foreign
models (:mod:`._generic`) and the engines (:mod:`._engine`); they import nothing else of the
runtime, so those modules depend on this one and never on each other in a circle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from .errors import InputError

# onnxruntime's Python exceptions do not share a base class beyond Exception; these are the
# ones its pybind layer raises (some are missing from older releases, hence getattr).
ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, *(
    getattr(_ort_state, n) for n in (
        "EPFail", "EngineError", "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
        "ModelLoaded", "NoModel", "NoSuchFile", "NotFound", "NotImplemented", "RuntimeException",
    ) if hasattr(_ort_state, n)
))

# onnxruntime type strings -> numpy dtypes for the tensors the runtime allocates or converts.
ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}

Dim = int | None  # None: dynamic (symbolic or unknown) dimension


@dataclass(frozen=True)
class StateBinding:
    """One recurrent tensor as the runtime feeds it: read from ``output`` after a call, fed to
    ``input`` on the next, allocated with ``dtype`` and ``shape`` (``None``: a dynamic axis).

    The contract's :class:`~rnnstream.runtime.contract.StateSpec` *declares* a state of an
    rnnstream model (dims as written in the contract, dtype as a string); a StateBinding is that
    declaration resolved against the session -- or, for a foreign model, found in its graph --
    with a numpy dtype and the batch axis located. Same concept, two stages: declared, bound.
    """

    name: str  # the name snapshots use: "h"/"c" for rnnstream models, the input name otherwise
    input: str
    output: str
    shape: tuple[Dim, ...]  # declared input shape
    dtype: np.dtype
    batch_axis: int | None  # first dynamic axis; None when every axis is fixed

    def full_shape(self, batch: int) -> tuple[int, ...]:
        """The declared shape with the batch axis set to ``batch`` and other free axes to 1."""
        return tuple(
            batch if i == self.batch_axis else (1 if d is None else d)
            for i, d in enumerate(self.shape)
        )

    @property
    def row_shape(self) -> tuple[int, ...]:
        """One stream's part of the state: the full shape without its batch axis."""
        full = self.full_shape(1)
        if self.batch_axis is None:
            return full
        return full[:self.batch_axis] + full[self.batch_axis + 1:]




@dataclass(frozen=True)
class ModelIO:
    """How to stream a model: data input, prediction output, state pairs, constant inputs."""

    input: str
    input_shape: tuple[Dim, ...]
    input_dtype: np.dtype
    output: str
    states: tuple[StateBinding, ...]
    fixed: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def input_batch_axis(self) -> int | None:
        return _first_dynamic(self.input_shape)


def declared_shape(arg: Any) -> tuple[Dim, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))


def _first_dynamic(shape: Sequence[Dim]) -> int | None:
    return next((i for i, d in enumerate(shape) if d is None), None)




def input_shape(io: ModelIO, size: int, batch: int) -> tuple[int, ...]:
    """The data input's shape for ``batch`` points of ``size`` values each."""
    b = io.input_batch_axis
    free = [i for i, d in enumerate(io.input_shape) if d is None and i != b]
    fixed = math.prod(d for d in io.input_shape if d is not None)
    if not free and size != fixed:
        raise InputError(f"got {size} values; the model's input {io.input!r} takes {fixed}")
    if free and size % fixed:
        raise InputError(f"got {size} values; the model's input {io.input!r} takes a multiple "
                         f"of {fixed}")
    dims = []
    for i, d in enumerate(io.input_shape):
        if i == b:
            dims.append(batch)
        elif d is None:
            dims.append(size // fixed if i == free[-1] else 1)
        else:
            dims.append(d)
    return tuple(dims)
