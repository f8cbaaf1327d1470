"""Prediction intervals from training: the calibration stored in the metrics and the contract.

``metrics["calibration"]`` holds split-conformal half-widths of the validation residuals (what
the runtime starts its intervals from), per step ahead for forecasts fed back, and the coverage
the runtime's own interval tracking reached on the validation range when started from the
training range's residuals (an out-of-sample figure). Coverage tolerances are binomial: a share
of ``n`` independent hits at coverage ``c`` has standard deviation ``sqrt(c (1 - c) / n)``, and
the tests allow three of them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib import cbook

from rnnstream.cli.train_cmd import format_metrics
from rnnstream.export import ExportReport, export_model
from rnnstream.runtime import Predictor
from rnnstream.runtime.live import CALIBRATION_LEVELS, conformal_half_widths
from rnnstream.train import (
    ForecasterConfig,
    TrainConfig,
    TrainResult,
    from_arrays,
    load_checkpoint,
    save_checkpoint,
    train,
)
from rnnstream.train.data import Split
from rnnstream.train.quality import calibration, live_validation

F64_EPS = np.finfo(np.float64).eps


def binomial_tolerance(coverage: float, n: int) -> float:
    return 3 * math.sqrt(coverage * (1 - coverage) / n)


def split_with_residuals(residuals: np.ndarray, n_train: int, horizon: int = 1,
                         seed: int = 0) -> tuple[Split, np.ndarray]:
    """A one-target split whose model predictions are the truth plus ``residuals`` (a walk of
    whole numbers: prediction - truth gives the residuals back exactly)."""
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.integers(-3, 4, size=len(residuals) + horizon)).astype(float)[:, None]
    split = Split(x=values[:-horizon], y=values[horizon:], last=values[:-horizon],
                  n_train=n_train, horizon=horizon)
    return split, split.y + residuals[:, None]


def test_half_widths_are_the_conformal_ranks_of_the_validation_residuals() -> None:
    val = np.random.default_rng(1).permutation(np.arange(1.0, 101.0))  # |r| = 1..100
    residuals = np.concatenate([np.full(200, 0.5), val * np.where(val % 2, 1, -1)])
    split, pred = split_with_residuals(residuals, n_train=200)
    cal, _ = calibration(pred, split, ["v"], ["v"])
    assert cal["levels"] == list(CALIBRATION_LEVELS)
    # the ceil(101 * level)-th smallest of 1..100
    assert cal["half_widths"] == {"v": [[51.0, 61.0, 71.0, 76.0, 81.0, 86.0, 91.0, 96.0,
                                         99.0, 100.0]]}
    assert cal["residuals"] == 100
    assert cal["origins"] is None


@pytest.mark.parametrize("horizon", [1, 3])
def test_live_validation_reaches_the_asked_coverage_on_gaussian_residuals(horizon: int) -> None:
    rng = np.random.default_rng(2)
    n_train, n_val = 2000, 2000
    split, pred = split_with_residuals(rng.normal(0, 2.0, n_train + n_val), n_train, horizon)
    v, band = live_validation(pred, split, ["v"], ["v"])
    assert v["levels"] == [0.8, 0.9, 0.95]
    assert v["scored"] == {"v": n_val}  # every validation prediction, the last ones included
    for c, realised, width in zip(v["levels"], v["realised"]["v"], v["mean_width"]["v"],
                                  strict=True):
        assert abs(realised - c) <= binomial_tolerance(c, n_val), (c, realised)
        exact = 2 * 2.0 * _normal_quantile((1 + c) / 2)  # the Gaussian interval's width
        assert width == pytest.approx(exact, rel=0.1), c
    # the first interval is the training range's conformal half-width at 0.9
    start = conformal_half_widths(np.abs(pred[:n_train] - split.y[:n_train]), [0.9])[0]
    assert band.shape == (n_val, 1)
    assert band[0, 0] == start


def test_a_target_the_runtime_cannot_score_keeps_its_starting_width() -> None:
    rng = np.random.default_rng(3)
    split, pred = split_with_residuals(rng.normal(0, 1.0, 600), n_train=400)
    v, band = live_validation(pred, split, ["v"], features=["other"])
    start = conformal_half_widths(np.abs(pred[:400] - split.y[:400]), [0.9])[0]
    assert np.all(band == start)
    hits = np.abs(pred[400:] - split.y[400:])[:, 0] <= start
    assert v["realised"]["v"][1] == float(hits.mean())
    # a mean of 200 equal numbers: exact up to the rounding of their sum
    assert v["mean_width"]["v"][1] == pytest.approx(2 * start, rel=200 * F64_EPS)


def test_too_few_training_residuals_leave_a_figure_out_rather_than_infinite() -> None:
    split, pred = split_with_residuals(np.random.default_rng(4).normal(size=60), n_train=8)
    v, _ = live_validation(pred, split, ["v"], features=["other"])
    # 8 residuals give a conformal 0.8 (the ceil(9 * 0.8) = 8th smallest) but no 0.9 or 0.95
    # quantile (the 9th), and a target that is not scored never gets one
    assert v["realised"]["v"][1:] == [None, None]
    assert v["mean_width"]["v"][1:] == [None, None]
    assert v["realised"]["v"][0] is not None


def test_sine_model_calibration(sine_result: TrainResult) -> None:
    m = sine_result.metrics
    cal = m["calibration"]
    val = sine_result.validation
    rows = cal["half_widths"]["sin"]
    assert rows[0] == conformal_half_widths(np.abs(val.predicted - val.actual)[:, 0],
                                            CALIBRATION_LEVELS)
    assert cal["residuals"] == m["n_val"]
    # row k: forecasts fed back k + 1 steps, from the multi-step report's origins
    assert len(rows) == len(m["multi_step"]["steps"])
    assert cal["origins"] == m["multi_step"]["origins"]
    at_90 = [row[CALIBRATION_LEVELS.index(0.9)] for row in rows]
    assert at_90[-1] > at_90[0]  # further ahead is wider
    v = cal["validation"]
    assert v["scored"] == {"sin": m["n_val"]}
    for c, realised in zip(v["levels"], v["realised"]["sin"], strict=True):
        assert abs(realised - c) <= binomial_tolerance(c, m["n_val"]), (c, realised)
    # not needlessly wide: within a factor 2 of the validation's own conformal interval
    width_90 = v["mean_width"]["sin"][1]
    assert 0.5 <= width_90 / (2 * at_90[0]) <= 2.0
    assert val.half_width is not None
    assert val.half_width.shape == val.predicted.shape


@pytest.fixture(scope="module")
def sine_export(sine_result: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    return export_model(sine_result.model, tmp_path_factory.mktemp("cal") / "model.onnx",
                        metrics=sine_result.metrics)


def test_checkpoint_and_contract_carry_the_calibration(sine_result: TrainResult,
                                                       sine_export: ExportReport,
                                                       tmp_path) -> None:
    save_checkpoint(tmp_path / "model.pt", sine_result)
    _, info = load_checkpoint(tmp_path / "model.pt")
    assert info["metrics"]["calibration"] == sine_result.metrics["calibration"]
    for contract in (sine_export.contract, Predictor(sine_export.path).contract):
        assert contract.calibration is not None  # a typed contract field since 0.4
        assert contract.calibration.to_json() == sine_result.metrics["calibration"]


def test_predictor_interval_is_finite_from_the_first_step(sine_result: TrainResult,
                                                          sine_export: ExportReport) -> None:
    path = sine_export.path
    rows = sine_result.metrics["calibration"]["half_widths"]["sin"]
    level = CALIBRATION_LEVELS.index(0.9)
    p = Predictor(path, coverage=0.9)
    y = p.step(0.0)
    lower, upper = p.interval()
    assert math.isfinite(lower)
    assert math.isfinite(upper)
    assert (upper - lower) / 2 == pytest.approx(rows[0][level], abs=4 * F64_EPS * max(1, abs(y)))
    _forecast, lo, hi = p.forecast_interval(5)
    half = (hi - lo) / 2
    # forecast(n)[i] is i + 2 points after the latest one fed: the live half-width scaled by
    # the stored (i + 2)-step / 1-step ratio (row i + 1 / row 0); here live = row 0
    expected = np.array([rows[i + 1][level] for i in range(5)])
    np.testing.assert_allclose(half, expected, rtol=1e-12, atol=8 * F64_EPS)


def test_train_report_prints_the_validation_coverage(sine_result: TrainResult) -> None:
    m = sine_result.metrics
    v = m["calibration"]["validation"]
    lines = format_metrics(m).splitlines()
    row = next(line for line in lines if line.startswith("  sin ") and "RMSE" in line)
    shares = " ".join(f"{s:>7.1%}" for s in v["realised"]["sin"])
    width = v["mean_width"]["sin"][1]
    assert row == (f"  sin            {shares}  {width:.4g} "
                   f"({width / m['per_target']['sin']['mse'] ** 0.5:.2f}x RMSE)")


def test_model_whose_targets_are_not_features_has_one_row() -> None:
    t = np.arange(300, dtype=np.float64)
    x = np.stack([np.sin(t / 5), np.cos(t / 7)], 1)
    y = (np.sin((t + 1) / 5) * 2)[:, None]
    result = train(from_arrays(x, y, feature_names=["a", "b"], target_names=["y"]),
                   ForecasterConfig(hidden=4), TrainConfig(epochs=2, progress=False))
    cal = result.metrics["calibration"]
    assert len(cal["half_widths"]["y"]) == 1
    assert cal["origins"] is None
    band = result.validation.half_width
    assert band is not None
    assert np.all(band == band[0, 0])
    assert cal["validation"]["scored"] == {"y": result.metrics["n_val"]}


def _normal_quantile(p: float) -> float:
    """The standard normal quantile by bisection on math.erf (no scipy needed)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def membrane_potential() -> np.ndarray:
    """A real recording that ships inside matplotlib (the train extra): a neuron's membrane
    potential, 12,000 samples 0.5 ms apart, resting, then firing spikes under a current step
    (matplotlib's original logo plots it)."""
    path = cbook.get_sample_data("membrane.dat", asfileobj=False)
    return np.fromfile(path, dtype=np.float32).astype(np.float64)


def test_live_intervals_hold_their_coverage_on_a_real_series(tmp_path) -> None:
    values = membrane_potential()
    cut = 3000
    result = train(from_arrays(values[:cut], feature_names=["mV"]), ForecasterConfig(hidden=8),
                   TrainConfig(epochs=10, seed=0, progress=False))
    path = export_model(result.model, tmp_path / "m.onnx", metrics=result.metrics).path
    held_out = values[cut - 1:]
    half = len(held_out) // 2
    widths = []
    for c in (0.8, 0.9, 0.95):
        p = Predictor(path, coverage=c)
        _, state = p.run_sequence(values[:cut - 1])  # the live scores start at the split
        p.set_state(state)
        width = 0.0
        for i, v in enumerate(held_out):
            p.step(float(v))
            lower, upper = p.interval()
            width += upper - lower
            if i == half:
                share, scored = p.realised_coverage()
        total_share, total = p.realised_coverage()
        # the runtime's own counts: intervals held over the stream's tail (its second half)
        tail = (round(total_share * total) - round(share * scored)) / (total - scored)
        assert total - scored == len(held_out) - 1 - half
        # within 3 points, both ways: an interval that is always wide fails at 0.8
        print(f"membrane.dat tail coverage at {c}: {tail:.4f}")
        assert abs(tail - c) <= 0.03, (c, tail)
        widths.append(width / len(held_out))
    assert widths == sorted(widths)

