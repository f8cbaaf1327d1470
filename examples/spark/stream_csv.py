"""Stream predictions for a folder of keyed CSV files with Spark Structured Streaming.

    python examples/spark/stream_csv.py --model model.onnx --input in/ --checkpoint ck/ \\
        --output out/ --once

Each CSV file has a header with the key column, the order column and one column per model
feature (named as in the model, see ``rnnstream inspect model.onnx``). New files dropped into
``--input`` are picked up as they arrive; each key's recurrent state lives in Spark's state store
under ``--checkpoint``, so stopping and restarting the script continues every series where it
was, without repeating or losing a prediction (``--output``: parquet, exactly-once). Without
``--output`` predictions are printed (the console sink: handy, not exactly-once).
``--coverage 0.9`` adds to each row its prediction interval and the series' live accuracy
(``lower_<target>``, ``upper_<target>``, ``mae_<target>``, ``persistence_mae_<target>``, ...),
kept in the checkpoint with the recurrent state; a checkpoint is started with or without it.
``--demo`` first writes a few files of random walks into ``--input``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an rnnstream .onnx file")
    p.add_argument("--input", required=True, help="folder watched for CSV files")
    p.add_argument("--checkpoint", required=True, help="Spark checkpoint folder (keeps state)")
    p.add_argument("--output", help="parquet output folder (default: print to the console)")
    p.add_argument("--key", default="key", help="key column (default: key)")
    p.add_argument("--order", default="ts", help="event-order column, integer (default: ts)")
    p.add_argument("--on-bad-row", choices=["drop", "fail"], default="drop")
    p.add_argument("--coverage", type=float,
                   help="add prediction intervals at this coverage (e.g. 0.9) and live "
                        "accuracy per row (default: off)")
    p.add_argument("--season", type=int,
                   help="with --coverage: seasonal period in rows, for the seasonal naive "
                        "baseline")
    p.add_argument("--once", action="store_true",
                   help="process the files present now, then stop (trigger availableNow)")
    p.add_argument("--trigger-seconds", type=float, default=5.0,
                   help="otherwise, look for new files this often (default: 5)")
    p.add_argument("--demo", type=int, metavar="KEYS", default=0,
                   help="first write 3 CSV files with KEYS random-walk series into --input")
    return p.parse_args(argv)


def write_demo(folder: Path, features: list[str], keys: int, key: str, order: str) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    start = len(list(folder.glob("*.csv"))) * 10
    walk = np.cumsum(rng.standard_normal((keys, 30, len(features))), axis=1)
    for f in range(3):
        t = np.arange(start + 10 * f, start + 10 * (f + 1))
        rows = [{key: f"series-{k}", order: int(ts),
                 **dict(zip(features, walk[k, ts - start], strict=True))}
                for k in range(keys) for ts in t]
        pd.DataFrame(rows).to_csv(folder / f"demo-{start // 10 + f:04d}.csv", index=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The workers must run this interpreter (it has rnnstream, pandas and pyarrow).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # pyspark 4.3's own worker.py raises a pandas FutureWarning on every group concat (not ours;
    # the workers inherit this, the running driver does not)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    from pyspark.sql import SparkSession

    from rnnstream.runtime import Predictor
    from rnnstream.spark import loopback_builder, predict_stream

    features = Predictor(args.model).features
    if args.demo:
        write_demo(Path(args.input), features, args.demo, args.key, args.order)
    # local mode: the driver listens on 127.0.0.1 only, not on the machine's network address
    spark = (loopback_builder(SparkSession.builder).master("local[2]")
             .appName("rnnstream-stream-csv")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "4")  # state partitions; fixed per checkpoint
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    schema = (f"`{args.key}` string, `{args.order}` bigint, "
              + ", ".join(f"`{f}` double" for f in features))
    events = spark.readStream.schema(schema).option("header", True).csv(args.input)
    preds = predict_stream(events, args.model, key=args.key, order=args.order,
                           on_bad_row=args.on_bad_row, coverage=args.coverage,
                           season=args.season)
    writer = preds.writeStream.option("checkpointLocation", args.checkpoint)
    writer = (writer.format("parquet").option("path", args.output) if args.output
              else writer.format("console").option("truncate", False).option("numRows", 50))
    writer = (writer.trigger(availableNow=True) if args.once
              else writer.trigger(processingTime=f"{args.trigger_seconds} seconds"))
    query = writer.start()
    try:
        query.awaitTermination()
    except KeyboardInterrupt:  # Ctrl-C: stop cleanly; the checkpoint keeps every key's state
        query.stop()
    if args.output:
        written = spark.read.parquet(args.output)
        print(f"{written.count()} predictions in {args.output}; latest rows:")
        written.orderBy(args.order, ascending=False).show(5, truncate=False)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
