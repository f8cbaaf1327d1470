"""The per-key function and the per-worker model cache, called directly (no Spark session)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import pytest

from ._support import (
    FEATURES,
    KEY,
    LIVE_MODEL_SEASON,
    ORDER,
    FakeState,
    assert_live_equal,
    keyed_rows,
    live_reference,
    pool_predictions,
    require_toolchain,
    snapshot_live,
)

require_toolchain()

from rnnstream.runtime import InputError, ModelLoadError, Predictor, StateError  # noqa: E402
from rnnstream.runtime.live import STATE_ARRAYS, LiveConfig  # noqa: E402
from rnnstream.spark import (  # noqa: E402
    STATE_COLUMNS,
    KeyStep,
    _decode_live,
    live_columns,
    live_spec,
    worker_model,
)


def key_step(model, on_bad_row: str = "drop") -> KeyStep:
    p = Predictor(model)
    return KeyStep(str(model), p.fingerprint, KEY, ORDER, tuple(FEATURES), (),
                   tuple(f"pred_{t}" for t in p.targets), on_bad_row, None)


def test_model_is_opened_once_per_worker_and_reopened_when_the_file_changes(model, tmp_path):
    fingerprint = Predictor(model).fingerprint
    first = worker_model(str(model), fingerprint)
    assert worker_model(str(model), fingerprint) is first
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(model.read_bytes())
    second = worker_model(str(copy), fingerprint)
    assert second is not first
    os.utime(copy, ns=(1, 1))  # "replaced in place": a new mtime means a new session
    assert worker_model(str(copy), fingerprint) is not second
    with pytest.raises(ModelLoadError, match="changed since the query was started"):
        worker_model(str(model), "sha256:another")


def test_state_round_trips_through_spark_layout(model):
    """Two micro-batches through KeyStep (state stored as bytes between them) equal one pool."""
    rows = keyed_rows(keys=1, per_key=10)
    step, state = key_step(model), FakeState()
    out = [next(step(("k0",), iter([part.iloc[::-1]]), state)) for part in (rows[:4], rows[4:])]
    fingerprint, steps, bad, *columns = state.value
    assert (fingerprint, steps, bad) == (step.fingerprint, 10, 0)
    blobs = dict(zip(STATE_COLUMNS, columns, strict=True))
    assert len(blobs["h"]) == len(blobs["c"]) == 2 * 8 * 4  # [layers=2, hidden=8] float32
    assert blobs["last"] is None  # a level-input model has no `last` state
    got = pd.concat(out).drop(columns="error")
    want = pool_predictions(model, rows)
    np.testing.assert_allclose(got.filter(like="pred_"), want.filter(like="pred_"), atol=1e-5)


def test_truncated_stored_state_is_refused(model):
    step = key_step(model)
    blobs = {"h": b"\x00" * 12, "c": b"\x00" * 64}
    stored = (step.fingerprint, 3, 0, *(blobs.get(n) for n in STATE_COLUMNS))
    with pytest.raises(StateError, match=r"key 'k0': stored state 'h' has 12 bytes; expected 64"):
        next(step(("k0",), iter([keyed_rows(keys=1, per_key=2)]), FakeState(stored)))


# -- live scores (coverage=...) -------------------------------------------------------------------
LIVE = {"coverage": 0.8}  # season: the model's own (LIVE_MODEL_SEASON)


def live_step(model, **live) -> KeyStep:
    p = Predictor(model)
    settings = {**LIVE, **live}
    spec = live_spec(p.contract, settings.pop("coverage"), settings.pop("season", None),
                     settings, str(model))
    return KeyStep(str(model), p.fingerprint, KEY, ORDER, tuple(FEATURES), (),
                   tuple(f"pred_{t}" for t in p.targets), "drop", None, "", spec)


def run_chunks(step: KeyStep, chunks: list[pd.DataFrame],
               state: FakeState | None = None) -> tuple[pd.DataFrame, FakeState]:
    """Each chunk as one micro-batch of key k0 (its rows reversed: KeyStep sorts them)."""
    state = state or FakeState()
    out = [next(step(("k0",), iter([c.iloc[::-1]]), state)) for c in chunks]
    return pd.concat(out, ignore_index=True), state


def assert_stored_live_equals(state: FakeState, step: KeyStep, p: Predictor, tmp_path) -> None:
    assert step.live is not None
    stored = _decode_live(state.value[-1], step.live, "k0")
    expected = snapshot_live(p, tmp_path)
    assert list(stored) == list(STATE_ARRAYS) == sorted(expected, key=STATE_ARRAYS.index)
    for name, value in expected.items():
        assert stored[name].dtype == value.dtype, name
        np.testing.assert_array_equal(stored[name], value, err_msg=name)


def test_live_scores_equal_predictor_with_coverage_bit_for_bit(live_model, tmp_path):
    """Chunks of 1 to 9 rows through KeyStep, the live arrays stored as bytes between them:
    predictions, and at every chunk's end the interval, accuracy and live arrays, bit-equal
    to Predictor(coverage=...) fed the same chunks."""
    rows = keyed_rows(keys=1, per_key=30)
    chunks = [rows[a:b] for a, b in itertools.pairwise([0, 1, 2, 3, 4, 7, 8, 17, 18, 26, 30])]
    step = live_step(live_model)
    got, state = run_chunks(step, chunks)
    want, predictors = live_reference(live_model, chunks, **LIVE)
    assert list(got.columns) == [KEY, ORDER, *(f"pred_{t}" for t in FEATURES),
                                 *live_columns(FEATURES, LIVE_MODEL_SEASON), "error"]
    assert_live_equal(got, want)
    last = got.iloc[-1].filter(regex="^(lower|upper|mae|persistence|realised)_")
    assert np.isfinite(last.to_numpy(float)).all()  # scored, bounded, some coverage
    fingerprint, steps, bad, *_ = state.value
    assert fingerprint == f"{step.fingerprint} {step.live.tag}"
    assert step.live.tag == ("live coverage=0.8 season=3 lr=0.2 half_life=100.0 "
                             "scales=[0.5, 0.5]")
    assert (steps, bad) == (30, 0)
    assert_stored_live_equals(state, step, predictors["k0"], tmp_path)


def test_bad_rows_leave_the_live_scores_alone(live_model, tmp_path):
    rows = keyed_rows(keys=1, per_key=20)
    bad = rows.copy()
    bad.loc[[5, 6, 13], FEATURES[0]] = np.nan
    chunks = [bad[:9], bad[9:20]]
    step = live_step(live_model)
    got, state = run_chunks(step, chunks)
    assert got["error"].notna().sum() == 3
    assert got[got["error"].notna()].filter(regex="^(pred|lower|mae)_").isna().all().all()
    good = [c.dropna() for c in chunks]
    want, predictors = live_reference(live_model, good, **LIVE)
    assert_live_equal(got[got["error"].isna()].drop(columns="error"), want)
    assert_stored_live_equals(state, step, predictors["k0"], tmp_path)


def test_nan_prediction_starts_the_live_scores_afresh(live_model, monkeypatch):
    """As Predictor does: a NaN prediction cannot be scored or bounded; the scores restart."""
    import rnnstream.spark._worker as spark_module  # where KeyStep looks the model up

    real = worker_model(str(live_model), Predictor(live_model).fingerprint)

    class NanAt(int):
        def run_sequence(self, x, state):
            y, after = real.run_sequence(x, state)
            y = y.copy()
            y[int(self), 1] = np.nan
            return y, after

        contract = real.contract

    rows = keyed_rows(keys=1, per_key=20)
    monkeypatch.setattr(spark_module, "worker_model", lambda path, fingerprint: NanAt(7))
    step = live_step(live_model)
    got, state = run_chunks(step, [rows])
    assert np.isnan(got.loc[7, "pred_sensor_1"])
    assert got.loc[7].filter(regex="^(lower|upper|mae)_").isna().all()
    assert step.live is not None
    # the scores after row 7 are those of a stream that began at row 8, same predictions
    born = step.live.open(real.contract, str(live_model))
    x, y = rows[FEATURES].to_numpy(np.float32), got.filter(like="pred_").to_numpy()
    for i in range(8, len(rows)):
        born.update(x[i].tolist(), y[i].tolist())
    stored = _decode_live(state.value[-1], step.live, "k0")
    assert stored["seen"].tolist() == [len(rows) - 8]
    for name, value in born.state_arrays().items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)


def test_live_state_of_other_settings_is_refused(live_model):
    rows = keyed_rows(keys=1, per_key=6)
    _, state = run_chunks(live_step(live_model), [rows[:3]])
    before = state.value
    with pytest.raises(StateError, match=r"key 'k0': the live scores in Spark's state store were "
                       r"kept with other settings \(stored: live coverage=0.8 season=3 .*; this "
                       r"query: live coverage=0.9 season=3"):
        run_chunks(live_step(live_model, coverage=0.9), [rows[3:]], state)
    with pytest.raises(StateError, match=r"stored: live coverage=0.8 season=3 .*; this query: "
                       r"live coverage=0.8 season=None"):
        run_chunks(live_step(live_model, season=0), [rows[3:]], state)
    with pytest.raises(StateError, match=r"stored: live coverage=0.8.*; this query: none"):
        run_chunks(key_step(live_model), [rows[3:]], state)
    assert state.value is before  # nothing written


@pytest.mark.parametrize(("damage", "message"), [
    (lambda blob: blob[:-8], r"stored live state has \d+ bytes; expected \d+ \(seen int64\[\]"),
    (lambda blob: None, r"stored live state has 0 bytes"),
    (lambda blob: blob[:-8] + np.float64(np.nan).tobytes(),  # the last array: cover
     r"key 'k0': stored live state: live state 'cover' contains NaN"),
])
def test_damaged_live_state_is_refused(live_model, damage, message):
    rows = keyed_rows(keys=1, per_key=6)
    _, state = run_chunks(live_step(live_model), [rows[:3]])
    *head, blob = state.value
    state.value = (*head, damage(blob))
    with pytest.raises(StateError, match=message):
        run_chunks(live_step(live_model), [rows[3:]], state)


def test_season_defaults_to_the_models_and_zero_turns_it_off(live_model):
    contract = Predictor(live_model).contract
    own, off = (live_spec(contract, 0.9, season, None, "test") for season in (None, 0))
    assert own is not None
    assert off is not None
    assert own.columns == tuple(live_columns(FEATURES, LIVE_MODEL_SEASON))
    assert "seasonal_mae_sensor_0" in own.columns
    assert off.columns == tuple(live_columns(FEATURES, None))
    assert "seasonal_mae_sensor_0" not in off.columns
    prior = " scales=[0.5, 0.5]"  # the calibration's 0.5 level: the scale's prior
    assert (own.tag, off.tag) == ("live coverage=0.9 season=3 lr=0.2 half_life=100.0" + prior,
                                  "live coverage=0.9 season=None lr=0.2 half_life=100.0" + prior)


@pytest.mark.parametrize(("settings", "message"), [
    ({"season": 24}, r"season=24 set up the live scores, which are off without coverage"),
    ({"live_options": {"lr": 0.3}}, r"lr=0.3 set up the live scores.*give coverage too"),
    ({"coverage": 1.5}, r"coverage is 1.5; expected a number strictly between 0 and 1"),
    ({"coverage": 0.9, "live_options": {"window": 10}}, r"live_options \['window'\] unknown"),
])
def test_live_settings_are_checked_before_any_query(live_model, settings, message):
    p = Predictor(live_model)
    with pytest.raises(InputError, match=message):
        live_spec(p.contract, settings.get("coverage"), settings.get("season"),
                  settings.get("live_options"), str(live_model))


def test_a_live_config_gives_the_spec_of_its_keywords(live_model):
    """predict_stream(live=LiveConfig(...)) and the older keywords plan the same live scores."""
    p = Predictor(live_model)
    assert p.contract is not None
    by_config = live_spec(p.contract, source="m", live=LiveConfig(coverage=0.9, season=0, lr=0.3))
    by_keywords = live_spec(p.contract, 0.9, 0, {"lr": 0.3}, "m")
    assert by_config == by_keywords
    assert by_config is not None
    assert by_config.tag == "live coverage=0.9 season=None lr=0.3 half_life=100.0 scales=[0.5, 0.5]"
    assert live_spec(p.contract, source="m", live=LiveConfig()) is None
    with pytest.raises(InputError, match="not both"):
        live_spec(p.contract, 0.9, None, None, "m", live=LiveConfig(coverage=0.9))
