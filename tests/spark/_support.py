"""Helpers for the Spark tests: the toolchain check, keyed CSV input, queries, the reference.

The tests need pyspark and Java. Where either is missing they are skipped with the reason,
except under CI (the ``CI`` environment variable set), where a missing toolchain is a failure:
CI must prove the Spark integration, not silently skip it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

KEY, ORDER = "key", "ts"
FEATURES = ["sensor_0", "sensor_1"]
SCHEMA = f"{KEY} string, {ORDER} bigint, " + ", ".join(f"{f} double" for f in FEATURES)
QUERY_TIMEOUT_S = 120
LIVE_MODEL_SEASON = 3  # the season the live_model fixture's contract stores


def missing_toolchain() -> str | None:
    """Why the Spark tests cannot run here, or None when they can."""
    try:
        import pyspark  # noqa: F401
        import torch  # noqa: F401 -- export_model makes the model files
    except ImportError as exc:
        return (f"{exc.name} is not installed: pip install 'rnnstream[spark,train]' "
                "(the Spark tests need pyspark, pandas, pyarrow and, to export models, torch)")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "Java (17+) is not installed; Spark needs it (apt-get install openjdk-17-jre)"
    return None


def require_toolchain() -> None:
    """Skip the calling module (fail it under CI) when pyspark, torch or Java is missing."""
    reason = missing_toolchain()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the Spark tests must run: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def spark_session():
    """A quiet local[2] session; workers run this interpreter (it has pandas and pyarrow)."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from rnnstream.spark import loopback_builder

    spark = (loopback_builder(SparkSession.builder).master("local[2]").appName("rnnstream-tests")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2")  # keys spread over 2 state partitions
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.streaming.stateStore.minDeltasForSnapshot", "2")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# -- input -------------------------------------------------------------------------------------
def keyed_rows(keys: int = 6, per_key: int = 24, seed: int = 3) -> pd.DataFrame:
    """``per_key`` raw points for each of ``keys`` series, at the model's normalisation scale."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(keys):
        t = np.arange(per_key)
        x = 15 + 3 * np.sin(0.2 * t[:, None] + k + np.arange(len(FEATURES))[None, :])
        x = x + 0.5 * rng.standard_normal(x.shape)
        frames.append(pd.DataFrame({KEY: f"k{k}", ORDER: t * 10 + k,
                                    **{f: x[:, i] for i, f in enumerate(FEATURES)}}))
    return pd.concat(frames, ignore_index=True)


def split_in_files(rows: pd.DataFrame, files: int, seed: int = 4) -> list[pd.DataFrame]:
    """Split by time into ``files`` chunks (a key's later rows in later files); some keys skip
    some chunks, and each chunk's rows are shuffled (Spark must sort them back)."""
    rng = np.random.default_rng(seed)
    rank = rows.groupby(KEY).cumcount().to_numpy()
    chunk = rank * files // (rank.max() + 1)
    out = []
    for i in range(files):
        part = rows[chunk == i]
        skip = rng.choice(sorted(part[KEY].unique()), size=1)  # one key sits this batch out
        part = part[~part[KEY].isin(skip) | (i == 0)]
        out.append(part.sample(frac=1.0, random_state=int(rng.integers(1 << 30))))
    return out


def write_files(folder: Path, parts: list[pd.DataFrame], first: int = 0) -> None:
    """One CSV per part, with increasing modification times: the file source (one file per
    trigger) then reads them in this order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(parts, start=first):
        path = folder / f"part-{i:03d}.csv"
        part.to_csv(path, index=False)
        stamp = 1_700_000_000 + 10 * i
        os.utime(path, (stamp, stamp))


# -- queries -----------------------------------------------------------------------------------
def run_query(spark, model: Path, source: Path, checkpoint: Path, out: Path, *,
              schema: str = SCHEMA, watermark: str | None = None, **options) -> list[int]:
    """Process every file now in ``source`` (one file per micro-batch), append to the parquet
    sink ``out``, stop; return the ids of the micro-batches that ran."""
    from rnnstream.spark import predict_stream

    events = (spark.readStream.schema(schema).option("header", True)
              .option("maxFilesPerTrigger", 1).csv(str(source)))
    if watermark is not None:
        events = events.withWatermark(ORDER, watermark)
    preds = predict_stream(events, model, key=KEY, order=ORDER, **options)
    query = (preds.writeStream.format("parquet")
             .option("checkpointLocation", str(checkpoint))
             .trigger(availableNow=True).start(str(out)))
    try:
        if not query.awaitTermination(QUERY_TIMEOUT_S):
            raise TimeoutError(f"the query did not finish within {QUERY_TIMEOUT_S} s")
    finally:
        query.stop()
    return [p["batchId"] for p in query.recentProgress]


def read_sink(spark, out: Path) -> pd.DataFrame:
    """What a parquet sink holds (through its _spark_metadata log, as Spark readers see it)."""
    frame = spark.read.parquet(str(out)).toPandas()
    return frame.sort_values([KEY, ORDER], ignore_index=True)


# -- the reference -----------------------------------------------------------------------------
def pool_predictions(model: Path, rows: pd.DataFrame, prefix: str = "pred_") -> pd.DataFrame:
    """The same rows through one in-process StreamPool: each key's rows in ``ORDER``, one row
    per key and step_many call."""
    from rnnstream.runtime import StreamPool

    pool = StreamPool(model, auto_add=True)
    rows = rows.sort_values([KEY, ORDER], ignore_index=True)
    rank = rows.groupby(KEY).cumcount().to_numpy()
    targets = [f"{prefix}{t}" for t in pool.contract.targets]
    y = np.empty((len(rows), len(targets)))
    for r in range(rank.max() + 1 if len(rows) else 0):
        idx = np.flatnonzero(rank == r)
        x = rows.loc[idx, FEATURES].to_numpy(np.float32)
        y[idx] = pool.step_many(rows.loc[idx, KEY].tolist(), x).reshape(len(idx), -1)
    out = rows[[KEY, ORDER]].copy()
    for j, name in enumerate(targets):
        out[name] = y[:, j]
    return out


def assert_same_predictions(got: pd.DataFrame, want: pd.DataFrame, atol: float = 1e-5) -> None:
    """Same (key, order) rows, each once, and predictions within ``atol``."""
    assert not got.duplicated([KEY, ORDER]).any(), "a row was emitted twice"
    merged = want.merge(got, on=[KEY, ORDER], how="outer", suffixes=("_want", "_got"),
                        indicator=True)
    missing = merged[merged["_merge"] != "both"]
    assert missing.empty, f"rows missing on one side:\n{missing[[KEY, ORDER, '_merge']]}"
    for col in [c for c in want.columns if c not in (KEY, ORDER)]:
        np.testing.assert_allclose(merged[f"{col}_got"].to_numpy(float),
                                   merged[f"{col}_want"].to_numpy(float), rtol=0, atol=atol,
                                   err_msg=col)


def live_reference(model: Path, parts: list[pd.DataFrame], prefix: str = "pred_",
                   **live) -> tuple[pd.DataFrame, dict[str, object]]:
    """Each key's rows in each part (micro-batch) through one Predictor(coverage=...) per key
    with ``prime`` (the sequence call Spark makes per key and micro-batch). Returns every row's
    predictions, the live columns after each part's last row of a key (NaN on other rows;
    ``_end`` marks those rows), and the Predictors."""
    from rnnstream.runtime import Predictor
    from rnnstream.spark import live_columns

    predictors: dict[str, Predictor] = {}
    frames = []
    for part in parts:
        for key, rows in part.sort_values(ORDER).groupby(KEY, sort=True):
            p = predictors.setdefault(key, Predictor(model, **live))
            y = p.prime(rows[FEATURES].to_numpy(np.float32)).reshape(len(rows), -1)
            frame = rows[[KEY, ORDER]].reset_index(drop=True)
            for j, t in enumerate(p.targets):
                frame[f"{prefix}{t}"] = y[:, j]
            season = p.live.season
            names = live_columns(p.targets, season)
            frame[names] = np.nan
            frame["_end"] = np.arange(len(frame)) == len(frame) - 1
            frame.loc[len(frame) - 1, names] = live_values(p, season is not None)
            frames.append(frame)
    return pd.concat(frames).sort_values([KEY, ORDER], ignore_index=True), predictors


def live_values(p, season: bool) -> np.ndarray:
    """A Predictor's live columns now, in live_columns order, read through its public API."""
    lower, upper = p.interval()
    acc = p.accuracy()
    share, _ = p.realised_coverage()
    parts = [lower, upper, acc["model"]["mae"], acc["model"]["recent_mae"],
             acc["persistence"]["mae"]]
    if season:
        parts.append(acc["seasonal"]["mae"])
    parts.append(share)
    return np.concatenate(parts, axis=None)


def assert_live_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Bit-equal predictions on every row and live columns on the ``_end`` rows (NaN where
    nothing was scored yet: Spark writes null, read back as NaN)."""
    assert not got.duplicated([KEY, ORDER]).any(), "a row was emitted twice"
    got = got.sort_values([KEY, ORDER], ignore_index=True)
    assert got[[KEY, ORDER]].equals(want[[KEY, ORDER]])
    end = want["_end"].to_numpy()
    for col in [c for c in want.columns if c not in (KEY, ORDER, "_end")]:
        rows = slice(None) if col.startswith("pred_") else end
        np.testing.assert_array_equal(got[col].to_numpy(float)[rows],
                                      want[col].to_numpy(float)[rows], err_msg=col)


def snapshot_live(p, folder: Path) -> dict[str, np.ndarray]:
    """A Predictor's live arrays, read from its save_state snapshot (``live.<name>``)."""
    path = folder / "reference.npz"
    p.save_state(path)
    with np.load(path) as saved:
        return {k[len("live."):]: saved[k] for k in saved.files if k.startswith("live.")}


class FakeState:
    """The part of pyspark's GroupState that KeyStep and BucketStep use."""

    hasTimedOut = False

    def __init__(self, stored: tuple | None = None) -> None:
        self.value = stored

    @property
    def exists(self) -> bool:
        return self.value is not None

    @property
    def get(self) -> tuple:
        return self.value

    def update(self, value: tuple) -> None:
        self.value = value
