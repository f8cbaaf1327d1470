"""Exponential smoothing fitted in training, carried in the graph as a linear recurrence.

What a statistician tries first on a short seasonal series is exponential smoothing (ETS, here
additive error, trend none, additive or damped additive, season none or additive). It is a linear
state-space model: with the state ``H = [level, trend, s_t, s_t-1, ..., s_t-m+1]`` and the
one-step error ``e_t = y_t - w . H_t-1``::

    level_t = level_t-1 + phi trend_t-1 + alpha e_t
    trend_t = phi trend_t-1 + beta e_t
    s_t     = s_t-m + gamma e_t          (the other seasonal slots shift by one)
    forecast of y_t+1 = w . H_t,   w = [1, phi, 0, ..., 0, 1]

so ``H_t = A H_t-1 + g y_t`` with ``A = F - g w'``: one linear recurrent layer. Target mode
"ets" (see :mod:`rnnstream.runtime.spec`) carries it in the ``ets`` state and adds the network's
correction to its forecast, so a model whose correction is off is exactly this ETS.

The state is kept relative to the fitted initial state ``H0`` (``h = H - H0``), so that it
starts at zeros like every rnnstream state: ``h_t = A h_t-1 + g y_t + (A - I) H0`` and the
forecast is ``w . h_t + w . H0``. The fit works on the target standardised by its training mean
and std and folds both into the matrices, so the graph reads and writes raw units.

Fitting: the smoothing parameters minimise the one-step squared error on the training part,
found by a grid over (alpha, beta, phi, gamma) evaluated for every grid point at once (numpy,
vectorised over the grid), then a finer grid around the best; initial states by least squares
for seasons up to 24 (the forecasts are affine in them), from the first cycles (statsmodels'
"heuristic" start) for longer ones. Each form (trend, season) is fitted; train.loop chooses
among them by AIC and validation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from rnnstream.runtime import spec

__all__ = ["EtsFit", "ets_forecasts", "ets_matrices", "fit_ets", "state_size"]

ALPHA = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
BETA = (0.0, 0.03, 0.1, 0.3, 1.0)  # as a share of alpha
PHI = (0.8, 0.9, 0.98)  # damped; the refinement moves each by up to 2 %
# as a share of 1 - alpha, up to its bound: hourly demand's weekly season wants gamma = 1 -
# alpha (0.0553x persistence on the held-out part against 0.0659x with shares up to 0.5)
GAMMA = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
REFINE = (0.7, 0.85, 1.0, 1.15, 1.3)
WINDOW = 2000  # the latest points a long series' parameters are fitted on (see fit_ets)
STARTS = 2  # coarse-grid points refined per form (see _fit_form)
# Longer seasons keep the heuristic start of their seasonal slots (from the first cycles, as
# statsmodels' "heuristic" initialisation and bench/quality.py's reference do): fitted by least
# squares, 168 slots learn the training part's profile so well that gamma goes to 0 and the
# season never adapts (taylor hourly, week of 168: 0.099x persistence on the held-out part
# against 0.055x with the heuristic start and gamma 0.3).
LEAST_SQUARES_SLOTS = 24


def state_size(season: int) -> int:
    """Length of one target's ETS state: level, trend and one slot per step of the season
    (:func:`rnnstream.runtime.spec.ets_slots`, the one place it is written)."""
    return spec.ets_slots(season)


@dataclass(frozen=True)
class EtsFit:
    """One target's fitted ETS, on the target standardised by ``mean``/``std``."""

    form: str  # trend N, A or A_d (damped), season N or A: "N,N", "A_d,A", ...
    alpha: float
    beta: float
    phi: float
    gamma: float
    season: int  # m of the state (0: no seasonal slots used)
    initial: list[float]  # H0, state_size(season) values (standardised units)
    mean: float
    std: float
    aic: float
    mse: float  # one-step MSE on the training part, standardised units

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "initial"}


def _initial(z: np.ndarray, m: int, trend: bool, seasonal: bool) -> np.ndarray:
    """H0 = [level, trend, s_-1, s_-2, ..., s_-m] from the first cycles."""
    h0 = np.zeros(state_size(m))
    if seasonal:
        first = z[:m].mean()
        h0[0] = first
        if trend and z.size >= 2 * m:
            h0[1] = (z[m:2 * m].mean() - first) / m
        # the seasonal effect of time j (j < m) is s_j-m, slot 2 + (m - 1 - j)
        h0[2:] = (z[:m] - first)[::-1]
    else:
        h0[0] = z[0]
        if trend and z.size >= 2:
            k = min(10, z.size - 1)
            h0[1] = (z[k] - z[0]) / k
    return h0


def _one_step(z: np.ndarray, m: int, params: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """Squared one-step errors summed, for each row of ``params`` [K, 4] (alpha, beta, phi,
    gamma), vectorised over K; ``m`` >= 1 slots (a 1-slot season with gamma 0 is none)."""
    alpha, beta, phi, gamma = (params[:, i] for i in range(4))
    k = params.shape[0]
    level = np.full(k, h0[0])
    trend = np.full(k, h0[1])
    ring = np.tile(h0[2:][::-1, None], (1, k))  # ring[j % m] holds the effect for time j
    sse = np.zeros(k)
    for t, value in enumerate(z):
        j = t % m
        forecast = level + phi * trend + ring[j]
        e = value - forecast
        sse += e * e
        level = level + phi * trend + alpha * e
        trend = phi * trend + beta * e
        ring[j] += gamma * e
    return sse


def _best_initial(z: np.ndarray, m: int, params: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """The initial state with the least one-step squared error for these parameters: the
    forecasts are affine in it (``forecast_t = w A^t H0 + the forecast from a zero start``), so
    it is a least-squares solution; the heuristic start where that is ill-posed."""
    a, b, phi, gam = (float(v) for v in params)
    size = state_size(m)
    f = np.zeros((size, size))
    f[0, 0], f[0, 1], f[1, 1] = 1.0, phi, phi
    w = np.zeros(size)
    w[0], w[1] = 1.0, phi
    g = np.zeros(size)
    g[0], g[1] = a, b
    if m:
        f[2, 2 + m - 1] = 1.0
        for k in range(1, m):
            f[2 + k, 2 + k - 1] = 1.0
        w[2 + m - 1] = 1.0
        g[2] = gam
    big_a = f - np.outer(g, w)
    rows = np.empty((z.size, size))
    zero = np.empty(z.size)
    r, h = w.copy(), np.zeros(size)
    for t, value in enumerate(z):
        rows[t], zero[t] = r, w @ h
        r = r @ big_a
        h = big_a @ h + g * value
    used = [0, 1] if (b or phi) else [0]
    used += list(range(2, 2 + m))
    # normal equations with a whisper of ridge: lstsq's SVD was 10x slower at 2,000 x 144
    x = rows[:, used]
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += 1e-9 * max(float(np.trace(gram)), 1.0) / len(used)
    try:
        solution = np.linalg.solve(gram, x.T @ (z - zero))
    except np.linalg.LinAlgError:
        return h0
    if not np.all(np.isfinite(solution)):
        return h0
    out = np.zeros(size)
    out[used] = solution
    return out


def _grid(trend: bool, seasonal: bool, damped: bool) -> np.ndarray:
    rows = []
    for a in ALPHA:
        for b in (BETA if trend else (0.0,)):
            for p in ((PHI if damped else (1.0,)) if trend else (0.0,)):
                for g in (GAMMA if seasonal else (0.0,)):
                    rows.append((a, b * a, p, g * (1 - a)))
    return np.asarray(rows)


def _refined(best: np.ndarray, trend: bool, seasonal: bool, damped: bool) -> np.ndarray:
    a, b, p, g = best
    rows = []
    for fa in REFINE:
        na = min(0.999, a * fa)
        for fb in (REFINE if trend and b > 0 else (1.0,)):
            for fp in ((0.96, 0.98, 1.0, 1.02, 1.04) if damped else (1.0,)):
                for fg in (REFINE if seasonal and g > 0 else (1.0,)):
                    rows.append((na, min(b * fb, na), min(1.0, p * fp),
                                 min(g * fg, 1 - na)))
    return np.asarray(rows)


def _fit_form(z: np.ndarray, season: int, trend: bool, seasonal: bool,
              damped: bool = True, seeds: np.ndarray | None = None) -> EtsFit:
    """One form's parameters and start: the coarse grid's best :data:`STARTS` points (with the
    heuristic start) and ``seeds`` (e.g. the nested simpler form's parameters, so a seasonal
    form never fits worse than its form without season), each refined with its least-squares
    start; the lowest one-step error wins."""
    m = season if seasonal else 0
    heuristic = _initial(z, m, trend, seasonal)
    slots = max(m, 1)
    grid = _grid(trend, seasonal, damped)
    sse = _one_step(z, slots, grid, heuristic if m else np.r_[heuristic, 0.0])
    starts = grid[np.argsort(sse)[:STARTS]]
    if seeds is not None:
        starts = np.vstack([starts, seeds])
    found = []
    for best in starts:
        h0 = heuristic
        for _ in range(2):  # the best start for these parameters, then parameters for it
            if m <= LEAST_SQUARES_SLOTS:
                h0 = _best_initial(z, m, best, h0)
            fine = _refined(best, trend, seasonal, damped)
            fine_sse = _one_step(z, slots, fine, h0 if m else np.r_[h0, 0.0])
            i = int(np.argmin(fine_sse))
            best = fine[i]
        found.append((float(fine_sse[i]), best, h0))
    total, best, h0 = min(found, key=lambda f: f[0])
    a, b, p, g = best
    n = z.size
    mse = total / n
    # parameters: alpha, beta, phi (damped only), gamma, and the initial states
    k = 1 + int(trend) + int(trend and damped) + int(seasonal) + 1 + int(trend) + m
    aic = n * math.log(max(mse, 1e-300)) + 2 * k
    form = f"{('A_d' if damped else 'A') if trend else 'N'},{'A' if seasonal else 'N'}"
    return EtsFit(form, float(a), float(b), float(p), float(g), m, h0.tolist(), 0.0, 1.0,
                  aic, mse)


def fit_ets(values: np.ndarray, season: int | None) -> EtsFit:
    """The ETS form and parameters with the lowest AIC on ``values`` [n] (one target's
    training part); a season only when there are at least two cycles of it.

    On a long series the form and parameters come from its latest :data:`WINDOW` points (the
    grid costs a pass over the series per point of it), and the start from the whole series
    (least squares with those parameters), since the stream starts at its first point."""
    y = np.asarray(values, dtype=np.float64)
    mean, std = float(y.mean()), float(y.std())
    std = std if std > 0 else 1.0
    z = (y - mean) / std
    recent = z[-WINDOW:]
    seasons = ([False, True] if season and season >= 2 and recent.size >= 2 * season + 2
               else [False])
    fits: list[EtsFit] = []
    for seasonal in seasons:
        for trend, damped in ((False, False), (True, False), (True, True)):
            plain = [f for f in fits if f.form == ("N" if not trend else "A_d" if damped
                                                   else "A") + ",N"]
            seeds = None
            if seasonal and plain:  # the same form without season, plus a little gamma
                f = plain[0]
                seeds = np.array([[f.alpha, f.beta, f.phi, g * (1 - f.alpha)]
                                  for g in (0.0, 0.05, 0.2)])
            fits.append(_fit_form(recent, season or 0, trend, seasonal, damped, seeds))
    best = min(fits, key=lambda f: f.aic)
    if recent.size < z.size:  # the start of the whole series, and its error from there
        params = np.array([[best.alpha, best.beta, best.phi, best.gamma]])
        m = best.season
        start = _initial(z, m, best.phi > 0, m > 0)
        if m <= LEAST_SQUARES_SLOTS:
            start = _best_initial(z, m, params[0], start)
        sse = _one_step(z, max(m, 1), params, start if m else np.r_[start, 0.0])
        best = replace(best, initial=start.tolist(), mse=float(sse[0] / z.size))
    return replace(best, mean=mean, std=std)


def ets_matrices(fit: EtsFit, season: int, horizon: int = 1
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """``(g [S], A [S, S], bias [S], w [S], c)`` in raw units for a state of
    ``state_size(season)`` (the fit's own season, or 0 slots used when it has none): the
    relative state moves as ``h_t = A h_t-1 + g y_t + bias`` and the forecast of the value
    ``horizon`` steps after t is ``w . h_t + c``."""
    size = state_size(season)
    a, b, phi, gam = fit.alpha, fit.beta, fit.phi, fit.gamma
    m = fit.season
    f = np.zeros((size, size))
    f[0, 0], f[0, 1], f[1, 1] = 1.0, phi, phi
    w1 = np.zeros(size)  # the one-step forecast from the previous state
    w1[0], w1[1] = 1.0, phi
    g = np.zeros(size)
    g[0], g[1] = a, b
    if m:
        f[2, 2 + m - 1] = 1.0  # s_t = s_t-m + gamma e
        for k in range(1, m):
            f[2 + k, 2 + k - 1] = 1.0  # the other slots shift
        w1[2 + m - 1] = 1.0
        g[2] = gam
    wh = np.zeros(size)  # the forecast `horizon` steps after the state's time
    wh[0] = 1.0
    wh[1] = sum(phi ** i for i in range(1, horizon + 1))
    if m:
        wh[2 + m * math.ceil(horizon / m) - horizon] = 1.0
    big_a = f - np.outer(g, w1)
    h0 = np.zeros(size)
    h0[:len(fit.initial)] = fit.initial
    bias_z = (big_a - np.eye(size)) @ h0
    # standardised -> raw: z = (y - mean) / std in, forecast * std + mean out
    g_raw = g / fit.std
    bias = bias_z - g * fit.mean / fit.std
    w = wh * fit.std
    c = float(wh @ h0 * fit.std + fit.mean)
    return g_raw, big_a, bias, w, c


def ets_forecasts(fit: EtsFit, values: np.ndarray, horizon: int = 1) -> np.ndarray:
    """``out[t]``: the forecast of ``values[t + horizon]`` made after seeing ``values[t]``
    ([N], raw units), by the recurrence the graph runs (:func:`ets_matrices`), from its start."""
    g, a, bias, w, c = ets_matrices(fit, fit.season, horizon)
    h = np.zeros(g.size)
    out = np.empty(len(values))
    for t, value in enumerate(np.asarray(values, dtype=np.float64)):
        h = a @ h + g * value + bias
        out[t] = w @ h + c
    return out
