"""runtime/live.py: live accuracy equals the offline figures; ACI intervals hold their coverage.

Coverage figures (64 streams, seeded; printed with ``pytest -s``) were measured with the
defaults (window 200, gamma 0.01): stationary N(0, 1) noise gives 0.800 / 0.900 / 0.950 with
median widths 2.565 / 3.309 / 3.971 (the exact Gaussian intervals are 2.56 / 3.29 / 3.92). After a
level shift of 3 sigma or a variance tripling at step 1000, the coverage of every later
50-step block is within 3 points of the target from 300 (0.8), 200 (0.9) and 50 (0.95) steps
after the shift; the tests assert :data:`RECOVERY_STEPS`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnstream.runtime import InputError, StateError
from rnnstream.runtime.live import FORECASTERS, LiveScores

EPS = np.finfo(np.float64).eps
COVERAGE_TOLERANCE = 0.03  # +-3 points, the issue's bar
BLOCK = 50  # steps per block when judging recovery after a shift
RECOVERY_STEPS = 300  # every block from this many steps after a shift is within tolerance


# -- accuracy equals the offline computation ----------------------------------------------------
def _offline(actual: np.ndarray, yhat: np.ndarray, h: int, m: int, decay: float
             ) -> dict[str, np.ndarray]:
    """Scores of one stream and one target computed from whole series: [3] per metric."""
    n = len(actual)
    lag = m * math.ceil(h / m) - h
    out = {k: np.full(3, np.nan) for k in ("mae", "mse", "recent_mae", "recent_mse")}
    for f in range(3):
        errs = []
        for t in range(n - h):
            forecast = (yhat[t], actual[t], actual[t - lag] if t >= lag else np.nan)[f]
            e = actual[t + h] - forecast
            if np.isfinite(e):
                errs.append(e)
        if not errs:
            continue
        e = np.array(errs)
        w = decay ** np.arange(len(e) - 1, -1, -1)
        out["mae"][f] = np.abs(e).mean()
        out["mse"][f] = (e * e).mean()
        out["recent_mae"][f] = (w * np.abs(e)).sum() / w.sum()
        out["recent_mse"][f] = (w * e * e).sum() / w.sum()
    return out


def test_live_scores_equal_offline_scores():
    rng = np.random.default_rng(0)
    n, steps, h, m = 4, 80, 3, 5
    live = LiveScores(n, ["a", "b", "c"], ["c", "a", "z"], horizon=h, season=m, half_life=10)
    x = rng.normal(size=(steps, n, 3)).cumsum(axis=0)
    y = x[:, :, [2, 0, 0]] + rng.normal(size=(steps, n, 3))
    for t in range(steps):
        live.update(x[t], y[t])
    got = live.scores()
    for i in range(n):
        for j, src in ((0, 2), (1, 0)):
            want = _offline(x[:, i, src], y[:, i, j], h, m, live.decay)
            for name, value in want.items():
                # sums of <= steps float64 terms, in a different order: steps ulps at most
                np.testing.assert_allclose(got[name][i, :, j], value, rtol=steps * EPS,
                                           atol=0, err_msg=f"{name} stream {i} target {j}")
        assert got["count"][i, :, 0].tolist() == [steps - h, steps - h, steps - h - 2]
    # "z" is not a feature: never scored, its accuracy unavailable
    assert np.isnan(got["mae"][:, :, 2]).all()
    assert (got["count"][:, :, 2] == 0).all()
    assert FORECASTERS == ("model", "persistence", "seasonal")


def test_without_season_the_seasonal_column_is_nan():
    live = LiveScores(1, ["y"], ["y"])
    for v in (1.0, 2.0, 4.0):
        live.update([[v]], [[2 * v]])  # the model foresees each next value
    s = live.scores()
    assert s["mae"][0, :, 0].tolist()[:2] == [0.0, 1.5]  # model exact; persistence 1 then 2
    assert np.isnan(s["mae"][0, 2, 0])


# -- coverage -----------------------------------------------------------------------------------
def _simulate(kind: str, coverage: float, n: int = 64, steps: int = 3000, shift: int = 1000
              ) -> tuple[np.ndarray, np.ndarray]:
    """Per step: the share of n streams whose value fell in its interval, and the median width.

    The model predicts 0 throughout; the noise is N(0, 1), plus 3 from ``shift`` on ("level"),
    or times 3 from ``shift`` on ("variance").
    """
    rng = np.random.default_rng(1)
    live = LiveScores(n, ["y"], ["y"], coverage=coverage)
    hits, widths = np.full(steps, np.nan), np.full(steps, np.nan)
    zeros = np.zeros((n, 1))
    for t in range(steps):
        x = rng.normal(size=(n, 1))
        if kind == "level" and t >= shift:
            x += 3.0
        if kind == "variance" and t >= shift:
            x *= 3.0
        if t > 0:
            lo, hi = live.interval()
            hits[t] = ((x >= lo) & (x <= hi)).mean()
            widths[t] = np.median(hi - lo)
        live.update(x, zeros)
    return hits, widths


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_stationary_coverage(coverage):
    hits, widths = _simulate("stationary", coverage)
    tail, width = hits[1000:].mean(), np.median(widths[1000:])
    print(f"stationary coverage {coverage}: realised {tail:.4f}, median width {width:.3f}")
    assert abs(tail - coverage) <= COVERAGE_TOLERANCE
    # the exact interval of N(0, 1): each stream's 200-residual quantile has a relative
    # standard error of at most 13% (at 0.95), their median over 64 streams about 2%; 5% is
    # two and a half of those
    exact = 2 * _normal_quantile(0.5 + coverage / 2)
    assert abs(width / exact - 1) <= 0.05


@pytest.mark.parametrize("kind", ["level", "variance"])
@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_coverage_recovers_after_a_shift(kind, coverage):
    shift = 1000
    hits, widths = _simulate(kind, coverage, shift=shift)
    blocks = hits[shift:].reshape(-1, BLOCK).mean(axis=1)
    off = np.nonzero(np.abs(blocks - coverage) > COVERAGE_TOLERANCE)[0]
    recovered = 0 if off.size == 0 else int(off[-1] + 1) * BLOCK
    tail = hits[shift + recovered:].mean()
    print(f"{kind} shift, coverage {coverage}: first block {blocks[0]:.3f}, recovered after "
          f"{recovered} steps; then realised {tail:.4f}, median width "
          f"{np.median(widths[shift + recovered:]):.3f} (before: "
          f"{np.median(widths[shift - 500:shift]):.3f})")
    assert recovered <= RECOVERY_STEPS
    assert abs(tail - coverage) <= COVERAGE_TOLERANCE


def _normal_quantile(p: float) -> float:
    """The standard normal quantile by bisection on erf (stdlib only)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
    return (lo + hi) / 2


# -- intervals before calibration ------------------------------------------------------------
def test_intervals_start_from_initial_quantiles_or_infinity():
    bare = LiveScores(2, ["y"], ["y", "z"])
    lo, hi = bare.interval()
    assert np.isnan(lo).all()  # no prediction yet
    assert np.isnan(hi).all()
    bare.update([[1.0], [2.0]], [[1.5, 0.0], [2.5, 0.0]])
    lo, hi = bare.interval()
    assert (lo == -np.inf).all()
    assert (hi == np.inf).all()
    given = LiveScores(1, ["y"], ["y", "z"], initial_quantiles=[0.5, 2.0])
    for t in range(given.warmup + 1):  # warmup residuals are scored one step after each point
        given.update([[float(t)]], [[t + 1.5, 7.0]])
        lo, hi = given.interval()
        assert hi[0, 1] - lo[0, 1] == 4.0  # "z" is not a feature: never calibrated
        if t < given.warmup:
            assert (lo[0, 0], hi[0, 0]) == (t + 1.0, t + 2.0)
    # every residual was 0.5: the stream's own quantile is 0.5 too
    assert (lo[0, 0], hi[0, 0]) == (given.warmup + 1.0, given.warmup + 2.0)
    assert given.warmup == 9


# -- state --------------------------------------------------------------------------------------
def _stream(n: int = 3) -> tuple[LiveScores, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    live = LiveScores(n, ["a", "b"], ["b", "q"], horizon=2, season=3, window=16)
    x = rng.normal(size=(120, n, 2))
    y = rng.normal(size=(120, n, 2))
    return live, x, y


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")
        for k in a)


def test_state_round_trip_continues_exactly(tmp_path):
    live, x, y = _stream()
    for t in range(60):
        live.update(x[t], y[t])
    np.savez(tmp_path / "live.npz", **live.state_arrays())
    with np.load(tmp_path / "live.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    other = LiveScores(1, ["a", "b"], ["b", "q"], horizon=2, season=3, window=16)
    other.load_arrays(saved)
    assert other.n_streams == 3
    for t in range(60, 120):
        live.update(x[t], y[t])
        other.update(x[t], y[t])
    assert _equal(live.state_arrays(), other.state_arrays())
    assert np.array_equal(live.interval()[1], other.interval()[1])


def test_rows_take_put_concat():
    live, x, y = _stream(3)
    alone = LiveScores(1, ["a", "b"], ["b", "q"], horizon=2, season=3, window=16)
    for t in range(40):
        live.update(x[t, [2, 0]], y[t, [2, 0]], rows=[2, 0])  # stream 1 never stepped
        alone.update(x[t, [0]], y[t, [0]])
    assert _equal(live.take([0]), alone.state_arrays())
    assert _equal(live.take([1]), live.fresh(1))
    live.put([1], live.take([0]))
    assert _equal(live.take([1]), alone.state_arrays())
    live.concat(live.fresh(2))
    assert live.n_streams == 5
    assert _equal(live.take([3, 4]), live.fresh(2))
    live.reset([0])
    assert _equal(live.take([0]), live.fresh(1))


def test_misfit_state_raises_state_error_and_changes_nothing():
    live, x, y = _stream()
    for t in range(10):
        live.update(x[t], y[t])
    before = live.state_arrays()
    good = live.state_arrays()
    bad = {
        "missing": ({k: v for k, v in good.items() if k != "alpha"}, "expected the arrays"),
        "shape": ({**good, "alpha": good["alpha"][:, :1]}, r"'alpha' is array of shape \(3, 1\)"),
        "dtype": ({**good, "seen": good["seen"].astype(np.int32)}, "'seen' is array .* int32"),
        "nan": ({**good, "alpha": np.full_like(good["alpha"], np.nan)}, "'alpha' contains NaN"),
        "negative": ({**good, "abs_sum": -np.ones_like(good["abs_sum"])},
                     "'abs_sum' holds a negative value"),
        "count": ({**good, "seen": -good["seen"]}, "'seen' holds a negative count"),
        "inf": ({**good, "pending": np.full_like(good["pending"], np.inf)},
                "'pending' contains infinity"),
        "streams": ({**good, "seen": good["seen"][:2]}, r"'pending' is array of shape \(3,"),
        "type": ([1, 2], "live state has list"),
    }
    for value, match in bad.values():
        with pytest.raises(StateError, match=match):
            live.load_arrays(value)
        assert _equal(live.state_arrays(), before)
    with pytest.raises(StateError, match="put: live state has 3 streams; expected 1"):
        live.put([0], good)
    assert _equal(live.state_arrays(), before)


# -- bad input ----------------------------------------------------------------------------------
def test_bad_input_raises_input_error_and_changes_nothing():
    live, x, y = _stream()
    for t in range(10):
        live.update(x[t], y[t])
    before = live.state_arrays()
    nan = x[10].copy()
    nan[1, 0] = np.nan
    cases = [
        ((nan, y[10]), "points contains NaN or infinity"),
        ((x[10], np.full((3, 2), np.inf)), "predictions contains NaN or infinity"),
        ((x[10][:, :1], y[10]), r"points has shape \(3, 1\); expected \(3, 2\)"),
        ((x[10], y[10][:2]), r"predictions has shape \(2, 2\); expected \(3, 2\)"),
        ((np.array([["a", "b"]] * 3), y[10]), "points is array of shape"),
        ((x[10][:2], y[10][:2], [0, 0]), "rows is .*; expected distinct integers in"),
        ((x[10][:1], y[10][:1], [3]), r"in \[0, 3\)"),
        ((x[10][:1], y[10][:1], [0.5]), "expected distinct integers"),
    ]
    for args, match in cases:
        with pytest.raises(InputError, match=match):
            live.update(*args)
        assert _equal(live.state_arrays(), before)


@pytest.mark.parametrize(("option", "value", "match"), [
    ("coverage", 1.0, "coverage is 1.0; expected a number strictly between 0 and 1"),
    ("gamma", 0, "gamma is 0"),
    ("horizon", 0, "horizon is 0; expected an integer >= 1"),
    ("season", 2.5, "season is 2.5"),
    ("window", True, "window is True"),
    ("half_life", -1.0, "half_life is -1.0"),
    ("initial_quantiles", [1.0], r"initial_quantiles is list \[1.0\]; expected 2 finite"),
    ("initial_quantiles", [1.0, -1.0], "non-negative half-widths"),
])
def test_bad_settings(option, value, match):
    with pytest.raises(InputError, match=match):
        LiveScores(1, ["a"], ["a", "b"], **{option: value})
