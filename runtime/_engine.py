"""The model side of streaming: one engine per loaded model, shared by Predictor and StreamPool.

An engine owns what is fixed for a model -- its onnxruntime sessions, its I/O description, the
validator of its points -- and no stream state (sherpa-onnx's recognizer / stream split). Two
engines stand behind one interface:

* :class:`BoundEngine`: models rnnstream exported (a contract): float32 ``x [batch, time, F]``,
  states ``[batch, layers, hidden]``, an optional single-step graph, IOBinding fast paths.
* :class:`ForeignEngine`: any other stateful model, its state pairs found by :mod:`._generic`;
  plain ``session.run`` with the model's own axes (batch and time probed with onnxruntime at
  load) and fixed inputs; ``prime`` runs a history in one call along a free time axis.

Per-stream state lives in the stream objects an engine opens (:meth:`Engine.open_stream`, one
per :class:`~rnnstream.runtime.Predictor`); :class:`~rnnstream.runtime.StreamPool` keeps its own
``[streams, ...]`` buffers and runs them through the engine's sessions.

Every onnxruntime call goes through :meth:`Engine.call`, the one place where an onnxruntime
exception becomes an :class:`~rnnstream.runtime.errors.InferenceError`. No call writes stream
state before it has succeeded, so a failed call leaves the state as it was.

Single stream, rnnstream models (:class:`BoundStream`). Everything a step needs is allocated and
bound once::

    x   [1, 1, F]   the point, copied in by step()
    y   [1, 1, T]   the prediction, written by onnxruntime
    s0, s1          two buffers per state, [1, layers, hidden]
    binding[0]:  x, s0 -> y, s1        binding[1]:  x, s1 -> y, s0

A step copies the point into ``x``, runs ``binding[parity]`` and flips ``parity``; no state is
ever copied. The live state is ``s[parity]``, which a failing run never writes. onnxruntime's
IOBinding holds raw pointers, not references: every bound buffer stays referenced by the stream
for its whole life. The bindings use the model's single-step graph (``model.step.onnx``) when the
contract names one (see :mod:`rnnstream.runtime.pool` for the measurements); ``prime`` and
``forecast`` use the sequence graph (prime needs time > 1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import onnxruntime as ort

from ._generic import BatchAxis
from ._io import ORT_ERRORS, ModelIO, Outputs, free_axes, input_array, output_rows
from ._points import PointReader
from ._session import LoadedModel, load_model, load_step_session
from .contract import ModelContract
from .errors import InferenceError, InputError, StateError, UnsupportedError

__all__ = ["BoundEngine", "Engine", "ForeignEngine", "open_engine"]

_F32_MAX = 3.4028234663852886e38  # float(np.finfo(np.float32).max), without its import cost

R = TypeVar("R")
Tensors = dict[str, np.ndarray]  # state name -> one stream's rows (no batch axis)


def open_engine(
    model: str | os.PathLike[str],
    *,
    session_options: ort.SessionOptions | None = None,
    providers: Sequence[Any] | None = None,
    state_map: Mapping[str, str] | None = None,
    fixed_inputs: Mapping[str, Any] | None = None,
    batch_axis: BatchAxis = None,
) -> Engine:
    """Load ``model`` and return the engine that streams it (see the module docstring)."""
    loaded = load_model(model, session_options=session_options, providers=providers,
                        state_map=state_map, fixed_inputs=fixed_inputs, batch_axis=batch_axis)
    if loaded.contract is None:
        return ForeignEngine(loaded, None)
    return BoundEngine(loaded, load_step_session(loaded, session_options, providers))


def input_reader(model: LoadedModel) -> PointReader:
    """The point validator for a model: named features, or the foreign input's size (its fixed
    axes; any size when a free axis is neither the batch nor time: a chunk of samples)."""
    if model.contract is not None:
        return PointReader(model.contract.n_features, model.contract.features)
    io = model.io
    free = [i for i in free_axes(io.input_shape) if i not in (io.batch_axis, io.time_axis)]
    fixed = math.prod(d for d in io.input_shape if d is not None)
    return PointReader(None if free and io.time_axis is None else fixed, None, io.input_dtype)


class Engine:
    """One loaded model: sessions, I/O and point reader; holds no stream state."""

    def __init__(self, model: LoadedModel, step_session: ort.InferenceSession | None) -> None:
        self.model = model
        self.path = model.path
        self.io: ModelIO = model.io
        self.session = model.session
        self.step_session = step_session
        self.reader = input_reader(model)
        self.fetch = self.io.fetch  # by name: the prediction, the states, the extras

    # -- facts --------------------------------------------------------------------------------
    @property
    def contract(self) -> ModelContract | None:
        return self.model.contract

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @property
    def pairing(self) -> str:
        return self.model.note

    @property
    def state_pairs(self) -> dict[str, str]:
        return {s.input: s.output for s in self.io.states}

    @property
    def features(self) -> list[str] | None:
        c = self.model.contract
        return list(c.features) if c is not None else None

    @property
    def targets(self) -> list[str] | None:
        c = self.model.contract
        return list(c.targets) if c is not None else None

    # -- onnxruntime calls --------------------------------------------------------------------
    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)``, an onnxruntime call; its failure becomes an InferenceError."""
        try:
            return fn(*args)
        except ORT_ERRORS as exc:
            raise self.failed(exc) from exc

    def failed(self, exc: BaseException) -> InferenceError:
        """The error for an onnxruntime exception raised while running this model."""
        return InferenceError(f"{self.path}: onnxruntime failed: {exc}")

    def run(self, feeds: Mapping[str, np.ndarray],
            session: ort.InferenceSession | None = None) -> Outputs:
        """The outputs for ``feeds`` by role: the prediction, every next state (in
        ``io.states`` order) and the other outputs by name."""
        return self.io.split(self.call((session or self.session).run, self.fetch, feeds))

    # -- what the two engines do differently ----------------------------------------------------
    def open_stream(self) -> Stream:
        raise NotImplementedError

    def run_sequence(self, rows: np.ndarray, tensors: Tensors,
                     extra: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, Tensors]:
        """``rows`` [time, F] from state ``tensors`` -> (predictions [time, size], next state);
        ``extra``, when given, receives the other outputs of the last row by name.

        ``rows`` and ``tensors`` are validated by the caller; nothing is kept.
        """
        raise NotImplementedError

    def zero_state(self) -> Tensors:
        return {s.name: np.zeros(s.row_shape, s.dtype) for s in self.io.states}


class BoundEngine(Engine):
    """An rnnstream model: the contract fixes every name, shape and dtype."""

    contract: ModelContract

    def open_stream(self) -> BoundStream:
        return BoundStream(self)

    def run_sequence(self, rows: np.ndarray, tensors: Tensors,
                     extra: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, Tensors]:
        if self.contract.step_only:  # the graph's time axis is 1: one call per row
            ys = []
            for i in range(len(rows)):
                y, tensors = self._run_rows(rows[i:i + 1], tensors, extra)
                ys.append(y)
            return np.concatenate(ys), tensors
        return self._run_rows(rows, tensors, extra)

    def _run_rows(self, rows: np.ndarray, tensors: Tensors,
                  extra: dict[str, np.ndarray] | None) -> tuple[np.ndarray, Tensors]:
        io = self.io
        feeds = {io.input: rows[None]}
        feeds.update((s.input, tensors[s.name][None]) for s in io.states)
        out = self.run(feeds)
        if extra is not None:
            extra.update((name, a[0, -1]) for name, a in out.extra.items())
        return out.prediction[0], {s.name: a[0]
                                   for s, a in zip(io.states, out.states, strict=True)}


class ForeignEngine(Engine):
    """A stateful model rnnstream did not export: its own axes, dtypes and fixed inputs."""

    def open_stream(self) -> ForeignStream:
        return ForeignStream(self)

    def feeds(self, rows: np.ndarray, live: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The feeds of ``rows`` [k, size] (k > 1 along the time axis): the data input, the live
        state (by input name), fixed inputs."""
        x = input_array(self.io, rows, self.io.time_axis)
        return {self.io.input: x, **live, **self.io.fixed}

    def run_live(self, rows: np.ndarray, live: Mapping[str, np.ndarray]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``rows`` [k, size] from session state ``live`` -> (predictions [k, values], the
        state after the last row): one call along the time axis, or one call per row when
        the model has none. Nothing is kept; ``live`` is not written."""
        io = self.io
        if io.time_axis is not None or len(rows) == 1:
            out = self.run(self.feeds(rows, live))
            return (output_rows(out.prediction, io.output_time_axis, len(rows)),
                    {s.input: a for s, a in zip(io.states, out.states, strict=True)})
        if self.reader.n is None:
            raise UnsupportedError(
                f"a sequence needs a fixed point size, and the input {io.input!r} "
                f"{list(io.input_shape)} of this foreign model has a free axis that is "
                "neither the batch nor time (a chunk of any size): call step() per chunk")
        ys = []
        for i in range(len(rows)):
            out = self.run(self.feeds(rows[i:i + 1], live))
            live = {s.input: a for s, a in zip(io.states, out.states, strict=True)}
            ys.append(out.prediction.reshape(-1))
        return np.stack(ys), dict(live)

    def run_sequence(self, rows: np.ndarray, tensors: Tensors,
                     extra: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, Tensors]:
        ys, live = self.run_live(rows, self.batched(tensors))  # a foreign model has no extras
        return ys, self.rows_of(live)

    def batched(self, tensors: Tensors) -> dict[str, np.ndarray]:
        """Row tensors (by state name) as session inputs of batch 1 (by input name)."""
        return {s.input: (np.expand_dims(tensors[s.name], s.batch_axis)
                          if s.batch_axis is not None else tensors[s.name])
                for s in self.io.states}

    def rows_of(self, live: Mapping[str, np.ndarray]) -> Tensors:
        """Session state of batch 1 (by input name) as row copies (by state name)."""
        return {s.name: (np.take(live[s.input], 0, axis=s.batch_axis)
                         if s.batch_axis is not None else live[s.input].copy())
                for s in self.io.states}


# -- one stream's state -------------------------------------------------------------------------
class Stream:
    """The state of one stream of an engine's model, and the calls that advance it."""

    keeps_last: ClassVar[bool]  # whether snapshots carry the latest prediction
    has_last: bool

    def step(self, point: Any) -> float | np.ndarray:
        raise NotImplementedError

    def prime(self, history: Any) -> np.ndarray:
        raise NotImplementedError

    def forecast(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def rows(self) -> Tensors:
        """A copy of the live state, state name -> row."""
        raise NotImplementedError

    def last_output(self) -> np.ndarray | None:
        raise NotImplementedError

    def last_outputs(self) -> dict[str, np.ndarray]:
        """Copies of the latest step's (or prime's last point's) outputs other than the
        states, by name: the prediction and any other output; empty before the first."""
        raise NotImplementedError

    def last_point(self) -> np.ndarray:
        """The latest point fed, as model input values (a view, valid until the next step)."""
        raise UnsupportedError("this stream does not keep its latest point")

    def check_last(self, last: Any, source: str) -> np.ndarray | None:
        """The latest prediction to restore with a state, validated (None: nothing to keep)."""
        return None

    def install(self, tensors: Tensors, last: np.ndarray | None) -> None:
        """Continue from validated ``tensors`` (and ``last``); cannot fail."""
        raise NotImplementedError


class BoundStream(Stream):
    """One stream of an rnnstream model: ping-pong IOBinding (see the module docstring)."""

    keeps_last = True

    def __init__(self, engine: BoundEngine) -> None:
        c, io = engine.contract, engine.io
        f32 = np.float32
        self._engine = engine
        self._reader = engine.reader
        self._x = np.zeros((1, 1, c.n_features), f32)
        self._y = np.zeros((1, 1, c.n_targets), f32)
        self._xflat = self._x.reshape(-1)  # views: writing them writes the bound buffers
        self._yflat = self._y.reshape(-1)
        self._one_in = c.n_features == 1
        self._one_out = c.n_targets == 1
        self._bufs = [[np.zeros(s.full_shape(1), f32) for s in io.states] for _ in range(2)]
        # outputs beyond the prediction and the states, bound like y (by name, [1, 1, width])
        self._extra = {o.name: np.zeros((1, 1, o.width), f32) for o in io.extras}
        self._bindings = []
        session = engine.step_session or engine.session
        for src, dst in ((0, 1), (1, 0)):
            b = session.io_binding()
            b.bind_input(io.input, "cpu", 0, f32, self._x.shape, self._x.ctypes.data)
            b.bind_output(io.output, "cpu", 0, f32, self._y.shape, self._y.ctypes.data)
            for name, e in self._extra.items():
                b.bind_output(name, "cpu", 0, f32, e.shape, e.ctypes.data)
            for s, a, o in zip(io.states, self._bufs[src], self._bufs[dst], strict=True):
                b.bind_input(s.input, "cpu", 0, f32, a.shape, a.ctypes.data)
                b.bind_output(s.output, "cpu", 0, f32, o.shape, o.ctypes.data)
            self._bindings.append(b)
        self._parity = 0
        self.has_last = False
        # a bound method looked up once; run() with RunOptions costs ~33 µs more, so none
        self._run_bound = session.run_with_iobinding

    def step(self, point: Any) -> float | np.ndarray:
        # fast path: a plain float within float32's range (NaN, inf and 1e39 fail the test
        # and go through the validator, which says what is wrong)
        if self._one_in and type(point) is float and -_F32_MAX <= point <= _F32_MAX:
            self._xflat[0] = point
        else:
            self._xflat[:] = self._reader.row(point)
        parity = self._parity
        try:  # Engine.call inlined: its Python frame would cost ~1% of a step
            self._run_bound(self._bindings[parity])
        except ORT_ERRORS as exc:  # the live buffer was an input only: state unchanged
            raise self._engine.failed(exc) from exc
        self._parity = parity ^ 1
        self.has_last = True
        return self._yflat.item(0) if self._one_out else self._yflat.copy()

    def prime(self, history: Any) -> np.ndarray:
        rows = self._reader.rows(history, "history")
        engine = self._engine
        live = {s.name: a[0] for s, a in zip(engine.io.states, self._bufs[self._parity],
                                             strict=True)}
        extra: dict[str, np.ndarray] = {}
        ys, new = engine.run_sequence(rows, live, extra if self._extra else None)  # [time, T]
        for name, a in extra.items():
            self._extra[name][0, 0] = a
        for s, dst in zip(engine.io.states, self._bufs[self._parity ^ 1], strict=True):
            dst[0] = new[s.name]
        self._parity ^= 1
        self._y[0, 0] = ys[-1]
        self.has_last = True
        return ys[:, 0].copy() if self._one_out else ys

    def forecast(self, n: int) -> np.ndarray:
        engine = self._engine
        c = engine.contract
        if not c.targets_are_features:
            raise UnsupportedError(
                f"forecast feeds each prediction back as the next input, but this model "
                f"predicts {c.targets} (horizon {c.horizon}) from features {c.features}; it "
                "works only when the targets are the features, in order, with horizon 1"
            )
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"forecast(n): n is {n!r}; expected a positive integer")
        if not self.has_last:
            raise StateError("forecast starts from the latest prediction, and there is none "
                             "yet: call step() or prime() first")
        io = engine.io
        state = [a.copy() for a in self._bufs[self._parity]]
        x = self._y.copy()
        out = np.empty((n, c.n_targets), np.float32)
        for i in range(n):
            feeds: dict[str, np.ndarray] = {io.input: x}
            feeds.update((s.input, a) for s, a in zip(io.states, state, strict=True))
            step = engine.run(feeds)
            x, state = step.prediction, step.states
            out[i] = x[0, 0]
        return out[:, 0] if self._one_out else out

    def reset(self) -> None:
        for buf in self._bufs[self._parity]:
            buf[...] = 0
        self.has_last = False

    def rows(self) -> Tensors:
        return {s.name: a[0].copy()
                for s, a in zip(self._engine.io.states, self._bufs[self._parity], strict=True)}

    def last_output(self) -> np.ndarray | None:
        return self._yflat.copy() if self.has_last else None

    def last_outputs(self) -> dict[str, np.ndarray]:
        if not self.has_last:
            return {}
        return {self._engine.io.output: self._yflat.copy(),
                **{name: e.reshape(-1).copy() for name, e in self._extra.items()}}

    def last_point(self) -> np.ndarray:
        return self._xflat

    def check_last(self, last: Any, source: str) -> np.ndarray | None:
        if last is None:
            return None
        n = self._y.size
        if (not isinstance(last, np.ndarray) or last.shape != (n,) or last.dtype != np.float32
                or not np.isfinite(last).all()):
            raise StateError(f"{source}: last_output must be {n} finite float32 values")
        return last

    def install(self, tensors: Tensors, last: np.ndarray | None) -> None:
        for s, buf in zip(self._engine.io.states, self._bufs[self._parity], strict=True):
            buf[0] = tensors[s.name]
        if last is not None:
            self._yflat[:] = last
        for e in self._extra.values():  # a state carries the prediction only: not known
            e[...] = np.nan
        self.has_last = last is not None


class ForeignStream(Stream):
    """One stream of a foreign model: plain ``session.run``, the state kept as session arrays."""

    keeps_last = False  # forecast is not possible without a contract: nothing to feed back

    def __init__(self, engine: ForeignEngine) -> None:
        self._engine = engine
        self._live = {s.input: np.zeros(s.full_shape(1), s.dtype) for s in engine.io.states}
        self._last_y: np.ndarray | None = None
        self.has_last = False

    def step(self, point: Any) -> float | np.ndarray:
        engine = self._engine
        out = engine.run(engine.feeds(engine.reader.row(point)[None], self._live))
        y = out.prediction
        self._live = {s.input: a for s, a in zip(engine.io.states, out.states, strict=True)}
        self._last_y = y
        self.has_last = True
        return y.item(0) if y.size == 1 else y.reshape(-1).copy()

    def prime(self, history: Any) -> np.ndarray:
        engine = self._engine
        if engine.reader.n is None:
            raise UnsupportedError(
                f"prime needs a fixed point size, and the input {engine.io.input!r} "
                f"{list(engine.io.input_shape)} of this foreign model has a free axis that is "
                "neither the batch nor time (a chunk of any size): call step() per chunk")
        rows = engine.reader.rows(history, "history")
        ys, live = engine.run_live(rows, self._live)  # nothing written before it succeeds
        self._live, self._last_y, self.has_last = live, ys[-1].copy(), True
        return ys[:, 0].copy() if ys.shape[1] == 1 else ys

    def forecast(self, n: int) -> np.ndarray:
        raise UnsupportedError("forecast needs an rnnstream contract saying that the "
                               "targets are the features; this is a foreign model")

    def reset(self) -> None:
        for a in self._live.values():
            a[...] = 0
        self._last_y = None
        self.has_last = False

    def rows(self) -> Tensors:
        return self._engine.rows_of(self._live)

    def last_output(self) -> np.ndarray | None:
        if not self.has_last or self._last_y is None:
            return None
        return self._last_y.reshape(-1).copy()

    def last_outputs(self) -> dict[str, np.ndarray]:
        last = self.last_output()  # a foreign model's other outputs are not fetched
        return {} if last is None else {self._engine.io.output: last}

    def install(self, tensors: Tensors, last: np.ndarray | None) -> None:
        self._live = self._engine.batched(tensors)
        self._last_y = None
        self.has_last = False
