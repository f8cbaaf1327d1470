"""Predictor and StreamPool on users' own modules (export_module): the lesson's RNN (its
module runs one stream a call; its export runs many), its LSTM variant and a traced custom
model. Many streams stepped together equal one Predictor each; forecast, prime and snapshots
(with the live scores) work as for rnnstream's own models."""

from __future__ import annotations

import numpy as np
import pytest
from lesson_models import BYOM, byom_model, sine

from rnnstream.runtime import Predictor, StreamPool

COVERAGE = 0.9
STREAMS, STEPS = 5, 40
ATOL = 1e-6  # a block of streams and one stream may round differently (another batch size)


@pytest.fixture(scope="module", params=sorted(BYOM))
def byom(request, tmp_path_factory):
    return request.param, byom_model(request.param, tmp_path_factory)


def series() -> np.ndarray:
    """[STEPS, STREAMS] float32: held-out sine, shifted per stream."""
    return (sine(400 + STEPS)[400:] + 0.1 * np.arange(STREAMS)).astype(np.float32)


def test_pool_of_streams_equals_one_predictor_each(byom):
    _, model = byom
    xs = series()
    pool = StreamPool(model, coverage=COVERAGE)
    keys = [f"s{i}" for i in range(STREAMS)]
    for k in keys:
        pool.add(k)
    singles = [Predictor(model, coverage=COVERAGE) for _ in keys]
    for t in range(STEPS):
        y = pool.step_many(keys, xs[t][:, None])  # every stream in one call
        lower, upper = pool.interval(keys)
        for i, p in enumerate(singles):
            np.testing.assert_allclose(y[i], np.atleast_1d(p.step(float(xs[t, i]))),
                                       rtol=0, atol=ATOL)
            lo, hi = p.interval()
            np.testing.assert_allclose([lower[i, 0], upper[i, 0]], [lo, hi], rtol=0, atol=ATOL)
        assert np.isfinite(lower).all()  # the sample's calibration: from the first point
    for i, p in enumerate(singles):
        for name, value in p.get_state().items():
            np.testing.assert_allclose(pool.get_state(keys[i])[name], value, rtol=0, atol=ATOL)


def test_prime_forecast_and_snapshot_resume_exactly(byom, tmp_path):
    _, model = byom
    xs = series()[:, 0]
    whole = Predictor(model, coverage=COVERAGE)
    primed = whole.prime(xs[:20, None])
    assert primed.shape == (20,)  # one target: one number a point, as step gives
    stepped = Predictor(model)
    np.testing.assert_allclose(primed, [stepped.step(float(v)) for v in xs[:20]],
                               rtol=0, atol=ATOL)
    whole.save_state(tmp_path / "s.npz")
    resumed = Predictor(model, coverage=COVERAGE)
    resumed.load_state(tmp_path / "s.npz")
    for v in xs[20:]:
        assert resumed.step(float(v)) == whole.step(float(v))  # bit for bit
        assert resumed.interval() == whole.interval()
    ahead = whole.forecast(5)
    assert ahead.shape == (5,)
    assert np.isfinite(ahead).all()
