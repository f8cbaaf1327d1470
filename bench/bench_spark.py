"""Spark Structured Streaming vs one in-process StreamPool, same rows, same model, one machine.

    python bench/bench_spark.py [--keys 200] [--rows 250] [--batches 5] [--model model.onnx]
    python bench/bench_spark.py --quick     # 50 keys x 100 rows, 3 batches (make bench --quick)

Spark path: CSV files -> predict_stream (applyInPandasWithState, local[2], 2 state partitions)
-> noop sink, trigger(availableNow) with one file per micro-batch; timed from start() to the end
of the query, after a warm-up query (JVM, Python workers, model cache). In-process paths: the same
rows through StreamPool.step_many (one row per key per call, as a live stream would), and through
the calls Spark makes (one sequence call per key and batch) without Spark. The ratio is what the
distributed path costs on one machine, not what a cluster does. The Spark query and the sequence
path run twice: as is, and with live scores (``coverage``, default 0.9: intervals and live
accuracy per row, the scores in the state store); the last column is what they add. Then the
same with ``predict_stream(buckets=N)`` (``--buckets``, default 8): one Spark call per bucket of
keys, keys batched into shared sequence calls; the last line is Spark's rows/s as a share of the
sequence-call path's, per key and bucketed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

KEY, ORDER = "key", "ts"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--rows", type=int, default=250, help="rows per key")
    p.add_argument("--batches", type=int, default=5, help="files = micro-batches")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--model", help="an rnnstream .onnx file (default: export a 1-layer LSTM)")
    p.add_argument("--coverage", type=float, default=0.9,
                   help="coverage of the live-scores runs (default: 0.9)")
    p.add_argument("--buckets", type=int, default=8,
                   help="predict_stream(buckets=N) for the bucketed runs (default: 8; 0: none)")
    p.add_argument("--quick", action="store_true", help="50 keys x 100 rows, 3 micro-batches")
    args = p.parse_args()
    if args.quick:
        args.keys, args.rows, args.batches = 50, 100, 3
    return args


def export_default(folder: Path, hidden: int) -> Path:
    import torch

    from rnnstream.export import export_model
    from rnnstream.train.model import Forecaster, ForecasterConfig

    torch.manual_seed(0)
    # the target is a feature (by name), so the live scores score every prediction
    model = Forecaster(ForecasterConfig(cell="lstm", n_features=2, n_targets=1, hidden=hidden,
                                        feature_names=["a", "b"], target_names=["a"]))
    path = folder / "model.onnx"
    export_model(model.eval(), path)
    return path


def make_rows(features: list[str], keys: int, per_key: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((keys, per_key, len(features))).cumsum(axis=1).astype(np.float32)
    return pd.DataFrame({KEY: np.repeat([f"k{k}" for k in range(keys)], per_key),
                         ORDER: np.tile(np.arange(per_key), keys),
                         **{f: x[:, :, i].ravel() for i, f in enumerate(features)}})


def write_batches(rows: pd.DataFrame, folder: Path, batches: int) -> None:
    folder.mkdir(parents=True)
    chunk = rows[ORDER].to_numpy() * batches // (rows[ORDER].max() + 1)
    for b in range(batches):
        path = folder / f"part-{b:03d}.csv"
        rows[chunk == b].sample(frac=1.0, random_state=b).to_csv(path, index=False)
        os.utime(path, (1_700_000_000 + b, 1_700_000_000 + b))


def time_spark(spark, model: Path, source: Path, checkpoint: Path, features: list[str],
               coverage: float | None = None, buckets: int | None = None) -> float:
    from rnnstream.spark import predict_stream

    schema = f"{KEY} string, {ORDER} bigint, " + ", ".join(f"{f} double" for f in features)
    events = (spark.readStream.schema(schema).option("header", True)
              .option("maxFilesPerTrigger", 1).csv(str(source)))
    preds = predict_stream(events, model, key=KEY, order=ORDER, coverage=coverage,
                           buckets=buckets)
    query = (preds.writeStream.format("noop")
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True))
    start = time.perf_counter()
    running = query.start()
    running.awaitTermination()
    return time.perf_counter() - start


class Floor:
    """A per-bucket function without the model: the rows' key and order out, NaN predictions,
    a constant state row. What Spark costs with buckets= when the model costs nothing."""

    def __init__(self, targets: list[str], state_columns: int) -> None:
        self.targets, self.state_columns = targets, state_columns

    def __call__(self, bucket, frames, state):
        parts = [f for f in frames if len(f)]
        if not parts:
            return
        rows = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        n = len(rows)
        state.update(("floor", "[]", b"", b"", *([None] * self.state_columns)))
        yield pd.DataFrame({KEY: rows[KEY].to_numpy(), ORDER: rows[ORDER].to_numpy(),
                            **{t: np.full(n, np.nan) for t in self.targets},
                            "error": np.full(n, None, dtype=object)})


def time_spark_floor(spark, model: Path, source: Path, checkpoint: Path, features: list[str],
                     buckets: int) -> float:
    """The same query as predict_stream(buckets=N) (source, select, hash, groupBy, state,
    output schema, sink), the model replaced by :class:`Floor`."""
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    from rnnstream.runtime import Predictor
    from rnnstream.spark import STATE_COLUMNS, output_schema
    from rnnstream.spark._buckets import BUCKET_COLUMN, bucket_state_schema

    schema = f"{KEY} string, {ORDER} bigint, " + ", ".join(f"{f} double" for f in features)
    events = (spark.readStream.schema(schema).option("header", True)
              .option("maxFilesPerTrigger", 1).csv(str(source)))
    contract = Predictor(model).contract
    out = output_schema(events.schema, contract, key=KEY, order=ORDER)
    bucket = F.pmod(F.xxhash64(F.col(KEY)), F.lit(buckets)).alias(BUCKET_COLUMN)
    preds = (events.select(KEY, ORDER, *features, bucket).groupBy(BUCKET_COLUMN)
             .applyInPandasWithState(Floor([f"pred_{t}" for t in contract.targets],
                                           len(STATE_COLUMNS)), out,
                                     bucket_state_schema(False), "append",
                                     GroupStateTimeout.NoTimeout))
    query = (preds.writeStream.format("noop")
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True))
    start = time.perf_counter()
    query.start().awaitTermination()
    return time.perf_counter() - start


def time_pool(model: Path, rows: pd.DataFrame, features: list[str]) -> float:
    from rnnstream.runtime import StreamPool

    pool = StreamPool(model, auto_add=True)
    ordered = rows.sort_values([ORDER, KEY])  # round r: the r-th row of every key
    keys = ordered[KEY].to_numpy()
    x = ordered[features].to_numpy(np.float32)
    n_keys = rows[KEY].nunique()
    start = time.perf_counter()
    for i in range(0, len(ordered), n_keys):
        pool.step_many(list(keys[i:i + n_keys]), x[i:i + n_keys])
    return time.perf_counter() - start


class HeldState:
    """The part of pyspark's GroupState the per-key function uses, kept in a dict."""

    hasTimedOut = False

    def __init__(self, store: dict, key: str) -> None:
        self.store, self.key = store, key

    @property
    def exists(self) -> bool:
        return self.key in self.store

    @property
    def get(self) -> tuple:
        return self.store[self.key]

    def update(self, value: tuple) -> None:
        self.store[self.key] = value


def time_key_function(model: Path, rows: pd.DataFrame, features: list[str], batches: int,
                      coverage: float | None = None) -> float:
    """The function Spark calls per key and micro-batch (rnnstream.spark.KeyStep: pandas in
    and out, the state as the state store keeps it), called directly: Spark's cost removed."""
    from rnnstream.runtime import Predictor
    from rnnstream.spark import KeyStep, live_spec, worker_model

    p = Predictor(model)
    worker_model(str(model.resolve()), p.fingerprint)  # opened once per worker: not timed
    step = KeyStep(str(model.resolve()), p.fingerprint, KEY, ORDER, tuple(features), (),
                   tuple(f"pred_{t}" for t in p.targets), "drop", None, "",
                   live_spec(p.contract, coverage, None, None, str(model)))
    chunk = rows[ORDER].to_numpy() * batches // (rows[ORDER].max() + 1)
    calls = [(k, g) for b in range(batches) for k, g in rows[chunk == b].groupby(KEY)]
    store: dict = {}
    start = time.perf_counter()
    for key, frame in calls:
        for _ in step((key,), iter([frame]), HeldState(store, key)):
            pass
    return time.perf_counter() - start


def time_bucket_function(model: Path, rows: pd.DataFrame, features: list[str], batches: int,
                         buckets: int, coverage: float | None = None) -> float:
    """The function Spark calls per bucket and micro-batch with predict_stream(buckets=N)
    (rnnstream.spark._buckets.BucketStep), called directly: Spark's cost removed."""
    from rnnstream.runtime import Predictor
    from rnnstream.spark import KeyStep, live_spec
    from rnnstream.spark._buckets import BucketStep, worker_pool

    p = Predictor(model)
    worker_pool(str(model.resolve()), p.fingerprint)  # opened once per worker: not timed
    step = BucketStep(KeyStep(str(model.resolve()), p.fingerprint, KEY, ORDER, tuple(features),
                              (), tuple(f"pred_{t}" for t in p.targets), "drop", None, "",
                              live_spec(p.contract, coverage, None, None, str(model))), buckets)
    chunk = rows[ORDER].to_numpy() * batches // (rows[ORDER].max() + 1)
    bucket = rows[KEY].map(hash).to_numpy() % buckets  # any split: Spark's is xxhash64
    calls = [(b, rows[(chunk == c) & (bucket == b)]) for c in range(batches)
             for b in range(buckets)]
    store: dict = {}
    start = time.perf_counter()
    for b, frame in calls:
        for _ in step((b,), iter([frame]), HeldState(store, b)):
            pass
    return time.perf_counter() - start


def time_sequences(model: Path, rows: pd.DataFrame, features: list[str], batches: int) -> float:
    """What each Spark task computes (one sequence call per key and batch), without Spark."""
    from rnnstream.runtime import Predictor

    per_key = {k: (Predictor(model), g[features].to_numpy(np.float32))
               for k, g in rows.sort_values(ORDER).groupby(KEY)}
    start = time.perf_counter()
    for b in range(batches):
        for predictor, x in per_key.values():
            n = len(x)
            predictor.prime(x[b * n // batches:(b + 1) * n // batches])
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    # pyspark 4.3's own worker.py raises a pandas FutureWarning on every group concat (not ours;
    # the workers inherit this, the running driver does not)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    from pyspark.sql import SparkSession

    from rnnstream.runtime import Predictor
    from rnnstream.spark import loopback_builder

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = Path(args.model) if args.model else export_default(root, args.hidden)
        features = Predictor(model).features
        rows = make_rows(features, args.keys, args.rows)
        write_batches(make_rows(features, 8, 20), root / "warm", 2)
        write_batches(rows, root / "in", args.batches)
        spark = (loopback_builder(SparkSession.builder).master("local[2]")
                 .config("spark.ui.enabled", "false")
                 .config("spark.sql.shuffle.partitions", "2").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        time_spark(spark, model, root / "warm", root / "ck-warm", features)
        time_spark(spark, model, root / "warm", root / "ck-warm-live", features, args.coverage)
        buckets = args.buckets or None
        if buckets:
            time_spark(spark, model, root / "warm", root / "ck-warm-b", features, None, buckets)
            time_spark(spark, model, root / "warm", root / "ck-warm-bl", features,
                       args.coverage, buckets)
        spark_s = time_spark(spark, model, root / "in", root / "ck", features)
        live_s = time_spark(spark, model, root / "in", root / "ck-live", features,
                            args.coverage)
        bucket_s = bucket_live_s = floor_s = None
        if buckets:
            time_spark_floor(spark, model, root / "warm", root / "ck-warm-f", features, buckets)
            floor_s = time_spark_floor(spark, model, root / "in", root / "ck-f", features,
                                       buckets)
            bucket_s = time_spark(spark, model, root / "in", root / "ck-b", features, None,
                                  buckets)
            bucket_live_s = time_spark(spark, model, root / "in", root / "ck-bl", features,
                                       args.coverage, buckets)
        spark.stop()
        pool_s = time_pool(model, rows, features)
        seq_s = time_sequences(model, rows, features, args.batches)
        key_s = time_key_function(model, rows, features, args.batches)
        key_live_s = time_key_function(model, rows, features, args.batches, args.coverage)
        bfn_s = bfn_live_s = None
        if buckets:
            bfn_s = time_bucket_function(model, rows, features, args.batches, buckets)
            bfn_live_s = time_bucket_function(model, rows, features, args.batches, buckets,
                                              args.coverage)

    n = len(rows)
    live = f"coverage={args.coverage}"
    print(f"\n{args.keys} keys x {args.rows} rows = {n} rows, {args.batches} micro-batches, "
          f"model {model.name if args.model else f'LSTM hidden={args.hidden}'}, local[2]\n")
    print(f"{'path':<56} {'seconds':>8} {'rows/s':>10} {'time vs pool':>13} "
          f"{'live adds':>10}")
    cases = [
        ("StreamPool.step_many, one process", pool_s, None),
        ("sequence call per key+batch, one process", seq_s, None),
        ("per-key function (KeyStep) per key+batch, no Spark", key_s, None),
        (f"  + live scores ({live})", key_live_s, key_s),
        ("Spark applyInPandasWithState, local[2]", spark_s, None),
        (f"  + live scores ({live})", live_s, spark_s)]
    if buckets:
        cases += [
            (f"per-bucket function (BucketStep), {buckets} buckets, no Spark", bfn_s, None),
            (f"  + live scores ({live})", bfn_live_s, bfn_s),
            (f"Spark, predict_stream(buckets={buckets}), local[2]", bucket_s, None),
            (f"  + live scores ({live})", bucket_live_s, bucket_s),
            ("  the same query without the model (Spark's floor)", floor_s, None)]
    for name, secs, base in cases:
        added = f"{(secs - base) / n * 1e6:>7.1f} us/row" if base else ""
        print(f"{name:<56} {secs:>8.2f} {n / secs:>10,.0f} {secs / pool_s:>12,.1f}x "
              f"{added:>10}")
    shares = [f"per key {seq_s / spark_s:.1%}"]
    if bucket_s and floor_s:
        shares.append(f"buckets={buckets} {seq_s / bucket_s:.1%}; the floor alone "
                      f"{seq_s / floor_s:.1%}")
    print(f"\nSpark's rows/s as a share of the sequence-call path's: {', '.join(shares)}")


if __name__ == "__main__":
    main()
