"""The per-key function and the per-worker model cache, called directly (no Spark session)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from ._support import FEATURES, KEY, ORDER, keyed_rows, pool_predictions, require_toolchain

require_toolchain()

from rnnstream.runtime import ModelLoadError, Predictor, StateError  # noqa: E402
from rnnstream.spark import STATE_COLUMNS, KeyStep, worker_model  # noqa: E402


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
