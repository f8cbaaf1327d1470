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

from dataclasses import dataclass

import numpy as np
import torch

from .data import Split, fit_mean_std
from .model import Forecaster

__all__ = ["TargetScores", "detect_season", "multi_step_errors", "score_targets"]

# A season is reported only when the autocorrelation of the series' changes at that lag is at
# least this high and a local maximum: strong enough that seasonal naive is a fair baseline.
SEASON_MIN_ACF = 0.3
MAX_SEASON = 400


def detect_season(values: np.ndarray, max_lag: int | None = None) -> int | None:
    """The dominant period of ``values`` [N] (lag of the highest autocorrelation peak of its
    first differences, at least :data:`SEASON_MIN_ACF`), or None when there is none."""
    d = np.diff(np.asarray(values, dtype=np.float64))
    n = d.size
    max_lag = min(max_lag or MAX_SEASON, n // 3)
    if max_lag < 2 or not np.std(d) > 0:
        return None
    d = d - d.mean()
    spectrum = np.fft.rfft(d, 2 * n)  # autocorrelation by FFT: O(n log n) for long series
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: max_lag + 2]
    acf = acf / acf[0]
    best, best_value = None, SEASON_MIN_ACF
    for lag in range(2, max_lag + 1):
        if acf[lag] >= best_value and acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1]:
            best, best_value = lag, acf[lag]
    return best


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


@torch.no_grad()
def multi_step_errors(model: Forecaster, split: Split, steps: int, season: int | None,
                      max_origins: int = 2000) -> dict | None:
    """MSE at horizons 1..steps of forecasts fed back from each validation origin.

    Only for models whose targets are their features (in order) with horizon 1, which is when
    a prediction can be fed back as the next input; None otherwise. Returns
    ``{"steps": [1..k], "model": [...], "persistence": [...], "seasonal_naive": [...] | None,
    "origins": count}``: each list holds the MSE at that horizon, averaged over targets after
    dividing each by its training variance (unit-free).
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
    var = np.square(fit_mean_std(split.y[:n])[1])
    k = np.arange(1, steps + 1)
    truth = series[origins[:, None] + k[None, :]]  # [B, steps, F]
    persist = np.repeat(series[origins][:, None], steps, axis=1)
    result = {"steps": k.tolist(), "origins": int(origins.size),
              "model": _per_step(forecast - truth, var),
              "persistence": _per_step(persist - truth, var), "seasonal_naive": None}
    if season:  # the same phase in the latest season before the origin: lag s * ceil(k / s)
        lag = season * np.ceil(k / season).astype(int)
        if origins.min() + 1 - lag.max() >= 0:
            snaive = series[origins[:, None] + k[None, :] - lag[None, :]]
            result["seasonal_naive"] = _per_step(snaive - truth, var)
    return result


def _per_step(err: np.ndarray, var: np.ndarray) -> list[float]:
    return [float(v) for v in np.mean(np.square(err) / var, axis=(0, 2))]
