"""predict_stream(..., buckets=N): many keys per Spark call, their states in one state row.

Spark's stateful pandas API calls the user function once per group, and its own per-group work
(an Arrow slice to pandas, the state unpickled and pickled, a one-row state frame, an output
frame) costs more than the model for a few dozen rows. With ``buckets=N`` the events are
grouped by ``pmod(xxhash64(key), N)`` instead of by key: each call gets every key of a bucket
that has rows in the micro-batch, sorts them once (numpy, no per-key frames), runs every key's
rows in sequence calls batched across keys (all keys with the same number of rows in one call
of the sequence graph: :meth:`rnnstream.runtime.StreamPool.run_sequences`; the bits of one
:meth:`~rnnstream.runtime.Predictor.run_sequence` per key -- where the model's kernels give a
sequence other bits in a batch, probed once per worker by :func:`batch_exact`, one call per
key), and stores the bucket's keys
and their states in the bucket's state row (:func:`bucket_state_schema`)::

    fingerprint  string   the model's fingerprint, "buckets=N", then the live settings
    keys         string   the bucket's keys, a JSON list, in the order of the rows below
    steps        binary   int64 little-endian [keys]: rows pushed through the model per key
    bad_rows     binary   int64 little-endian [keys]: rows refused per key
    h, c, ...    binary   float32 little-endian [keys, layers, hidden] (each state column of
                          the per-key schema, all keys' rows one after the other)
    live         binary   with coverage=...: each key's live column, one after the other

(Binary and JSON rather than Spark arrays: pyspark 4.3's workers cannot read an array in a
state schema back -- ``KeyError: 'elementType'`` in ``StructType.fromJson``.)

Every key's state stays in Spark's state store and is checkpointed with the query: a restart
resumes exactly. A checkpoint written with another bucket count (or per key) is refused.
Not with ``idle_timeout_s`` (Spark's timeouts are per group, here per bucket).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupState

from rnnstream.runtime import InputError, ModelLoadError, StateError, StreamPool, UnsupportedError
from rnnstream.runtime.live import FORECASTERS

from ._codecs import _STATE_DTYPE, LIVE_COLUMN, STATE_COLUMNS, _decode_live, _plain
from ._worker import KeyStep, _resolve

_MODEL, _PERSISTENCE, _SEASONAL = (FORECASTERS.index(f) for f in ("model", "persistence",
                                                                  "seasonal"))

__all__ = ["BUCKET_COLUMN", "KEY_TYPES", "BucketStep", "bucket_state_schema", "worker_pool"]

BUCKET_COLUMN = "_rnnstream_bucket"
_COUNT_DTYPE = np.dtype("<i8")
# key types a bucket's state row keeps exactly (as JSON) and every executor hashes alike
KEY_TYPES = (T.StringType, T.IntegerType, T.LongType, T.ShortType, T.ByteType)


def bucket_state_schema(live: bool) -> T.StructType:
    """The state row of one bucket (see the module docstring)."""
    fields = [T.StructField("fingerprint", T.StringType(), False),
              T.StructField("keys", T.StringType(), False),
              T.StructField("steps", T.BinaryType(), False),
              T.StructField("bad_rows", T.BinaryType(), False),
              *(T.StructField(name, T.BinaryType(), True) for name in STATE_COLUMNS)]
    if live:
        fields.append(T.StructField(LIVE_COLUMN, T.BinaryType(), False))
    return T.StructType(fields)


_POOLS: dict[tuple[str, int, int], tuple[StreamPool, bool]] = {}
_POOLS_LOCK = threading.Lock()
# (sequences, time) of the probe that decides whether keys may share a call (batch_exact)
_PROBES = ((2, 1), (5, 9), (33, 4), (130, 2))


def batch_exact(pool: StreamPool) -> bool:
    """Whether the model gives each sequence the same bits in a batch as alone, on this
    machine: onnxruntime's kernels need not (its RNN op differs in the last bit between batch 1
    and 5 on x86; its LSTM and GRU ops agreed in every case tried). Probed once per worker with
    seeded values and states; where any bit differs, keys are run one call each."""
    contract = pool.contract
    if contract is None:
        return False
    rng = np.random.default_rng(0)
    for k, n in _PROBES:
        x = rng.normal(size=(k, n, contract.n_features)).astype(np.float32)
        start = {s.name: rng.uniform(-1, 1, (k, *s.row_shape)).astype(np.float32)
                 for s in contract.states}
        y, after = pool.run_sequences(x, start)
        for i in range(k):
            yi, ai = pool.run_sequences(x[i:i + 1], {n: a[i:i + 1] for n, a in start.items()})
            if yi.tobytes() != y[i:i + 1].tobytes() or any(
                    ai[name].tobytes() != after[name][i:i + 1].tobytes() for name in ai):
                return False
    return True


def worker_pool(path: str, fingerprint: str) -> tuple[StreamPool, bool]:
    """The model at ``path`` as a one-thread StreamPool (for its run_sequences) and whether
    keys may share a call (:func:`batch_exact`), opened once per Python process; reopened when
    the file changes, refused when its fingerprint differs."""
    try:
        stat = os.stat(path)
    except OSError:
        raise ModelLoadError(f"{path}: no such file on this executor; the model must be readable "
                             "at the same path by every executor (a shared or copied folder)"
                             ) from None
    cache_key = (path, stat.st_mtime_ns, stat.st_size)
    with _POOLS_LOCK:
        hit = _POOLS.get(cache_key)
        if hit is None:
            pool = StreamPool(path, threads=1)
            hit = _POOLS[cache_key] = (pool, batch_exact(pool))
    if hit[0].fingerprint != fingerprint:
        raise ModelLoadError(
            f"{path}: the file changed since the query was started (fingerprint is now "
            f"{hit[0].fingerprint}, the query was planned with {fingerprint}); restart the query")
    return hit


def _show(keys: list[Any], limit: int = 3) -> str:
    return ", ".join(repr(k) for k in keys[:limit]) + (", ..." if len(keys) > limit else "")


@dataclass
class _Stored:
    """A bucket's state row, decoded: keys, counts, and each state as [keys, *row]."""

    keys: list[Any]
    steps: np.ndarray
    bad: np.ndarray
    tensors: dict[str, np.ndarray]
    live: list[bytes | None]


@dataclass(frozen=True)
class BucketStep:
    """The function Spark calls per bucket and micro-batch (picklable: plain fields only)."""

    step: KeyStep  # the per-key settings: columns, model, policies, live scores
    buckets: int

    @property
    def settings(self) -> str:
        """What the stored state depends on besides the model: stored after its fingerprint."""
        live = self.step.live
        return f"buckets={self.buckets}" + ("" if live is None else f" {live.tag}")

    def __call__(self, bucket: tuple[Any, ...], frames: Iterator[pd.DataFrame],
                 state: GroupState) -> Iterator[pd.DataFrame]:
        parts = [f for f in frames if len(f)]
        if not parts:
            return
        rows = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        step = self.step
        pool, exact = worker_pool(_resolve(step.path, step.shipped), step.fingerprint)
        specs = pool.contract.states if pool.contract is not None else []
        stored = self._restore(state.get if state.exists else None, specs)
        codes, keys, cols, x64 = self._sorted(rows)
        with np.errstate(over="ignore"):  # too big for float32 -> inf -> a bad row
            x = x64.astype(np.float32)
        errors, good = self._bad_rows(codes, keys, cols[step.order], x64, x)
        slot = self._slots(stored, keys, specs)  # batch key code -> row of the stored arrays
        y = np.full((len(x), len(step.outputs)), np.nan)
        counts = np.bincount(codes[good], minlength=len(keys))
        y_good = self._run(pool, stored, slot, counts, x[good], exact)
        if len(y_good):
            y[good] = y_good
        np.add.at(stored.steps, slot, counts)
        np.add.at(stored.bad, slot, np.bincount(codes[~good & (codes >= 0)],
                                                minlength=len(keys)))
        if step.live is not None:
            y = np.hstack([y, self._live(pool, stored, slot, codes, keys, x, y, good)])
        state.update(self._encode(stored))
        yield step._output(cols, y, errors)

    # -- one micro-batch's rows -------------------------------------------------------------
    def _sorted(self, rows: pd.DataFrame
                ) -> tuple[np.ndarray, list[Any], dict[str, np.ndarray], np.ndarray]:
        """Key codes (-1: a null key), the distinct keys (sorted), the columns and the features
        (float64 [rows, F]), all sorted by key, then as KeyStep feeds a key's rows (order, then
        the feature values: a replayed batch is fed identically)."""
        step = self.step
        x64 = np.column_stack([rows[f].to_numpy(np.float64, na_value=np.nan)
                               for f in step.features]).reshape(len(rows), len(step.features))
        codes, uniques = pd.factorize(rows[step.key].to_numpy(), sort=True)
        names = [step.key, step.order, *step.keep]
        cols = {c: rows[c].to_numpy() for c in dict.fromkeys(names)}
        try:  # lexsort: the last key is the primary one; NaN and NaT sort last
            index = np.lexsort([*x64.T[::-1], cols[step.order], codes])
        except TypeError:  # an order column numpy cannot compare (e.g. mixed objects)
            frame = pd.DataFrame({"_code": codes, "_order": rows[step.order].to_numpy(),
                                  **{f"_x{i}": x64[:, i] for i in range(x64.shape[1])}})
            index = frame.sort_values(list(frame.columns), kind="mergesort",
                                      na_position="last").index.to_numpy()
        keys = [_plain(k) for k in np.asarray(uniques, dtype=object)]
        return codes[index], keys, {c: v[index] for c, v in cols.items()}, x64[index]

    def _bad_rows(self, codes: np.ndarray, keys: list[Any], order: np.ndarray,
                  x64: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's error (None when usable) and the usable rows' mask; raises with
        on_bad_row="fail"."""
        step = self.step
        finite = np.isfinite(x)
        bad = ~finite.all(axis=1) | pd.isna(order) | (codes < 0)
        errors = np.full(len(x), None, dtype=object)
        for i in np.flatnonzero(bad):
            key = keys[codes[i]] if codes[i] >= 0 else None
            errors[i] = step._why(key, order[i], x64[i], finite[i])
        if step.on_bad_row == "fail" and bad.any():
            raise InputError(f"{errors[int(np.flatnonzero(bad)[0])]}; on_bad_row='fail' stops "
                             "the query (on_bad_row='drop' emits such rows with an error instead)")
        return errors, ~bad

    # -- the bucket's state row -------------------------------------------------------------
    def _restore(self, stored: tuple | None, specs: list[Any]) -> _Stored:
        sizes = {s.name: int(np.prod(s.row_shape)) for s in specs}
        if stored is None:
            return _Stored([], np.zeros(0, np.int64), np.zeros(0, np.int64),
                           {s.name: np.zeros((0, *s.row_shape), np.float32) for s in specs},
                           [])
        fingerprint, keys_json, steps, bad, *columns = stored
        model, _, settings = str(fingerprint).partition(" ")
        try:
            keys = json.loads(keys_json)
        except (TypeError, ValueError) as exc:
            raise StateError(f"a bucket's stored keys are not JSON ({exc}); the state store is "
                             "damaged: restart the query from a new checkpoint") from exc
        if not isinstance(keys, list):
            raise StateError("a bucket's stored keys are not a list; the state store is "
                             "damaged: restart the query from a new checkpoint")
        where = f"the bucket of keys {_show(keys)}"
        if model != self.step.fingerprint:
            raise StateError(
                f"{where}: the state in Spark's state store was written by another model (stored "
                f"fingerprint {model}, this model's fingerprint {self.step.fingerprint}); "
                "restart with the model that wrote the checkpoint, or start the query from a "
                "new checkpoint location")
        if settings != self.settings:
            raise StateError(
                f"{where}: the state in Spark's state store was kept with other settings "
                f"(stored: {settings or 'none'}; this query: {self.settings}); restart with the "
                "settings that wrote the checkpoint (the same buckets= and coverage), or start "
                "the query from a new checkpoint location")
        counts = []
        for name, blob in (("steps", steps), ("bad_rows", bad)):
            if blob is None or len(blob) != 8 * len(keys):
                raise StateError(f"{where}: stored {name!r} has "
                                 f"{0 if blob is None else len(blob)} bytes; expected "
                                 f"{8 * len(keys)} ({len(keys)} keys x int64)")
            counts.append(np.frombuffer(blob, _COUNT_DTYPE).astype(np.int64))
        blobs = dict(zip(STATE_COLUMNS, columns[:len(STATE_COLUMNS)], strict=True))
        tensors = {}
        for s in specs:
            blob = blobs[s.name]
            want = len(keys) * sizes[s.name] * _STATE_DTYPE.itemsize
            if blob is None or len(blob) != want:
                raise StateError(f"{where}: stored state {s.name!r} has "
                                 f"{0 if blob is None else len(blob)} bytes; expected {want} "
                                 f"({len(keys)} keys x {s.row_shape} float32)")
            tensors[s.name] = np.frombuffer(blob, _STATE_DTYPE).reshape(
                len(keys), *s.row_shape).astype(np.float32)
        live: list[bytes | None] = []
        if self.step.live is not None:
            blob, size = columns[len(STATE_COLUMNS)], self.step.live.size
            if blob is None or len(blob) != len(keys) * size:
                raise StateError(f"{where}: stored live state has "
                                 f"{0 if blob is None else len(blob)} bytes; expected "
                                 f"{len(keys)} keys x {size}")
            live = [bytes(blob[i * size:(i + 1) * size]) for i in range(len(keys))]
        return _Stored(keys, counts[0], counts[1], tensors, live)

    def _slots(self, stored: _Stored, keys: list[Any], specs: list[Any]) -> np.ndarray:
        """Each batch key's row in the stored arrays; new keys appended at the zero state."""
        where = {k: i for i, k in enumerate(stored.keys)}
        slot = np.empty(len(keys), np.intp)
        new: list[Any] = []
        for code, key in enumerate(keys):
            i = where.get(key)
            if i is None:
                i = len(stored.keys) + len(new)
                new.append(key)
            slot[code] = i
        if new:
            stored.keys.extend(new)
            grow = np.zeros(len(new), np.int64)
            stored.steps = np.concatenate([stored.steps, grow])
            stored.bad = np.concatenate([stored.bad, grow])
            for s in specs:
                stored.tensors[s.name] = np.concatenate(
                    [stored.tensors[s.name], np.zeros((len(new), *s.row_shape), np.float32)])
            stored.live.extend([None] * len(new))
        return slot

    def _encode(self, stored: _Stored) -> tuple[Any, ...]:
        blobs = tuple(np.ascontiguousarray(stored.tensors[n], _STATE_DTYPE).tobytes()
                      if n in stored.tensors else None for n in STATE_COLUMNS)
        row: tuple[Any, ...] = (f"{self.step.fingerprint} {self.settings}",
                                json.dumps(stored.keys, separators=(",", ":")),
                                stored.steps.astype(_COUNT_DTYPE).tobytes(),
                                stored.bad.astype(_COUNT_DTYPE).tobytes(), *blobs)
        if self.step.live is not None:
            row += (b"".join(b or b"" for b in stored.live),)
        return row

    # -- the model ----------------------------------------------------------------------------
    def _run(self, pool: StreamPool, stored: _Stored, slot: np.ndarray, counts: np.ndarray,
             x_good: np.ndarray, exact: bool) -> np.ndarray:
        """Every key's good rows (sorted by key) through the model from its stored state, keys
        with the same row count in one call (one call each unless ``exact``); the states
        advanced in ``stored``."""
        y = np.empty((len(x_good), len(self.step.outputs)), np.float32)
        starts = np.cumsum(counts) - counts
        lengths = np.unique(counts[counts > 0])
        calls = ([np.flatnonzero(counts == n) for n in lengths.tolist()] if exact
                 else [np.array([i]) for i in np.flatnonzero(counts)])
        for chosen in calls:
            n = int(counts[chosen[0]])
            index = starts[chosen, None] + np.arange(n)  # [keys, n] rows of x_good
            rows = slot[chosen]
            out, after = pool.run_sequences(x_good[index], {name: t[rows] for name, t in
                                                            stored.tensors.items()})
            y[index] = out
            for name, t in after.items():
                stored.tensors[name][rows] = t
        return y

    def _live(self, pool: StreamPool, stored: _Stored, slot: np.ndarray, codes: np.ndarray,
              keys: list[Any], x: np.ndarray, y: np.ndarray, good: np.ndarray) -> np.ndarray:
        """The live columns, every key of the batch at once: one LiveScores over the keys, fed
        their r-th rows together for r = 0, 1, ... (the same numbers as each key's LiveStream
        fed row by row, as KeyStep does: LiveScores and LiveStream agree bit for bit); each
        key's scores kept in ``stored``."""
        spec = self.step.live
        contract = pool.contract
        if spec is None or contract is None:  # pragma: no cover - called with live scores only
            raise UnsupportedError("live scores need coverage= and an rnnstream contract")
        bounds = np.searchsorted(codes, np.arange(len(keys) + 1))  # codes sorted, -1 first
        here = np.flatnonzero(bounds[1:] > bounds[:-1])  # batch keys with rows
        live = spec.config.open(contract, self.step.path, n=len(here))
        fresh = live.fresh(1)
        arrays = [fresh if stored.live[slot[c]] is None
                  else _decode_live(stored.live[slot[c]], spec, keys[c]) for c in here]
        live.load_arrays({name: np.concatenate([a[name] for a in arrays])
                          for name, _, _ in spec.layout},
                         f"the bucket's stored live state (keys {_show([keys[c] for c in here])})",
                         streams=len(here))
        out = np.full((len(x), len(spec.columns)), np.nan)
        start, length = bounds[here], bounds[here + 1] - bounds[here]
        seasonal = live.season is not None
        for r in range(int(length.max()) if len(here) else 0):
            on = np.flatnonzero(length > r)  # the keys with an r-th row (LiveScores rows)
            at = start[on] + r
            ok = good[at]
            on, at = on[ok], at[ok]  # a bad row leaves the scores alone (NaN out)
            if not len(on):
                continue
            # NaN/inf predicted: cannot be scored or bounded; those keys start afresh
            live.observe(on, x[at].astype(np.float64), y[at])
            lower, upper = live.interval(on)
            scores = live.scores(on)
            mae = scores["mae"]
            parts = [lower, upper, mae[:, _MODEL], scores["recent_mae"][:, _MODEL],
                     mae[:, _PERSISTENCE]]
            if seasonal:
                parts.append(mae[:, _SEASONAL])
            parts.append(live.coverage_so_far(on)[0])
            out[at] = np.hstack(parts)
        state = live.state_arrays()
        for i, c in enumerate(here):
            stored.live[slot[c]] = b"".join(np.ascontiguousarray(state[name][i], code).tobytes()
                                            for name, _, code in spec.layout)
        return out

