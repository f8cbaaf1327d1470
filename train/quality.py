"""How good a forecaster is, measured on the future: per target, against naive forecasts.

Every figure here is computed on the validation pairs, which lie strictly after the training
pairs in time, and each target is scored on its own (a volume of 1e10 and a price of 50 are
never pooled into one MSE). Two naive baselines are measured on the same pairs:

* persistence: the next value is the last observed one;
* seasonal naive: the value one season ago (``y[t + h - s]``), when a season ``s`` is known
  (given, or found by :func:`detect_season`).

The unit-free summary divides each target's error by that target's training standard
deviation (``*_norm``) and reports each target's MSE relative to persistence.

Multi-step quality (:func:`multi_step_errors`): from every validation origin the model forecasts
``steps`` points ahead by feeding each prediction back as the next input (what
``Predictor.forecast`` does), and the error at each horizon is compared with persistence and
seasonal naive at that horizon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rnnstream.runtime.live import CALIBRATION_LEVELS, LiveStream, conformal_half_widths

from .data import Split, fit_mean_std
from .model import Forecaster

__all__ = ["BAND_COVERAGE", "VALIDATION_COVERAGES", "MultiStepForecasts", "TargetScores",
           "calibration", "detect_season", "live_validation", "long_season", "multi_step_errors",
           "multi_step_forecasts", "score_targets", "season_peaks"]

# A season is reported only when the autocorrelation of the series' changes at that lag is at
# least this high and a local maximum: strong enough that seasonal naive is a fair baseline.
SEASON_MIN_ACF = 0.3
MAX_SEASON = 400
# A season must repeat at least this many times in the series it is found on: the ACF at lag s
# averages n - s products, and with fewer than 4 cycles a quasi-periodic cycle lines up by
# chance (lynx: 72 training points, a "season" of 19 from 3.8 ten-year cycles, which the
# seasonal ETS over-fitted: 1.97x persistence on the held-out years).
MIN_CYCLES = 4
# the coverages at which training replays the runtime's intervals on the validation range, and
# the one drawn as a band in training.png
VALIDATION_COVERAGES = (0.8, 0.9, 0.95)
BAND_COVERAGE = 0.9


def detect_season(values: np.ndarray, max_lag: int | None = None) -> int | None:
    """The dominant period of ``values`` [N] (lag of the highest autocorrelation peak of its
    first differences, at least :data:`SEASON_MIN_ACF`), or None when there is none."""
    peaks = season_peaks(values, max_lag)
    return peaks[0] if peaks else None


def season_peaks(values: np.ndarray, max_lag: int | None = None) -> list[int]:
    """Every lag whose autocorrelation of the first differences of ``values`` is a local
    maximum of at least :data:`SEASON_MIN_ACF` and that repeats :data:`MIN_CYCLES` times in
    ``values``, highest first (a daily and a weekly season of hourly data both show)."""
    acf = _diff_acf(values, max_lag)
    max_lag = acf.size - 2
    peaks = [lag for lag in range(2, max_lag + 1) if acf[lag] >= SEASON_MIN_ACF
             and acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1]]
    return sorted(peaks, key=lambda lag: (-acf[lag], lag))


def long_season(values: np.ndarray, season: int | None, max_lag: int | None = None
                ) -> int | None:
    """A second, longer season of ``values`` [N] that contains ``season`` (a week of hours, 168,
    over a day, 24), or None.

    Where a series has only the one season, the autocorrelation of its changes at the
    season's multiples (2s, 3s, ...) can only fade; a longer season shows as a multiple ``k s``
    whose autocorrelation (each lag's products averaged over their own count) rises above that
    of ``(k - 1) s`` by more than sampling noise and is the highest of all multiples from 2s
    on. It must, like the season, repeat :data:`MIN_CYCLES` times.
    Whether it forecasts better is left to validation (``train``: a longer season is used only
    where it beats the shorter one significantly)."""
    if not season or season < 2:
        return None
    acf = _diff_acf(values, max_lag)
    # the FFT estimate divides every lag by n, not by the n - k products it sums, which shrinks
    # long lags by (n - k) / n; undone here, so that a week is compared with a day on equal terms
    n = np.asarray(values).size - 1
    acf = acf * n / np.maximum(n - np.arange(acf.size), 1)
    # multiples with the next one in range too: a peak must be seen to fall again (in 600
    # hourly points the 6-day lag, the last in range, rose over 5 days and was no week)
    multiples = list(range(2 * season, acf.size - 1 - season, season))
    if not multiples:
        return None
    top = max(multiples, key=lambda lag: (acf[lag], -lag))
    # the rise must clear the usual +-2/sqrt(n) band of an autocorrelation estimate (n - k
    # products at lag k): elnino's 48 months rose 0.037 over 36, inside its band of 0.098
    band = 2 / math.sqrt(n - top)
    if acf[top] >= SEASON_MIN_ACF and acf[top] - acf[top - season] > band \
            and acf[top] > acf[top + season]:
        return top
    return None


def _diff_acf(values: np.ndarray, max_lag: int | None) -> np.ndarray:
    """The autocorrelation of the first differences of ``values`` at lags 0 .. L + 1, L the
    longest lag that repeats :data:`MIN_CYCLES` times (at most ``max_lag`` or
    :data:`MAX_SEASON`); just lags 0 and 1 for short or constant series."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    n = d.size
    max_lag = min(max_lag or MAX_SEASON, (n + 1) // MIN_CYCLES)
    if max_lag < 2 or not np.std(d) > 0:
        return np.array([1.0, 0.0])  # no lag to look at
    d = d - d.mean()
    spectrum = np.fft.rfft(d, 2 * n)  # autocorrelation by FFT: O(n log n) for long series
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: max_lag + 2]
    return acf / acf[0]


@dataclass(frozen=True)
class TargetScores:
    """One target's validation figures in raw units (``*_norm``: divided by its training std)."""

    name: str
    mse: float
    mae: float
    persistence_mse: float
    persistence_mae: float
    seasonal_mse: float | None  # None when no season is known
    std: float

    @property
    def vs_persistence(self) -> float:
        """Model MSE / persistence MSE (below 1: the model is better)."""
        return self.mse / self.persistence_mse if self.persistence_mse > 0 else float("inf")

    @property
    def vs_seasonal(self) -> float | None:
        if self.seasonal_mse is None:
            return None
        return self.mse / self.seasonal_mse if self.seasonal_mse > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"mse": self.mse, "mae": self.mae, "persistence_mse": self.persistence_mse,
                "persistence_mae": self.persistence_mae, "seasonal_naive_mse": self.seasonal_mse,
                "vs_persistence": self.vs_persistence, "vs_seasonal_naive": self.vs_seasonal,
                "train_std": self.std}


def seasonal_naive(split: Split, season: int | None) -> np.ndarray | None:
    """The seasonal naive forecast of every pair's target (NaN where it reaches before t=0)."""
    h = split.horizon
    if not season or season < h:
        return None
    # pair t predicts time t + h; one season earlier is time t + h - s, which is
    # split.last[t + h - s] (last[i] is the target at time i)
    idx = np.arange(split.x.shape[0]) + h - season
    out = np.full(split.y.shape, np.nan)
    ok = idx >= 0
    out[ok] = split.last[idx[ok]]
    return out


def score_targets(pred: np.ndarray, split: Split, names: list[str],
                  season: int | None) -> list[TargetScores]:
    """Per-target figures of ``pred`` [n_val, T] on the validation pairs of ``split``."""
    n = split.n_train
    actual, last = split.y[n:], split.last[n:]
    _, std = fit_mean_std(split.y[:n])
    snaive = seasonal_naive(split, season)
    scores = []
    for j, name in enumerate(names):
        err, perr = pred[:, j] - actual[:, j], last[:, j] - actual[:, j]
        smse = None
        if snaive is not None:
            s = snaive[n:, j]
            ok = np.isfinite(s)
            smse = float(np.mean((s[ok] - actual[ok, j]) ** 2)) if ok.any() else None
        scores.append(TargetScores(name, float(np.mean(err ** 2)), float(np.mean(np.abs(err))),
                                   float(np.mean(perr ** 2)), float(np.mean(np.abs(perr))),
                                   smse, float(std[j])))
    return scores


@dataclass(frozen=True)
class MultiStepForecasts:
    """Forecasts fed back from validation origins, in raw units (:func:`multi_step_forecasts`).

    ``forecast[b, k]`` is the forecast ``k + 1`` steps after origin ``origins[b]`` (a pair
    index: the origin's input is time ``origins[b]``), ``truth[b, k]`` the value then, each
    ``[B, steps, F]``; ``series`` is the whole series ``[n_pairs + 1, F]``.
    """

    origins: np.ndarray
    forecast: np.ndarray
    truth: np.ndarray
    series: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.forecast.shape[1])


@torch.no_grad()
def multi_step_forecasts(model: Forecaster, split: Split, steps: int,
                         max_origins: int = 2000) -> MultiStepForecasts | None:
    """Forecasts 1..steps ahead from each validation origin (at most ``max_origins``, evenly
    spread), each prediction fed back as the next input (what ``Predictor.forecast`` does).

    Only for models whose targets are their features (in order) with horizon 1, which is when
    a prediction can be fed back as the next input; None otherwise.
    """
    cfg = model.config
    if cfg.horizon != 1 or cfg.target_index != list(range(cfg.n_features)) or \
            cfg.n_targets != cfg.n_features or steps < 1:
        return None
    n, total = split.n_train, split.x.shape[0]
    series = np.concatenate([split.x, split.y[-1:]])  # the targets are the features: x[t+1]
    origins = np.arange(n, total - steps + 1)
    if origins.size == 0:
        return None
    if origins.size > max_origins:
        origins = origins[np.linspace(0, origins.size - 1, max_origins).astype(int)]
    device = next(model.parameters()).device
    x_all = torch.as_tensor(series[None, :total], dtype=torch.float32, device=device)
    # the state after each time step, by one step per call from the zero state
    state = model.initial_state(1, device)
    kept: dict[int, tuple] = {}
    preds: dict[int, torch.Tensor] = {}
    wanted = set(origins.tolist())
    for t in range(int(origins.max()) + 1):
        y, state = model(x_all[:, t:t + 1], state)
        if t in wanted:
            kept[t], preds[t] = state, y[:, 0]
    state = tuple(torch.cat([kept[int(t)][i] for t in origins]) for i in range(len(state)))
    p = torch.cat([preds[int(t)] for t in origins])  # [B, F]: the 1-step-ahead predictions
    out = [p]
    for _ in range(steps - 1):
        y, state = model(p[:, None], state)
        p = y[:, 0]
        out.append(p)
    forecast = torch.stack(out, dim=1).double().cpu().numpy()  # [B, steps, F]
    k = np.arange(1, steps + 1)
    truth = series[origins[:, None] + k[None, :]]  # [B, steps, F]
    return MultiStepForecasts(origins, forecast, truth, series)


def multi_step_errors(model: Forecaster, split: Split, steps: int, season: int | None,
                      max_origins: int = 2000,
                      forecasts: MultiStepForecasts | None = None) -> dict | None:
    """MSE at horizons 1..steps of forecasts fed back from each validation origin.

    Only for models whose targets are their features (in order) with horizon 1, which is when
    a prediction can be fed back as the next input; None otherwise. ``forecasts`` (from
    :func:`multi_step_forecasts` with the same ``steps``) saves computing them again. Returns
    ``{"steps": [1..k], "model": [...], "persistence": [...], "seasonal_naive": [...] | None,
    "origins": count}``: each list holds the MSE at that horizon, averaged over targets after
    dividing each by its training variance (unit-free).
    """
    fc = forecasts or multi_step_forecasts(model, split, steps, max_origins)
    if fc is None:
        return None
    origins, series, truth, steps = fc.origins, fc.series, fc.truth, fc.steps
    var = np.square(fit_mean_std(split.y[:split.n_train])[1])
    k = np.arange(1, steps + 1)
    persist = np.repeat(series[origins][:, None], steps, axis=1)
    result = {"steps": k.tolist(), "origins": int(origins.size),
              "model": _per_step(fc.forecast - truth, var),
              "persistence": _per_step(persist - truth, var), "seasonal_naive": None}
    if season:  # the same phase in the latest season before the origin: lag s * ceil(k / s)
        lag = season * np.ceil(k / season).astype(int)
        if origins.min() + 1 - lag.max() >= 0:
            snaive = series[origins[:, None] + k[None, :] - lag[None, :]]
            result["seasonal_naive"] = _per_step(snaive - truth, var)
    return result


# -- calibration: prediction intervals from the validation residuals ------------------------------
def calibration(pred: np.ndarray, split: Split, names: Sequence[str], features: Sequence[str],
                forecasts: MultiStepForecasts | None = None) -> tuple[dict, np.ndarray]:
    """``metrics["calibration"]`` of a model (targets ``names``, inputs ``features``) whose raw
    predictions of every pair are ``pred`` ``[n_pairs, T]``, and the half-width ``[n_val, T]``
    the runtime would have issued with each validation prediction at :data:`BAND_COVERAGE`.

    ``half_widths[target][0]`` are the split-conformal half-widths of the absolute validation
    residuals at each of :data:`~rnnstream.runtime.live.CALIBRATION_LEVELS` (what the runtime
    starts its intervals from); row ``k`` >= 1 those of the forecasts fed back ``k + 1`` steps
    (``forecasts``: models whose targets are their features, horizon 1). ``residuals`` counts
    the validation residuals, ``origins`` the forecasts' origins. ``validation`` is what the
    runtime's intervals would have reached on the validation range (:func:`live_validation`).
    """
    n = split.n_train
    val = np.abs(pred[n:] - split.y[n:])
    rows: dict[str, list] = {}
    for j, name in enumerate(names):
        rows[name] = [conformal_half_widths(val[:, j], CALIBRATION_LEVELS)]
        if forecasts is not None:  # targets are the features, in order: column j is target j
            err = np.abs(forecasts.forecast[:, 1:, j] - forecasts.truth[:, 1:, j])
            rows[name] += [conformal_half_widths(err[:, k], CALIBRATION_LEVELS)
                           for k in range(err.shape[1])]
    validation, band = live_validation(pred, split, names, features)
    out = {"levels": list(CALIBRATION_LEVELS), "half_widths": rows, "residuals": len(val),
           "origins": None if forecasts is None else int(forecasts.origins.size),
           "validation": validation}
    return out, band


def live_validation(pred: np.ndarray, split: Split, names: Sequence[str],
                    features: Sequence[str], coverages: Sequence[float] = VALIDATION_COVERAGES
                    ) -> tuple[dict, np.ndarray]:
    """The runtime's intervals replayed on the validation range: an out-of-sample figure.

    For each coverage, one :class:`~rnnstream.runtime.live.LiveStream` (the runtime's own
    quantile tracking, default settings) starts at the first validation point from the
    split-conformal half-widths of the *training-range* residuals at that coverage and at 0.5
    (the scale's prior), as a deployed model starts from its validation residuals' (those are
    what is being measured here), and sees the validation points
    and predictions in time order, as a stream deployed after training would: each prediction
    is scored ``horizon`` points later. A target that is not among ``features`` is never
    scored by the runtime, so its interval keeps its starting width, as here.

    Returns ``({"levels": coverages, "realised": {target: [share of the validation values
    inside their interval]}, "mean_width": {target: [mean upper - lower]}, "scored": {target:
    intervals counted}}, half-widths [n_val, T] issued at BAND_COVERAGE)``; a figure is None
    where no finite interval was issued (too few training residuals for that coverage, and a
    target the runtime cannot score).
    """
    n, h, n_val = split.n_train, split.horizon, split.n_val
    train_abs = np.abs(pred[:n] - split.y[:n])
    val_abs = np.abs(pred[n:] - split.y[n:])
    scorable = [names.index(f) for f in features if f in names]
    # the targets' values that arrive during validation, times n .. n_pairs + h - 1, and the
    # predictions made then (the last h are never scored: their values come after the data)
    arrived = np.concatenate([split.last[n:], split.y[len(split.y) - h:]])[:, scorable]
    made = np.concatenate([pred[n:], split.y[len(split.y) - h:]])
    realised: dict[str, list] = {name: [] for name in names}
    widths: dict[str, list] = {name: [] for name in names}
    scored: dict[str, int] = {}
    band = np.full((n_val, len(names)), np.inf)
    # the scale's prior, as a deployed model takes it from its calibration: the 0.5 level
    scales = [_finite_or_inf(conformal_half_widths(train_abs[:, j], [0.5])[0])
              for j in range(len(names))]
    for c in coverages:
        start = [_finite_or_inf(conformal_half_widths(train_abs[:, j], [c])[0])
                 for j in range(len(names))]
        live = LiveStream([names[j] for j in scorable], names, horizon=h, coverage=c,
                          initial_quantiles=start, initial_scales=scales)
        issued = np.empty((n_val, len(names)))
        for i, (x, y) in enumerate(zip(arrived.tolist(), made.tolist(), strict=True)):
            live.update(x, y)
            if i < n_val:
                issued[i] = live.half_width()  # the half-width issued with prediction i
        for j, name in enumerate(names):
            ok = np.isfinite(issued[:, j])
            # the runtime's own test of a scored interval (LiveStream.coverage_so_far agrees)
            hits = val_abs[ok, j] <= issued[ok, j]
            realised[name].append(float(hits.mean()) if ok.any() else None)
            widths[name].append(float(2 * issued[ok, j].mean()) if ok.any() else None)
            scored[name] = int(ok.sum())
        if math.isclose(c, BAND_COVERAGE):
            band = issued
    return ({"levels": list(coverages), "realised": realised, "mean_width": widths,
             "scored": scored}, band)


def _finite_or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _per_step(err: np.ndarray, var: np.ndarray) -> list[float]:
    return [float(v) for v in np.mean(np.square(err) / var, axis=(0, 2))]
