"""rnnstream inside Spark Structured Streaming (local[2]): equal to StreamPool, exactly-once
across a restart, fingerprint check, bad rows, idle timeout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ._support import (
    FEATURES,
    KEY,
    LIVE_MODEL_SEASON,
    ORDER,
    SCHEMA,
    assert_live_equal,
    assert_same_predictions,
    keyed_rows,
    live_reference,
    pool_predictions,
    read_sink,
    require_toolchain,
    run_query,
    snapshot_live,
    split_in_files,
    write_files,
)

require_toolchain()

from pyspark.errors import StreamingQueryException  # noqa: E402

from rnnstream.runtime import Predictor  # noqa: E402
from rnnstream.runtime.errors import InputError  # noqa: E402
from rnnstream.spark import (  # noqa: E402
    LIVE_STATE_SCHEMA,
    STATE_SCHEMA,
    _decode_live,
    live_columns,
    live_spec,
    predict_stream,
)

pytestmark = pytest.mark.spark

FILES = 4
PARTS = split_in_files(keyed_rows(), FILES)
ALL_ROWS = pd.concat(PARTS, ignore_index=True)


class Run:
    """The folders of one query: input files, checkpoint, parquet sink."""

    def __init__(self, root: Path) -> None:
        self.source, self.checkpoint, self.out = root / "in", root / "ck", root / "out"


@pytest.fixture(scope="module")
def uninterrupted(spark, model, tmp_path_factory) -> tuple[Run, pd.DataFrame, list[int]]:
    """All files in one query run: (its folders, its output, micro-batches that ran)."""
    run = Run(tmp_path_factory.mktemp("uninterrupted"))
    write_files(run.source, PARTS)
    batches = run_query(spark, model, run.source, run.checkpoint, run.out)
    return run, read_sink(spark, run.out), batches


def test_spark_predictions_equal_stream_pool(uninterrupted, model):
    _, got, batches = uninterrupted
    assert batches == list(range(FILES))  # one micro-batch per file: keys spread over 4
    assert got["error"].isna().all()
    assert_same_predictions(got.drop(columns="error"), pool_predictions(model, ALL_ROWS))


def test_delta_input_model_carries_its_last_point_across_micro_batches(spark, delta_model,
                                                                      tmp_path):
    run = Run(tmp_path)
    write_files(run.source, PARTS)
    batches = run_query(spark, delta_model, run.source, run.checkpoint, run.out)
    assert batches == list(range(FILES))
    got = read_sink(spark, run.out)
    assert got["error"].isna().all()
    assert_same_predictions(got.drop(columns="error"), pool_predictions(delta_model, ALL_ROWS))


def test_restart_from_checkpoint_equals_uninterrupted_run(spark, model, uninterrupted,
                                                          tmp_path):
    run = Run(tmp_path)
    write_files(run.source, PARTS[:2])
    assert run_query(spark, model, run.source, run.checkpoint, run.out) == [0, 1]
    # A crash after batch 1 wrote its output but before it was committed: Spark replays it (the
    # file sink sees it in its own log and keeps the rows it has), then batches 2 and 3 must go
    # on from batch 1's state, neither repeating nor losing a row.
    for name in ("1", ".1.crc"):  # the commit record and its Hadoop checksum
        (run.checkpoint / "commits" / name).unlink()
    write_files(run.source, PARTS[2:], first=2)
    assert run_query(spark, model, run.source, run.checkpoint, run.out) == [1, 2, 3]
    got, want = read_sink(spark, run.out), uninterrupted[1]
    assert len(got) == len(want) == len(ALL_ROWS)
    assert_same_predictions(got.drop(columns="error"), want.drop(columns="error"), atol=0)


def test_other_model_refuses_the_checkpoint_state(spark, model, other_model, tmp_path):
    run = Run(tmp_path)
    write_files(run.source, PARTS[:1])
    run_query(spark, model, run.source, run.checkpoint, run.out)
    write_files(run.source, [PARTS[1][PARTS[1][KEY] == "k2"]], first=1)
    with pytest.raises(StreamingQueryException, match="written by another model") as info:
        run_query(spark, other_model, run.source, run.checkpoint, run.out)
    message = str(info.value)
    assert "key 'k2'" in message
    for path in (model, other_model):  # the stored and the expected fingerprint, both in full
        assert f"fingerprint {Predictor(path).fingerprint}" in message


def bad_input() -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """Two files of keys k0, k1; in file 0, k1 has a missing value and one too big for float32."""
    rows = keyed_rows(keys=2, per_key=8)
    first, second = rows[rows[ORDER] % 80 < 40].copy(), rows[rows[ORDER] % 80 >= 40].copy()
    k1 = first.index[first[KEY] == "k1"]
    first.loc[k1[1], FEATURES[0]] = np.nan  # written as an empty field: a missing value
    first.loc[k1[2], FEATURES[1]] = 1e39  # a finite double, but inf as float32
    return [first, second], rows.drop(index=[k1[1], k1[2]])


def test_bad_rows_are_emitted_with_an_error_and_do_not_advance_state(spark, model, tmp_path):
    run = Run(tmp_path)
    parts, good = bad_input()
    write_files(run.source, parts)
    run_query(spark, model, run.source, run.checkpoint, run.out, on_bad_row="drop",
              keep=[FEATURES[1]], prefix="y_")
    got = read_sink(spark, run.out).rename(columns=lambda c: c.replace("y_", "pred_"))
    sent = pd.concat(parts).set_index([KEY, ORDER])[FEATURES[1]]  # keep=: passed through as is
    at = pd.MultiIndex.from_frame(got[[KEY, ORDER]])
    np.testing.assert_array_equal(got[FEATURES[1]], sent.loc[at])
    bad = got[got["error"].notna()]
    assert sorted(bad[ORDER]) == sorted(set(got[ORDER]) - set(good[ORDER]))
    assert bad.filter(like="pred_").isna().all().all()
    assert bad["error"].str.contains("key 'k1', row ts=").all()
    assert bad["error"].str.contains(f"feature '{FEATURES[0]}' is missing or NaN").any()
    assert bad["error"].str.contains(rf"feature '{FEATURES[1]}' is 1(?:\.\d+)?e\+39").any()
    ok = got[got["error"].isna()].drop(columns=["error", FEATURES[1]])
    assert_same_predictions(ok, pool_predictions(model, good))


def test_bad_row_fails_the_query_when_asked(spark, model, tmp_path):
    run = Run(tmp_path)
    write_files(run.source, bad_input()[0][:1])
    with pytest.raises(StreamingQueryException,
                       match=r"key 'k1', row ts=\d+: feature 'sensor_0' is missing or NaN"):
        run_query(spark, model, run.source, run.checkpoint, run.out, on_bad_row="fail")


def test_idle_key_times_out_and_restarts_from_zero_state(spark, model, tmp_path):
    # Event time: ts in seconds (from 1000 s: a row at the initial watermark, 0, would be late).
    # k0 is silent after 1020 s; once the watermark passes 1020 + 60 s (batch 3: the watermark
    # is then 1210 s) its state is dropped, so its rows at 1300 s start from the zero state.
    # k1 never pauses for 60 s of event time while the watermark moves, and goes on.
    run = Run(tmp_path)
    rows = keyed_rows(keys=2, per_key=12)
    rows[ORDER] = 1000 + np.tile([0, 10, 20, 30, 40, 50, 200, 210, 220, 230, 300, 310], 2)
    k0, k1 = rows[rows[KEY] == "k0"], rows[rows[KEY] == "k1"]
    k0_early, k0_late = k0[k0[ORDER] <= 1020], k0[k0[ORDER] >= 1300]
    files = [rows[rows[ORDER] <= 1020], k1[k1[ORDER].between(1030, 1050)],
             k1[k1[ORDER].between(1200, 1210)], k1[k1[ORDER].between(1220, 1230)], k0_late]
    write_files(run.source, [f.assign(**{ORDER: pd.to_datetime(f[ORDER], unit="s")})
                             for f in files])
    batches = run_query(spark, model, run.source, run.checkpoint, run.out,
                        schema=SCHEMA.replace(f"{ORDER} bigint", f"{ORDER} timestamp"),
                        watermark="0 seconds", idle_timeout_s=60)
    assert batches[:5] == [0, 1, 2, 3, 4]
    got = read_sink(spark, run.out).drop(columns="error")
    got[ORDER] = (got[ORDER] - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    want = pd.concat([pool_predictions(model, k1[k1[ORDER] <= 1230]),
                      pool_predictions(model, k0_early), pool_predictions(model, k0_late)])
    assert_same_predictions(got, want)


# -- checks made on the driver, before any query starts ------------------------------------------
def static_events(spark, **columns):
    data = {KEY: ["a"], ORDER: [1], **{f: [1.0] for f in FEATURES}, **columns}
    return spark.createDataFrame(pd.DataFrame(data))


def test_missing_feature_column_is_named(spark, model):
    events = static_events(spark).drop(FEATURES[1])
    with pytest.raises(InputError, match=rf"no column\(s\) \['{FEATURES[1]}'\]"):
        predict_stream(events, model, key=KEY, order=ORDER)


def test_non_numeric_feature_column_is_refused(spark, model):
    events = static_events(spark, **{FEATURES[0]: ["1.0"]})
    with pytest.raises(InputError, match=f"must be numeric.*{FEATURES[0]} \\(string\\)"):
        predict_stream(events, model, key=KEY, order=ORDER)


def test_unknown_bad_row_policy_is_refused(spark, model):
    with pytest.raises(ValueError, match="on_bad_row='skip'"):
        predict_stream(static_events(spark), model, key=KEY, order=ORDER, on_bad_row="skip")


def test_idle_timeout_needs_a_timestamp_order(spark, model):
    with pytest.raises(InputError, match="must be a timestamp with a watermark, not bigint"):
        predict_stream(static_events(spark), model, key=KEY, order=ORDER, idle_timeout_s=60)


def test_state_schema_is_the_same_for_every_model():
    assert STATE_SCHEMA.simpleString() == (
        "struct<fingerprint:string,steps:bigint,bad_rows:bigint,h:binary,c:binary,"
        "cycle:binary,ets:binary,last:binary>")  # cycle, ets: seasonal/ETS targets (0.4)
    assert LIVE_STATE_SCHEMA.simpleString() == STATE_SCHEMA.simpleString()[:-1] + ",live:binary>"



def test_shipped_model_streams_and_resolves_to_the_spark_files_copy(spark, model, tmp_path):
    """ship_model=True sends the model and its step graph with addFile; an executor on which
    the model's path does not exist reads the shipped copy (SparkFiles) instead."""
    from rnnstream.spark import _resolve

    run = Run(tmp_path)
    write_files(run.source, PARTS[:2])
    run_query(spark, model, run.source, run.checkpoint, run.out, ship_model=True)
    got = read_sink(spark, run.out)
    assert got["error"].isna().all()
    assert_same_predictions(got.drop(columns=["error"]),
                            pool_predictions(model, pd.concat(PARTS[:2], ignore_index=True)))
    assert _resolve(str(model), model.name) == str(model)  # where the path exists: the path
    elsewhere = _resolve(str(tmp_path / "not-on-this-executor" / model.name), model.name)
    assert Path(elsewhere).read_bytes() == model.read_bytes()
    step = Path(elsewhere).with_name(f"{model.stem}.step.onnx")
    assert step.read_bytes() == model.with_name(f"{model.stem}.step.onnx").read_bytes()


# -- live scores (coverage=...) -------------------------------------------------------------------
LIVE = {"coverage": 0.8}  # season: the model's own (LIVE_MODEL_SEASON)


@pytest.fixture(scope="module")
def live_uninterrupted(spark, live_model, tmp_path_factory) -> tuple[Run, pd.DataFrame]:
    run = Run(tmp_path_factory.mktemp("live-uninterrupted"))
    write_files(run.source, PARTS)
    assert run_query(spark, live_model, run.source, run.checkpoint, run.out,
                     **LIVE) == list(range(FILES))
    return run, read_sink(spark, run.out)


def test_live_scores_equal_predictor_with_coverage(spark, live_model, live_uninterrupted,
                                                   tmp_path):
    """Per key, Predictor(coverage=...) fed each micro-batch's rows with prime: predictions on
    every row, and interval and live accuracy after each micro-batch, bit-equal; and the live
    arrays in Spark's state store (read with the statestore source) equal its own."""
    run, got = live_uninterrupted
    targets = Predictor(live_model).targets
    assert list(got.columns) == [KEY, ORDER, *(f"pred_{t}" for t in targets),
                                 *live_columns(targets, LIVE_MODEL_SEASON), "error"]
    assert got["error"].isna().all()
    want, predictors = live_reference(live_model, PARTS, **LIVE)
    assert_live_equal(got.drop(columns="error"), want)
    assert np.isfinite(got.filter(regex="^(lower|upper)_").to_numpy()[-1]).all()
    stored = (spark.read.format("statestore").load(str(run.checkpoint))
              .selectExpr("key.key AS key", "value.groupState.live AS live").toPandas())
    assert sorted(stored["key"]) == sorted(predictors)
    spec = live_spec(Predictor(live_model).contract, LIVE["coverage"], None, {},
                     str(live_model))
    assert spec is not None
    for key, blob in zip(stored["key"], stored["live"], strict=True):
        arrays = _decode_live(bytes(blob), spec, key)
        for name, value in snapshot_live(predictors[key], tmp_path).items():
            np.testing.assert_array_equal(arrays[name], value, err_msg=f"{key} {name}")


def test_live_restart_from_checkpoint_equals_uninterrupted_run(spark, live_model,
                                                               live_uninterrupted, tmp_path):
    """As test_restart_from_checkpoint_equals_uninterrupted_run, with coverage: intervals and
    live accuracy continue from the checkpoint exactly."""
    run = Run(tmp_path)
    write_files(run.source, PARTS[:2])
    assert run_query(spark, live_model, run.source, run.checkpoint, run.out, **LIVE) == [0, 1]
    for name in ("1", ".1.crc"):
        (run.checkpoint / "commits" / name).unlink()
    write_files(run.source, PARTS[2:], first=2)
    assert run_query(spark, live_model, run.source, run.checkpoint, run.out,
                     **LIVE) == [1, 2, 3]
    got, want = read_sink(spark, run.out), live_uninterrupted[1]
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) == len(ALL_ROWS)
    assert_same_predictions(got.drop(columns="error"), want.drop(columns="error"), atol=0)
