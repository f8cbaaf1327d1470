"""The per-key function and the per-worker model cache, called directly (no Spark session)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import pytest

from ._support import FEATURES, KEY, ORDER, keyed_rows, pool_predictions, require_toolchain

require_toolchain()

from rnnstream.runtime import ModelLoadError, Predictor, StateError  # noqa: E402
from rnnstream.spark import STATE_COLUMNS, KeyStep, live_columns, worker_model  # noqa: E402


class FakeState:
    """The part of pyspark's GroupState that KeyStep uses."""

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
COVERAGE, SEASON = 0.8, 3


def live_step(model, **live) -> KeyStep:
    from rnnstream.spark import live_spec

    p = Predictor(model)
    spec = live_spec(p.contract, live.pop("coverage", COVERAGE), live.pop("season", SEASON),
                     live, str(model))
    return KeyStep(str(model), p.fingerprint, KEY, ORDER, tuple(FEATURES), (),
                   tuple(f"pred_{t}" for t in p.targets), "drop", None, "", spec)


def live_reference(model, chunks: list[pd.DataFrame]) -> tuple[list[pd.DataFrame], Predictor]:
    """Predictor(coverage=...) fed each chunk with prime (the sequence call KeyStep makes):
    per chunk its predictions, and its interval and live accuracy after the chunk's last row."""
    p = Predictor(model, coverage=COVERAGE, season=SEASON)
    out = []
    for chunk in chunks:
        ordered = chunk.sort_values(ORDER)
        y = p.prime(ordered[FEATURES].to_numpy(np.float32))
        lower, upper = p.interval()
        acc = p.accuracy()
        share, _ = p.realised_coverage()
        last = {"lower": lower, "upper": upper, "mae": acc["model"]["mae"],
                "recent_mae": acc["model"]["recent_mae"],
                "persistence_mae": acc["persistence"]["mae"],
                "seasonal_mae": acc["seasonal"]["mae"], "realised_coverage": share}
        frame = ordered[[KEY, ORDER]].reset_index(drop=True)
        for j, t in enumerate(p.targets):
            frame[f"pred_{t}"] = y[:, j]
            for kind, values in last.items():
                frame[f"{kind}_{t}"] = np.nan
                frame.loc[len(frame) - 1, f"{kind}_{t}"] = values[j]
        out.append(frame)
    return out, p


def stored_live(state_value: tuple, step: KeyStep) -> dict[str, np.ndarray]:
    from rnnstream.spark import _decode_live

    return _decode_live(state_value[-1], step.live, "k0")


def snapshot_live(p: Predictor, tmp_path) -> dict[str, np.ndarray]:
    path = tmp_path / "reference.npz"
    p.save_state(path)
    with np.load(path) as saved:
        return {k[len("live."):]: saved[k] for k in saved.files if k.startswith("live.")}


def test_live_scores_equal_predictor_with_coverage_bit_for_bit(live_model, tmp_path):
    """Chunks of 1 to 9 rows through KeyStep, the live arrays stored as bytes between them:
    predictions, and at every chunk's end the interval, accuracy and live arrays, bit-equal
    to Predictor(coverage=...) fed the same chunks."""
    rows = keyed_rows(keys=1, per_key=30)
    cuts = [0, 1, 2, 3, 4, 7, 8, 17, 18, 26, 30]
    chunks = [rows[a:b] for a, b in itertools.pairwise(cuts)]
    step, state = live_step(live_model), FakeState()
    got = [next(step(("k0",), iter([c.iloc[::-1]]), state)) for c in chunks]
    want, reference = live_reference(live_model, chunks)
    for g, w in zip(got, want, strict=True):
        assert list(g.columns) == [KEY, ORDER, *(f"pred_{t}" for t in FEATURES),
                                   *live_columns(FEATURES, SEASON), "error"]
        for col in w.columns[2:]:
            values, expected = g[col].to_numpy(), w[col].to_numpy()
            at = ~np.isnan(expected) if not col.startswith("pred_") else slice(None)
            np.testing.assert_array_equal(values[at], expected[at], err_msg=col)
    assert np.isfinite(got[-1].filter(regex="^(lower|upper|mae|realised)_")).all().all()
    stored, expected = stored_live(state.value, step), snapshot_live(reference, tmp_path)
    assert sorted(stored) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(stored[name], value, err_msg=name)
        assert stored[name].dtype == value.dtype

