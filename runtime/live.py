"""Live accuracy and calibrated prediction intervals for many streams at once (numpy only).

:class:`LiveScores` watches ``n`` streams of a model that predicts ``T`` targets ``horizon``
steps ahead. Each :meth:`LiveScores.update` hands it, per stream, the point that just arrived
(the model's features) and the prediction the model made from it (for ``t + horizon``). When the
time a prediction was for arrives, it is scored against what was observed.

**Live accuracy.** Three forecasters are scored side by side (axis 1 of every score array, in
:data:`FORECASTERS` order): the model; persistence (the target's value observed when the
prediction was made); seasonal naive when a ``season`` ``m`` is given (the value at
``t + horizon - m * ceil(horizon / m)``, the latest point one whole season before the predicted
time). For each: MAE and MSE over all time, and over recent time as an exponentially weighted
mean with half-life ``half_life`` scored points (bias-corrected: the weights are divided by
their sum, so the first values are plain means). Exponential weights rather than a ring buffer
because they cost O(1) state per stream, target and metric and forget smoothly; the ring
buffer below exists anyway for the quantiles, but a plain window mean jumps when a large error
leaves it.

A target can only be scored when its value arrives with the points: when it is also a feature
(matched by name). A target that is not a feature is never scored; its accuracy is NaN, and its
interval stays at ``initial_quantiles`` (or infinite) forever.

**Intervals.** Adaptive Conformal Inference (ACI): I. Gibbs and E. Candès, "Adaptive Conformal
Inference Under Distribution Shift", NeurIPS 2021, https://arxiv.org/abs/2106.00170. Per stream
and target, ``alpha_t`` starts at ``1 - coverage`` and, each time an interval is scored,

    alpha_{t+1} = alpha_t + gamma * (alpha - err_t),     err_t = 1 if the value fell outside

so a stream whose intervals miss more often than ``alpha`` asks for a higher quantile, and one
that is over-covered for a narrower one. The interval is ``prediction +- q``, ``q`` the
conformal ``(1 - alpha_t)`` quantile of the stream's last ``window`` absolute residuals: the
``ceil((m + 1)(1 - alpha_t))``-th smallest of the ``m`` stored, infinite when that exceeds
``m`` (in particular whenever ``alpha_t <= 0``, as in the paper), zero when ``alpha_t >= 1``.
Residuals of a ``horizon``-step model are ``horizon``-step residuals, and ``err_t`` arrives
``horizon`` steps after the interval was issued: ACI's update is applied with that delay.

Defaults, and why:

* ``window = 200``: enough residuals for a 0.95 quantile to rest on ten points beyond it, short
  enough that a changed noise level fills the window within a few hundred points.
* ``gamma = 0.01``: the paper uses 0.005. After a 3-sigma level shift or a tripled noise level
  (64 streams, ``tests/runtime/test_live.py``), every later 50-step block was within 3 points
  of the target coverage from 400 / 250-350 / 50 steps on (coverage 0.8 / 0.9 / 0.95) with
  0.005, 300 / 200 / 50 with 0.01 and 200 / 50 / 50 with 0.02; 0.01 halves the paper's
  recovery time while keeping ``alpha_t``'s step (1% of coverage per miss) small against the
  +-3 points the stationary coverage must hold.
* ``half_life = 100`` scored points for the recent accuracy.

Until a stream has the smallest number of residuals whose conformal quantile at ``coverage`` is
finite (:attr:`LiveScores.warmup`; 9 at 0.9, 19 at 0.95), its intervals use
``initial_quantiles`` (one half-width per target; a later release passes the validation
residual quantiles the contract stores) or, without them, are infinite (``-inf, +inf``). ACI's
``alpha_t`` only moves on intervals issued from the stream's own residuals.

**State.** Everything is plain numpy arrays with the stream as axis 0 (:meth:`state_arrays`,
:meth:`load_arrays`, :meth:`take`, :meth:`put`, :meth:`concat`), so a pool can keep its streams'
rows next to its model states. A state that does not fit raises
:class:`~rnnstream.runtime.errors.StateError`; a bad point or prediction raises
:class:`~rnnstream.runtime.errors.InputError` and changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._points import describe
from .errors import InputError, StateError

__all__ = ["FORECASTERS", "LiveScores"]

FORECASTERS = ("model", "persistence", "seasonal")
_MODEL, _PERSISTENCE, _SEASONAL = range(3)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_BOOL = np.dtype(np.bool_)


class LiveScores:
    """Live accuracy and ACI prediction intervals for ``n_streams`` streams (module docstring).

    ``features`` and ``targets`` are the model's names, in input and output order; ``horizon``
    is how far ahead a prediction is; ``season`` (optional) the seasonal period in points.
    """

    def __init__(
        self,
        n_streams: int,
        features: Sequence[str],
        targets: Sequence[str],
        *,
        horizon: int = 1,
        season: int | None = None,
        coverage: float = 0.9,
        initial_quantiles: Sequence[float] | np.ndarray | None = None,
        window: int = 200,
        gamma: float = 0.01,
        half_life: float = 100.0,
    ) -> None:
        self.features = list(features)
        self.targets = list(targets)
        self.horizon = _positive_int(horizon, "horizon")
        self.season = None if season is None else _positive_int(season, "season")
        self.window = _positive_int(window, "window")
        self.coverage = _open_unit(coverage, "coverage")
        self.gamma = _open_unit(gamma, "gamma")
        if not (isinstance(half_life, (int, float)) and math.isfinite(half_life)
                and half_life > 0):
            raise InputError(f"half_life is {half_life!r}; expected a positive number of points")
        self.half_life = float(half_life)
        self.decay = 0.5 ** (1.0 / self.half_life)
        index = {name: i for i, name in enumerate(self.features)}
        # which feature carries each target; -1: not a feature, never scored
        self.source = np.array([index.get(t, -1) for t in self.targets], np.int64)
        self.initial = self._initial(initial_quantiles)
        self.warmup = _warmup(self.coverage)
        # seasonal naive for t + h is the value at lag m*ceil(h/m) - h from t, in [0, m)
        self.lag = 0 if self.season is None else (
            self.season * -(-self.horizon // self.season) - self.horizon)
        self._a = self._fresh(_positive_int(n_streams, "n_streams", zero=True))

    # -- layout ---------------------------------------------------------------------------------
    def _layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype, str]]:
        """State name -> (shape after the stream axis, dtype, what values are allowed)."""
        t, h, f = len(self.targets), self.horizon, len(FORECASTERS)
        return {
            "seen": ((), _I64, "count"),                      # points observed
            "pending": ((h, f, t), _F64, "finite|nan"),       # forecasts for t+h, slot t % h
            "pending_width": ((h, t), _F64, "nonneg|inf"),    # half-width issued with them
            "pending_own": ((h, t), _BOOL, "any"),            # issued from own residuals
            "history": ((self.season or 0, t), _F64, "finite|nan"),  # last m targets, t % m
            "count": ((f, t), _I64, "count"),                 # scored points per forecaster
            "abs_sum": ((f, t), _F64, "nonneg"),
            "sq_sum": ((f, t), _F64, "nonneg"),
            "ew_weight": ((f, t), _F64, "nonneg"),            # sum of decayed weights
            "ew_abs": ((f, t), _F64, "nonneg"),
            "ew_sq": ((f, t), _F64, "nonneg"),
            "residuals": ((self.window, t), _F64, "nonneg|nan"),  # |model residual|, ring
            "res_count": ((t,), _I64, "count"),               # residuals ever stored
            "alpha": ((t,), _F64, "finite"),                  # ACI's alpha_t
        }

    def _fresh(self, n: int) -> dict[str, np.ndarray]:
        a = {name: np.zeros((n, *shape), dtype) for name, (shape, dtype, _) in
             self._layout().items()}
        a["pending"][:] = np.nan
        a["pending_width"][:] = np.inf
        a["history"][:] = np.nan
        a["residuals"][:] = np.nan
        a["alpha"][:] = 1.0 - self.coverage
        return a

    @property
    def n_streams(self) -> int:
        return int(self._a["seen"].shape[0])

    # -- streaming ------------------------------------------------------------------------------
    def update(self, points: Any, predictions: Any, rows: Any = None) -> None:
        """Score what is due and record the new predictions, for ``rows`` (default: all).

        ``points`` is ``[k, F]`` (the points that just arrived, the model's features) and
        ``predictions`` ``[k, T]`` (what the model predicted from them, for ``t + horizon``),
        one row per entry of ``rows``. Refused input raises InputError and changes nothing.
        """
        idx = self._rows(rows)
        x = _matrix(points, (len(idx), len(self.features)), "points")
        y = _matrix(predictions, (len(idx), len(self.targets)), "predictions")
        # every stream: the arrays themselves (the input was valid, nothing below refuses);
        # some: copies of their rows, written back at the end
        a = dict(self._a) if rows is None else {k: v[idx] for k, v in self._a.items()}
        actual = np.where(self.source >= 0, x[:, self.source], np.nan)  # [k, T]
        slot = a["seen"] % self.horizon
        k = np.arange(len(idx))
        self._score(a, actual, slot, k)
        self._record(a, actual, y, slot, k)
        if rows is None:
            self._a = a
            return
        for name, value in a.items():
            self._a[name][idx] = value

    def _score(self, a: dict[str, np.ndarray], actual: np.ndarray, slot: np.ndarray,
               k: np.ndarray) -> None:
        """Score the forecasts made ``horizon`` points ago (NaN: none, or not scorable)."""
        due = a["pending"][k, slot]  # [k, 3, T]
        err = actual[:, None, :] - due
        ok = np.isfinite(err)
        e = np.where(ok, err, 0.0)
        a["count"] += ok
        a["abs_sum"] += np.abs(e)
        a["sq_sum"] += e * e
        d = np.where(ok, self.decay, 1.0)
        a["ew_weight"] = d * a["ew_weight"] + ok
        a["ew_abs"] = d * a["ew_abs"] + np.abs(e)
        a["ew_sq"] = d * a["ew_sq"] + e * e
        scored = ok[:, _MODEL]  # [k, T]
        r = np.abs(e[:, _MODEL])
        at = a["res_count"] % self.window
        kk, tt = np.nonzero(scored)
        a["residuals"][kk, at[kk, tt], tt] = r[kk, tt]
        a["res_count"] += scored
        aci = scored & a["pending_own"][k, slot]
        miss = r > a["pending_width"][k, slot]
        alpha = 1.0 - self.coverage
        a["alpha"] += np.where(aci, self.gamma * (alpha - miss), 0.0)

    def _record(self, a: dict[str, np.ndarray], actual: np.ndarray, y: np.ndarray,
                slot: np.ndarray, k: np.ndarray) -> None:
        """Store this point's forecasts for ``t + horizon`` and the interval issued with them."""
        seen = a["seen"]
        new = np.full((len(k), len(FORECASTERS), len(self.targets)), np.nan)
        new[:, _MODEL] = y
        new[:, _PERSISTENCE] = actual
        if self.season is not None:
            m = self.season
            a["history"][k, seen % m] = actual
            known = (seen >= self.lag)[:, None]
            new[:, _SEASONAL] = np.where(known, a["history"][k, (seen - self.lag) % m], np.nan)
        width, own = self._half_width(a)
        a["pending"][k, slot] = new
        a["pending_width"][k, slot] = width
        a["pending_own"][k, slot] = own
        a["seen"] = seen + 1

    def _half_width(self, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The interval half-width for the next prediction, and whether it is the stream's own."""
        m = np.minimum(a["res_count"], self.window)  # [k, T]
        rank = np.ceil((m + 1) * (1.0 - a["alpha"]))  # the rank-th smallest residual
        ordered = np.sort(a["residuals"], axis=1)  # NaN (empty slots) sort last
        pick = np.clip(rank - 1, 0, self.window - 1).astype(np.int64)
        q = np.take_along_axis(ordered, pick[:, None, :], axis=1)[:, 0]
        q = np.where(rank > m, np.inf, np.where(rank <= 0, 0.0, q))
        own = m >= self.warmup
        return np.where(own, q, self.initial), own

    # -- reading --------------------------------------------------------------------------------
    def interval(self, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)``, each ``[k, T]``: the interval around each row's latest
        prediction at ``coverage``; NaN before a stream's first prediction, +-inf while it
        has neither enough residuals nor ``initial_quantiles``."""
        idx = self._rows(rows)
        seen = self._a["seen"][idx]
        slot = (seen - 1) % self.horizon
        y = self._a["pending"][idx, slot, _MODEL]
        w = np.where((seen > 0)[:, None], self._a["pending_width"][idx, slot], np.nan)
        return y - w, y + w

    def scores(self, rows: Any = None) -> dict[str, np.ndarray]:
        """Accuracy so far, each ``[k, 3, T]`` (axis 1 in :data:`FORECASTERS` order): ``mae``,
        ``mse`` over all scored points, ``recent_mae``, ``recent_mse`` (exponentially weighted,
        half-life ``half_life`` points), ``count`` (points scored); NaN where none was."""
        idx = self._rows(rows)
        a = {name: v[idx] for name, v in self._a.items()}
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN: nothing scored
            return {
                "mae": a["abs_sum"] / a["count"],
                "mse": a["sq_sum"] / a["count"],
                "recent_mae": a["ew_abs"] / a["ew_weight"],
                "recent_mse": a["ew_sq"] / a["ew_weight"],
                "count": a["count"].copy(),
            }

    def alpha(self, rows: Any = None) -> np.ndarray:
        """ACI's current ``alpha_t`` per row and target, ``[k, T]``."""
        return self._a["alpha"][self._rows(rows)].copy()

    # -- state ----------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the whole state, name -> ``[n_streams, ...]`` array."""
        return {name: v.copy() for name, v in self._a.items()}

    def load_arrays(self, arrays: Mapping[str, np.ndarray], source: str = "load_arrays",
                    streams: int | None = None) -> None:
        """Continue from ``arrays`` (from :meth:`state_arrays` of a LiveScores with the same
        settings); the number of streams is theirs (it must be ``streams`` when given). A
        misfit raises StateError and changes nothing."""
        self._a = self._checked(arrays, source, streams)

    def take(self, rows: Any) -> dict[str, np.ndarray]:
        """Copies of ``rows``' state (for :meth:`put` or :meth:`concat`)."""
        idx = self._rows(rows)
        return {name: v[idx] for name, v in self._a.items()}

    def put(self, rows: Any, arrays: Mapping[str, np.ndarray]) -> None:
        """Overwrite ``rows``' state with ``arrays`` (one row each, as :meth:`take` gives)."""
        idx = self._rows(rows)
        checked = self._checked(arrays, "put", streams=len(idx))
        for name, value in checked.items():
            self._a[name][idx] = value

    def concat(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Append streams: ``arrays`` as :meth:`take` gives, or :meth:`fresh` for new ones."""
        checked = self._checked(arrays, "concat")
        self._a = {name: np.concatenate([v, checked[name]]) for name, v in self._a.items()}

    def fresh(self, n: int) -> dict[str, np.ndarray]:
        """The state of ``n`` streams that have seen nothing (for :meth:`put`/:meth:`concat`)."""
        return self._fresh(_positive_int(n, "n", zero=True))

    def reset(self, rows: Any = None) -> None:
        """Forget everything ``rows`` (default: all) have seen."""
        idx = self._rows(rows)
        for name, value in self._fresh(len(idx)).items():
            self._a[name][idx] = value

    # -- checks ---------------------------------------------------------------------------------
    def _checked(self, arrays: Any, source: str, streams: int | None = None
                 ) -> dict[str, np.ndarray]:
        layout = self._layout()
        if not isinstance(arrays, Mapping) or sorted(arrays) != sorted(layout):
            given = sorted(arrays) if isinstance(arrays, Mapping) else type(arrays).__name__
            raise StateError(f"{source}: live state has {given}; expected the arrays "
                             f"{sorted(layout)} (from LiveScores.state_arrays)")
        first = arrays["seen"]
        n = first.shape[0] if isinstance(first, np.ndarray) and first.ndim == 1 else -1
        if streams is not None and n >= 0 and n != streams:
            raise StateError(f"{source}: live state has {n} streams; expected {streams}")
        out = {}
        for name, (shape, dtype, allowed) in layout.items():
            value = arrays[name]
            full = (n, *shape)
            if not isinstance(value, np.ndarray) or value.dtype != dtype or value.shape != full:
                raise StateError(f"{source}: live state {name!r} is {describe(value)}; "
                                 f"expected {dtype} of shape {full} (streams first)")
            problem = _value_problem(value, allowed)
            if problem:
                raise StateError(f"{source}: live state {name!r} {problem}")
            out[name] = np.array(value, copy=True, order="C")
        if (out["res_count"] > out["count"][:, _MODEL]).any():
            raise StateError(f"{source}: live state 'res_count' exceeds the model's 'count'")
        return out

    def _rows(self, rows: Any) -> np.ndarray:
        n = self.n_streams
        if rows is None:
            return np.arange(n)
        idx = np.asarray(rows)
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or (idx.size and (
                idx.min() < 0 or idx.max() >= n)) or np.unique(idx).size != idx.size:
            raise InputError(f"rows is {describe(rows)}; expected distinct integers in "
                             f"[0, {n}) as a 1-d sequence")
        return idx.astype(np.int64)

    def _initial(self, given: Any) -> np.ndarray:
        t = len(self.targets)
        if given is None:
            return np.full(t, np.inf)
        q = np.asarray(given, dtype=_F64) if _numeric(given) else None
        if q is None or q.shape != (t,) or not np.isfinite(q).all() or (q < 0).any():
            raise InputError(f"initial_quantiles is {describe(given)}; expected {t} finite, "
                             "non-negative half-widths, one per target")
        return q


# -- helpers -------------------------------------------------------------------------------------
def _numeric(value: Any) -> bool:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        return False
    return arr.dtype.kind in "iuf"


def _matrix(value: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    """``value`` as a finite float64 ``shape`` array, or InputError."""
    if not _numeric(value):
        raise InputError(f"{what} is {describe(value)}; expected numbers of shape {shape}")
    arr = np.asarray(value, dtype=_F64)
    if arr.shape != shape:
        raise InputError(f"{what} has shape {arr.shape}; expected {shape} (one row per "
                         "stream updated)")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} contains NaN or infinity; every value must be finite")
    return arr


def _value_problem(value: np.ndarray, allowed: str) -> str:
    """What is wrong with a state array's values under rule ``allowed`` ('' when nothing)."""
    if allowed == "any":
        return ""
    if allowed == "count":
        return "holds a negative count" if (value < 0).any() else ""
    nan = np.isnan(value)
    if "nan" not in allowed and nan.any():
        return "contains NaN"
    v = value[~nan]
    if "inf" not in allowed and not np.isfinite(v).all():
        return "contains infinity"
    if allowed.startswith("nonneg") and (v < 0).any():
        return "holds a negative value"
    return ""


def _positive_int(value: Any, what: str, zero: bool = False) -> int:
    low = 0 if zero else 1
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise InputError(f"{what} is {value!r}; expected an integer >= {low}")
    return int(value)


def _open_unit(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float)) \
            or not 0.0 < value < 1.0:
        raise InputError(f"{what} is {value!r}; expected a number strictly between 0 and 1")
    return float(value)


def _warmup(coverage: float) -> int:
    """The fewest residuals whose conformal ``coverage`` quantile is finite:
    the smallest ``m`` with ``ceil((m + 1) * coverage) <= m``."""
    m = 1
    while math.ceil((m + 1) * coverage) > m:
        m += 1
    return m
