"""One stream: :class:`Predictor` feeds points to a model one at a time and carries its state.

Fast path (rnnstream models). Everything the step needs is allocated and bound once::

    x   [1, 1, F]   the point, copied in by step()
    y   [1, 1, T]   the prediction, written by onnxruntime
    s0, s1          two buffers per state, [1, layers, hidden]
    binding[0]:  x, s0 -> y, s1        binding[1]:  x, s1 -> y, s0

A step copies the point into ``x``, runs ``binding[parity]`` and flips ``parity``; no state is
ever copied. The live state is ``s[parity]``, which a failing run never writes, so a failed
step leaves the state as it was. onnxruntime's IOBinding holds raw pointers, not references:
every bound buffer is kept referenced by the Predictor for its whole life.

The bindings use the model's single-step graph (``model.step.onnx``) when the contract names
one: measured with IOBinding ping-pong at batch 1 it is 3-5% faster than the sequence graph
(LSTM hidden 32 / 1 layer: 6.5 vs 6.75 µs; hidden 128 / 2 layers: 19.3 vs 20.2 µs). ``prime``
and ``forecast`` use the sequence graph (prime needs time > 1).

Foreign models (no rnnstream contract) take the plain ``session.run`` path; see ``_generic``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from ._points import PointReader
from ._session import ORT_ERRORS, LoadedModel, ModelIO, load_model, load_step_session
from ._state import (
    State,
    check_fingerprint,
    check_tensors,
    read_snapshot,
    state_arrays,
    tensors_from,
    write_snapshot,
)
from .contract import ModelContract
from .errors import InputError, RnnStreamError, StateError, UnsupportedError

_F32_MAX = 3.4028234663852886e38  # float(np.finfo(np.float32).max), without its import cost

__all__ = ["Predictor"]


def input_reader(model: LoadedModel) -> PointReader:
    """The point validator for a model: named features, or the foreign input's free size."""
    if model.contract is not None:
        return PointReader(model.contract.n_features, model.contract.features)
    shape = model.io.input_shape
    batch = model.io.input_batch_axis
    free = [i for i, d in enumerate(shape) if d is None and i != batch]
    fixed = math.prod(d for d in shape if d is not None)
    return PointReader(None if free else fixed, None, model.io.input_dtype)


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


class Predictor:
    """Streams one series through a stateful ONNX model, one point at a time.

    ``model`` is a path to an ``.onnx`` file. rnnstream models carry their contract; for any
    other stateful model pass ``state_map={input: output}`` (or rely on the naming conventions
    listed in :mod:`rnnstream.runtime._generic`) and constant inputs as ``fixed_inputs``.
    ``session_options`` and ``providers`` replace the latency-minded defaults (one thread).

    A Predictor is one stream and is not meant to be shared between threads; use
    :class:`~rnnstream.runtime.StreamPool` for many streams or concurrent callers.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        session_options: ort.SessionOptions | None = None,
        providers: Sequence[Any] | None = None,
        state_map: Mapping[str, str] | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
    ) -> None:
        self._model = load_model(model, session_options=session_options, providers=providers,
                                 state_map=state_map, fixed_inputs=fixed_inputs)
        self._session = self._model.session
        self._step_session = load_step_session(self._model, session_options, providers)
        self._io = self._model.io
        self._reader = input_reader(self._model)
        self._generic = self._model.generic
        self._has_last = False
        if self._generic:
            self._init_generic()
        else:
            self._init_bound()

    # -- set-up -------------------------------------------------------------------------------
    def _init_bound(self) -> None:
        c = self._model.contract
        io = self._io
        f32 = np.float32
        self._x = np.zeros((1, 1, c.n_features), f32)
        self._y = np.zeros((1, 1, c.n_targets), f32)
        self._xflat = self._x.reshape(-1)  # views: writing them writes the bound buffers
        self._yflat = self._y.reshape(-1)
        self._one_in = c.n_features == 1
        self._one_out = c.n_targets == 1
        self._bufs = [[np.zeros(s.full_shape(1), f32) for s in io.states] for _ in range(2)]
        self._bindings = []
        session = self._step_session or self._session  # see the module docstring
        for src, dst in ((0, 1), (1, 0)):
            b = session.io_binding()
            b.bind_input(io.input, "cpu", 0, f32, self._x.shape, self._x.ctypes.data)
            b.bind_output(io.output, "cpu", 0, f32, self._y.shape, self._y.ctypes.data)
            for s, a, o in zip(io.states, self._bufs[src], self._bufs[dst], strict=True):
                b.bind_input(s.input, "cpu", 0, f32, a.shape, a.ctypes.data)
                b.bind_output(s.output, "cpu", 0, f32, o.shape, o.ctypes.data)
            self._bindings.append(b)
        self._parity = 0
        # a bound method looked up once; run() with RunOptions costs ~33 µs more, so none
        self._run_bound = session.run_with_iobinding

    def _init_generic(self) -> None:
        io = self._io
        self._one_in = False
        self._live = {s.input: np.zeros(s.full_shape(1), s.dtype) for s in io.states}
        self._last_y: np.ndarray | None = None
        self._fetch = [io.output, *(s.output for s in io.states)]

    # -- facts ----------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._model.path

    @property
    def contract(self) -> ModelContract | None:
        """The model's rnnstream contract; None for a foreign model."""
        return self._model.contract

    @property
    def features(self) -> list[str] | None:
        c = self._model.contract
        return list(c.features) if c is not None else None

    @property
    def targets(self) -> list[str] | None:
        c = self._model.contract
        return list(c.targets) if c is not None else None

    @property
    def fingerprint(self) -> str:
        return self._model.fingerprint

    @property
    def state_pairs(self) -> dict[str, str]:
        """State input name -> the output that feeds it on the next call."""
        return {s.input: s.output for s in self._io.states}

    @property
    def uses_step_graph(self) -> bool:
        """True when step() runs the model's single-step graph (see the module docstring)."""
        return self._step_session is not None

    @property
    def pairing(self) -> str:
        """One line saying how the state pairs were found."""
        return self._model.note

    def __repr__(self) -> str:
        return f"Predictor({self.path!r}, state_pairs={self.state_pairs})"

    # -- streaming ------------------------------------------------------------------------------
    def step(self, point: Any) -> float | np.ndarray:
        """Feed one point; return the prediction (a float when the model has one target).

        ``point`` is a number (one feature), a sequence of the features' values, or a mapping
        of feature name to value. A refused point raises InputError and changes nothing.
        """
        # fast path: a plain float within float32's range (NaN, inf and 1e39 fail the test
        # and go through the validator, which says what is wrong)
        if self._one_in and type(point) is float and -_F32_MAX <= point <= _F32_MAX:
            self._xflat[0] = point
        elif self._generic:
            return self._generic_step(point)
        else:
            self._xflat[:] = self._reader.row(point)
        parity = self._parity
        try:
            self._run_bound(self._bindings[parity])
        except ORT_ERRORS as exc:  # the live buffer was an input only: state unchanged
            raise RnnStreamError(f"{self.path}: onnxruntime failed on this step: {exc}") from exc
        self._parity = parity ^ 1
        self._has_last = True
        return self._yflat.item(0) if self._one_out else self._yflat.copy()

    def prime(self, history: Any) -> np.ndarray:
        """Run ``history`` ([time, F], or [time] with one feature) through the model in one
        call, carrying the state; return the prediction after each point ([time] or
        [time, T]), exactly what ``step`` would have returned one by one."""
        if self._generic:
            return self._generic_prime(history)
        rows = self._reader.rows(history, "history")
        parity = self._parity
        live = self._bufs[parity]
        feeds = {self._io.input: rows[None]}
        feeds.update((s.input, a) for s, a in zip(self._io.states, live, strict=True))
        outs = self._call([self._io.output, *(s.output for s in self._io.states)], feeds)
        for dst, new in zip(self._bufs[parity ^ 1], outs[1:], strict=True):
            dst[...] = new
        self._parity = parity ^ 1
        ys = outs[0][0]  # [time, T]
        self._y[0, 0] = ys[-1]
        self._has_last = True
        return ys[:, 0].copy() if self._one_out else ys

    def forecast(self, n: int) -> np.ndarray:
        """Predict ``n`` steps ahead by feeding each prediction back as the next point.

        Starts from the live state and the latest prediction; the live state is untouched.
        Needs a model whose targets are its features (UnsupportedError otherwise).
        """
        c = self._model.contract
        if c is None:
            raise UnsupportedError("forecast needs an rnnstream contract saying that the "
                                   "targets are the features; this is a foreign model")
        if not c.targets_are_features:
            raise UnsupportedError(
                f"forecast feeds each prediction back as the next input, but this model "
                f"predicts {c.targets} (horizon {c.horizon}) from features {c.features}; it "
                "works only when the targets are the features, in order, with horizon 1"
            )
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"forecast(n): n is {n!r}; expected a positive integer")
        if not self._has_last:
            raise StateError("forecast starts from the latest prediction, and there is none "
                             "yet: call step() or prime() first")
        names = [self._io.output, *(s.output for s in self._io.states)]
        state = [a.copy() for a in self._bufs[self._parity]]
        x = self._y.copy()
        out = np.empty((n, c.n_targets), np.float32)
        for i in range(n):
            feeds = {self._io.input: x}
            feeds.update((s.input, a) for s, a in zip(self._io.states, state, strict=True))
            x, *state = self._call(names, feeds)
            out[i] = x[0, 0]
        return out[:, 0] if self._one_out else out

    def reset(self) -> None:
        """Back to the initial (all-zero) state; forget the latest prediction."""
        if self._generic:
            for a in self._live.values():
                a[...] = 0
            self._last_y = None
        else:
            for buf in self._bufs[self._parity]:
                buf[...] = 0
        self._has_last = False

    def _call(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(names, feeds)
        except ORT_ERRORS as exc:
            raise RnnStreamError(f"{self.path}: onnxruntime failed: {exc}") from exc

    # -- foreign models ------------------------------------------------------------------------
    def _generic_step(self, point: Any) -> float | np.ndarray:
        row = self._reader.row(point)
        x = row.reshape(input_shape(self._io, row.size, 1))
        feeds = {self._io.input: x, **self._live, **self._io.fixed}
        y, *states = self._call(self._fetch, feeds)
        self._live = {s.input: a for s, a in zip(self._io.states, states, strict=True)}
        self._last_y = y
        self._has_last = True
        return y.item(0) if y.size == 1 else y.reshape(-1).copy()

    def _generic_prime(self, history: Any) -> np.ndarray:
        if self._reader.n is None:
            raise UnsupportedError("prime needs a fixed point size; this foreign model's input "
                                   f"{self._io.input!r} has a free axis: call step() per chunk")
        rows = self._reader.rows(history, "history")
        saved = (dict(self._live), self._last_y, self._has_last)
        try:
            return np.stack([np.asarray(self._generic_step(r)) for r in rows])
        except BaseException:
            self._live, self._last_y, self._has_last = saved
            raise

    # -- state ----------------------------------------------------------------------------------
    def _live_rows(self) -> dict[str, np.ndarray]:
        if self._generic:
            return {s.name: (np.take(self._live[s.input], 0, axis=s.batch_axis)
                             if s.batch_axis is not None else self._live[s.input].copy())
                    for s in self._io.states}
        return {s.name: a[0].copy()
                for s, a in zip(self._io.states, self._bufs[self._parity], strict=True)}

    def _last_output(self) -> np.ndarray | None:
        if not self._has_last:
            return None
        if self._generic:
            return self._last_y.reshape(-1).copy()
        return self._yflat.copy()

    def get_state(self) -> State:
        """A copy of the live state (and the latest prediction), safe to keep and restore."""
        return State(self._live_rows(), self.fingerprint, self._last_output())

    def set_state(self, state: State | Mapping[str, np.ndarray]) -> None:
        """Continue from ``state`` (from get_state, or a mapping of name -> row array).

        Wrong names, shapes, dtype, non-finite values or another model's fingerprint raise
        StateError and change nothing.
        """
        if isinstance(state, State) and state.fingerprint:
            check_fingerprint(state.fingerprint, self.fingerprint, "set_state")
        tensors = check_tensors(state, self._io.states, "set_state")
        last = state.last_output if isinstance(state, State) else None
        self._install(tensors, self._check_last(last, "set_state"))

    def _check_last(self, last: Any, source: str) -> np.ndarray | None:
        if last is None or self._generic:
            return None
        n = self._y.size
        if (not isinstance(last, np.ndarray) or last.shape != (n,) or last.dtype != np.float32
                or not np.isfinite(last).all()):
            raise StateError(f"{source}: last_output must be {n} finite float32 values")
        return last

    def _install(self, tensors: dict[str, np.ndarray], last: np.ndarray | None) -> None:
        if self._generic:
            self._live = {s.input: (np.expand_dims(tensors[s.name], s.batch_axis)
                                    if s.batch_axis is not None else tensors[s.name])
                          for s in self._io.states}
            self._last_y = None
            self._has_last = False
            return
        for s, buf in zip(self._io.states, self._bufs[self._parity], strict=True):
            buf[0] = tensors[s.name]
        if last is not None:
            self._yflat[:] = last
        self._has_last = last is not None

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` (.npz) atomically, with the model's fingerprint."""
        arrays = state_arrays(self._live_rows())
        last = self._last_output()
        if last is not None and not self._generic:
            arrays["last_output"] = last
        write_snapshot(path, {"kind": "stream", "fingerprint": self.fingerprint,
                              "states": [s.name for s in self._io.states]}, arrays)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Continue from a snapshot written by :meth:`save_state` for this same model."""
        source = os.fspath(path)
        meta, arrays = read_snapshot(source, "stream")
        check_fingerprint(str(meta.get("fingerprint", "")), self.fingerprint, source)
        tensors = check_tensors(tensors_from(arrays), self._io.states, source)
        self._install(tensors, self._check_last(arrays.get("last_output"), source))
