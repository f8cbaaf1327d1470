"""How a model is streamed: its data input, its outputs by role, state pairs (no I/O here).

These plain descriptions are shared by the loader (:mod:`._session`), the pairing of foreign
models (:mod:`._generic`) and the engines (:mod:`._engine`); they import nothing else of the
runtime, so those modules depend on this one and never on each other in a circle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from .errors import InputError
from .spec import PREDICTION_ROLE

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
class OutputBinding:
    """One output of the model by name and role (:data:`~rnnstream.runtime.spec.OUTPUT_ROLES`):
    the prediction, a state (fed back: its pair is in ``ModelIO.states``), or another output
    handed out beside the prediction (``width`` values per point; 0: as the model returns)."""

    name: str
    role: str
    width: int = 0


@dataclass(frozen=True)
class ModelIO:
    """How to stream a model: data input, outputs by name and role, state pairs, constant inputs.

    ``outputs`` holds the outputs that are not states, each with its role: exactly one is the
    prediction (:attr:`output`), the others (:attr:`extras`) are handed out by name; each
    state's output is in ``states`` (role ``state``). Code reads outputs by name, never by
    position: :attr:`fetch` is the one order onnxruntime is asked for, and :meth:`split` names
    its answer. :attr:`output`, :attr:`extras` and :attr:`fetch` are computed once per
    instance (the fields are frozen; ``dataclasses.replace`` makes a new one), as the engines
    read them on every call.

    The axes of the data input and of the prediction: ``batch_axis`` stacks streams (None: the
    model has none, or it could not be told apart; ``batch_note`` then says why),
    ``time_axis`` takes several points in one call (None: one point per call). Free axes of the
    data input that are neither are 1 when there is a time axis; otherwise the last of them
    takes a point of any size (a chunk of samples).
    """

    input: str
    input_shape: tuple[Dim, ...]
    input_dtype: np.dtype
    outputs: tuple[OutputBinding, ...]
    states: tuple[StateBinding, ...]
    fixed: Mapping[str, np.ndarray] = field(default_factory=dict)
    batch_axis: int | None = 0
    time_axis: int | None = None
    output_batch_axis: int | None = 0
    output_time_axis: int | None = None
    batch_note: str = ""

    @property
    def input_batch_axis(self) -> int | None:
        return self.batch_axis

    # cached_property stores in the instance's __dict__, which a frozen dataclass allows
    @cached_property
    def output(self) -> str:
        """The name of the prediction output."""
        return next(o.name for o in self.outputs if o.role == PREDICTION_ROLE)

    @cached_property
    def extras(self) -> tuple[OutputBinding, ...]:
        """The outputs that are neither the prediction nor a state, in graph order."""
        return tuple(o for o in self.outputs if o.role != PREDICTION_ROLE)

    @cached_property
    def fetch(self) -> list[str]:
        """The names to ask onnxruntime for: the prediction, each state's output (in
        ``states`` order), then the extras; :meth:`split` reads the answer back by name.
        One list per instance: read it, never change it."""
        return [self.output, *(s.output for s in self.states), *(o.name for o in self.extras)]

    def split(self, arrays: Sequence[np.ndarray]) -> Outputs:
        """onnxruntime's answer to :attr:`fetch` as named parts."""
        n = len(self.states) + 1
        extra = {o.name: a for o, a in zip(self.extras, arrays[n:], strict=True)} \
            if len(arrays) > n else {}
        return Outputs(arrays[0], list(arrays[1:n]), extra)


class Outputs(NamedTuple):
    """One call's outputs by role: the prediction, the next states (``ModelIO.states``
    order) and the other outputs by name."""

    prediction: np.ndarray
    states: list[np.ndarray]
    extra: dict[str, np.ndarray]


def model_outputs(prediction: str, extras: Sequence[OutputBinding] = ()
                  ) -> tuple[OutputBinding, ...]:
    """``ModelIO.outputs`` of a model with this prediction and these other outputs."""
    return (OutputBinding(prediction, PREDICTION_ROLE), *extras)


def declared_shape(arg: Any) -> tuple[Dim, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))


def free_axes(shape: Sequence[Dim]) -> list[int]:
    """The dynamic axes of a declared shape."""
    return [i for i, d in enumerate(shape) if d is None]


def input_shape(io: ModelIO, size: int, batch: int, time: int = 1) -> tuple[int, ...]:
    """The data input's shape for ``batch`` streams of ``time`` points of ``size`` values."""
    b, t = io.batch_axis, io.time_axis
    free = [i for i, d in enumerate(io.input_shape) if d is None and i not in (b, t)]
    fixed = math.prod(d for d in io.input_shape if d is not None)
    chunk = free[-1] if free and t is None else None  # the axis a point of any size fills
    if chunk is None and size != fixed:
        raise InputError(f"got {size} values; the model's input {io.input!r} takes {fixed}")
    if chunk is not None and size % fixed:
        raise InputError(f"got {size} values; the model's input {io.input!r} takes a multiple "
                         f"of {fixed}")
    dims = []
    for i, d in enumerate(io.input_shape):
        if i == b:
            dims.append(batch)
        elif i == t:
            dims.append(time)
        elif d is None:
            dims.append(size // fixed if i == chunk else 1)
        else:
            dims.append(d)
    return tuple(dims)


def input_array(io: ModelIO, rows: np.ndarray, axis: int | None) -> np.ndarray:
    """``rows`` [m, size] as the data input, the m points along ``axis`` (the batch or the time
    axis; with ``axis`` None, m is 1); one point's values fill the other axes in C order."""
    m, size = rows.shape
    one = input_shape(io, size, 1)
    if axis is None or m == 1:
        return rows.reshape(one)
    lead = rows.reshape((m, *one[:axis], *one[axis + 1:]))
    return np.ascontiguousarray(np.moveaxis(lead, 0, axis))


def output_rows(y: np.ndarray, axis: int | None, m: int) -> np.ndarray:
    """An output holding m predictions along ``axis`` as [m, values]."""
    if axis is None or m == 1:
        return y.reshape(m, -1)
    return np.moveaxis(y, axis, 0).reshape(m, -1)
