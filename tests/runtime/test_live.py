"""runtime/live.py: live accuracy equals the offline figures; intervals hold their coverage.

Coverage figures (64 streams, seeded; printed with ``pytest -s``) with the defaults (quantile
tracking of log(|residual| / recent MAE), lr 0.2): stationary N(0, 1) noise gives 0.800 /
0.900 / 0.950 with median widths 1.7 / 2.8 / 3.6% above the exact Gaussian intervals (2.56 /
3.29 / 3.92). After a level shift of 3 sigma or a tripled noise level at step 1000, the first
50-step block holds 0.75-0.91 and every block from :data:`RECOVERY_STEPS` (100) steps on is
within 3 points of the target (at 0.8, 0.9 and 0.95). The method of 0.3 (the residual alone,
lr 0.1) gave widths 0.7 / 1.1 / 1.6% above exact, a first block of about 0.71 at 0.9 and
recovery in 50 steps; it held coverage on 19 of 25 real series (``bench/quality.py``)
against 24 now.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnstream.runtime import InputError, StateError
from rnnstream.runtime.live import (
    FORECASTERS,
    LiveScores,
    LiveStream,
    conformal_half_widths,
    exp_series,
    initial_half_widths,
    step_ratios,
)

COVERAGE_TOLERANCE = 0.03  # +-3 points, the issue's bar
BLOCK = 50  # steps per block when judging recovery after a shift
# every block from this many steps after a shift is within tolerance: the width follows the
# errors' scale at once (the first block is within FIRST_BLOCK of the target: 0.86 at 0.9,
# where quantile tracking of the residual alone held 0.71), then the scale, a mean over a
# half-life of 100 points, keeps rising for a while after the tracked step has caught up
RECOVERY_STEPS = 100
FIRST_BLOCK = 0.08


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
        # sequential sums, one term per scored point, in time order: what anyone computing
        # the figures offline from the printed predictions would write
        total = sq = ew_w = ew_a = ew_s = 0.0
        for e in errs:
            total += abs(e)
            sq += e * e
            ew_w, ew_a, ew_s = ew_w * decay + 1.0, ew_a * decay + abs(e), ew_s * decay + e * e
        out["mae"][f] = total / len(errs)
        out["mse"][f] = sq / len(errs)
        out["recent_mae"][f] = ew_a / ew_w
        out["recent_mse"][f] = ew_s / ew_w
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
            for name, value in want.items():  # exactly, not within a tolerance
                np.testing.assert_array_equal(got[name][i, :, j], value,
                                              err_msg=f"{name} stream {i} target {j}")
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
    # the exact interval of N(0, 1); the tracked half-width wanders around it by a few per
    # cent per stream, and the median over 64 streams by 2-4% (measured 1.7 / 2.8 / 3.6% at
    # lr 0.2 with the scale; 0.7 / 1.1 / 1.6% at lr 0.1 without it, which held coverage on
    # 19 of the 25 real series of bench/quality.py against 24 now)
    exact = 2 * _normal_quantile(0.5 + coverage / 2)
    assert abs(width / exact - 1) <= 0.045


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
    assert abs(blocks[0] - coverage) <= FIRST_BLOCK
    assert abs(tail - coverage) <= COVERAGE_TOLERANCE


def _normal_quantile(p: float) -> float:
    """The standard normal quantile by bisection on erf (stdlib only)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
    return (lo + hi) / 2


# -- intervals before calibration ------------------------------------------------------------
def test_without_initial_quantiles_intervals_start_at_the_conformal_quantile():
    bare = LiveScores(2, ["y"], ["y", "z"])
    lo, hi = bare.interval()
    assert np.isnan(lo).all()  # no prediction yet
    assert np.isnan(hi).all()
    residuals = [0.3, 1.2, 0.1, 0.7, 0.9, 0.2, 0.4, 1.1, 0.6]
    assert bare.warmup == len(residuals)
    bare.update([[0.0], [0.0]], [[0.0, 0.0], [0.0, 0.0]])
    for r in residuals:
        lo, hi = bare.interval()
        assert (lo == -np.inf).all()  # infinite until warmup residuals were scored
        assert (hi == np.inf).all()
        bare.update([[r], [r]], [[0.0, 0.0], [0.0, 0.0]])
    lo, hi = bare.interval()
    # the largest of 9 residuals: the conformal 0.9 quantile, ceil(10 * 0.9) = 9th smallest
    assert hi[:, 0].tolist() == [1.2, 1.2]
    assert hi[:, 0].tolist() == conformal_half_widths(residuals, [0.9]) * 2
    assert (hi[:, 1] == np.inf).all()  # "z" is not a feature: never calibrated


def test_quantile_tracking_follows_the_paper_update():
    """log q_{t+1} = log q_t + lr * (miss - alpha), times the scale's change s_{t+1} / s_t,
    floored at 1% of the recent MAE, by hand."""
    live = LiveScores(1, ["y"], ["y", "z"], initial_quantiles=[0.5, 2.0], lr=0.1, half_life=5)
    alpha = 1.0 - 0.9
    up, down = exp_series(0.1 * (1.0 - alpha)), exp_series(0.1 * (0.0 - alpha))
    assert (up, down) == (pytest.approx(math.exp(0.09), rel=1e-15),
                          pytest.approx(math.exp(-0.01), rel=1e-15))
    q, w_sum, a_sum, d, hits = 0.5, 0.0, 0.0, 0.5 ** (1 / 5), 0
    live.update([[0.0]], [[0.0, 7.0]])
    residuals = [0.2, 0.9, 0.5, 3.0, 0.0, 0.1] + [0.0] * 400  # then exact predictions
    for t, r in enumerate(residuals):
        hits += r <= q
        lo, hi = live.interval()
        assert (lo[0, 0], hi[0, 0]) == (-q, q)
        assert hi[0, 1] - lo[0, 1] == 4.0  # "z" stays at its initial half-width
        live.update([[r]], [[0.0, 7.0]])
        old = a_sum / max(w_sum, 1.0)  # the scale s_t: the recent MAE (no starting scale)
        w_sum, a_sum = w_sum * d + 1.0, a_sum * d + r
        q = q * (down if r <= q else up)
        if old > 0 and t + 1 > live.warmup:  # without a prior: after warmup points, s'/s
            q = q * ((a_sum / w_sum) / old)
        q = max(q, (a_sum / w_sum) * 0.01)
        assert live.half_width()[0, 0] == q, t
    realised, scored = live.coverage_so_far()
    assert (realised[0, 0], scored[0].tolist()) == (hits / len(residuals), [len(residuals), 0])
    # 400 exact predictions shrink it by 1% each (e^-4 in all), never to zero
    assert 0 < live.half_width()[0, 0] < 0.02


def test_one_stream_in_python_floats_equals_the_numpy_pool_bit_for_bit():
    rng = np.random.default_rng(5)
    cases = [(["c", "a", "z"], h, m, init) for h, m, init in (
        (1, None, None), (3, 5, [1.0, 2.0, np.inf]), (2, 4, None))]
    # targets that are features, with initial half-widths: LiveScores' mask-free path; without
    # them, the mask-free path once every stream's intervals have started
    cases += [(["c", "a", "b"], h, m, [1.0, 2.0, 0.5]) for h, m in ((1, None), (2, 4), (1, 3))]
    cases += [(["c", "a", "b"], h, m, None) for h, m in ((1, None), (2, 4))]
    # with starting scales (the scale's prior): given for some targets, 0 or none for others
    scaled = {len(cases): [0.5, 1.0, 0.25], len(cases) + 1: [0.0, np.inf, 0.4],
              len(cases) + 2: [0.3, 0.2, np.inf]}
    cases += [(["c", "a", "b"], 1, None, [1.0, 2.0, 0.5]), (["c", "a", "z"], 2, 4,
              [1.0, 2.0, np.inf]), (["c", "a", "b"], 1, 3, None)]
    for case, (targ, h, m, init) in enumerate(cases):
        feats = ["a", "b", "c"]
        scales = scaled.get(case)
        pool = LiveScores(3, feats, targ, horizon=h, season=m, initial_quantiles=init,
                          initial_scales=scales)
        ones = [LiveStream(feats, targ, horizon=h, season=m, initial_quantiles=init,
                           initial_scales=scales) for _ in range(3)]
        # the second group at a price's size: raw values near 5,000
        level = 5000.0 if targ == ["c", "a", "b"] else 0.0
        x = level + rng.normal(size=(300, 3, 3)).cumsum(axis=0)
        y = x[:, :, [2, 0, 0]] + rng.normal(size=(300, 3, 3))
        for t in range(300):
            pool.update(x[t], y[t])
            for i in range(3):
                ones[i].update(x[t, i].tolist(), y[t, i].tolist())
        for i in range(3):
            assert _equal(pool.take([i]), ones[i].state_arrays())
            plain, arrays = ones[i].plain_scores(), pool.scores([i])
            for name in ("mae", "mse", "recent_mae", "recent_mse", "count"):
                assert np.array_equal(np.array(plain[name], float), arrays[name][0],
                                      equal_nan=True), name
            share, scored = pool.coverage_so_far([i])
            assert np.array_equal(plain["coverage"], share[0], equal_nan=True)
            assert plain["scored"] == scored[0].tolist()
            lo, hi = pool.interval([i])
            assert (lo[0].tolist(), hi[0].tolist()) == tuple(ones[i].interval())
        # and the other way: a LiveStream continues from a pool row
        ones[0].load_arrays(pool.take([1]))
        pool.update(x[0], y[0])
        ones[0].update(x[0, 1].tolist(), y[0, 1].tolist())
        assert _equal(pool.take([1]), ones[0].state_arrays())


def test_update_one_equals_update_bit_for_bit():
    """LiveStream.update_one (the Predictor's one-target path) against update: horizons,
    seasons, no starting widths (the warm-up start), a target that is not a feature (NaN),
    raw values near 5,000."""
    rng = np.random.default_rng(11)
    for h, m, init, target, sc in ((1, None, [0.4], "b", None), (3, 5, None, "b", None),
                                   (2, 2, [1.0], "b", None), (1, 4, None, "z", None),
                                   (1, None, [0.4], "b", [0.2]), (2, 3, [1.0], "b", [0.0])):
        opts = dict(horizon=h, season=m, initial_quantiles=init, initial_scales=sc)
        a, b = LiveStream(["a", "b"], [target], **opts), LiveStream(["a", "b"], [target], **opts)
        x = 5000.0 + rng.normal(size=(300, 2)).cumsum(axis=0)
        y = x[:, 1] + rng.normal(size=300) * rng.uniform(0.2, 3.0)
        for t in range(300):
            a.update(x[t].tolist(), [float(y[t])])
            b.update_one(float(x[t, 1]) if target == "b" else math.nan, float(y[t]))
        assert _equal(a.state_arrays(), b.state_arrays()), (h, m, init, target)
        assert a.interval() == b.interval()
        # a state whose model forecasts are missing but whose persistence ones are not
        state = a.state_arrays()
        state["pending"][:, :, 0] = np.nan
        a.load_arrays(state)
        b.load_arrays(state)
        for t in range(2 * h):
            a.update(x[t].tolist(), [float(y[t])])
            b.update_one(float(x[t, 1]) if target == "b" else math.nan, float(y[t]))
        assert _equal(a.state_arrays(), b.state_arrays()), (h, m, init, target)


def test_block_updates_with_resets_and_resizes_equal_one_stream_each():
    """The pool's path (advance_block on a block of rows, its views kept between calls) through
    resets (a fresh row sends the block back to the masked path, then to the mask-free one) and
    resizes and loads (new arrays: the kept views must not be used) equals LiveStream bit for
    bit."""
    rng = np.random.default_rng(9)
    feats, targ = ["a", "b"], ["b", "a"]
    for h, m, init, sc in ((1, None, [0.5, 1.5], None), (2, 3, [0.5, 1.5], None),
                           (1, None, None, None), (1, None, [0.5, 1.5], [0.3, np.inf])):
        opts = dict(horizon=h, season=m, initial_quantiles=init, initial_scales=sc)
        pool = LiveScores(4, feats, targ, **opts)
        ones = [LiveStream(feats, targ, **opts) for _ in range(6)]
        x = 5000.0 + rng.normal(size=(400, 6, 2)).cumsum(axis=0)
        y = x[:, :, [1, 0]] + rng.normal(size=(400, 6, 2))
        for t in range(400):
            n = pool.n_streams
            if t == 150:  # grow: rows 4 and 5 start fresh
                pool.resize(6)
            if t in (250, 300):  # new arrays, the same rows: the kept views are stale
                pool.load_arrays(pool.state_arrays()) if t == 250 else pool.resize(6)
            if t in (60, 61, 200):  # a fresh stream in the block
                pool.reset([t % n])
                ones[t % n] = LiveStream(feats, targ, **opts)
            n = pool.n_streams
            lo = 1 if t % 7 == 0 else 0  # another block now and then
            pool.advance_block(slice(lo, n), x[t, lo:n], y[t, lo:n])
            for i in range(lo, n):
                ones[i].update(x[t, i].tolist(), y[t, i].tolist())
        for i in range(pool.n_streams):
            assert _equal(pool.take([i]), ones[i].state_arrays()), (h, m, i)


def test_calibration_from_the_contract():
    r = np.arange(1.0, 20.0)  # 19 residuals: 0.95 -> the 19th, 0.9 -> 18th, 0.99 -> none
    assert conformal_half_widths(r, [0.5, 0.9, 0.95, 0.99]) == [10.0, 18.0, 19.0, None]
    metrics = {"calibration": {"levels": [0.8, 0.9, 0.95],
                               "half_widths": {"a": [[1.0, 2.0, 3.0], [2.0, 4.0, None]],
                                               "b": [[1.0, 1.0, 1.0]]}}}
    assert initial_half_widths(metrics, ["a", "b"], 0.9) == [2.0, 1.0]
    assert initial_half_widths(metrics, ["a", "b"], 0.85) == pytest.approx([1.5, 1.0])
    assert initial_half_widths(metrics, ["a", "b"], 0.99) == [np.inf, np.inf]
    assert initial_half_widths({}, ["a"], 0.9) is None
    ratios = step_ratios(metrics, ["a", "b"], 0.9, 3)
    assert ratios.tolist() == [[1.0, 1.0], [2.0, np.inf], [np.inf, np.inf]]
    assert step_ratios(metrics, ["a", "b"], 0.95, 2)[1].tolist() == [np.inf, np.inf]
    from rnnstream.runtime import ContractError
    with pytest.raises(ContractError, match=r"'calibration' is malformed: .*half_widths.* of 'a'"):
        initial_half_widths({"calibration": {"levels": [0.9], "half_widths": {"a": [[-1.0]]}}},
                            ["a"], 0.9)


# -- state --------------------------------------------------------------------------------------
def _stream(n: int = 3) -> tuple[LiveScores, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    live = LiveScores(n, ["a", "b"], ["b", "q"], horizon=2, season=3)
    x = rng.normal(size=(120, n, 2))
    y = rng.normal(size=(120, n, 2))
    return live, x, y


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f")
        for k in a)


@pytest.mark.filterwarnings("error")  # numpy's overflow or 0/0 would warn
@pytest.mark.parametrize("scale", [5e-324, 1e-300, 1e-200, 3e-198, 1e-12, 0.0, np.inf])
def test_extreme_scales_stay_finite_and_equal_in_numpy_and_floats(scale):
    """A starting scale next to nothing (below SMALLEST_SCALE it is taken as 0) and errors from
    5e-324 to 1e99: the width stays finite (RATIO_MAX), numpy's two paths and plain floats
    agree bit for bit, and the state still loads."""
    errors = [0.0, 0.0, 1e99, 0.0, 5e-324, 1e-300, 3.0, 1e-200, 1e99, 2.0, 0.0] * 6
    for one_target in (True, False):
        targets = ["y"] if one_target else ["y", "z"]
        init = [1e-12] * len(targets)
        scales = [scale] * len(targets)
        pool = LiveScores(2, ["y", "z"], targets, initial_quantiles=init, initial_scales=scales)
        one = LiveStream(["y", "z"], targets, initial_quantiles=init, initial_scales=scales)
        fast = LiveStream(["y", "z"], targets, initial_quantiles=init, initial_scales=scales)
        for e in errors:
            x = [e, -e]
            pool.update([x, x], [[0.0] * len(targets)] * 2)
            one.update(x, [0.0] * len(targets))
            if one_target:
                fast.observe_one(e, 0.0)
        assert _equal(pool.take([1]), one.state_arrays())
        if one_target:
            assert _equal(fast.state_arrays(), one.state_arrays())
        assert np.isfinite(pool.half_width()).all()
        pool.load_arrays(pool.state_arrays())  # a valid state


def test_state_round_trip_continues_exactly(tmp_path):
    live, x, y = _stream()
    for t in range(60):
        live.update(x[t], y[t])
    np.savez(tmp_path / "live.npz", **live.state_arrays())
    with np.load(tmp_path / "live.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in z.files}
    other = LiveScores(1, ["a", "b"], ["b", "q"], horizon=2, season=3)
    other.load_arrays(saved)
    assert other.n_streams == 3
    for t in range(60, 120):
        live.update(x[t], y[t])
        other.update(x[t], y[t])
    assert _equal(live.state_arrays(), other.state_arrays())
    assert np.array_equal(live.interval()[1], other.interval()[1])


def test_rows_take_put_concat():
    live, x, y = _stream(3)
    alone = LiveScores(1, ["a", "b"], ["b", "q"], horizon=2, season=3)
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
        "missing": ({k: v for k, v in good.items() if k != "q"}, "expected the arrays"),
        "shape": ({**good, "q": good["q"][:, :1]}, r"'q' is array of shape \(3, 1\)"),
        "dtype": ({**good, "seen": good["seen"].astype(np.int32)}, "'seen' is array .* int32"),
        "nan": ({**good, "q": np.full_like(good["q"], np.nan)}, "'q' contains NaN"),
        "negative": ({**good, "acc": -np.ones_like(good["acc"])},
                     "'acc' holds a negative value"),
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
    # without a season, seasonal sums cannot have been saved by these settings
    plain = LiveScores(3, ["a", "b"], ["b", "q"], horizon=2)
    state = plain.state_arrays()
    state["acc"][:, :, 2] = 1.0
    with pytest.raises(StateError, match="'acc' holds seasonal-naive sums, but these live "
                                         "scores have no season"):
        plain.load_arrays(state)
    assert _equal(plain.state_arrays(), LiveScores(3, ["a", "b"], ["b", "q"],
                                                   horizon=2).state_arrays())


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
    ("lr", 0, "lr is 0; expected a positive number"),
    ("horizon", 0, "horizon is 0; expected an integer >= 1"),
    ("season", 2.5, "season is 2.5"),
    ("half_life", True, "half_life is True"),
    ("half_life", -1.0, "half_life is -1.0"),
    ("initial_quantiles", [1.0], r"initial_quantiles is list \[1.0\]; expected 2 non-negative"),
    ("initial_quantiles", [1.0, -1.0], "non-negative half-widths"),
])
def test_bad_settings(option, value, match):
    with pytest.raises(InputError, match=match):
        LiveScores(1, ["a"], ["a", "b"], **{option: value})


def test_a_loaded_infinite_width_keeps_to_the_masked_path():
    """A state saved while its intervals were still infinite, resumed where they start finite:
    the pool's numbers still equal one stream's (it switches to the warm-up start)."""
    early = LiveScores(1, ["y"], ["y"], initial_quantiles=[np.inf])
    early.update([[0.0]], [[0.0]])
    saved = early.state_arrays()
    pool = LiveScores(1, ["y"], ["y"], initial_quantiles=[0.5])
    one = LiveStream(["y"], ["y"], initial_quantiles=[0.5])
    pool.load_arrays(saved)
    one.load_arrays(saved)
    rng = np.random.default_rng(1)
    for _ in range(40):
        v = float(rng.normal())
        pool.update([[v]], [[0.0]])
        one.update([v], [0.0])
    assert _equal(pool.state_arrays(), one.state_arrays())
    assert np.isfinite(pool.half_width()).all()


def test_negative_zero_and_huge_values():
    live = LiveScores(1, ["y"], ["y"], initial_quantiles=[-0.0])
    assert np.signbit(live.half_width()).tolist() == [[False]]
    with pytest.raises(InputError, match="beyond"):
        live.update([[1e120]], [[0.0]])
    live.update(np.zeros((0, 1)), np.zeros((0, 1)), rows=[])  # no rows: nothing to do


def test_a_loaded_state_with_an_infinite_width_but_finite_widths_due_starts_it_as_one_stream():
    """A hand-made state (q infinite, the widths due finite) on a model without starting
    widths: the pool takes the masked path, which starts q at the peak once enough points were
    scored, as LiveStream does; the mask-free path would keep q infinite."""
    rng = np.random.default_rng(4)
    pool, one = LiveScores(1, ["a"], ["a"]), LiveStream(["a"], ["a"])
    x = rng.normal(size=(40, 1, 1))
    for t in range(20):
        pool.update(x[t], x[t] + 0.1)
    state = pool.state_arrays()
    state["q"][:] = np.inf
    state["pending_width"][:] = 1.0
    pool.load_arrays(state)
    one.load_arrays(state)
    for t in range(20, 40):
        pool.update(x[t], x[t] + 0.1)
        one.update(x[t, 0].tolist(), (x[t, 0] + 0.1).tolist())
    assert np.isfinite(pool.state_arrays()["q"]).all()
    assert _equal(pool.state_arrays(), one.state_arrays())
