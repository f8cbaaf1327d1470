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
                          on: "sha256:... live coverage=0.9 season=24 lr=0.2 half_life=100.0";
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

try:  # the extra's packages, checked here so that a missing one names the extra, not a worker
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401 -- Spark's pandas functions need it
    import pyspark.sql
    import pyspark.sql.streaming.state  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised on installs without the extra
    raise ImportError(
        "rnnstream.spark needs pyspark, pandas and pyarrow, which come with the 'spark' "
        f"extra: pip install 'rnnstream[spark]' ({exc})"
    ) from exc

# what each module does: _driver plans the query, _worker runs it per key and micro-batch,
# _codecs holds the state store's schema and the bytes of its columns, _buckets groups keys
from ._codecs import (
    _EVENT_MS,
    _STATE_DTYPE,
    ERROR_COLUMN,
    LIVE_COLUMN,
    LIVE_STATE_SCHEMA,
    STATE_COLUMNS,
    STATE_SCHEMA,
    LiveSpec,
    _decode_live,
    _encode,
    _plain,
    live_columns,
    live_spec,
)
from ._driver import BAD_ROW_POLICIES, loopback_builder, output_schema, predict_stream
from ._worker import KeyLive, KeyStep, _resolve, worker_model

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
# names importable from here as before the package was split (tests, bench, _buckets of 0.4)
_ALSO = (STATE_COLUMNS, KeyLive, KeyStep, LiveSpec, live_spec, _EVENT_MS, _STATE_DTYPE,
         _decode_live, _encode, _plain, _resolve)
