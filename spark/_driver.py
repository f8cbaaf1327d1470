"""The driver's side: :func:`predict_stream` plans the query (checks the model, the columns and
the settings before anything runs), :func:`output_schema`, and :func:`loopback_builder` for
local sessions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming.state import GroupStateTimeout

from rnnstream.runtime import (
    ConfigError,
    InputError,
    ModelContract,
    Predictor,
    UnsupportedError,
)
from rnnstream.runtime.live import LiveConfig

from ._codecs import (
    _EVENT_MS,
    ERROR_COLUMN,
    LIVE_STATE_SCHEMA,
    STATE_COLUMNS,
    STATE_SCHEMA,
    live_spec,
)
from ._worker import KeyStep

__all__ = ["BAD_ROW_POLICIES", "loopback_builder", "output_schema", "predict_stream"]

BAD_ROW_POLICIES = ("drop", "fail")


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
    live: LiveConfig | None = None,
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

    ``live=LiveConfig(coverage=0.9, ...)`` (default: off; output and state exactly as without
    it) turns on live scores per key, as :class:`~rnnstream.runtime.Predictor` keeps them for
    one stream: each row's output also carries its prediction interval at that coverage
    (``lower_<target>``, ``upper_<target>``) and the key's live accuracy after that row
    (:func:`live_columns`); the scores are kept in the state store next to the recurrent state.
    The :class:`~rnnstream.runtime.live.LiveConfig` holds the season of the seasonal-naive
    baseline (default: the season the model was trained with, if it stores one; 0: none),
    ``lr``, ``half_life``, ``initial_quantiles`` and ``initial_scales``; ``coverage=``,
    ``season=`` and ``live_options=`` still build one.

    Raises :class:`~rnnstream.runtime.errors.ModelLoadError` for an unusable model and
    :class:`~rnnstream.runtime.errors.InputError` for missing or non-numeric columns.
    """
    path = os.path.abspath(os.fspath(model))
    loaded = Predictor(path)
    if loaded.contract is None:
        raise UnsupportedError(f"{path}: has no rnnstream contract; the Spark integration needs a "
                               "model exported by rnnstream (its features, targets and states)")
    if on_bad_row not in BAD_ROW_POLICIES:
        raise ConfigError(f"on_bad_row={on_bad_row!r}: expected one of {BAD_ROW_POLICIES}")
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
    if buckets is not None:
        _check_buckets(events, key, buckets, timeout_ms)
    config = LiveConfig.resolve(live, coverage, season, live_options, "predict_stream")
    spec = live_spec(contract, source=path, live=config)
    schema = output_schema(events.schema, contract, key=key, order=order, keep=keep,
                           prefix=prefix, live=config)
    shipped = _ship(events, path, contract) if ship_model else ""
    step = KeyStep(path, loaded.fingerprint, key, order, tuple(feature_cols), tuple(keep),
                   tuple(f"{prefix}{t}" for t in contract.targets), on_bad_row, timeout_ms,
                   shipped, spec)
    columns = [F.col(c) for c in dict.fromkeys([key, order, *feature_cols, *keep])]
    timeout = GroupStateTimeout.NoTimeout
    if timeout_ms is not None:
        timeout = GroupStateTimeout.EventTimeTimeout
        columns.append(F.unix_millis(F.col(order).cast("timestamp")).alias(_EVENT_MS))
    if buckets is not None:
        return _by_bucket(events, step, columns, schema, buckets)
    state_schema = STATE_SCHEMA if spec is None else LIVE_STATE_SCHEMA
    return (events.select(*columns).groupBy(key)
            .applyInPandasWithState(step, schema, state_schema, "append", timeout))


def _check_buckets(events: DataFrame, key: str, buckets: int, timeout_ms: int | None) -> None:
    """Refuse a ``buckets=`` that cannot work, before anything is shipped to the cluster."""
    from ._buckets import KEY_TYPES

    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ConfigError(f"buckets={buckets!r}: expected a positive number of key groups, or "
                          "None for one group per key")
    if timeout_ms is not None:
        raise UnsupportedError("idle_timeout_s times out Spark groups, and with buckets= a group "
                               "is a bucket of keys: use one or the other")
    key_type = events.schema[key].dataType
    if not isinstance(key_type, KEY_TYPES):
        raise UnsupportedError(f"buckets= needs a string or integer key column; {key!r} is "
                               f"{key_type.simpleString()} (cast it, or leave buckets=None)")


def _by_bucket(events: DataFrame, step: KeyStep, columns: list[Any], schema: T.StructType,
               buckets: int) -> DataFrame:
    """predict_stream with ``buckets=``: grouped by a hash of the key (see _buckets)."""
    from ._buckets import BUCKET_COLUMN, BucketStep, bucket_state_schema

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
    live: LiveConfig | None = None,
) -> T.StructType:
    """The schema of :func:`predict_stream`'s result for ``input_schema`` and ``contract``
    (``live``, or ``coverage`` and ``season``, as given to predict_stream)."""
    fields = [input_schema[name] for name in dict.fromkeys([key, order, *keep])]
    fields = [T.StructField(f.name, f.dataType, True) for f in fields]
    fields += [T.StructField(f"{prefix}{t}", T.DoubleType(), True) for t in contract.targets]
    spec = live_spec(contract, coverage, season, None, "output_schema", live=live)
    if spec is not None:
        fields += [T.StructField(name, T.DoubleType(), True) for name in spec.columns]
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
        raise ConfigError(f"idle_timeout_s={idle_timeout_s!r}: expected a positive number of "
                         "seconds, or None for no timeout")
    return max(1, round(idle_timeout_s * 1000))


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
