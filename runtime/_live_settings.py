"""Live scores, the method and the state: what :class:`LiveScores` and :class:`LiveStream` share.

The two compute the same numbers from the same state: :mod:`._live_scores` for many streams in
numpy, :mod:`._live_stream` for one in plain floats. This module holds the method (below), the
settings, the state layout and its checks. Import the public names from :mod:`.live`.

:class:`LiveScores` watches ``n`` streams of a model that predicts ``T`` targets ``horizon``
steps ahead; :class:`LiveStream` is the same for one stream in plain Python floats (what
:class:`~rnnstream.runtime.Predictor` uses, a few microseconds a step). Both compute exactly the
same numbers, bit for bit, from the same state arrays. Each update hands over the point that just
arrived (the model's features) and the prediction the model made from it (for ``t + horizon``).
When the time a prediction was for arrives, it is scored against what was observed.

**Live accuracy.** Three forecasters are scored side by side (axis 1 of every score array, in
:data:`FORECASTERS` order): the model; persistence (the target's value observed when the
prediction was made); seasonal naive when a ``season`` ``m`` is given (the value at
``t + horizon - m * ceil(horizon / m)``, the latest point one whole season before the predicted
time). For each: MAE and MSE over all time, and over recent time as an exponentially weighted
mean with half-life ``half_life`` scored points (bias-corrected: the weights are divided by
their sum, so the first values are plain means). Sums run in stream order, one term per scored
point, so they equal a sequential offline sum of the same errors exactly.

A target can only be scored when its value arrives with the points: when it is also a feature
(matched by name). A target that is not a feature is never scored; its accuracy is NaN and its
interval stays at ``initial_quantiles`` (or infinite) forever.

**Intervals: quantile tracking of a scaled score.** A. N. Angelopoulos, E. J. Candès and
R. J. Tibshirani, "Conformal PID Control for Time Series Prediction", NeurIPS 2023,
https://arxiv.org/abs/2307.16895 (section 2, "quantile tracking", the P of PID), applied to the
normalised score ``log(|residual| / s_t)`` (the locally weighted score of J. Lei, M. G'Sell,
A. Rinaldo, R. J. Tibshirani and L. Wasserman, "Distribution-Free Predictive Inference for
Regression", JASA 2018, section 5.2), where ``s_t`` is the model's recent MAE. The interval is
``prediction +- q_t`` per stream and target, ``q_t = k_t * s_t``; each time one is scored,

    log k_{t+1} = log k_t + lr * (err_t - alpha),      err_t = 1 if the value fell outside
    s_t         = (ewa_t + s_0) / (eww_t + p_0)       the recent MAE with a prior (below)
    q_{t+1}     = (q_t * exp(lr * (err_t - alpha))) * min(s_{t+1} / s_t, RATIO_MAX)
    q_{t+1}     = max(q_{t+1}, FLOOR * recent MAE)     (FLOOR = 0.01, RATIO_MAX = 1e6)

with ``alpha = 1 - coverage``: a miss widens the interval by the factor ``exp(lr * (1 -
alpha))``, a hit narrows it by ``exp(-lr * alpha)``, and the width follows the scale of the
recent errors as it moves. ``ewa_t`` and ``eww_t`` are the exponentially weighted sums of the
model's ``|residual|`` and of the weights (half-life ``half_life``, the recent MAE of the live
accuracy); ``s_0`` is the starting scale (``initial_scales``; rnnstream models store the median
validation ``|residual|``, the 0.5 level of their calibration) with the weight of one point,
``p_0 = 1``. Without a starting scale ``p_0 = 0`` and the rescaling waits until the stream has
scored more than :attr:`LiveScores.warmup` points (a scale from one or two errors would swing
the width by any factor); while ``s_t < SMALLEST_SCALE`` (1e-200: errors of exactly 0, or next
to nothing) nothing is rescaled. ``RATIO_MAX`` only guards the
arithmetic (a scale cannot grow a millionfold in one point unless it was next to nothing: a
first error 2 million times the starting scale), so that a finite width stays finite.

Since ``|e| <= q`` exactly when ``log(|e| / s) <= log k``, this is the paper's quantile
tracking with a fixed step ``lr`` on the log of the scaled score, and its Proposition 1 bounds
the long-run miss rate of any sequence of scores in an interval of length ``B``: ``|mean(err) -
alpha| <= (B + lr) / (lr * T)``, under any drift, no exchangeability assumed. On the log scale
the step needs no unit (a price near 5,000 and a sensor near 0.01 use the same ``lr``). The
scale is what holds coverage on short series whose errors grow after the split (US inflation
into 2008: the held-out errors are about 3x the validation's, and quantile tracking of the
residual alone, 0.2 to 0.4, could not widen fast enough in 41 points: 63 % at 0.9; scaled, 83 %
at 0.9 on ``bench/quality.py``). Two things sit outside the proposition: the floor at 1% of the
recent MAE (it keeps a stream of exact predictions from shrinking its width to nothing, from
which it could only grow back slowly), and the feedback of a ``horizon``-step model, which comes
``horizon`` steps late. The tests measure the coverage (``tests/runtime/test_live.py``; real
series in ``bench/quality.py``). The two factors come from :func:`exp_series`, a fixed series
in basic arithmetic, and the rest is one addition, division or multiplication at a time, so
every implementation computes the same bits. This is O(1) state and work per stream and target
(ACI, Gibbs & Candès 2021, which 0.2.0 used, needs a window of residuals and its quantile every
step: 650 us a 1,024-stream update, against about 41 us now and 34 us before the scale, and it
recovered from shifts 2-6x slower).
Residuals of a ``horizon``-step model are ``horizon``-step residuals, and ``err_t`` arrives
``horizon`` steps after the interval was issued: the update is applied with that delay.

**Start.** ``initial_quantiles`` (one half-width per target; rnnstream models store the
validation residual quantiles in their contract, :func:`initial_half_widths`) make intervals
usable from the first point. Without them an interval is infinite until the stream has scored
:attr:`LiveScores.warmup` residuals (9 at 0.9, 19 at 0.95), then starts at the largest of them,
which is exactly the split-conformal quantile of those residuals at ``coverage`` (the
``ceil((m + 1) * coverage)``-th smallest of ``m``), and tracks from there.

Defaults, and why (``tests/runtime/test_live.py`` measures them, 64 seeded streams; the real
series in ``bench/quality.py``):

* ``lr = 0.2``: the 25 benchmark series with at least 20 held-out points hold 0.8, 0.9 and 0.95
  within two binomial standard errors on all but one (pbs, whose held-out errors are exactly 0
  on 37 of 41 points: any interval around the prediction holds 90 %); at 0.1 the US series miss
  by one point in 41. After a 3-sigma level shift or a tripled noise level, coverage of every
  50-step block from 100 steps on is within 3 points of the target; the stationary width is
  1.7 / 2.8 / 3.6% above the exact Gaussian interval at 0.8 / 0.9 / 0.95 (0.7 / 1.1 / 1.6% with
  the residual alone at 0.1, the method of 0.3).
* ``half_life = 100`` scored points for the recent accuracy, the scale and the floor.

**State.** Everything is plain arrays with the stream as axis 0 (:meth:`LiveScores.state_arrays`,
:meth:`~LiveScores.load_arrays`, :meth:`~LiveScores.take`, :meth:`~LiveScores.put`,
:meth:`~LiveScores.concat`; :data:`STATE_ARRAYS` lists them), so a pool keeps its streams' rows
next to its model states and a snapshot, the Spark state store or JavaScript can carry them.
A state that does not fit raises :class:`~rnnstream.runtime.errors.StateError`; a bad point or
prediction raises :class:`~rnnstream.runtime.errors.InputError` and changes nothing.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._points import describe
from .errors import InputError, StateError

FORECASTERS = ("model", "persistence", "seasonal")
# axis 1 of the "acc" state array: per forecaster and target, in this order
ACC = ("count", "abs_sum", "sq_sum", "ew_weight", "ew_abs", "ew_sq")
STATE_ARRAYS = ("seen", "pending", "pending_width", "history", "acc", "q", "peak", "cover")
_MODEL, _PERSISTENCE, _SEASONAL = range(3)
_COUNT, _ABS, _SQ, _EWW, _EWA, _EWS = range(6)
_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
SNAPSHOT_PREFIX = "live."  # snapshot entries of the live scores: live.<array name>
_ACI_ARRAYS = {"alpha", "residuals", "res_count", "pending_own"}  # 0.2.0's live scores
_LIMIT = 1e100  # largest |value| LiveScores takes (errors squared and summed stay finite)
DEFAULTS = {"lr": 0.2, "half_life": 100.0}
FLOOR = 0.01  # the half-width never falls below this share of the recent model MAE
RATIO_MAX = 1e6  # the most the width follows its scale in one point (keeps it finite)
# the width follows its scale only from a scale this large (s_{t+1} / s_t then stays finite:
# errors are at most 2e100), and a starting scale below it is taken as 0
SMALLEST_SCALE = 1e-200


def exp_series(x: float) -> float:
    """``exp(x)`` for ``|x| <= 1`` from its series in basic arithmetic only (32 terms, error
    below 1e-16 relative), so that every implementation (Python, JavaScript, ...) gets the same
    bits; libm's ``exp`` and JavaScript's ``Math.exp`` differ in the last bit for about 4% of
    the factors used here."""
    total, term = 1.0, 1.0
    for k in range(1, 33):
        term = term * x / k
        total = total + term
    return total


class _Settings:
    """What LiveScores and LiveStream share: names, settings and the state layout."""

    def __init__(self, features: Sequence[str], targets: Sequence[str], *, horizon: int = 1,
                 season: int | None = None, coverage: float = 0.9,
                 initial_quantiles: Sequence[float] | np.ndarray | None = None,
                 lr: float = DEFAULTS["lr"], half_life: float = DEFAULTS["half_life"],
                 initial_scales: Sequence[float] | np.ndarray | None = None) -> None:
        self.features = list(features)
        self.targets = list(targets)
        self.horizon = _positive_int(horizon, "horizon")
        self.season = None if season is None else _positive_int(season, "season")
        self.coverage = _open_unit(coverage, "coverage")
        self.alpha = 1.0 - self.coverage
        self.lr = _positive_number(lr, "lr")
        self.half_life = _positive_number(half_life, "half_life")
        self.decay = 0.5 ** (1.0 / self.half_life)
        # log q moves by lr * (err_t - alpha): q is multiplied by these (module docstring)
        self._up = exp_series(self.lr * (1.0 - self.alpha))
        self._down = exp_series(self.lr * (0.0 - self.alpha))
        index = {name: i for i, name in enumerate(self.features)}
        # which feature carries each target; -1: not a feature, never scored
        self.source = np.array([index.get(t, -1) for t in self.targets], np.int64)
        self.initial = self._initial(initial_quantiles)
        # the scale's prior (module docstring): s_0 where given (weight p_0 = 1), else 0 and 0
        scales = self._initial(initial_scales, "initial_scales", "scales")
        known = np.isfinite(scales)
        # a scale below SMALLEST_SCALE is taken as 0: the scale it starts would round to 0
        self.scale0 = np.where(known & (scales >= SMALLEST_SCALE), scales, 0.0)
        self.prior = known.astype(_F64)
        self.warmup = _warmup(self.coverage)
        # every interval starts finite (no warm-up start needed)
        self._always_started = bool(np.isfinite(self.initial).all())
        self._scored_forecasters = len(FORECASTERS) if self.season else 2
        n_f = len(self.features)
        self._identity = self.source.tolist() == list(range(n_f))
        # seasonal naive for t + h is the value at lag m*ceil(h/m) - h from t, in [0, m)
        self.lag = 0 if self.season is None else (
            self.season * -(-self.horizon // self.season) - self.horizon)
        # the mask-free path of LiveScores: every target a feature; it applies once every
        # stream has seen horizon + lag points and every interval due is finite (always, when
        # they all start finite; else once every stream has started its intervals)
        self._steady_possible = bool((self.source >= 0).all())
        self._steady_after = self.horizon + self.lag

    def from_snapshot(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                      source: str, n: int = 1) -> dict[str, np.ndarray]:
        """The live arrays of a snapshot (``live.<name>`` entries, see
        :func:`snapshot_entries`; not yet checked), or a fresh start for ``n`` streams when it
        holds none (saved without coverage), was saved by 0.2.0 (whose window-based intervals
        this release replaced) or with other settings (``meta["live"]``); the last two warn."""
        given = {k[len(SNAPSHOT_PREFIX):]: v for k, v in arrays.items()
                 if k.startswith(SNAPSHOT_PREFIX)}
        saved = meta.get("live")
        if given and _ACI_ARRAYS & set(given):
            warnings.warn(f"{source}: the live scores were saved by rnnstream 0.2.0, whose "
                          "intervals this release computes differently; they start afresh (the "
                          "model state continues)", stacklevel=3)
            given = {}
        elif given and isinstance(saved, dict) and saved != self.settings():
            warnings.warn(f"{source}: the live scores were saved with {saved}, and these are "
                          f"{self.settings()}; they start afresh (the model state continues)",
                          stacklevel=3)
            given = {}
        return given or self.fresh(n)

    def settings(self) -> dict[str, Any]:
        """What the state arrays mean (saved with snapshots; a mismatch starts afresh)."""
        return {"coverage": self.coverage, "lr": self.lr, "half_life": self.half_life,
                "season": self.season, "horizon": self.horizon,
                # the scale's prior acts on every step (None: none, for that target)
                "scales": [float(v) if p else None for v, p in zip(
                    self.scale0.tolist(), self.prior.tolist(), strict=True)]}

    def _actual(self, xt: np.ndarray) -> np.ndarray:
        """The targets' observed values ``[T, n]`` from the points ``xt`` ``[F, n]`` (NaN for a
        target that is not a feature)."""
        if self._identity:
            return xt
        src = self.source
        if (src >= 0).all():
            return xt[src]
        return np.where((src >= 0)[:, None], xt[src], np.nan)

    def _layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype, str]]:
        """State name -> (shape after the stream axis, dtype, what values are allowed)."""
        t, h, f = len(self.targets), self.horizon, len(FORECASTERS)
        return {
            "seen": ((), _I64, "count"),                      # points observed
            "pending": ((h, f, t), _F64, "finite|nan"),       # forecasts for t+h, slot t % h
            "pending_width": ((h, t), _F64, "nonneg|inf"),    # half-width issued with them
            "history": ((self.season or 0, t), _F64, "finite|nan"),  # last m targets, t % m
            "acc": ((len(ACC), f, t), _F64, "nonneg"),        # ACC sums per forecaster
            "q": ((t,), _F64, "nonneg|inf"),                  # tracked half-width
            "peak": ((t,), _F64, "nonneg"),                   # largest |residual| so far
            "cover": ((2, t), _F64, "nonneg"),                # intervals scored, of which hit
        }

    def _fresh(self, n: int) -> dict[str, np.ndarray]:
        a = {name: np.zeros((n, *shape), dtype) for name, (shape, dtype, _) in
             self._layout().items()}
        a["pending"][:] = np.nan
        a["pending_width"][:] = np.inf
        a["history"][:] = np.nan
        a["q"][:] = self.initial
        return a

    def fresh(self, n: int) -> dict[str, np.ndarray]:
        """The state of ``n`` streams that have seen nothing (for put/concat/load_arrays)."""
        return self._fresh(_positive_int(n, "n", zero=True))

    def _initial(self, given: Any, what: str = "initial_quantiles",
                 unit: str = "half-widths") -> np.ndarray:
        t = len(self.targets)
        if given is None:
            return np.full(t, np.inf)
        q = np.asarray(given, dtype=_F64) if _numeric(given) else None
        if q is None or q.shape != (t,) or np.isnan(q).any() or (q < 0).any():
            raise InputError(f"{what} is {describe(given)}; expected {t} "
                             f"non-negative {unit}, one per target (inf: none)")
        return q + 0.0  # -0.0 -> 0.0

    def check_arrays(self, arrays: Any, source: str, streams: int | None = None
                     ) -> dict[str, np.ndarray]:
        """Validated copies of state ``arrays`` (of ``streams`` streams when given), or
        StateError saying what does not fit."""
        return self._checked(arrays, source, streams)

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
                                 f"expected {dtype} of shape {full} (streams first, settings "
                                 "as when it was saved)")
            problem = _value_problem(value, allowed)
            if problem:
                raise StateError(f"{source}: live state {name!r} {problem}")
            # + 0.0 turns -0.0 into 0.0 (numpy's maximum and Python's max differ on it)
            out[name] = (np.array(value, copy=True, order="C") + 0.0 if dtype == _F64
                         else np.array(value, copy=True, order="C"))
        if self._scored_forecasters < len(FORECASTERS) and out["acc"][:, :, _SEASONAL].any():
            raise StateError(f"{source}: live state 'acc' holds seasonal-naive sums, but these "
                             "live scores have no season (season= as when it was saved)")
        return out


def snapshot_entries(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Live state arrays as snapshot entries (``live.<name>``), beside the model's states."""
    return {SNAPSHOT_PREFIX + k: v for k, v in arrays.items()}


# -- helpers -------------------------------------------------------------------------------------
def _scores(acc: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN: nothing scored
        return {
            "mae": acc[:, _ABS] / acc[:, _COUNT],
            "mse": acc[:, _SQ] / acc[:, _COUNT],
            "recent_mae": acc[:, _EWA] / acc[:, _EWW],
            "recent_mse": acc[:, _EWS] / acc[:, _EWW],
            "count": acc[:, _COUNT].astype(_I64),
        }


def _realised(cover: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return cover[:, 1] / cover[:, 0], cover[:, 0].astype(_I64)


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
    if arr.size and np.abs(arr).max() > _LIMIT:
        raise InputError(f"{what} holds a value beyond +-{_LIMIT:g}; scale the series (squared "
                         "errors must stay finite)")
    return arr


def _value_problem(value: np.ndarray, allowed: str) -> str:
    """What is wrong with a state array's values under rule ``allowed`` ('' when nothing)."""
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


# The checks of single settings are LiveConfig's (live_config.py, the one place they are
# written; numpy's bool is refused there too). live_config imports this module, so it is looked
# up on first use and kept (an import statement per call would cost ~1 µs).
@functools.cache
def _settings_checks() -> Any:
    from . import live_config

    return live_config


def _positive_int(value: Any, what: str, zero: bool = False) -> int:
    return _settings_checks().check_count(value, what, 0 if zero else 1)


def _positive_number(value: Any, what: str) -> float:
    return _settings_checks().check_positive(value, what)


def _open_unit(value: Any, what: str) -> float:
    return _settings_checks().check_fraction(value, what)


def _warmup(coverage: float) -> int:
    """The fewest residuals whose conformal ``coverage`` quantile is finite:
    the smallest ``m`` with ``ceil((m + 1) * coverage) <= m``."""
    m = 1
    while math.ceil((m + 1) * coverage) > m:
        m += 1
    return m
