"""StreamPool.run_sequences: k sequences in one call, row for row Predictor.run_sequence."""

from __future__ import annotations

import numpy as np
import pytest

from rnnstream.runtime import InputError, Predictor, StateError, StreamPool


@pytest.mark.parametrize(("cell", "layers"), [("lstm", 2), ("gru", 1), ("rnn", 1)])
def test_run_sequences_equals_predictor_run_sequence_bit_for_bit(model_file, cell, layers):
    path, _ = model_file(cell=cell, features=2, targets=1, hidden=8, layers=layers, seed=4)
    pool, p = StreamPool(path, threads=1), Predictor(path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 9, 2)).astype(np.float32)
    start = {s.name: rng.uniform(-0.5, 0.5, (5, *s.row_shape)).astype(np.float32)
             for s in p.contract.states}
    y, after = pool.run_sequences(x, start)
    assert y.shape == (5, 9, 1)
    for k in range(5):
        want_y, want_state = p.run_sequence(x[k], {n: a[k] for n, a in start.items()})
        one_y, one = pool.run_sequences(x[k:k + 1], {n: a[k:k + 1] for n, a in start.items()})
        assert one_y[0].tobytes() == want_y.tobytes()  # one sequence: Predictor's call, bits
        for name in start:
            assert one[name][0].tobytes() == want_state[name].tobytes()
            np.testing.assert_allclose(after[name][k], want_state[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(y[k], want_y, rtol=1e-6, atol=1e-6)
        if cell != "rnn":  # onnxruntime's LSTM and GRU kernels: batch-invariant (RNN: 1 ulp)
            assert y[k].tobytes() == want_y.tobytes()
    zero_y, _ = pool.run_sequences(x[:1])  # no states: the initial state
    assert zero_y[0].tobytes() == p.run_sequence(x[0])[0].tobytes()
    assert len(pool) == 0  # the pool's own streams are untouched


def test_run_sequences_refuses_misfits(model_file):
    path, _ = model_file(cell="lstm", features=2, targets=1, hidden=8, layers=1, seed=4)
    pool = StreamPool(path, threads=1)
    with pytest.raises(InputError, match=r"expected \[sequences, time, 2\]"):
        pool.run_sequences(np.zeros((3, 2), np.float32))
    with pytest.raises(InputError, match="NaN, infinite or out-of-range"):
        pool.run_sequences(np.full((1, 2, 2), np.nan, np.float32))
    h1 = np.zeros((1, 1, 8), np.float32)
    with pytest.raises(StateError, match=r"has states \['h'\], this model has \['h', 'c'\]"):
        pool.run_sequences(np.zeros((1, 2, 2), np.float32), {"h": h1})
    with pytest.raises(StateError, match=r"expected float32 of shape \(2, 1, 8\)"):
        pool.run_sequences(np.zeros((2, 2, 2), np.float32), {"h": h1, "c": h1})
    with pytest.raises(StateError, match="has states"):  # an unknown state is not ignored
        pool.run_sequences(np.zeros((1, 2, 2), np.float32), {"h": h1, "c": h1, "bogus": h1})
    with pytest.raises(StateError, match="expected float32"):  # float64 is not cast silently
        pool.run_sequences(np.zeros((1, 2, 2), np.float32), {"h": h1, "c": h1.astype(float)})
    with pytest.raises(StateError, match="expected a State or a mapping"):
        pool.run_sequences(np.zeros((1, 2, 2), np.float32), [1, 2])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="dtype <U1; expected numbers"):
        pool.run_sequences([[["a", "b"]]])
    with pytest.raises(InputError, match="dtype bool; expected numbers"):
        pool.run_sequences(np.zeros((1, 2, 2), bool))
    with pytest.raises(InputError, match="out-of-range"):
        pool.run_sequences(np.full((1, 2, 2), 1e40))
