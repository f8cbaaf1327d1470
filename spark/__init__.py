"""Run an rnnstream model inside Spark Structured Streaming, each key's state in Spark's state.

Needs the 'spark' extra (``pip install 'rnnstream[spark]'``)::

    from rnnstream.spark import predict_stream

    events = spark.readStream.schema("sensor string, ts long, temp double").csv("in/")
    preds = predict_stream(events, "model.onnx", key="sensor", order="ts", features=["temp"])
    preds.writeStream.format("parquet").option("checkpointLocation", "ck/").start("out/")

How it works: ``events.groupBy(key).applyInPandasWithState(...)``. In every micro-batch each key
that has rows gets one call: its rows are sorted by ``order`` and go through the model in ONE
sequence call (``x`` of shape ``[1, rows, F]``) starting from the key's stored state; the final
state goes back to Spark's state store, which checkpoints it with the query. One prediction row
comes out per input row, exactly what :meth:`rnnstream.runtime.Predictor.run_sequence` returns
for those rows from that state. The model is opened once per Python worker (see
:func:`worker_model`). Built on the runtime's public API only.

Many keys with few rows each per micro-batch: ``predict_stream(..., buckets=N)`` groups the keys
by a hash into ``N`` buckets instead, so that Spark's per-group cost (its pandas frames, the
state pickled per group) is paid once per bucket, and the keys of a bucket share sequence calls;
each key's state is kept in its bucket's state row (:mod:`rnnstream.spark._buckets`), with the
same output bit for bit. Spark offers no stateful call over several keys at once: its
``applyInPandasWithState``, ``transformWithStateInPandas`` and ``transformWithState`` all call
the function per grouping key, and its ``applyInArrow`` keeps no state.

Local sessions (tests, ``bench/bench_spark.py``, ``examples/spark``) bind the driver to
127.0.0.1 (``SPARK_LOCAL_IP``, ``spark.driver.bindAddress``, ``spark.driver.host``) unless the
user set them; see :func:`loopback_builder` and ``docs/spark.md``.

State kept per key in Spark's state store (:data:`STATE_SCHEMA`, the same for every model, so
that a checkpoint reused with another model reaches the fingerprint check below rather than a
Spark schema error; with ``coverage=...``, :data:`LIVE_STATE_SCHEMA`: one more column)::

    fingerprint  string   the model that wrote the state; any other model refuses it. With
                          coverage=..., followed by the live settings the `live` column depends
                          on: "sha256:... live coverage=0.9 season=24 lr=0.1 half_life=100.0";
                          other settings refuse it too
    steps        bigint   rows pushed through the model for this key so far
    bad_rows     bigint   rows refused for this key so far (on_bad_row="drop")
    h            binary   float32 little-endian, row-major [layers, hidden]
    c            binary   same layout; LSTM only, null for rnn/gru
    last         binary   float32 [F + 1]: the last point and its seen flag; only for models
                          fed changes (input_mode "delta"), null otherwise
    cycle        binary   float32 [season, T + 1]: the targets of the last season, each with
                          its seen flag; only for target_mode "seasonal", null otherwise
    ets          binary   float32 [T * (season + 2)]: the exponential smoothing state; only for
                          target_mode "ets", null otherwise
    live         binary   only with coverage=...: the key's live scores, each array of
                          rnnstream.runtime.live.STATE_ARRAYS in that order without the stream
                          axis, row-major, little-endian: seen int64; pending float64
                          [horizon, 3, T]; pending_width [horizon, T]; history [season or 0,
                          T]; acc [6, 3, T]; q [T]; peak [T]; cover [2, T] (float64)

One binary column per state name the one spec knows (:data:`STATE_COLUMNS`), filled by name.
The ``last`` column is new in release 0.2: a Spark checkpoint written by 0.1 has a state schema
without it, and Spark refuses to resume it; start such queries from a new checkpoint location.
The same holds for the ``cycle`` and ``ets`` columns, new in release 0.4 (target modes
"seasonal" and "ets").
Likewise a checkpoint written without ``coverage`` cannot be resumed with it, nor the other way
round: Spark refuses the other state schema (``STATE_STORE_VALUE_SCHEMA_NOT_COMPATIBLE``).

Live scores, ``coverage=...`` (off by default): each key also keeps what
:class:`~rnnstream.runtime.Predictor` ``(coverage=...)`` keeps for one stream
(:mod:`rnnstream.runtime.live`). After a key's rows went through the model in one sequence call,
they go one by one through the key's :class:`~rnnstream.runtime.LiveStream` (microseconds
each): each prediction is scored against the value observed ``horizon`` rows later, and gets an
interval at ``coverage``, calibrated online on the key's own errors. Output columns, one per
target and kind (:func:`live_columns`): ``lower_<target>``, ``upper_<target>`` (the interval
around this row's prediction), ``mae_<target>`` and ``recent_mae_<target>`` (the model's, over
all scored rows and exponentially weighted), ``persistence_mae_<target>``,
``seasonal_mae_<target>`` (with a season: ``season=``, by default the one the model was
trained with), ``realised_coverage_<target>`` (the share of
scored intervals that held the value); all after this row. Null where nothing was scored yet;
+-inf bounds until the interval is calibrated (a model without validation quantiles) and always
for a target that is not a feature (it is never observed, so never scored). A dropped bad row
gets nulls and leaves the scores alone; a NaN or infinite prediction starts the key's scores
afresh, as in Predictor. The scores live in the key's state row with its recurrent state, so
checkpoints, replays and restarts carry them exactly: a restarted query emits the same bounds
and metrics as an uninterrupted one. ``initial_quantiles`` only seeds keys not seen yet.

(Binary rather than ``array<float>``: pyspark 4.3's worker cannot parse a state schema holding an
array -- ``KeyError: 'elementType'`` in ``ArrayType.fromJson`` -- and bytes are exact and small.)

Exactly-once: with a replayable source (files, Kafka), a checkpoint location and an idempotent
sink (the file sinks, or ``foreachBatch`` keyed by batch id), a query restarted from its
checkpoint emits exactly what an uninterrupted run emits. Spark replays an uncommitted batch from
the state of the previous committed batch, and the computation here is deterministic: rows with
equal ``order`` are broken by their feature values, never by arrival order.

Bad rows (a null or non-finite feature, a null order or key), ``on_bad_row``:

* ``"drop"`` (default): the row is emitted with null predictions and a message in ``error``; it
  does not enter the model, so the key's state is not advanced by it; ``bad_rows`` counts it.
* ``"fail"``: the query fails with an :class:`~rnnstream.runtime.errors.InputError` naming the
  key, the row's order value and the bad feature.

Idle keys, ``idle_timeout_s``: event-time timeout (``GroupStateTimeout.EventTimeTimeout``). The
``order`` column must then be a timestamp carrying a watermark
(``events.withWatermark(order, "10 minutes")``). A key whose newest row is more than
``idle_timeout_s`` older than the watermark has its state dropped; its next row starts from the
zero state. As always in Spark, the timeout fires in a micro-batch in which the key has no rows,
and rows behind the watermark are dropped by Spark before they reach the model. Why not
processing time: Spark then runs a micro-batch on every trigger, data or not, so a
``trigger(availableNow=True)`` query never ends, and replays would depend on the wall clock.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import pandas as pd
    import pyarrow  # noqa: F401 -- Spark's pandas functions need it; fail here, not in a worker
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.streaming.state import GroupState, GroupStateTimeout
except ImportError as exc:  # pragma: no cover - exercised on installs without the extra
    raise ImportError(
        "rnnstream.spark needs pyspark, pandas and pyarrow, which come with the 'spark' "
        f"extra: pip install 'rnnstream[spark]' ({exc})"
    ) from exc

from rnnstream.runtime import (
    InputError,
    ModelContract,
    ModelLoadError,
    Predictor,
    StateError,
    UnsupportedError,
)
from rnnstream.runtime.live import FORECASTERS, STATE_ARRAYS, LiveStream, open_live
from rnnstream.runtime.spec import CELLS, INPUT_MODES, TARGET_MODES, state_names

__all__ = [
    "BAD_ROW_POLICIES",
    "ERROR_COLUMN",
    "LIVE_COLUMN",
    "LIVE_STATE_SCHEMA",
    "STATE_SCHEMA",
    "live_columns",
    "loopback_builder",
    "output_schema",
    "predict_stream",
    "worker_model",
]

BAD_ROW_POLICIES = ("drop", "fail")
ERROR_COLUMN = "error"
# every state name of every cell and input/target mode, in the spec's order: one column each
STATE_COLUMNS = tuple(dict.fromkeys(
    name for mode in INPUT_MODES for target in TARGET_MODES for cell in CELLS
    for name in state_names(cell, mode, target)))
STATE_SCHEMA = T.StructType([
    T.StructField("fingerprint", T.StringType(), False),
    T.StructField("steps", T.LongType(), False),
    T.StructField("bad_rows", T.LongType(), False),
    # a column is nullable unless every cell carries that state
    *(T.StructField(name, T.BinaryType(), not all(name in c.states for c in CELLS.values()))
      for name in STATE_COLUMNS),
])
# with coverage=...: the live scores of the key (rnnstream.runtime.live), one more column
LIVE_COLUMN = "live"
LIVE_STATE_SCHEMA = T.StructType([*STATE_SCHEMA.fields,
                                  T.StructField(LIVE_COLUMN, T.BinaryType(), False)])
_STATE_DTYPE = np.dtype("<f4")
_EVENT_MS = "_rnnstream_event_ms"  # the order timestamp as epoch ms, computed by Spark (exact)


def predict_stream(
    events: DataFrame,
    model: str | os.PathLike[str],
    *,
    key: str,
    order: str,
    features: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    prefix: str = "pred_",
    on_bad_row: str = "drop",
    idle_timeout_s: float | None = None,
    ship_model: bool = False,
    coverage: float | None = None,
    season: int | None = None,
    live_options: Mapping[str, Any] | None = None,
    buckets: int | None = None,
) -> DataFrame:
    """Predictions for a (streaming) DataFrame of keyed events, one output row per input row.

    ``events`` has a ``key`` column (one stream per value), an ``order`` column (any sortable
    type: within a micro-batch a key's rows are fed in this order) and one numeric column per
    model feature: ``features`` names them in the model's feature order (default: the model's
    own feature names). Output columns: ``key``, ``order``, the ``keep`` columns as they came,
    one double ``<prefix><target>`` per model target, and ``error`` (null, or why the row got
    no prediction). ``model`` must be readable at the same path by every executor, or pass
    ``ship_model=True``: the model (and its step graph) is then sent to every executor with
    ``SparkContext.addFile`` and read from there when the path does not exist on an executor.
    ``on_bad_row`` and ``idle_timeout_s`` (event time: ``order`` must be a timestamp with a
    watermark) are described in the module docstring.

    ``buckets`` (default None: one Spark call per key and micro-batch) hashes the keys into
    that many groups: one call per bucket steps all its keys, batched across keys, each key's
    state kept in its bucket's state row (:mod:`rnnstream.spark._buckets`; the same output,
    several times the rows per second where keys have few rows per micro-batch). A string or
    integer key; not with ``idle_timeout_s``; a checkpoint is resumed with the same buckets.

    ``coverage`` (default None: off; output and state exactly as without it) turns on live
    scores per key, as :class:`~rnnstream.runtime.Predictor` ``(coverage=...)`` keeps them for
    one stream: each row's output also carries its prediction interval at that coverage
    (``lower_<target>``, ``upper_<target>``) and the key's live accuracy after that row
    (:func:`live_columns`); the scores are kept in the state store next to the recurrent state.
    ``season`` is the seasonal-naive baseline's period (default: the season the model was
    trained with, if it stores one; 0: none); ``live_options`` passes ``lr``, ``half_life`` or
    ``initial_quantiles`` on (:func:`rnnstream.runtime.live.open_live`).

    Raises :class:`~rnnstream.runtime.errors.ModelLoadError` for an unusable model and
    :class:`~rnnstream.runtime.errors.InputError` for missing or non-numeric columns.
    """
    path = os.path.abspath(os.fspath(model))
    loaded = Predictor(path)
    if loaded.contract is None:
        raise UnsupportedError(f"{path}: has no rnnstream contract; the Spark integration needs a "
                               "model exported by rnnstream (its features, targets and states)")
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_row={on_bad_row!r}: expected one of {BAD_ROW_POLICIES}")
    timeout_ms = _timeout_ms(idle_timeout_s)
    contract = loaded.contract
    extra = [s.name for s in contract.states if s.name not in STATE_COLUMNS]
    if extra:  # a custom model's declared states: the state store's schema is fixed
        raise UnsupportedError(
            f"{path}: states {extra} have no column in Spark's state schema {list(STATE_COLUMNS)}"
            "; export the model with state names among those (export_module(..., "
            "state_names=('h', 'c')) or `rnnstream wrap --state IN=OUT:h`)"
        )
    feature_cols = list(features) if features is not None else list(contract.features)
    _check_columns(events.schema, key, order, feature_cols, list(keep), contract)
    if timeout_ms is not None and not isinstance(events.schema[order].dataType,
                                                 (T.TimestampType, T.TimestampNTZType)):
        raise InputError(f"idle_timeout_s is an event-time timeout: the order column {order!r} "
                         f"must be a timestamp with a watermark, not "
                         f"{events.schema[order].dataType.simpleString()}; e.g. "
                         f"events.withWatermark({order!r}, '10 minutes')")
    live = live_spec(contract, coverage, season, live_options, path)
    schema = output_schema(events.schema, contract, key=key, order=order, keep=keep,
                           prefix=prefix, coverage=coverage, season=season)
    shipped = _ship(events, path, contract) if ship_model else ""
    step = KeyStep(path, loaded.fingerprint, key, order, tuple(feature_cols), tuple(keep),
                   tuple(f"{prefix}{t}" for t in contract.targets), on_bad_row, timeout_ms,
                   shipped, live)
    columns = [F.col(c) for c in dict.fromkeys([key, order, *feature_cols, *keep])]
    timeout = GroupStateTimeout.NoTimeout
    if timeout_ms is not None:
        timeout = GroupStateTimeout.EventTimeTimeout
        columns.append(F.unix_millis(F.col(order).cast("timestamp")).alias(_EVENT_MS))
    if buckets is not None:
        return _by_bucket(events, step, columns, schema, buckets)
    state_schema = STATE_SCHEMA if live is None else LIVE_STATE_SCHEMA
    return (events.select(*columns).groupBy(key)
            .applyInPandasWithState(step, schema, state_schema, "append", timeout))


def _by_bucket(events: DataFrame, step: KeyStep, columns: list[Any], schema: T.StructType,
               buckets: int) -> DataFrame:
    """predict_stream with ``buckets=``: grouped by a hash of the key (see _buckets)."""
    from ._buckets import BUCKET_COLUMN, KEY_TYPES, BucketStep, bucket_state_schema

    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets={buckets!r}: expected a positive number of key groups, or "
                         "None for one group per key")
    if step.timeout_ms is not None:
        raise UnsupportedError("idle_timeout_s times out Spark groups, and with buckets= a group "
                               "is a bucket of keys: use one or the other")
    key_type = events.schema[step.key].dataType
    if not isinstance(key_type, KEY_TYPES):
        raise UnsupportedError(f"buckets= needs a string or integer key column; {step.key!r} is "
                               f"{key_type.simpleString()} (cast it, or leave buckets=None)")
    bucket = F.pmod(F.xxhash64(F.col(step.key)), F.lit(buckets)).alias(BUCKET_COLUMN)
    return (events.select(*columns, bucket).groupBy(BUCKET_COLUMN)
            .applyInPandasWithState(BucketStep(step, buckets), schema,
                                    bucket_state_schema(step.live is not None),
                                    "append", GroupStateTimeout.NoTimeout))


def _ship(events: DataFrame, path: str, contract: ModelContract) -> str:
    """Send the model (and its step graph, which must sit beside it) to every executor."""
    try:
        context = events.sparkSession.sparkContext
    except (AttributeError, RuntimeError) as exc:  # Spark Connect has no SparkContext
        raise UnsupportedError(
            f"ship_model=True needs a classic SparkSession with a SparkContext ({exc}); with "
            "Spark Connect, put the model at the same path on every executor instead"
        ) from exc
    context.addFile(path)
    if contract.step_model:
        step_path = os.path.join(os.path.dirname(path), contract.step_model["file"])
        if os.path.exists(step_path):
            context.addFile(step_path)
    return os.path.basename(path)


def _resolve(path: str, shipped: str) -> str:
    """``path`` where it exists on this executor, else the copy shipped with addFile."""
    if os.path.exists(path) or not shipped:
        return path
    from pyspark import SparkFiles

    return SparkFiles.get(shipped)


def output_schema(
    input_schema: T.StructType,
    contract: ModelContract,
    *,
    key: str,
    order: str,
    keep: Sequence[str] = (),
    prefix: str = "pred_",
    coverage: float | None = None,
    season: int | None = None,
) -> T.StructType:
    """The schema of :func:`predict_stream`'s result for ``input_schema`` and ``contract``
    (``coverage`` and ``season`` as given to predict_stream)."""
    fields = [input_schema[name] for name in dict.fromkeys([key, order, *keep])]
    fields = [T.StructField(f.name, f.dataType, True) for f in fields]
    fields += [T.StructField(f"{prefix}{t}", T.DoubleType(), True) for t in contract.targets]
    live = live_spec(contract, coverage, season, None, "output_schema")
    if live is not None:
        fields += [T.StructField(name, T.DoubleType(), True) for name in live.columns]
    fields.append(T.StructField(ERROR_COLUMN, T.StringType(), True))
    names = [f.name for f in fields]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise InputError(f"output columns {clashes} would appear twice; rename the input "
                         "columns or choose another prefix= for the predictions")
    return T.StructType(fields)


def _timeout_ms(idle_timeout_s: float | None) -> int | None:
    if idle_timeout_s is None:
        return None
    if (isinstance(idle_timeout_s, bool) or not isinstance(idle_timeout_s, (int, float))
            or not math.isfinite(idle_timeout_s) or idle_timeout_s <= 0):
        raise ValueError(f"idle_timeout_s={idle_timeout_s!r}: expected a positive number of "
                         "seconds, or None for no timeout")
    return max(1, round(idle_timeout_s * 1000))


# -- live scores (coverage=...) ------------------------------------------------------------------
_MODEL, _PERSISTENCE, _SEASONAL = (FORECASTERS.index(f) for f in ("model", "persistence",
                                                                  "seasonal"))


def live_columns(targets: Sequence[str], season: int | None = None) -> list[str]:
    """The double columns ``coverage=...`` adds to the output, in order: each kind, one column
    per target (``lower_<target>``, ``upper_<target>``, ...; docs/spark.md describes them)."""
    kinds = ["lower", "upper", "mae", "recent_mae", "persistence_mae"]
    if season is not None:
        kinds.append("seasonal_mae")
    kinds.append("realised_coverage")
    return [f"{kind}_{t}" for kind in kinds for t in targets]


@dataclass(frozen=True)
class LiveSpec:
    """The live scores predict_stream(coverage=...) keeps per key (picklable: plain fields)."""

    coverage: float
    season: int | None  # as asked (None: the model's own, 0: none), passed to open_live
    options: tuple[tuple[str, Any], ...]
    # what the stored arrays depend on besides the model: stored after the model's fingerprint
    tag: str
    # (name, shape without the stream axis, little-endian dtype) per array, in STATE_ARRAYS order
    layout: tuple[tuple[str, tuple[int, ...], str], ...]
    columns: tuple[str, ...]  # live_columns(targets, the season in effect)

    def open(self, contract: ModelContract, source: str) -> LiveStream:
        return open_live(contract, self.coverage, self.season, dict(self.options), source)

    @property
    def size(self) -> int:
        return sum(math.prod(shape) * np.dtype(code).itemsize for _, shape, code in self.layout)

    def describe(self) -> str:
        return ", ".join(f"{name} {np.dtype(code).name}{list(shape)}"
                         for name, shape, code in self.layout)


def live_spec(contract: ModelContract, coverage: float | None, season: int | None,
              options: Mapping[str, Any] | None, source: str) -> LiveSpec | None:
    """The live scores asked for (None without ``coverage``), checked on the driver: a bad
    setting raises InputError before any query starts."""
    if coverage is None:
        if season is not None or options:
            raise InputError(f"season={season!r} and live_options={options!r} set up the live "
                             "scores, which are off; pass coverage= (e.g. coverage=0.9) too")
        return None
    opts = dict(options or {})
    live = open_live(contract, coverage, season, opts, source)
    tag = (f"live coverage={live.coverage!r} season={live.season!r} lr={live.lr!r} "
           f"half_life={live.half_life!r}")
    fresh = live.state_arrays()
    layout = tuple((name, tuple(fresh[name].shape[1:]), fresh[name].dtype.newbyteorder("<").str)
                   for name in STATE_ARRAYS)
    return LiveSpec(live.coverage, season, tuple(sorted(opts.items())), tag, layout,
                    tuple(live_columns(contract.targets, live.season)))


def _decode_live(blob: bytes | None, spec: LiveSpec, key: Any) -> dict[str, np.ndarray]:
    """The arrays of a ``live`` state column (one stream); their values are checked by
    LiveStream.load_arrays."""
    if blob is None or len(blob) != spec.size:
        raise StateError(f"key {_plain(key)!r}: stored live state has "
                         f"{0 if blob is None else len(blob)} bytes; expected {spec.size} "
                         f"({spec.describe()}, little-endian)")
    arrays, offset = {}, 0
    for name, shape, code in spec.layout:
        dtype, count = np.dtype(code), math.prod(shape)
        flat = np.frombuffer(blob, dtype, count, offset) if count else np.zeros(0, dtype)
        arrays[name] = flat.reshape((1, *shape)).astype(dtype.newbyteorder("="))
        offset += count * dtype.itemsize
    return arrays


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
            yi = ys[i]
            if all(v - v == 0.0 for v in yi):
                live.update(xs[i], yi)
            else:  # NaN/inf predicted: it cannot be scored or bounded; start afresh
                live.reset()
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


def _check_columns(schema: T.StructType, key: str, order: str, features: list[str],
                   keep: list[str], contract: ModelContract) -> None:
    if len(features) != contract.n_features:
        raise InputError(f"features= names {len(features)} columns {features}; the model takes "
                         f"{contract.n_features} ({', '.join(contract.features)}), in that order")
    have = set(schema.names)
    missing = [c for c in dict.fromkeys([key, order, *features, *keep]) if c not in have]
    if missing:
        raise InputError(f"the input has no column(s) {missing}; it has {schema.names}"
                         + ("; map model features to columns with features=[...]"
                            if set(missing) & set(features) else ""))
    not_numeric = [f"{c} ({schema[c].dataType.simpleString()})" for c in features
                   if not isinstance(schema[c].dataType, T.NumericType)]
    if not_numeric:
        raise InputError(f"feature columns must be numeric; {not_numeric} are not (cast them, "
                         "or give the source a schema)")


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


def _plain(value: Any) -> Any:
    """numpy scalars as plain Python values, so that messages read ``ts=11``, not ``np.int64``."""
    return value.item() if isinstance(value, np.generic) else value


def _encode(tensors: dict[str, np.ndarray], contract: ModelContract) -> tuple[bytes | None, ...]:
    """The state as Spark's state store keeps it (see STATE_SCHEMA): float32 LE bytes per
    state, row-major, in its column by name; null in the columns of states the model lacks."""
    return tuple(np.ascontiguousarray(tensors[n], _STATE_DTYPE).tobytes() if n in tensors
                 else None for n in STATE_COLUMNS)


# -- local sessions --------------------------------------------------------------------------------
LOOPBACK = "127.0.0.1"


def loopback_builder(builder: Any) -> Any:
    """``builder`` (a ``SparkSession.Builder``) with the driver bound to ``$SPARK_LOCAL_IP``,
    or to 127.0.0.1 when that is unset (``spark.driver.bindAddress`` and ``spark.driver.host``;
    a ``.config(...)`` of either after this call still wins).

    Without it, Spark's local mode binds its driver (RPC and block manager) to the machine's
    network address -- "Your hostname resolves to a loopback address ... using 192.0.2.2
    instead" -- so a test or a laptop run listens on the network. ``SPARK_LOCAL_IP`` is set in
    this process's environment when unset, so that the JVM Spark starts inherits it too.
    """
    ip = os.environ.setdefault("SPARK_LOCAL_IP", LOOPBACK)
    return (builder.config("spark.driver.bindAddress", ip)
            .config("spark.driver.host", ip))
