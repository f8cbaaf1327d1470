"""predict_stream(buckets=N): many keys per Spark call, the same bits as one call per key.

The per-bucket function is checked against the per-key one without Spark (predictions, errors,
each key's stored state and live scores bit for bit); then in Spark: equal to StreamPool,
exactly-once across a restart, settings refused where they cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ._support import (
    FEATURES,
    KEY,
    ORDER,
    FakeState,
    assert_same_predictions,
    keyed_rows,
    pool_predictions,
    read_sink,
    require_toolchain,
    run_query,
    split_in_files,
    write_files,
)

require_toolchain()

from rnnstream.runtime import (  # noqa: E402
    InputError,
    Predictor,
    StateError,
    UnsupportedError,
)
from rnnstream.spark import STATE_COLUMNS, KeyStep, live_spec  # noqa: E402
from rnnstream.spark._buckets import BucketStep, batch_exact, worker_pool  # noqa: E402

FILES = 4


def _key_step(model: Path, coverage: float | None = None, on_bad_row: str = "drop") -> KeyStep:
    p = Predictor(model)
    spec = None if coverage is None else live_spec(p.contract, coverage, None, None, str(model))
    return KeyStep(str(model), p.fingerprint, KEY, ORDER, tuple(FEATURES), (),
                   tuple(f"pred_{t}" for t in p.targets), on_bad_row, None, "", spec)


def _parts(bad: bool = True) -> list[pd.DataFrame]:
    """Micro-batches of 7 keys: uneven row counts per key and batch, a key sitting a batch out,
    and (``bad``) a NaN feature and an infinite value in the middle of two keys' rows."""
    rows = keyed_rows(keys=7, per_key=23)
    if bad:
        rows.loc[30, FEATURES[0]] = np.nan
        rows.loc[75, FEATURES[-1]] = np.inf
    return split_in_files(rows, FILES)


def _per_key(step: KeyStep, parts: list[pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
    states: dict = {}
    out = []
    for part in parts:
        for key, frame in part.groupby(KEY):
            state = states.setdefault(key, FakeState())
            out += list(step((key,), iter([frame]), state))
    return pd.concat(out, ignore_index=True), {k: s.value for k, s in states.items()}


def _by_bucket(step: BucketStep, parts: list[pd.DataFrame], buckets: int
               ) -> tuple[pd.DataFrame, list[FakeState]]:
    states = [FakeState() for _ in range(buckets)]
    out = []
    for part in parts:
        bucket = part[KEY].map(lambda k: int(k[1:]) % buckets).to_numpy()
        for b in range(buckets):
            frame = part[bucket == b]
            half = len(frame) // 2  # Spark may hand a group over in several frames
            out += list(step((b,), iter([frame.iloc[:half], frame.iloc[half:]]), states[b]))
    return pd.concat(out, ignore_index=True), states


def _key_rows(bucket_states: list[FakeState], step: BucketStep) -> dict:
    """Each key's per-key state row, cut out of the bucket rows."""
    rows = {}
    for state in bucket_states:
        if state.value is None:
            continue
        fingerprint, keys, steps, bad, *columns = state.value
        assert fingerprint == f"{step.step.fingerprint} {step.settings}"
        keys = json.loads(keys)
        steps, bad = (np.frombuffer(b, "<i8").tolist() for b in (steps, bad))
        blobs = dict(zip(STATE_COLUMNS, columns, strict=False))
        live = columns[len(STATE_COLUMNS)] if len(columns) > len(STATE_COLUMNS) else None
        for i, key in enumerate(keys):
            cut = []
            for name in STATE_COLUMNS:
                blob = blobs[name]
                size = None if blob is None else len(blob) // len(keys)
                cut.append(None if blob is None else blob[i * size:(i + 1) * size])
            extra = ()
            if live is not None:
                size = len(live) // len(keys)
                extra = (live[i * size:(i + 1) * size],)
            rows[key] = (step.step.stored_fingerprint, steps[i], bad[i], *cut, *extra)
    return rows


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([KEY, ORDER], ignore_index=True)


@pytest.fixture(scope="module")
def rnn_model(tmp_path_factory) -> Path:
    from .conftest import _export

    return _export(tmp_path_factory.mktemp("spark-rnn"), seed=2, cell="rnn")


@pytest.mark.parametrize("buckets", [1, 3])
@pytest.mark.parametrize("which", ["lstm", "lstm-live", "rnn"])
def test_buckets_give_the_bits_of_one_call_per_key(model, live_model, rnn_model, buckets,
                                                   which):
    path = {"lstm": model, "lstm-live": live_model, "rnn": rnn_model}[which]
    coverage = 0.8 if which == "lstm-live" else None
    key_step = _key_step(path, coverage)
    bucket_step = BucketStep(key_step, buckets)
    parts = _parts()
    want, want_states = _per_key(key_step, parts)
    got, states = _by_bucket(bucket_step, parts, buckets)
    want, got = _sorted(want), _sorted(got)
    assert list(got.columns) == list(want.columns)
    assert got[ERROR].notna().sum() == 2
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert _key_rows(states, bucket_step) == want_states


ERROR = "error"


def test_keys_share_a_call_only_where_the_bits_agree(rnn_model):
    """onnxruntime's RNN op gives a sequence other last bits in a batch: one call per key."""
    pool, exact = worker_pool(str(rnn_model), Predictor(rnn_model).fingerprint)
    assert exact == batch_exact(pool)
    assert not exact


def test_bad_row_fails_when_asked(model):
    step = BucketStep(_key_step(model, on_bad_row="fail"), 1)
    with pytest.raises(InputError, match=f"feature '{FEATURES[0]}' is missing or NaN"):
        _by_bucket(step, _parts(), 1)


def test_other_settings_and_damaged_rows_are_refused(model):
    step = BucketStep(_key_step(model), 2)
    _, states = _by_bucket(step, _parts(bad=False)[:1], 2)
    stored = states[0].value
    again = _parts(bad=False)[1:2]
    other = BucketStep(_key_step(model), 3)
    with pytest.raises(StateError, match=r"other settings \(stored: buckets=2; this query: "
                                         r"buckets=3\)"):
        list(other((0,), iter([again[0]]), FakeState(stored)))
    with pytest.raises(StateError, match="written by another model"):
        list(step((0,), iter([again[0]]), FakeState(("sha256:other buckets=2", *stored[1:]))))
    cut = list(stored)
    cut[4] = cut[4][:-4]  # the bucket's h loses one float
    with pytest.raises(StateError, match="stored state 'h' has"):
        list(step((0,), iter([again[0]]), FakeState(tuple(cut))))


# -- in Spark ---------------------------------------------------------------------------------
PARTS = _parts(bad=False)
ALL_ROWS = pd.concat(PARTS, ignore_index=True)


@pytest.mark.spark
def test_spark_with_buckets_equals_the_pool_and_restarts_exactly(spark, model, tmp_path):
    whole = tmp_path / "whole"
    write_files(whole / "in", PARTS)
    run_query(spark, model, whole / "in", whole / "ck", whole / "out", buckets=3)
    want = read_sink(spark, whole / "out")
    assert want[ERROR].isna().all()
    assert_same_predictions(want.drop(columns=ERROR), pool_predictions(model, ALL_ROWS))

    run = tmp_path / "restarted"
    write_files(run / "in", PARTS[:2])
    assert run_query(spark, model, run / "in", run / "ck", run / "out", buckets=3) == [0, 1]
    for name in ("1", ".1.crc"):  # batch 1 ran but was not committed: Spark replays it
        (run / "ck" / "commits" / name).unlink()
    write_files(run / "in", PARTS[2:], first=2)
    assert run_query(spark, model, run / "in", run / "ck", run / "out",
                     buckets=3) == [1, 2, 3]
    got = read_sink(spark, run / "out")
    assert len(got) == len(want) == len(ALL_ROWS)
    assert_same_predictions(got.drop(columns=ERROR), want.drop(columns=ERROR), atol=0)


@pytest.mark.spark
def test_spark_refuses_buckets_it_cannot_keep(spark, model):
    from rnnstream.spark import predict_stream

    events = spark.createDataFrame(ALL_ROWS.head(3))
    for bad in (0, -2, True, 1.5):
        with pytest.raises(ValueError, match="buckets="):
            predict_stream(events, model, key=KEY, order=ORDER, buckets=bad)
    stamped = events.selectExpr(f"cast({ORDER} as timestamp) as {ORDER}", KEY, *FEATURES)
    with pytest.raises(UnsupportedError, match="idle_timeout_s times out Spark groups"):
        predict_stream(stamped, model, key=KEY, order=ORDER, buckets=2, idle_timeout_s=60)
    with pytest.raises(UnsupportedError, match="string or integer key"):
        predict_stream(events.selectExpr(f"cast({ORDER} as double) as k2", "*"), model,
                       key="k2", order=ORDER, buckets=2)


def test_live_scores_of_a_nan_prediction_start_afresh_as_per_key(live_model):
    """y with a NaN and an inf prediction and a bad row, straight into the bucket's live step
    and into each key's KeyLive: the same columns and stored scores, bit for bit."""
    from rnnstream.spark import KeyLive
    from rnnstream.spark._buckets import _Stored

    step = _key_step(live_model, 0.8)
    bucket = BucketStep(step, 1)
    pool, _ = worker_pool(str(live_model), step.fingerprint)
    rng = np.random.default_rng(5)
    codes = np.repeat([0, 1, 2], [6, 9, 4])
    keys = ["a", "b", "c"]
    x = rng.normal(15, 2, size=(len(codes), len(FEATURES))).astype(np.float32)
    y = rng.normal(15, 2, size=(len(codes), 2))
    y[3, 0], y[10, 1] = np.nan, np.inf
    good = np.ones(len(codes), bool)
    good[12] = False
    stored = _Stored([], np.zeros(0, np.int64), np.zeros(0, np.int64), {}, [])
    slot = bucket._slots(stored, keys, [])
    got = bucket._live(pool, stored, slot, codes, keys, x, y, good)
    for code, key in enumerate(keys):
        rows = codes == code
        live = KeyLive.restore(step.live, pool.contract, step.path, key, False, None)
        want = live.advance(x[rows], y[rows], good[rows])
        np.testing.assert_array_equal(got[rows], want)
        assert stored.live[slot[code]] == live.encode()
