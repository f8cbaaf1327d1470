"""How a batch of rows goes through the model: the executors behind :class:`~.pool.StreamPool`.

:class:`BoundBatches` (rnnstream models): bound plans (:class:`Plan`) for recurring batch sizes,
``run()`` per piece for the others, the pieces spread over the pool's threads;
:class:`ForeignBatches`: one ``run()`` with the batch moved to a foreign model's batch axes. The
pool's module docstring describes the strategy, and :mod:`.pool` holds its thresholds. Neither
holds stream state: they read the pool's state buffers and write the new state back only after
every piece succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from ._engine import BoundEngine, ForeignEngine
from ._io import ORT_ERRORS, Outputs, input_array, input_shape, output_rows
from ._shards import Piece, Workers, shards

__all__ = ["BIND_AFTER", "MAX_PLANS", "BoundBatches", "ForeignBatches", "Plan"]

# A batch size gets bound buffers on its second sighting (binding costs ~2.4 µs per tensor per
# chunk, repaid after a few calls); at most MAX_PLANS sizes are kept (oldest dropped first).
BIND_AFTER = 2
MAX_PLANS = 8


class Plan:
    """Bound buffers for one batch size ``n``: x [n,1,F], y [n,1,T], per state in/out [n,L,H],
    and one IOBinding per piece of rows, grouped by thread (:func:`._shards.shards`).
    onnxruntime keeps raw pointers: the plan keeps every buffer referenced for as long as its
    bindings live.

    The state's source and destination vary by call, so bindings are made per (sources,
    destinations) pair and cached (:meth:`between`): ``ins -> outs`` (rows gathered into
    ``ins`` first), the pool's own rows ``0..n-1 -> outs`` (the keys are the pool's streams in
    order: saves one copy per state), and the pool's buffers ``-> spare`` buffers of the same
    size (every stream steps: the two are then swapped, saving the copy back too). Outputs never
    go to the buffers the pool reads the state from, so a failed piece leaves the state
    untouched. The cache is dropped when the pool's buffers were reallocated (``generation``).
    """

    def __init__(self, session: ort.InferenceSession, io, n: int, groups: list[list[Piece]],
                 n_out: int) -> None:
        f32 = np.float32
        self.io, self.n, self.groups = io, n, groups
        self.x = np.zeros(input_shape(io, io.input_shape[-1], n), f32)
        self.y = np.zeros((n, 1, n_out), f32)
        # outputs beyond the prediction and the states, bound by name like y
        self.extra = {o.name: np.zeros((n, 1, o.width), f32) for o in io.extras}
        self.ins = [np.zeros(s.full_shape(n), f32) for s in io.states]
        self.outs = [np.zeros(s.full_shape(n), f32) for s in io.states]
        self.x2 = self.x.reshape(n, -1)
        self.y2 = self.y.reshape(n, -1)
        self.session = session
        self.run = session.run_with_iobinding
        self._cache: dict[tuple[int, ...], tuple[list[list[ort.IOBinding]], list[Any]]] = {}
        self._recent: dict[int, tuple[np.ndarray, list[list[ort.IOBinding]]]] = {}
        self.generation = -1

    def between(self, sources: list[np.ndarray], outs: list[np.ndarray],
                generation: int) -> list[list[ort.IOBinding]]:
        """Bindings reading the state from rows ``0..n-1`` of ``sources`` and writing it to
        rows ``0..n-1`` of ``outs``, one list per thread."""
        # fast path: by the first arrays alone (the arrays of a set always go together), one
        # entry per source, so that ping-pong's two directions both hit
        recent = self._recent.get(id(sources[0]))
        if recent is not None and recent[0] is outs[0] and generation == self.generation:
            return recent[1]
        if generation != self.generation:
            self._cache.clear()
            self._recent.clear()
            self.generation = generation
        key = tuple(map(id, (*sources, *outs)))
        hit = self._cache.get(key)
        if hit is None:  # the arrays kept with the bindings: ids stay unique while cached
            if len(self._cache) >= 6:
                del self._cache[next(iter(self._cache))]
            hit = self._cache[key] = (self._bindings(sources, outs), [*sources, *outs])
            self._recent.clear()  # its ids are only safe while their arrays are cached
        self._recent[id(sources[0])] = (outs[0], hit[0])
        return hit[0]

    def _bindings(self, sources: list[np.ndarray], outs: list[np.ndarray]
                  ) -> list[list[ort.IOBinding]]:
        io, groups = self.io, []
        for pieces in self.groups:
            group = []
            for i, j in pieces:
                b = self.session.io_binding()
                _bind(b.bind_input, io.input, self.x[i:j])
                _bind(b.bind_output, io.output, self.y[i:j])
                for name, e in self.extra.items():
                    _bind(b.bind_output, name, e[i:j])
                for s, a, o in zip(io.states, sources, outs, strict=True):
                    _bind(b.bind_input, s.input, a[i:j])
                    _bind(b.bind_output, s.output, o[i:j])
                group.append(b)
            groups.append(group)
        return groups


def _bind(method: Callable[..., None], name: str, a: np.ndarray) -> None:
    method(name, "cpu", 0, a.dtype, a.shape, a.ctypes.data)


# -- execution: how a batch of rows goes through the model ----------------------------------------
class BoundBatches:
    """Batched calls for rnnstream models: bound plans for recurring batch sizes, ``run()`` per
    piece for the others, the pieces spread over the pool's threads (see the module docstring).
    Holds no stream state: it reads the rows of the pool's buffers and writes the new state back
    only after every piece succeeded."""

    def __init__(self, engine: BoundEngine, workers: Workers, chunk: int, min_rows: int,
                 lead: int) -> None:
        """``chunk``: rows per session call; ``min_rows``: the fewest rows a thread is given;
        ``lead``: how many more rows the caller's thread takes (the pool's strategy)."""
        self._engine = engine
        self._io = engine.io
        self._names = [s.name for s in engine.io.states]
        self._n_in = engine.contract.n_features
        self._n_out = engine.contract.n_targets
        self._chunk = chunk
        self._min_rows = min_rows
        self._lead = lead
        self._workers = workers
        # the step graph when there is one: faster at every size measured (figures above)
        self._session = engine.step_session or engine.session
        self._plans: dict[int, Plan] = {}
        self._sightings: dict[int, int] = {}
        self._spare: list[np.ndarray] = []  # the pool's buffers' twins (see Plan)
        self._spare_generation = -1
        # the latest call's outputs beyond the prediction and the states, by name, [n, width]
        # (always empty for a model without any: nothing is copied then)
        self.extra: dict[str, np.ndarray] = {}

    def groups(self, n: int) -> list[list[Piece]]:
        """The pieces of an ``n``-row batch, one list per thread."""
        return shards(n, self._chunk, self._workers.threads, self._min_rows, self._lead)

    def run(self, rows: np.ndarray | slice, arr: np.ndarray, bufs: dict[str, np.ndarray],
            generation: int, streams: int) -> np.ndarray:
        n = arr.shape[0]
        plan = self._plans.get(n)
        if plan is not None:
            return self._run_plan(plan, rows, arr, bufs, generation, streams)
        seen = self._sightings.get(n, 0) + 1
        if seen < BIND_AFTER:
            if len(self._sightings) > 1024:  # many one-off sizes: forget them all
                self._sightings.clear()
            self._sightings[n] = seen
            return self._run_pieces(rows, arr, bufs)
        if len(self._plans) >= MAX_PLANS:
            del self._plans[next(iter(self._plans))]
        plan = self._plans[n] = Plan(self._session, self._io, n, self.groups(n), self._n_out)
        return self._run_plan(plan, rows, arr, bufs, generation, streams)

    def _run_plan(self, plan: Plan, rows: np.ndarray | slice, arr: np.ndarray,
                  pool_bufs: dict[str, np.ndarray], generation: int, streams: int
                  ) -> np.ndarray:
        """Feed the bound inputs, run each piece, and only then write the state back."""
        plan.x2[...] = arr
        names = self._names
        bufs = [pool_bufs[name] for name in names]
        if type(rows) is slice and rows.stop == streams:  # every stream, in order: ping-pong
            spare = (self._spare if generation == self._spare_generation
                     else self._spares(bufs, generation))
            self._call(plan.between(bufs, spare, generation), plan.run)
            self._spare = bufs
            for name, new in zip(names, spare, strict=True):
                pool_bufs[name] = new  # rows past the streams' are free: no copy needed
            return self._outputs(plan)
        if type(rows) is slice:  # always 0..n-1 (see _lookup): read the pool's rows in place
            bindings = plan.between(bufs, plan.outs, generation)
        else:
            for buf, dst in zip(bufs, plan.ins, strict=True):
                np.take(buf, rows, axis=0, out=dst, mode="clip")  # valid rows; clip: unbuffered
            bindings = plan.between(plan.ins, plan.outs, generation)
        self._call(bindings, plan.run)
        for buf, new in zip(bufs, plan.outs, strict=True):
            buf[rows] = new
        return self._outputs(plan)

    def _outputs(self, plan: Plan) -> np.ndarray:
        """The prediction of a plan's call (a copy); its other outputs into ``extra``."""
        if plan.extra:
            self.extra = {name: e.reshape(plan.n, -1).copy() for name, e in plan.extra.items()}
        return plan.y2.copy()

    def _spares(self, bufs: list[np.ndarray], generation: int) -> list[np.ndarray]:
        """Twins of the pool's state buffers (same shapes), new when those were reallocated."""
        if generation != self._spare_generation or len(self._spare) != len(bufs):
            self._spare = [np.zeros_like(b) for b in bufs]
            self._spare_generation = generation
        return self._spare

    def _call(self, groups: list[list[ort.IOBinding]], run: Callable[..., None]) -> None:
        if len(groups) == 1:  # one thread: no task objects, no hop (the 1- and 64-row case)
            for b in groups[0]:
                try:  # Engine.call inlined: its frame costs ~2% of a one-row step
                    run(b)
                except ORT_ERRORS as exc:
                    raise self._engine.failed(exc) from exc
            return
        call = self._engine.call

        def task(group: list[ort.IOBinding]) -> Callable[[], None]:
            def go() -> None:
                for b in group:
                    call(run, b)
            return go

        self._workers.run([task(g) for g in groups])

    def _run_pieces(self, rows: np.ndarray | slice, arr: np.ndarray,
                    bufs: dict[str, np.ndarray]) -> np.ndarray:
        """``run()`` per piece (batch sizes without a plan); state written back after the
        last."""
        io = self._io
        n = arr.shape[0]
        x = arr.reshape(input_shape(io, self._n_in, n))
        ins = [bufs[s.name][rows] for s in io.states]
        groups = self.groups(n)
        parts: list[list[Outputs]] = [[] for _ in groups]

        def task(pieces: list[Piece], out: list[Outputs]) -> Callable[[], None]:
            def go() -> None:
                for i, j in pieces:
                    feeds = {io.input: x[i:j]}
                    feeds.update((s.input, a[i:j]) for s, a in zip(io.states, ins, strict=True))
                    out.append(self._engine.run(feeds, self._session))
            return go

        self._workers.run([task(g, out) for g, out in zip(groups, parts, strict=True)])
        flat = [p for out in parts for p in out]
        for k, s in enumerate(io.states):
            bufs[s.name][rows] = (flat[0].states[k] if len(flat) == 1
                                  else np.concatenate([p.states[k] for p in flat]))
        if io.extras:
            self.extra = {o.name: np.concatenate([p.extra[o.name] for p in flat]).reshape(n, -1)
                          for o in io.extras}
        y = flat[0].prediction if len(flat) == 1 else np.concatenate([p.prediction
                                                                      for p in flat])
        return y.reshape(n, -1)


class ForeignBatches:
    """Batched calls for foreign models: one ``run()`` with the batch moved to the model's own
    batch axes (and back), fixed inputs added."""

    def __init__(self, engine: ForeignEngine, n_in: int) -> None:
        io = self._io = engine.io
        self._engine = engine
        self._n_in = n_in
        # batch axis of each state (the pool refused models whose states have none)
        self._axes = [s.batch_axis if s.batch_axis is not None else 0 for s in io.states]
        self._plain = all(s.batch_axis == 0 for s in io.states)
        self.extra: dict[str, np.ndarray] = {}  # a foreign model's other outputs: not fetched

    def run(self, rows: np.ndarray | slice, arr: np.ndarray, bufs: dict[str, np.ndarray],
            generation: int, streams: int) -> np.ndarray:
        io = self._io
        n = arr.shape[0]
        feeds = {io.input: input_array(io, arr, io.batch_axis)}
        for s, axis in zip(io.states, self._axes, strict=True):
            feeds[s.input] = (bufs[s.name][rows] if self._plain else np.ascontiguousarray(
                np.moveaxis(bufs[s.name][rows], 0, axis)))
        feeds.update(io.fixed)
        out = self._engine.run(feeds)
        for s, axis, a in zip(io.states, self._axes, out.states, strict=True):
            bufs[s.name][rows] = a if axis == 0 else np.moveaxis(a, axis, 0)
        return output_rows(out.prediction, io.output_batch_axis, n)
