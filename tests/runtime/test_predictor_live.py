"""Predictor(coverage=...): the live scores of runtime/live.py riding along with a stream."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rnnstream.runtime import Predictor, StateError, UnsupportedError
from rnnstream.runtime.live import LiveScores


@pytest.fixture
def three(model_file):
    """Features f0, f1, f2; targets f0, f1; horizon 1."""
    return model_file(cell="gru", features=3, targets=2, hidden=8, seed=5)[0]


def _points(n: int = 60) -> np.ndarray:
    return np.random.default_rng(4).normal(size=(n, 3)).astype(np.float32)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def test_live_scores_equal_live_scores_fed_by_hand(three):
    xs = _points()
    live_p, plain = Predictor(three, coverage=0.8, season=4), Predictor(three)
    by_hand = LiveScores(1, ["f0", "f1", "f2"], ["f0", "f1"], season=4, coverage=0.8)
    for x in xs:
        y = plain.step(x)
        assert np.array_equal(live_p.step(x), y)  # the prediction itself is untouched
        by_hand.update(x[None], y[None])
    assert _same(live_p._live.state_arrays(), by_hand.state_arrays())
    acc = live_p.accuracy()
    assert acc["model"]["mae"].tolist() == by_hand.scores()["mae"][0, 0].tolist()
    assert acc["persistence"]["count"].tolist() == [59, 59]
    lower, upper = live_p.interval()
    assert np.array_equal(lower, by_hand.interval()[0][0])
    assert (upper > lower).all()
    assert np.isfinite(upper).all()  # 59 residuals: past the warmup of 4 at coverage 0.8


def test_prime_scores_like_steps(three):
    xs = _points()
    a, b = Predictor(three, coverage=0.9), Predictor(three, coverage=0.9)
    a.prime(xs)
    for x in xs:
        b.step({"f0": x[0], "f1": x[1], "f2": x[2]})
    assert _same(a._live.state_arrays(), b._live.state_arrays())
    a.reset()
    assert np.isnan(a.interval()[0]).all()
    assert np.isnan(a.accuracy()["model"]["mae"]).all()


def test_snapshots_carry_live_scores_and_old_ones_still_load(three, tmp_path):
    xs = _points()
    a = Predictor(three, coverage=0.9)
    a.prime(xs[:30])
    a.save_state(tmp_path / "live.npz")
    b = Predictor(three, coverage=0.9)
    b.load_state(tmp_path / "live.npz")
    for x in xs[30:]:
        a.step(x)
        b.step(x)
    assert _same(a._live.state_arrays(), b._live.state_arrays())

    old = Predictor(three)  # a snapshot without live scores: they start afresh
    old.prime(xs[:30])
    old.save_state(tmp_path / "old.npz")
    b.load_state(tmp_path / "old.npz")
    assert b.accuracy()["model"]["count"].tolist() == [0, 0]
    assert np.array_equal(b.get_state()["h"], old.get_state()["h"])
    old.load_state(tmp_path / "live.npz")  # live scores without coverage: ignored
    with np.load(tmp_path / "live.npz", allow_pickle=False) as z:
        assert np.array_equal(old.get_state()["h"], z["state.h"])
        assert "live.q" in z.files


def test_a_misfit_live_snapshot_changes_nothing(three, tmp_path):
    xs = _points()
    a = Predictor(three, coverage=0.9)
    a.prime(xs[:20])
    a.save_state(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["live.q"] = np.full((1, 2), np.nan)
    np.savez(tmp_path / "bad.npz", **arrays)
    b = Predictor(three, coverage=0.9)
    b.prime(xs[20:])
    before, live_before = b.get_state(), b._live.state_arrays()
    with pytest.raises(StateError, match=r"bad.npz: live state 'q' contains NaN"):
        b.load_state(tmp_path / "bad.npz")
    assert np.array_equal(b.get_state()["h"], before["h"])
    assert _same(b._live.state_arrays(), live_before)


def test_without_coverage_there_are_no_live_scores(three):
    p = Predictor(three)
    with pytest.raises(UnsupportedError, match=r"interval\(\) needs live scores"):
        p.interval()
    with pytest.raises(UnsupportedError, match=r"accuracy\(\) needs live scores"):
        p.accuracy()


def test_coverage_needs_a_contract(tmp_path):
    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("Add", ["h0", "x"], ["hn"]), helper.make_node("Identity", ["hn"], ["y"])],
        "acc", [helper.make_tensor_value_info("x", f, ["batch", 1]),
                helper.make_tensor_value_info("h0", f, ["batch", 1])],
        [helper.make_tensor_value_info("y", f, ["batch", 1]),
         helper.make_tensor_value_info("hn", f, ["batch", 1])])
    path = tmp_path / "acc.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(UnsupportedError, match="coverage needs an rnnstream contract"):
        Predictor(path, coverage=0.9)


def test_live_scores_of_0_2_0_start_afresh_with_a_warning(three, tmp_path):
    xs = _points()
    a = Predictor(three, coverage=0.9)
    a.prime(xs[:20])
    a.save_state(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("live.")}
    # 0.2.0 saved ACI's window of residuals and alpha_t
    arrays.update({"live.alpha": np.full((1, 2), 0.1), "live.residuals": np.zeros((1, 200, 2))})
    np.savez(tmp_path / "old.npz", **arrays)
    b = Predictor(three, coverage=0.9)
    with pytest.warns(UserWarning, match="saved by rnnstream 0.2.0.*start afresh"):
        b.load_state(tmp_path / "old.npz")
    assert np.array_equal(b.get_state()["h"], a.get_state()["h"])
    assert b.accuracy()["model"]["count"].tolist() == [0, 0]


def test_forecast_interval_widens_by_the_stored_step_ratios(model_file):
    path = model_file(cell="lstm", features=1, targets=1, hidden=8, seed=3)[0]
    p = Predictor(path, coverage=0.9, live_options={"initial_quantiles": [0.25]})
    y1 = p.step(0.5)
    f, lo, hi = p.forecast_interval(3)
    assert np.array_equal(f, p.forecast(3))
    # forecast(n)[0] is two steps past the latest point: the latest prediction fed back
    twin = Predictor(path)
    twin.step(0.5)
    assert f[0] == twin.step(y1)
    assert np.isinf(hi).all()  # this test model stores no validation step figures
    p._ratios = np.array([[1.0], [2.0], [3.5], [4.0]])  # 1, 2, 3, 4 steps ahead
    f, lo, hi = p.forecast_interval(3)
    assert (hi - f).tolist() == [0.5, 0.875, 1.0]
    assert (f - lo).tolist() == [0.5, 0.875, 1.0]
