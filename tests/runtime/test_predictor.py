"""Predictor numbers: step-by-step equals torch's full sequence, for every cell."""

from __future__ import annotations

import numpy as np
import pytest

from rnnstream.runtime import Predictor, State, StateError, UnsupportedError
from rnnstream.train.model import CELLS

CASES = [
    dict(cell=cell, features=f, targets=t, hidden=h, layers=layers, seed=i)
    for i, (cell, f, t, h, layers) in enumerate(
        [(c, 1, 1, 8, 1) for c in sorted(CELLS)] + [(c, 3, 2, 16, 2) for c in sorted(CELLS)]
    )
]


def test_every_cell_has_a_case():
    assert {c["cell"] for c in CASES} == set(CELLS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['cell']}-F{c['features']}L{c['layers']}")
def test_steps_equal_torch_full_sequence_from_nonzero_state(model_file, case, torch_run):
    path, model = model_file(**case)
    rng = np.random.default_rng(1)
    f, layers, hidden = case["features"], case["layers"], case["hidden"]
    xs = rng.normal(size=(1, 40, f)).astype(np.float32)
    init = [rng.normal(scale=0.5, size=(1, layers, hidden)).astype(np.float32)
            for _ in ("h", "c")[: 2 if case["cell"] == "lstm" else 1]]
    y_ref, s_ref = torch_run(model, xs, init)

    p = Predictor(path)
    p.set_state(dict(zip(("h", "c"), (s[0] for s in init), strict=False)))
    ys = np.array([np.atleast_1d(p.step(x if f > 1 else float(x[0]))) for x in xs[0]])
    np.testing.assert_allclose(ys, y_ref[0], atol=1e-5)
    state = p.get_state()
    for name, ref in zip(("h", "c"), s_ref, strict=False):
        np.testing.assert_allclose(state[name], ref[0], atol=1e-5)


def test_step_accepts_numbers_sequences_arrays_and_mappings(model_file):
    path, _ = model_file(cell="gru", features=3, targets=2, hidden=8, seed=7)
    outs = []
    for point in ([0.1, -0.2, 0.3], (0.1, -0.2, 0.3), np.array([0.1, -0.2, 0.3]),
                  np.array([0.1, -0.2, 0.3], np.float32), {"f2": 0.3, "f0": 0.1, "f1": -0.2}):
        p = Predictor(path)
        outs.append(p.step(point))
    for y in outs[1:]:
        assert isinstance(y, np.ndarray)
        assert y.shape == (2,)
        np.testing.assert_array_equal(y, outs[0])
    p = Predictor(model_file(cell="rnn", hidden=8, seed=1)[0])
    assert isinstance(p.step(1), float)
    q = Predictor(p.path)
    p.reset()
    assert p.step(np.float32(1.0)) == q.step(np.float64(1.0))


def test_iobinding_writes_into_the_bound_buffers(lstm, torch_run):
    path, model = lstm
    p = Predictor(path)
    before = [b.copy() for b in p._stream._bufs[1]]
    p.step(0.5)
    assert p._stream._parity == 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, p._stream._bufs[1], strict=True))
    y_ref, s_ref = torch_run(model, np.full((1, 1, 1), 0.5, np.float32))
    np.testing.assert_allclose(p._stream._y[0, 0, 0], y_ref[0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(p._stream._bufs[1][0], s_ref[0], atol=1e-6)


def test_prime_equals_steps(lstm):
    path, _ = lstm
    hist = np.random.default_rng(2).normal(size=(300, 1)).astype(np.float32)
    a, b = Predictor(path), Predictor(path)
    ys = a.prime(hist)
    assert ys.shape == (300,)
    stepped = np.array([b.step(float(v)) for v in hist[:, 0]])
    np.testing.assert_allclose(ys, stepped, atol=1e-5)
    for name in ("h", "c"):
        np.testing.assert_allclose(a.get_state()[name], b.get_state()[name], atol=1e-5)
    np.testing.assert_allclose(a.step(0.3), b.step(0.3), atol=1e-5)


def test_run_sequence_is_prime_from_a_given_state_and_leaves_the_stream(model_file):
    path, _ = model_file(cell="gru", features=2, targets=2, hidden=8, layers=2, seed=4)
    xs = np.random.default_rng(5).normal(size=(40, 2)).astype(np.float32)
    p = Predictor(path)
    p.prime(xs[:10])
    start = p.get_state()
    y, after = p.run_sequence(xs[10:], start)
    assert p.get_state()["h"].tobytes() == start["h"].tobytes()  # the stream is untouched
    ys = p.prime(xs[10:])  # the same sequence call, from the same state
    assert y.tobytes() == ys.tobytes()
    assert after["h"].tobytes() == p.get_state()["h"].tobytes()
    assert after.fingerprint == p.fingerprint
    assert after.last_output.tobytes() == y[-1].tobytes()
    zero, _ = p.run_sequence(xs[:10])  # None: the initial state
    fresh = Predictor(path)
    assert zero.tobytes() == fresh.prime(xs[:10]).tobytes()


def test_forecast_equals_manual_feedback_and_leaves_state(lstm):
    path, _ = lstm
    p, q = Predictor(path), Predictor(path)
    for v in (0.1, 0.4, -0.2):
        y = p.step(v)
        q.step(v)
    before = p.get_state()
    fut = p.forecast(5)
    manual = []
    x = y
    for _ in range(5):
        x = q.step(x)
        manual.append(x)
    np.testing.assert_array_equal(fut, np.array(manual, np.float32))
    after = p.get_state()
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    np.testing.assert_array_equal(p.forecast(2), fut[:2])


def test_forecast_needs_a_prediction_and_matching_targets(lstm, model_file):
    p = Predictor(lstm[0])
    with pytest.raises(StateError, match="call step"):
        p.forecast(3)
    p.step(0.1)
    p.reset()
    with pytest.raises(StateError, match="none yet"):
        p.forecast(3)
    q = Predictor(model_file(cell="gru", features=3, targets=2, hidden=8, seed=7)[0])
    q.step([0.0, 0.0, 0.0])
    with pytest.raises(UnsupportedError, match="targets are the features"):
        q.forecast(2)


def test_reset_returns_to_initial_state(lstm):
    p = Predictor(lstm[0])
    first = p.step(0.7)
    p.step(0.1)
    p.reset()
    assert p.step(0.7) == first


def test_get_state_is_a_copy_and_round_trips(lstm):
    p = Predictor(lstm[0])
    p.step(0.3)
    s = p.get_state()
    assert isinstance(s, State)
    assert s["h"].shape == (1, 8)
    s["h"][...] = 99.0  # does not reach the live state
    assert not np.array_equal(p.get_state()["h"], s["h"])
    good = p.get_state()
    y1 = p.step(0.2)
    p.set_state(good)
    assert p.step(0.2) == y1
