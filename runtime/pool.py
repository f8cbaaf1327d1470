"""Many streams over one model: :class:`StreamPool`.

Layout. Each state has one buffer ``[capacity, *row]`` (``row = [layers, hidden]`` for rnnstream
models); stream ``k`` owns row ``rows[k]``. A step gathers the rows of the streams that have a
new point, runs the session ONCE on that batch, and scatters the new state back. Capacity
doubles when full; removing a stream moves the last row into the freed one (swap-with-last),
so rows ``0..len-1`` are always the live streams. The row list of the latest key list is
cached, and when it is exactly ``0..n-1`` the gather is a view (no copy).

Calls (rnnstream models). Each call picks a graph and a way to call it by its batch size ``n``;
the constants below hold the thresholds and the measurements behind them:

* the single-step graph (``model.step.onnx``) whenever the contract names one (it was faster
  at every batch size measured, see below), the sequence graph when there is none;
* batches larger than :func:`chunk_rows` are run as several chunks, so that each chunk's
  working set stays in cache (one 16,384-row call is 3-7x slower per row than 1,024-row ones);
* a batch size seen :data:`BIND_AFTER` times gets a plan (:class:`~._batches.Plan`): buffers and
  one IOBinding per chunk, bound once, so a call copies rows in, runs, and copies rows out with
  no allocation (saves ~3 µs a call over ``run()``); other sizes use ``run()`` per chunk.

Cores (``threads=``, default: the cores this process may use, at most :data:`MAX_THREADS`). A
batch large enough that each thread gets :func:`parallel_rows` rows is cut into contiguous
blocks, one per thread (:mod:`._shards`); each block's pieces are run by its own thread on the
one shared session (onnxruntime releases the GIL). Below that, one call on the caller's thread.
A row's result does not depend on its block, so any thread count gives the numbers of one.

Failure. The new state is written back only after every piece's session call succeeded (on
every thread) and every input was validated (outputs go to temporaries), so a refused or failed
call leaves every stream's state bit-for-bit as it was. When every stream steps, in order, the
outputs go to a twin of the state buffers, which then becomes the state (no copy back).

Threads. One lock serialises every public method: concurrent callers never see each other's
state and no update is lost. The pool owns its worker threads (started on the first call that
needs them, daemons); :meth:`StreamPool.close` (or leaving ``with StreamPool(...) as pool``)
stops them, as does collecting the pool. No global setting (onnxruntime's, numpy's) is touched.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from . import spec
from ._batches import BIND_AFTER, MAX_PLANS, BoundBatches, ForeignBatches  # noqa: F401 (named)
from ._engine import BoundEngine, ForeignEngine, open_engine
from ._generic import BatchAxis
from ._shards import Workers, default_threads
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
from .errors import ConfigError, InputError, StateError, StreamKeyError, UnsupportedError
from .live import FORECASTERS, LiveConfig, LiveScores, snapshot_entries
from .predictor import _EngineFacts

__all__ = ["StreamPool"]

# -- per-call strategy: every threshold in one place ----------------------------------------------
# Step graph vs sequence graph, measured by bench/bench_runtime.py (LSTM, one thread,
# onnxruntime 1.32, a shared 2-core x86 box, p50; its "graph" rows and the pool rows' raw
# columns):
#   B=1, raw IOBinding ping-pong: hidden 32 / 1 layer 8.33-8.43 vs 9.01-9.03 µs (1.07x);
#                                 hidden 128 / 2 layers 26.58-26.65 vs 27.32-27.80 µs (1.03x)
#   (undisturbed runs; on a busy box single runs can swing 30% either way: rerun the bench)
#   hidden 32, raw run(): B=64 2.41 vs 2.05 M steps/s; B=1024 4.55 vs 3.55; B=16384 2.19 vs 1.44
# The step graph was faster at every size measured, so it is used whenever the model has one
# (there is no batch threshold).
# Rows per chunk = CHUNK_GATE_FLOATS // (gate columns per row), at least MIN_CHUNK_ROWS. Best
# single-call rates: hidden 32 LSTM (128 gate columns) at 512-1024 rows (7.3-7.5 M/s, vs 0.8
# at 16,384); hidden 128 LSTM at 128-256 rows (0.43-0.45 M/s, vs 0.17 at 16,384).
CHUNK_GATE_FLOATS = 1 << 17
MIN_CHUNK_ROWS = 64
# Threads (StreamPool(threads=N), default: the cores this process may use, at most MAX_THREADS).
# A batch goes to several threads only when each gets at least parallel_rows() rows: below,
# one call on the caller's thread (no hop). bench_runtime's "forced" rows (every batch split in
# two; a quiet 2-core AMD EPYC VM): hidden 32 / 1 layer 0.78x at 128 rows a thread, 0.97x at
# 256, 1.17x at 512, 1.50x at 1,024; hidden 128 / 2 layers 0.79x at 8, 1.03x at 16, 1.30x at
# 32. A split pays from about 100 µs of work a thread (the hand-off costs ~45 µs there), and a
# row costs about 0.11 µs + 0.025 ns per multiply-add of its gates (0.22 µs at hidden 32, 5 µs
# at hidden 128 x 2), so the work of a row is counted as its multiply-adds + ROW_WORK, and a
# thread gets at least PARALLEL_WORK of it (458 rows at hidden 32, 20 at hidden 128 x 2).
PARALLEL_WORK = 4_000_000
ROW_WORK = 4_500
# The caller's thread starts its block at once and is not woken at the end; a worker is, twice
# (bench_runtime's round trip: ~45 µs there). The caller's block is HANDOFF_WORK larger (~40 µs
# of rows; 92 rows at hidden 32, 4 at hidden 128 x 2), so that every thread ends together.
HANDOFF_WORK = 1_600_000
MAX_THREADS = 8


def _gate_columns(contract: ModelContract) -> int:
    cell = spec.CELLS.get(contract.cell)
    if cell is None:  # a custom model: its state's width stands in for the gate columns
        return max(1, 4 * max((math.prod(s.row_shape) for s in contract.states), default=1))
    return cell.step_columns * contract.hidden


def row_work(contract: ModelContract) -> int:
    """Multiply-adds of one row's step (every layer's gate Gemm; a custom model: its gate
    columns times its state width) plus ROW_WORK, the per-row cost besides them."""
    cell = spec.CELLS.get(contract.cell)
    columns = _gate_columns(contract)
    if cell is None:
        width = max((math.prod(s.row_shape) for s in contract.states), default=1)
        return columns * width + ROW_WORK
    hidden, layers = contract.hidden, max(1, contract.layers)
    return columns * (contract.n_features + hidden) + (layers - 1) * columns * 2 * hidden \
        + ROW_WORK


def parallel_rows(contract: ModelContract) -> int:
    """The fewest rows a thread is given (see PARALLEL_WORK)."""
    return max(1, PARALLEL_WORK // row_work(contract))


def chunk_rows(contract: ModelContract) -> int:
    """Rows per session call for this model (see CHUNK_GATE_FLOATS)."""
    return max(MIN_CHUNK_ROWS, CHUNK_GATE_FLOATS // _gate_columns(contract))


def _one_as_block(rows: np.ndarray | slice) -> np.ndarray | slice:
    """One row index as a block of one (the live scores' in-place path: no copies)."""
    if isinstance(rows, slice) or len(rows) != 1:
        return rows
    return slice(int(rows[0]), int(rows[0]) + 1)


def _show(keys: Iterable[Any], limit: int = 10) -> str:
    keys = list(keys)
    text = ", ".join(repr(k) for k in keys[:limit])
    return text + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


class StreamPool(_EngineFacts):
    """Independent streams, each with its own state, advanced together in batched calls.

    ``auto_add=True`` adds unknown keys on step (otherwise they raise StreamKeyError).
    ``idle_timeout_s`` evicts streams idle for longer than that many seconds: a stream is
    active when it is added (or loaded) and after each step that advanced it (the clock is
    read right after the step; a refused or failed step touches no stream); :meth:`touch`
    marks streams active too. :meth:`evict_idle` removes the idle ones, sparing the keys its
    caller names; ``auto_evict=True`` also sweeps during steps (at most every quarter of
    ``idle_timeout_s``), ``False`` leaves eviction to an owner that calls :meth:`evict_idle`
    itself (rnnstream serve, which spares sequences with requests in progress). ``clock`` is
    the monotonic clock used for it all.

    ``live=LiveConfig(coverage=0.9, ...)`` (or ``coverage``, ``season`` and ``live_options``,
    as on :class:`~rnnstream.runtime.Predictor`) scores every stream live and gives each
    prediction an interval calibrated on its own stream: :meth:`interval`, :meth:`accuracy`,
    :meth:`realised_coverage`; snapshots carry them.

    Foreign models (no contract; ``state_map`` and ``fixed_inputs`` as on Predictor) are
    batched along the axes onnxruntime confirms at load; where several could be the batch,
    ``batch_axis`` says which (the data input's axis, or ``{input: axis}``; still run once to
    confirm it).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        auto_add: bool = False,
        idle_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        auto_evict: bool = True,
        capacity: int = 64,
        session_options: ort.SessionOptions | None = None,
        providers: Sequence[Any] | None = None,
        state_map: Mapping[str, str] | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        batch_axis: BatchAxis = None,
        coverage: float | None = None,
        season: int | None = None,
        live_options: Mapping[str, Any] | None = None,
        threads: int | None = None,
        live: LiveConfig | None = None,
    ) -> None:
        config = LiveConfig.resolve(live, coverage, season, live_options, "StreamPool")
        if threads is None:
            threads = default_threads(MAX_THREADS)
        elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads={threads!r}: expected a positive number of threads, or "
                              "None for the cores this process may use")
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ConfigError(f"idle_timeout_s={idle_timeout_s!r}: expected a positive "
                              "number of seconds, or None")
        self._engine = engine = open_engine(
            model, session_options=session_options, providers=providers, state_map=state_map,
            fixed_inputs=fixed_inputs, batch_axis=batch_axis)
        io = self._io = engine.io
        self._reader = engine.reader
        n_in = self._reader.n
        if io.input_batch_axis is None or any(s.batch_axis is None for s in io.states):
            raise UnsupportedError(
                f"{self.path}: a pool batches streams along a dynamic batch axis, and this "
                f"model has none that onnxruntime confirms ({io.batch_note}); if it has one, "
                "say which with StreamPool(..., batch_axis=N) (the data input's axis, or "
                "{input name: axis} for the states too); else use one Predictor per stream")
        if n_in is None:
            raise UnsupportedError(f"{self.path}: input {io.input!r} has a free axis besides "
                                   "the batch and time axes; a pool needs fixed-size points")
        self.auto_add = bool(auto_add)
        self.idle_timeout_s = idle_timeout_s
        self.auto_evict = bool(auto_evict)
        self._clock = clock
        self._lock = threading.Lock()
        self._bufs = {s.name: np.zeros((max(1, int(capacity)), *s.row_shape), s.dtype)
                      for s in io.states}
        self._seen = np.zeros(max(1, int(capacity)), np.float64)
        self._rows: dict[Hashable, int] = {}
        self._keys: list[Hashable] = []
        self._cache_keys: list[Hashable] | None = None
        self._cache_rows: np.ndarray | slice = slice(0, 0)
        self._last_sweep = clock()
        self._n_in = n_in
        self._generation = 0  # bumped whenever self._bufs are reallocated
        self._zeros: dict[int, np.ndarray] = {}  # size -> zeros, for the finiteness check
        self._runner: BoundBatches | ForeignBatches
        self._workers = Workers(threads if isinstance(engine, BoundEngine) else 1)
        # threads stop when the pool is closed, or collected unclosed (they hold no pool ref)
        self._finalizer = weakref.finalize(self, self._workers.close)
        if isinstance(engine, BoundEngine):
            contract = engine.contract
            self._runner = BoundBatches(engine, self._workers, chunk_rows(contract),
                                        parallel_rows(contract),
                                        HANDOFF_WORK // row_work(contract))
        elif isinstance(engine, ForeignEngine):
            self._runner = ForeignBatches(engine, n_in)
        else:  # pragma: no cover - open_engine returns one of the two
            raise TypeError(f"no batch runner for {type(engine).__name__}")
        self._last_y: np.ndarray | None = None  # the latest step's predictions (last_outputs)
        self._live: LiveScores | None = None
        if config.enabled:
            if engine.contract is None:
                raise UnsupportedError("coverage needs an rnnstream contract (feature and "
                                       "target names, horizon); this is a foreign model")
            self._live = config.open(engine.contract, self.path, n=self.capacity)

    # -- facts ----------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return len(self._seen)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._keys)

    def __repr__(self) -> str:
        return f"StreamPool({self.path!r}, streams={len(self)})"

    @property
    def last_outputs(self) -> dict[str, np.ndarray]:
        """The latest :meth:`step`/:meth:`step_many` call's outputs other than the states, by
        name, one row per key of that call in its order: the prediction ``[n, T]`` (the array
        step_many returned) and each other output the model declares (``[n, width]``, e.g.
        role ``quantile`` or ``aux``); empty before the first step."""
        with self._lock:
            if self._last_y is None:
                return {}
            return {self._io.output: self._last_y, **self._runner.extra}

    @property
    def threads(self) -> int:
        """Threads a large step runs on (the caller's included); 1 for foreign models and
        after :meth:`close`."""
        return self._workers.running

    # -- threads --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the pool's worker threads. The streams stay: later steps run on the calling
        thread alone, and the state can still be read and saved. Idempotent."""
        with self._lock:
            self._finalizer()

    def __enter__(self) -> StreamPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- membership -----------------------------------------------------------------------------
    def add(self, key: Hashable, state: State | Mapping[str, np.ndarray] | None = None) -> None:
        """Add a stream at the initial state (or at ``state``); an existing key is an error."""
        tensors = None
        if state is not None:
            if isinstance(state, State) and state.fingerprint:
                check_fingerprint(state.fingerprint, self.fingerprint, f"add({key!r})")
            tensors = check_tensors(state, self._io.states, f"add({key!r})")
        with self._lock:
            if key in self._rows:
                raise StreamKeyError(f"stream {key!r} already exists")
            self._add([key], self._clock() if self.idle_timeout_s else 0.0)
            if tensors is not None:
                row = self._rows[key]
                for name, t in tensors.items():
                    self._bufs[name][row] = t

    def remove(self, key: Hashable) -> None:
        with self._lock:
            self._remove(self._row(key))

    def reset(self, key: Hashable) -> None:
        """Put stream ``key`` back to the initial (all-zero) state."""
        with self._lock:
            row = self._row(key)
            for buf in self._bufs.values():
                buf[row] = 0
            if self._live is not None:
                self._live.reset([row])

    def evict_idle(self, spare: Container[Hashable] = ()) -> list[Hashable]:
        """Remove the streams idle for longer than ``idle_timeout_s``, except the keys in
        ``spare`` (any container: a set, a dict, an object with ``__contains__``); return the
        keys removed, in row order. Without ``idle_timeout_s``: none."""
        with self._lock:
            return self._evict(self._clock(), spare)

    def touch(self, keys: Iterable[Hashable] | None = None, at: float | None = None) -> None:
        """Mark streams ``keys`` (default: every stream) active at clock reading ``at``
        (default: now), as a step would: their idle time starts again from there."""
        if at is not None and (isinstance(at, bool) or not isinstance(at, (int, float))
                               or not math.isfinite(at)):
            raise InputError(f"touch(at={at!r}): expected a finite clock reading (seconds of "
                             "the pool's clock), or None for now")
        with self._lock:
            now = self._clock() if at is None else float(at)
            if keys is None:
                self._seen[:len(self._keys)] = now
                return
            rows = [self._row(k) for k in keys]  # every key checked before any changes
            self._seen[rows] = now

    def last_seen(self, key: Hashable) -> float:
        """The clock reading when stream ``key`` was last active (added, loaded, stepped or
        touched); kept only with ``idle_timeout_s`` (else 0.0, or what :meth:`touch` set)."""
        with self._lock:
            return float(self._seen[self._row(key)])

    def _row(self, key: Hashable) -> int:
        try:
            return self._rows[key]
        except (KeyError, TypeError):
            raise StreamKeyError(f"unknown stream {key!r} ({len(self._keys)} streams; "
                                 "add it first, or create the pool with auto_add=True)") from None

    def _add(self, keys: list[Hashable], now: float) -> None:
        need = len(self._keys) + len(keys)
        if need > self.capacity:
            cap = self.capacity
            while cap < need:
                cap *= 2
            n = len(self._keys)
            for name, buf in self._bufs.items():
                grown = np.zeros((cap, *buf.shape[1:]), buf.dtype)
                grown[:n] = buf[:n]
                self._bufs[name] = grown
            self._generation += 1  # plans bound to the old buffers rebind (see _batches.Plan)
            seen = np.zeros(cap, np.float64)
            seen[:n] = self._seen[:n]
            self._seen = seen
            if self._live is not None:
                self._live.resize(cap)
        if self._live is not None and keys:
            first = len(self._keys)
            self._live.reset(slice(first, first + len(keys)))
        for key in keys:
            row = len(self._keys)
            self._rows[key] = row
            self._keys.append(key)
            for buf in self._bufs.values():
                buf[row] = 0
            self._seen[row] = now
        self._cache_keys = None

    def _remove(self, row: int) -> None:
        last = len(self._keys) - 1
        key = self._keys[row]
        if row != last:
            moved = self._keys[last]
            for buf in self._bufs.values():
                buf[row] = buf[last]
            self._seen[row] = self._seen[last]
            if self._live is not None:
                self._live.move(last, row)
            self._keys[row] = moved
            self._rows[moved] = row
        self._keys.pop()
        del self._rows[key]
        self._cache_keys = None

    def _evict(self, now: float, spare: Container[Hashable] = ()) -> list[Hashable]:
        self._last_sweep = now
        if self.idle_timeout_s is None:
            return []
        n = len(self._keys)
        idle = np.flatnonzero(now - self._seen[:n] > self.idle_timeout_s)
        keys = self._keys
        gone = [keys[r] for r in idle if keys[r] not in spare]
        for key in gone:
            self._remove(self._rows[key])
        return gone

    # -- stepping -------------------------------------------------------------------------------
    def step(self, points: Mapping[Hashable, Any]) -> dict[Hashable, float | np.ndarray]:
        """Advance the streams in ``points`` (key -> point) in one batched call; return
        key -> prediction (a float when the model has one target)."""
        if not isinstance(points, Mapping):
            raise InputError(f"step() takes a mapping of stream key -> point, got "
                             f"{type(points).__name__}; for arrays use step_many(keys, values)")
        if not points:
            raise InputError("step() got no points; expected a mapping of stream key -> point")
        keys = list(points)
        values = list(points.values())
        arr = None
        if self._n_in == 1 and all(type(v) is float for v in values):
            with np.errstate(over="ignore"):  # 1e39 -> inf here; the validator below says why
                arr = np.array(values, np.float32).reshape(-1, 1)
            if not np.isfinite(arr).all():
                arr = None  # let the per-row validator name the first bad stream and value
        if arr is None:
            arr = np.empty((len(keys), self._n_in), self._io.input_dtype)
            for i, (k, v) in enumerate(points.items()):
                try:
                    arr[i] = self._reader.row(v)
                except InputError as exc:
                    raise InputError(f"stream {k!r}: {exc}") from None
        y = self._step(keys, arr)
        if y.shape[1] == 1:
            return dict(zip(keys, y[:, 0].tolist(), strict=True))
        return dict(zip(keys, y, strict=True))

    def step_many(self, keys: Sequence[Hashable], values: Any) -> np.ndarray:
        """Advance streams ``keys`` with ``values`` ([n, F], or [n] with one feature) in one
        batched call; return the predictions, [n, T]."""
        keys = keys if type(keys) is list else list(keys)
        if (type(values) is np.ndarray and values.dtype == self._io.input_dtype
                and values.ndim == 2 and values.shape[1] == self._n_in and values.shape[0]
                and values.flags.c_contiguous and self._all_finite(values)):
            arr = values  # only read by onnxruntime, never kept
        else:
            arr = self._reader.rows(values, "step_many values")
        if len(keys) != arr.shape[0]:
            raise InputError(f"step_many got {len(keys)} keys but {arr.shape[0]} rows of "
                             "values; expected one row per key")
        return self._step(keys, arr)

    def run_sequences(self, x: Any, states: Mapping[str, np.ndarray] | None = None
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run ``k`` sequences of equal length in one call of the sequence graph: ``x``
        ``[k, time, F]`` from ``states`` (state name -> ``[k, *row]``; None: the initial
        state); return ``(y, next_states)``: the predictions ``[k, time, T]`` and each
        sequence's state after its last point. A pure function of its arguments, like
        :meth:`Predictor.run_sequence` (the same computation; the same bits where onnxruntime's
        kernels are batch-invariant: its LSTM and GRU ops were in every case tried, its RNN op
        differs in the last bit between batch 1 and 5): the pool's streams are untouched and no
        lock is taken. Needs an rnnstream contract (UnsupportedError)."""
        engine = self._engine
        contract = engine.contract
        if not isinstance(engine, BoundEngine) or contract is None:
            raise UnsupportedError("run_sequences needs an rnnstream contract (its sequence "
                                   "graph); this is a foreign model: use Predictor.run_sequence")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nesting, objects numpy cannot hold
            raise InputError(f"run_sequences x is not an array of numbers ({exc})") from None
        n_in = contract.n_features
        if arr.dtype.kind not in "fiu":
            raise InputError(f"run_sequences x has dtype {arr.dtype}; expected numbers "
                             "(float32)")
        if arr.ndim != 3 or arr.shape[2] != n_in or 0 in arr.shape[:2]:
            raise InputError(f"run_sequences x has shape {list(arr.shape)}; expected "
                             f"[sequences, time, {n_in}] with at least one of each")
        if arr.dtype != np.float32 or not arr.flags.c_contiguous:
            with np.errstate(over="ignore"):  # past float32's range: inf, refused below
                arr = np.ascontiguousarray(arr, np.float32)
        if not np.isfinite(arr).all():
            raise InputError("run_sequences x holds NaN, infinite or out-of-range values; "
                             "expected finite float32 values")
        k, time = arr.shape[:2]
        io = self._io
        if states is None:
            tensors = {s.name: np.zeros((k, *s.row_shape), np.float32) for s in io.states}
        else:  # the checks set_state and Predictor.run_sequence make, one row per sequence
            tensors = check_tensors(states, io.states, "run_sequences states", streams=k)
        steps = range(time) if contract.step_only else [slice(None)]
        ys = []
        for t in steps:  # a step-only graph's time axis is 1: one call per time step
            xt = arr if type(t) is slice else arr[:, t:t + 1]
            feeds = {io.input: xt}
            feeds.update((s.input, tensors[s.name]) for s in io.states)
            out = engine.run(feeds)
            ys.append(out.prediction)
            tensors = {s.name: a for s, a in zip(io.states, out.states, strict=True)}
        y = ys[0] if len(ys) == 1 else np.concatenate(ys, axis=1)
        return y.reshape(k, time, -1), tensors

    def _all_finite(self, values: np.ndarray) -> bool:
        """``np.isfinite(values).all()`` in half the time: x * 0 is 0 exactly when x is finite
        (inf * 0 and NaN * 0 are NaN), so the dot product with zeros is 0 iff all are finite."""
        zeros = self._zeros.get(values.size)
        if zeros is None:
            if len(self._zeros) > 64:
                self._zeros.clear()
            zeros = self._zeros[values.size] = np.zeros(values.size, values.dtype)
        return np.vdot(values, zeros) == 0.0

    def _step(self, keys: list[Hashable], arr: np.ndarray) -> np.ndarray:
        with self._lock:
            before = len(self._keys)
            rows = self._cache_rows if self._cached(keys) else self._lookup(keys)
            try:
                y = self._runner.run(rows, arr, self._bufs, self._generation, len(self._keys))
            except BaseException:  # streams auto-added for this call go again: nothing changed
                self._drop_added(before)
                raise
            self._last_y = y
            if self._live is not None:
                self._live_update(rows, arr, y)
            if self.idle_timeout_s is not None:
                now = self._clock()
                self._seen[rows] = now
                if self.auto_evict and now - self._last_sweep >= self.idle_timeout_s / 4:
                    self._evict(now)
            return y

    def _live_update(self, rows: np.ndarray | slice, arr: np.ndarray, y: np.ndarray) -> None:
        """Score the points just fed and record the predictions (coverage=...)."""
        live = self._live
        if live is None:
            return
        # one stream: a block of one; else a block, or distinct rows (the lookup refuses a key
        # twice). observe: a NaN or infinite prediction starts that stream afresh (LiveConfig)
        live.observe(_one_as_block(rows), arr, y.reshape(len(arr), -1))

    def _drop_added(self, before: int) -> None:
        """Forget the streams added since there were ``before`` (they are the last rows)."""
        if len(self._keys) == before:
            return
        for key in self._keys[before:]:
            del self._rows[key]
        del self._keys[before:]
        self._cache_keys = None

    def _cached(self, keys: Any) -> bool:
        """Whether ``keys`` are the keys of the latest lookup (whose rows are cached)."""
        try:
            return isinstance(keys, list) and keys == self._cache_keys
        except (TypeError, ValueError):  # a key that compares as an array is none of ours
            return False

    def _lookup(self, keys: list[Hashable]) -> np.ndarray | slice:
        """Rows for ``keys`` (adding unknown ones when auto_add); caches the answer."""
        rows_of = self._rows
        try:
            rows = [rows_of[k] for k in keys]
        except (KeyError, TypeError):
            rows = None
        if rows is None or len(set(keys)) != len(keys):
            if len(set(map(_hashable_or_raise, keys))) != len(keys):
                seen: set[Hashable] = set()
                dup = []
                for k in keys:
                    if k in seen:
                        dup.append(k)
                    seen.add(k)
                raise StreamKeyError(f"duplicate stream key{'s' if len(dup) > 1 else ''} "
                                     f"{_show(dup)} in one step; each stream takes one point "
                                     "per call")
            unknown = [k for k in keys if k not in rows_of]
            if not self.auto_add:
                raise StreamKeyError(
                    f"unknown stream key{'s' if len(unknown) > 1 else ''} {_show(unknown)} "
                    f"({len(self._keys)} streams in the pool); add them first, or create the "
                    "pool with auto_add=True")
            self._add(unknown, self._clock() if self.idle_timeout_s else 0.0)
            rows = [rows_of[k] for k in keys]
        n = len(rows)
        arr = np.array(rows, np.intp)
        out: np.ndarray | slice = arr
        if arr[0] == 0 and arr[-1] == n - 1 and (n < 2 or (np.diff(arr) == 1).all()):
            out = slice(0, n)
        self._cache_keys = list(keys)
        self._cache_rows = out
        return out

    # -- live scores (coverage=...) -------------------------------------------------------------
    def interval(self, keys: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)``, each ``[len(keys), T]``: the interval around each stream's latest
        prediction at the pool's ``coverage`` (NaN before its first; +-inf until it has
        scored enough points when the model stores no validation quantiles). Needs
        ``coverage`` (UnsupportedError)."""
        live = self._live_scores("interval")
        with self._lock:
            # the keys of the latest step (a server reads its round's intervals): its rows
            rows = self._cache_rows if self._cached(keys) else self._rows_of(keys)
            return live.interval(_one_as_block(rows))  # known rows: no checks

    def accuracy(self, keys: Sequence[Hashable] | None = None
                 ) -> dict[str, dict[str, np.ndarray]]:
        """Live accuracy of ``keys`` (default: every stream, in :meth:`keys` order): forecaster
        (``model``, ``persistence``, ``seasonal``) -> ``mae``, ``mse``, ``recent_mae``,
        ``recent_mse``, ``count``, each ``[len(keys), T]``; NaN where nothing was scored."""
        live = self._live_scores("accuracy")
        with self._lock:
            scores = live.scores(self._rows_of(self._keys if keys is None else keys))
        return {f: {name: v[:, i] for name, v in scores.items()}
                for i, f in enumerate(FORECASTERS)}

    def realised_coverage(self, keys: Sequence[Hashable] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """``(share, scored)``, each ``[len(keys), T]``: the share of each stream's scored
        intervals that held the value, and how many were scored."""
        live = self._live_scores("realised_coverage")
        with self._lock:
            return live.coverage_so_far(self._rows_of(self._keys if keys is None else keys))

    def _rows_of(self, keys: Sequence[Hashable]) -> np.ndarray:
        rows = [self._row(k) for k in keys]
        if len(set(rows)) != len(rows):
            raise StreamKeyError(f"duplicate stream keys in {_show(keys)}; name each once")
        return np.array(rows, np.int64)

    @property
    def live(self) -> LiveScores | None:
        """The live scores of every row (settings: ``coverage``, ``season``, ...); None
        without coverage."""
        return self._live

    def _live_scores(self, what: str) -> LiveScores:
        if self._live is None:
            raise UnsupportedError(f"{what}() needs live scores: create the pool with "
                                   "coverage=0.9 (or another coverage)")
        return self._live

    # -- state ----------------------------------------------------------------------------------
    def get_state(self, key: Hashable) -> State:
        """A copy of stream ``key``'s state."""
        with self._lock:
            row = self._row(key)
            return State({name: buf[row].copy() for name, buf in self._bufs.items()},
                         self.fingerprint)

    def set_state(self, key: Hashable, state: State | Mapping[str, np.ndarray]) -> None:
        """Continue stream ``key`` from ``state``; a misfit raises StateError, changing nothing."""
        if isinstance(state, State) and state.fingerprint:
            check_fingerprint(state.fingerprint, self.fingerprint, f"set_state({key!r})")
        tensors = check_tensors(state, self._io.states, f"set_state({key!r})")
        with self._lock:
            row = self._row(key)
            for name, t in tensors.items():
                self._bufs[name][row] = t
            if self._live is not None:  # a State holds no live scores: they start afresh
                self._live.reset([row])

    def get_live(self, key: Hashable) -> dict[str, np.ndarray]:
        """A copy of stream ``key``'s live scores (one row of the pool's ``live`` state
        arrays, streams first, as its snapshot stores them), for :meth:`set_live`. Needs
        ``coverage`` (UnsupportedError)."""
        live = self._live_scores("get_live")
        with self._lock:
            return live.take([self._row(key)])

    def set_live(self, key: Hashable, arrays: Mapping[str, np.ndarray]) -> None:
        """Continue stream ``key``'s live scores from ``arrays`` (:meth:`get_live` of a pool
        with the same live settings), e.g. after :meth:`set_state`, which starts them afresh;
        a misfit raises StateError, changing nothing. Needs ``coverage``."""
        live = self._live_scores("set_live")
        with self._lock:
            live.put([self._row(key)], arrays)

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write every stream's key and state to ``path`` (.npz) atomically."""
        with self._lock:
            bad = [k for k in self._keys if type(k) not in (str, int)]
            if bad:
                raise StateError(f"save_state: stream keys must be str or int to be saved, got "
                                 f"{_show(bad)}")
            n = len(self._keys)
            arrays = state_arrays({name: buf[:n].copy() for name, buf in self._bufs.items()})
            if self._live is not None:
                arrays.update(snapshot_entries(self._live.take(slice(0, n))))
            meta: dict[str, Any] = {"kind": "pool", "fingerprint": self.fingerprint,
                                    "keys": list(self._keys),
                                    "states": [s.name for s in self._io.states]}
            if self._live is not None:
                meta["live"] = self._live.settings()
        write_snapshot(path, meta, arrays)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Replace every stream with those in a snapshot written by :meth:`save_state`."""
        source = os.fspath(path)
        meta, arrays = read_snapshot(source, "pool")
        check_fingerprint(str(meta.get("fingerprint", "")), self.fingerprint, source)
        keys = meta.get("keys")
        if (not isinstance(keys, list) or any(type(k) not in (str, int) for k in keys)
                or len(set(keys)) != len(keys)):
            raise StateError(f"{source}: the snapshot's stream keys are not distinct str/int")
        tensors = check_tensors(tensors_from(arrays), self._io.states, source, len(keys))
        live = None
        if self._live is not None:  # checked before anything changes: all or nothing
            live = self._live.check_arrays(self._live.from_snapshot(arrays, meta, source,
                                                                   len(keys)),
                                           source, streams=len(keys))
        with self._lock:
            for key in list(self._keys):
                del self._rows[key]
            self._keys.clear()
            self._add(keys, self._clock() if self.idle_timeout_s else 0.0)
            for name, t in tensors.items():
                self._bufs[name][:len(keys)] = t
            if live is not None and self._live is not None:  # checked above: cannot fail
                self._live.load_arrays(live, source, streams=len(keys))
                self._live.resize(self.capacity)


def _hashable_or_raise(key: Any) -> Hashable:
    try:
        hash(key)
    except TypeError:
        raise StreamKeyError(f"stream key {key!r} is not hashable; use a str or int") from None
    return key
