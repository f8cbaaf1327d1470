"""The Python worker's side: the model opened once per process (:func:`worker_model`) and the
function Spark calls per key and micro-batch (:class:`KeyStep`; :class:`KeyLive` keeps a key's
live scores during it).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql.streaming.state import GroupState

from rnnstream.runtime import (
    InputError,
    ModelContract,
    ModelLoadError,
    Predictor,
    StateError,
    UnsupportedError,
)
from rnnstream.runtime.live import FORECASTERS, LiveStream

from ._codecs import (
    _EVENT_MS,
    _STATE_DTYPE,
    ERROR_COLUMN,
    STATE_COLUMNS,
    LiveSpec,
    _decode_live,
    _encode,
    _plain,
)

__all__ = ["KeyLive", "KeyStep", "worker_model"]

_MODEL, _PERSISTENCE, _SEASONAL = (FORECASTERS.index(f) for f in ("model", "persistence",
                                                                  "seasonal"))


def _resolve(path: str, shipped: str) -> str:
    """``path`` where it exists on this executor, else the copy shipped with addFile."""
    if os.path.exists(path) or not shipped:
        return path
    from pyspark import SparkFiles

    return SparkFiles.get(shipped)


@dataclass
class KeyLive:
    """One key's live scores during one micro-batch."""

    spec: LiveSpec
    stream: LiveStream

    @classmethod
    def restore(cls, spec: LiveSpec, contract: ModelContract, source: str, key: Any,
                stored: bool, blob: bytes | None) -> KeyLive:
        """Fresh for a new key, else from its ``live`` state column (StateError: a misfit)."""
        stream = spec.open(contract, source)
        if stored:
            stream.load_arrays(_decode_live(blob, spec, key),
                               f"key {_plain(key)!r}: stored live state")
        return cls(spec, stream)

    def advance(self, x: np.ndarray, y: np.ndarray, good: np.ndarray) -> np.ndarray:
        """Feed the good rows one by one, as Predictor(coverage=...) does; return the live
        columns of every row (NaN on the bad rows, which do not touch the scores)."""
        live = self.stream
        seasonal = live.season is not None
        out = np.full((len(x), len(self.spec.columns)), np.nan)
        xs, ys = x.tolist(), y.tolist()
        for i in np.flatnonzero(good).tolist():
            live.observe(xs[i], ys[i])  # NaN/inf predicted: the scores start afresh
            lower, upper = live.interval()
            scores = live.plain_scores()  # lists: no arrays built per row
            mae = scores["mae"]
            row = [*lower, *upper, *mae[_MODEL], *scores["recent_mae"][_MODEL],
                   *mae[_PERSISTENCE]]
            if seasonal:
                row += mae[_SEASONAL]
            row += scores["coverage"]
            out[i] = row
        return out

    def encode(self) -> bytes:
        """The ``live`` state column: each array of STATE_ARRAYS in order, little-endian,
        row-major, without the stream axis."""
        arrays = self.stream.state_arrays()
        return b"".join(np.ascontiguousarray(arrays[name][0], code).tobytes()
                        for name, _, code in self.spec.layout)


# -- the model, once per Python worker ---------------------------------------------------------
_MODELS: dict[tuple[str, int, int], Predictor] = {}
_MODELS_LOCK = threading.Lock()


def worker_model(path: str, fingerprint: str) -> Predictor:
    """The model at ``path``, opened once per Python process and reused by every batch (only
    its :meth:`~rnnstream.runtime.Predictor.run_sequence` is used: a pure function of its
    arguments, safe from several threads).

    Cached by (path, modification time, size), so a file replaced in place is reopened; a file
    whose fingerprint is no longer the one the query was planned with is refused.
    """
    stat = os.stat(path) if os.path.exists(path) else None
    if stat is None:
        raise ModelLoadError(f"{path}: no such file on this executor; the model must be readable "
                             "at the same path by every executor (a shared or copied folder)")
    cache_key = (path, stat.st_mtime_ns, stat.st_size)
    with _MODELS_LOCK:
        loaded = _MODELS.get(cache_key)
        if loaded is None:
            loaded = _MODELS[cache_key] = Predictor(path)
    if loaded.fingerprint != fingerprint:
        raise ModelLoadError(
            f"{path}: the file changed since the query was started (fingerprint is now "
            f"{loaded.fingerprint}, the query was planned with {fingerprint}); restart the query"
        )
    return loaded


# -- one key, one micro-batch ------------------------------------------------------------------
@dataclass(frozen=True)
class KeyStep:
    """The function Spark calls per key and micro-batch (picklable: plain fields only)."""

    path: str
    fingerprint: str
    key: str
    order: str
    features: tuple[str, ...]
    keep: tuple[str, ...]
    outputs: tuple[str, ...]
    on_bad_row: str
    timeout_ms: int | None
    shipped: str = ""  # file name sent with SparkContext.addFile ("" when not shipped)
    live: LiveSpec | None = None  # coverage=...: live scores kept in the state's `live` column

    @property
    def stored_fingerprint(self) -> str:
        """The state's fingerprint column: the model's, then the live settings (when on)."""
        return self.fingerprint if self.live is None else f"{self.fingerprint} {self.live.tag}"

    def __call__(self, key: tuple[Any, ...], frames: Iterator[pd.DataFrame],
                 state: GroupState) -> Iterator[pd.DataFrame]:
        if state.hasTimedOut:  # idle past the watermark: forget the key, emit nothing
            state.remove()
            return
        parts = list(frames)
        cols, x64 = self._sorted(parts[0] if len(parts) == 1
                                 else pd.concat(parts, ignore_index=True))
        if not len(x64):
            return
        loaded = worker_model(_resolve(self.path, self.shipped), self.fingerprint)
        stored = state.get if state.exists else None
        contract = loaded.contract
        if contract is None:  # predict_stream refused it; a file replaced since is refused
            raise UnsupportedError(f"{self.path}: has no rnnstream contract")  # by fingerprint
        tensors, steps, bad_count, live_blob = self._restore(key[0], stored, contract)
        live = None if self.live is None else KeyLive.restore(
            self.live, contract, self.path, key[0], stored is not None, live_blob)
        x = x64.astype(np.float32)  # too big for float32 -> inf -> a bad row
        errors = self._bad_rows(key[0], cols[self.order], x64, x)
        good = np.array([e is None for e in errors])
        y = np.full((len(x), len(self.outputs)), np.nan)
        if good.any():
            out, after = loaded.run_sequence(x[good], tensors)
            y[good], tensors = out, dict(after)
        extra: tuple[bytes, ...] = ()
        if live is not None:
            y = np.hstack([y, live.advance(x, y, good)])
            extra = (live.encode(),)
        state.update((self.stored_fingerprint, steps + int(good.sum()),
                      bad_count + int((~good).sum()), *_encode(tensors, contract), *extra))
        if self.timeout_ms is not None:  # never before the watermark (Spark refuses that)
            event_ms = cols[_EVENT_MS].astype(np.float64)
            newest = int(np.nanmax(event_ms)) if not np.isnan(event_ms).all() else 0
            state.setTimeoutTimestamp(max(newest + self.timeout_ms,
                                          state.getCurrentWatermarkMs() + 1))
        yield self._output(cols, y, errors)

    def _sorted(self, rows: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The columns as numpy arrays and the features as float64 [rows, F], in feed order.

        Ties in ``order`` are broken by the feature values, so that a replayed batch (whose rows
        may arrive in another order) is fed identically: exactly-once needs determinism.
        numpy rather than pandas here: per key and batch, pandas costs milliseconds.
        """
        x64 = np.column_stack([rows[f].to_numpy(np.float64, na_value=np.nan)
                               for f in self.features]).reshape(len(rows), len(self.features))
        names = [self.key, self.order, *self.keep]
        if self.timeout_ms is not None:
            names.append(_EVENT_MS)
        cols = {c: rows[c].to_numpy() for c in dict.fromkeys(names)}
        try:  # lexsort: the last key is the primary one; NaN and NaT sort last
            index = np.lexsort([*x64.T[::-1], cols[self.order]])
        except TypeError:  # an order column numpy cannot compare (e.g. mixed objects)
            index = rows.sort_values(list(dict.fromkeys([self.order, *self.features])),
                                     kind="mergesort", na_position="last").index.to_numpy()
        return {c: v[index] for c, v in cols.items()}, x64[index]

    def _restore(self, key: Any, stored: tuple | None, contract: ModelContract
                 ) -> tuple[dict[str, np.ndarray], int, int, bytes | None]:
        """The key's state (name -> row), rows and bad rows so far, and its live column; the
        runtime validates the values (finite, shape) when the state is used."""
        specs = contract.states
        if stored is None:
            zeros = {s.name: np.zeros(s.row_shape, np.float32) for s in specs}
            return zeros, 0, 0, None
        fingerprint, steps, bad_count, *columns = stored
        model, _, live_tag = str(fingerprint).partition(" ")
        if model != self.fingerprint:
            raise StateError(
                f"key {_plain(key)!r}: the state in Spark's state store was written by another "
                f"model (stored fingerprint {model}, this model's fingerprint "
                f"{self.fingerprint}); restart with the model that wrote the checkpoint, or "
                "start the query from a new checkpoint location"
            )
        want_tag = "" if self.live is None else self.live.tag
        if live_tag != want_tag:
            raise StateError(
                f"key {_plain(key)!r}: the live scores in Spark's state store were kept with "
                f"other settings (stored: {live_tag or 'none, coverage=None'}; this query: "
                f"{want_tag or 'none, coverage=None'}); restart with the settings that wrote "
                "the checkpoint, or start the query from a new checkpoint location"
            )
        blobs = dict(zip(STATE_COLUMNS, columns[:len(STATE_COLUMNS)], strict=True))
        live_blob = columns[len(STATE_COLUMNS)] if len(columns) > len(STATE_COLUMNS) else None
        tensors = {}
        for spec in specs:
            blob = blobs[spec.name]
            size = math.prod(spec.row_shape)
            if blob is None or len(blob) != size * _STATE_DTYPE.itemsize:
                raise StateError(f"key {_plain(key)!r}: stored state {spec.name!r} has "
                                 f"{0 if blob is None else len(blob)} bytes; expected "
                                 f"{size * _STATE_DTYPE.itemsize} ({spec.row_shape} float32)")
            row = np.frombuffer(blob, _STATE_DTYPE).reshape(spec.row_shape)
            tensors[spec.name] = row.astype(np.float32)
        return tensors, int(steps), int(bad_count), live_blob

    def _bad_rows(self, key: Any, order: np.ndarray, x64: np.ndarray,
                  x: np.ndarray) -> list[str | None]:
        """Per row: None when usable, else why not (or raise, with on_bad_row="fail")."""
        finite = np.isfinite(x)
        bad = ~finite.all(axis=1) | pd.isna(order) | (key is None)
        errors: list[str | None] = [None] * len(x)
        for i in np.flatnonzero(bad):
            errors[i] = self._why(key, order[i], x64[i], finite[i])
        if self.on_bad_row == "fail" and bad.any():
            raise InputError(f"{errors[int(np.flatnonzero(bad)[0])]}; on_bad_row='fail' stops "
                             "the query (on_bad_row='drop' emits such rows with an error instead)")
        return errors

    def _why(self, key: Any, order: Any, raw: np.ndarray, finite: np.ndarray) -> str:
        where = f"key {_plain(key)!r}, row {self.order}={_plain(order)!r}"
        if key is None:
            return f"{where}: the key is null"
        if pd.isna(order):
            return f"{where}: the order column is null"
        j = int(np.flatnonzero(~finite)[0])
        what = "missing or NaN" if np.isnan(raw[j]) else repr(_plain(raw[j]))
        return f"{where}: feature {self.features[j]!r} is {what}; expected a finite float32"

    def _output(self, cols: dict[str, np.ndarray], y: np.ndarray,
                errors: list[str | None] | np.ndarray) -> pd.DataFrame:
        out = {c: cols[c] for c in dict.fromkeys([self.key, self.order, *self.keep])}
        names = self.outputs if self.live is None else self.outputs + self.live.columns
        out.update((name, y[:, j]) for j, name in enumerate(names))
        out[ERROR_COLUMN] = np.array(errors, dtype=object)
        return pd.DataFrame(out, copy=False)  # fresh arrays: half the cost of copying them
