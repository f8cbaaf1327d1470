"""Live accuracy and calibrated prediction intervals, per stream (numpy only).

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

**Intervals: quantile tracking of log residuals.** A. N. Angelopoulos, E. J. Candès and
R. J. Tibshirani, "Conformal PID Control for Time Series Prediction", NeurIPS 2023,
https://arxiv.org/abs/2307.16895 (section 2, "quantile tracking", the P of PID), applied to the
score ``log |residual|``. The interval is ``prediction +- q_t`` per stream and target; each
time one is scored,

    log q_{t+1} = log q_t + lr * (err_t - alpha),      err_t = 1 if the value fell outside
    q_{t+1}     = max(q_{t+1}, FLOOR * recent MAE)     (FLOOR = 0.01)

with ``alpha = 1 - coverage``: a miss widens the interval by the factor ``exp(lr * (1 -
alpha))``, a hit narrows it by ``exp(-lr * alpha)``. Since ``|e| <= q`` exactly when ``log|e| <=
log q``, this is the paper's quantile tracking with a fixed step ``lr`` on the log score, and its
Proposition 1 bounds the long-run miss rate of any sequence of scores in an interval of length
``B``: ``|mean(err) - alpha| <= (B + lr) / (lr * T)``, under any drift, no exchangeability
assumed. On the log scale the step needs no unit (a price near 5,000 and a sensor near 0.01 use
the same ``lr``), and after a transient of large errors (a cold start from the zero state) the
width shrinks geometrically, 1% a hit at coverage 0.9, instead of by a fixed amount. Two things
sit outside the proposition: the floor at 1% of the recent MAE (it keeps a stream of exact
predictions from shrinking its width to nothing, from which it could only grow back slowly),
and the feedback of a ``horizon``-step model, which comes ``horizon`` steps late. The tests
measure the coverage (``tests/runtime/test_live.py``; real series in ``bench/quality.py``).
The two factors come from :func:`exp_series`, a fixed series in basic arithmetic, so every
implementation computes the same bits. This is O(1) state and work per stream and target (ACI,
Gibbs & Candès 2021, which 0.2.0 used, needs a window of residuals and its quantile every step:
about 28x the time in a 1,024-stream pool, 650 against 23 us, and it recovered from shifts
2-6x slower).
Residuals of a ``horizon``-step model are ``horizon``-step residuals, and ``err_t`` arrives
``horizon`` steps after the interval was issued: the update is applied with that delay.

**Start.** ``initial_quantiles`` (one half-width per target; rnnstream models store the
validation residual quantiles in their contract, :func:`initial_half_widths`) make intervals
usable from the first point. Without them an interval is infinite until the stream has scored
:attr:`LiveScores.warmup` residuals (9 at 0.9, 19 at 0.95), then starts at the largest of them,
which is exactly the split-conformal quantile of those residuals at ``coverage`` (the
``ceil((m + 1) * coverage)``-th smallest of ``m``), and tracks from there.

Defaults, and why (``tests/runtime/test_live.py`` measures them, 64 seeded streams):

* ``lr = 0.1``: after a 3-sigma level shift or a tripled noise level, coverage of every
  50-step block after the first is within 3 points of the target, while the stationary width
  stays 0.7-1.6% above the exact Gaussian interval (0.05: 0.2-0.8% and 100-150 steps to
  recover; 0.2: 1.5-3.2%).
* ``half_life = 100`` scored points for the recent accuracy (and the floor).

**State.** Everything is plain arrays with the stream as axis 0 (:meth:`LiveScores.state_arrays`,
:meth:`~LiveScores.load_arrays`, :meth:`~LiveScores.take`, :meth:`~LiveScores.put`,
:meth:`~LiveScores.concat`; :data:`STATE_ARRAYS` lists them), so a pool keeps its streams' rows
next to its model states and a snapshot, the Spark state store or JavaScript can carry them.
A state that does not fit raises :class:`~rnnstream.runtime.errors.StateError`; a bad point or
prediction raises :class:`~rnnstream.runtime.errors.InputError` and changes nothing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._points import describe
from .contract import ModelContract
from .errors import ContractError, InputError, StateError

__all__ = ["FORECASTERS", "STATE_ARRAYS", "LiveScores", "LiveStream", "initial_half_widths",
           "open_live", "snapshot_entries", "step_ratios"]

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
DEFAULTS = {"lr": 0.1, "half_life": 100.0}
FLOOR = 0.01  # the half-width never falls below this share of the recent model MAE


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
                 lr: float = DEFAULTS["lr"], half_life: float = DEFAULTS["half_life"]) -> None:
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
                "season": self.season, "horizon": self.horizon}

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

    def _initial(self, given: Any) -> np.ndarray:
        t = len(self.targets)
        if given is None:
            return np.full(t, np.inf)
        q = np.asarray(given, dtype=_F64) if _numeric(given) else None
        if q is None or q.shape != (t,) or np.isnan(q).any() or (q < 0).any():
            raise InputError(f"initial_quantiles is {describe(given)}; expected {t} "
                             "non-negative half-widths, one per target (inf: none)")
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


class LiveScores(_Settings):
    """Live accuracy and prediction intervals for ``n_streams`` streams (module docstring).

    ``features`` and ``targets`` are the model's names, in input and output order; ``horizon``
    is how far ahead a prediction is; ``season`` (optional) the seasonal period in points;
    ``coverage`` the intervals' asked coverage; ``initial_quantiles`` their starting half-widths
    (one per target); ``lr`` and ``half_life`` as in the module docstring.

    Inside, every array keeps the stream as its LAST axis (``[..., n]``), so each numpy
    operation runs one long contiguous loop over the streams: with the stream first and one
    target, the innermost loops would be one element long and a 1,024-stream update would cost
    several times more. :meth:`state_arrays` and friends hand out the public, streams-first
    layout.
    """

    def __init__(self, n_streams: int, features: Sequence[str], targets: Sequence[str],
                 **settings: Any) -> None:
        super().__init__(features, targets, **settings)
        self._a = self._inward(self._fresh(_positive_int(n_streams, "n_streams", zero=True)))
        self._scratch: dict[tuple[int, ...], np.ndarray] = {}
        self._ones: set[tuple[int, ...]] = set()  # scratch shapes whose count row is all 1.0
        self._block: tuple[int, int, dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
        # the constants as 0-d arrays: numpy converts a Python float on every call (0.4-0.7 us
        # each, measured); the same float64 values, so the same bits as LiveStream's floats
        self._k = {name: np.array(v, _F64) for name, v in (
            ("one", 1.0), ("decay", self.decay), ("floor", FLOOR), ("down", self._down),
            ("up", self._up))}

    @property
    def n_streams(self) -> int:
        return int(self._a["seen"].shape[-1])

    # -- streaming ------------------------------------------------------------------------------
    def update(self, points: Any, predictions: Any, rows: Any = None) -> None:
        """Score what is due and record the new predictions, for ``rows`` (default: all).

        ``points`` is ``[k, F]`` (the points that just arrived, the model's features) and
        ``predictions`` ``[k, T]`` (what the model predicted from them, for ``t + horizon``),
        one row per entry of ``rows`` (indices, or a slice: a block updated in place). Refused
        input raises InputError and changes nothing.
        """
        if isinstance(rows, slice) and rows.step in (None, 1) and rows.start is not None \
                and rows.stop is not None and 0 <= rows.start <= rows.stop <= self.n_streams:
            k = rows.stop - rows.start
            x = _matrix(points, (k, len(self.features)), "points")
            y = _matrix(predictions, (k, len(self.targets)), "predictions")
            self._advance({name: v[..., rows] for name, v in self._a.items()}, x, y)
            return
        idx = self._rows(rows)
        k = self.n_streams if idx is None else len(idx)
        x = _matrix(points, (k, len(self.features)), "points")
        y = _matrix(predictions, (k, len(self.targets)), "predictions")
        if idx is None:  # all streams: the arrays themselves (nothing below refuses)
            self._advance(self._a, x, y)
        else:
            self.advance_rows(idx, x, y)

    def advance_rows(self, rows: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """:meth:`advance_block` for distinct row indices (their state gathered, advanced and
        put back), without the checks: for a caller (the pool) that knows them distinct and in
        range, and ``x``, ``y`` as :meth:`advance_block` needs them."""
        a = {name: v[..., rows] for name, v in self._a.items()}
        self._advance(a, x, y)
        for name, value in a.items():
            self._a[name][..., rows] = value

    def advance_block(self, rows: slice, x: np.ndarray, y: np.ndarray) -> None:
        """:meth:`update` for a block of rows without the input checks: for a caller (the
        pool) whose ``x`` ``[k, F]`` and ``y`` ``[k, T]`` are already known finite and of the
        right shape. Anything else gives wrong numbers, not an error."""
        block = self._block
        if block is None or block[0] != rows.start or block[1] != rows.stop \
                or block[2] is not self._a:  # the views of this block of rows, kept
            views = {name: v[..., rows] for name, v in self._a.items()}
            block = self._block = (rows.start, rows.stop, self._a, views)
        self._advance(block[3], x, y)

    def _advance(self, a: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> None:
        """One step for the streams of ``a`` (stream-last arrays, updated in place)."""
        n, h = len(x), self.horizon
        xt = x.T
        actual = self._actual(xt)
        seen = a["seen"]
        pending, widths = a["pending"], a["pending_width"]  # [h, 3, T, n], [h, T, n]
        if h == 1:
            due, issued = pending[0], widths[0]
        else:
            at = (seen % h)[None, None, None, :]
            due = np.take_along_axis(pending, at, axis=0)[0]
            issued = np.take_along_axis(widths, at[0], axis=0)[0]
        # score the forecasts made horizon points ago (NaN: none, or not scorable; values are
        # at most 1e100 in size, so a finite error's square and sums stay finite). Without a
        # season the seasonal forecaster is never scored: its rows are left out (f = 2).
        f = self._scored_forecasters
        due = due[:f]
        q, peak, cover = a["q"], a["peak"], a["cover"]
        # [6, f, T, n] (the scored forecasters, _inward): 3 sums over all time, then their 3
        # decayed versions; contiguous, as is each half
        acc = a["acc"]
        both = acc.reshape(2, 3, *acc.shape[1:])  # a view: [2, 3, f, T, n]
        # count, |e|, e^2 per forecaster, [3 metrics, f, T, n]: scratch, kept between calls
        s = self._scratch.get(due.shape)
        if s is None:
            if len(self._scratch) > 8:
                self._scratch.clear()
                self._ones.clear()
            s = self._scratch[due.shape] = np.empty((3, *due.shape))
        err = np.subtract(actual[None], due, out=s[2])
        k = self._k
        if self._steady_possible and seen.min(initial=self._steady_after) >= self._steady_after \
                and (self._always_started or (issued.max(initial=0.0) < np.inf
                                              and q.max(initial=0.0) < np.inf)):
            # every stream has a forecast of every kind due and a finite interval issued (the
            # targets are features; the intervals started finite, or have all started): nothing
            # is NaN, every point is scored, and q is finite (it was when the interval due was
            # issued, and only finite factors and floors have touched it since), so the
            # warm-up start below has nothing to do. The same arithmetic as below, without the
            # masks.
            if due.shape not in self._ones:
                s[0] = 1.0
                self._ones.add(due.shape)
            np.abs(err, out=s[1])
            np.multiply(err, err, out=s[2])
            np.multiply(acc[3:], k["decay"], out=acc[3:])
            both += s
            r = s[1, _MODEL]
            np.maximum(peak, r, out=peak)
            floor = np.divide(acc[_EWA, _MODEL], acc[_EWW, _MODEL])  # the recent MAE ...
            np.multiply(floor, k["floor"], out=floor)  # ... times FLOOR
            hit = r <= issued
            np.add(cover[0], k["one"], out=cover[0])
            cover[1] += hit
            q *= np.where(hit, k["down"], k["up"])
            np.maximum(q, floor, out=q)
        else:
            ok = np.isfinite(err)
            s[0] = ok
            self._ones.discard(due.shape)
            np.copyto(err, 0.0, where=~ok)
            np.abs(err, out=s[1])
            np.multiply(err, err, out=s[2])
            acc[3:] *= np.where(ok, self.decay, 1.0)
            both += s  # the plain and the decayed sums, in one pass
            # track the quantile of the model's residuals
            scored = ok[_MODEL]
            r = s[1, _MODEL]
            np.maximum(peak, r, out=peak)
            # the weight is >= 1 once a point was scored (and only scored rows use the scale),
            # so dividing by max(weight, 1) is the plain division where it matters, no 0/0
            scale = acc[_EWA, _MODEL] / np.maximum(acc[_EWW, _MODEL], 1.0)
            tracked = scored & (issued < np.inf)
            hit = r <= issued
            cover[0] += tracked
            cover[1] += tracked & hit
            moved = np.maximum(q * np.where(hit, self._down, self._up), scale * FLOOR)
            np.copyto(q, moved, where=tracked)
            if not self._always_started:
                np.copyto(q, peak, where=scored & (q == np.inf)
                          & (acc[_COUNT, _MODEL] >= self.warmup))
        # record this point's forecasts for t + horizon, and the interval issued with them
        new = pending[0] if h == 1 else np.empty((len(FORECASTERS), len(self.targets), n))
        new[_MODEL] = y.T
        new[_PERSISTENCE] = actual
        if self.season is None:
            if h != 1:  # (with h == 1 the slot's seasonal row is NaN from the start, for good)
                new[_SEASONAL] = np.nan
        else:
            m, hist = self.season, a["history"]  # [m, T, n]
            np.put_along_axis(hist, (seen % m)[None, None, :], actual[None], axis=0)
            back = np.take_along_axis(hist, ((seen - self.lag) % m)[None, None, :], axis=0)[0]
            new[_SEASONAL] = np.where(seen >= self.lag, back, np.nan)
        if h == 1:
            widths[0] = q
        else:
            np.put_along_axis(pending, at, new[None], axis=0)
            np.put_along_axis(widths, at[0], q[None], axis=0)
        seen += 1

    # -- reading --------------------------------------------------------------------------------
    def interval(self, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)``, each ``[k, T]``: the interval around each row's latest
        prediction at ``coverage``; NaN before a stream's first prediction, +-inf while it
        has neither enough residuals nor ``initial_quantiles``."""
        idx = self._rows(rows)
        pick = (lambda v: v) if idx is None else (lambda v: v[..., idx])
        seen = pick(self._a["seen"])
        pending, widths = self._a["pending"][:, _MODEL], self._a["pending_width"]
        if self.horizon == 1:  # one slot: no gather over the slots
            y, w = pick(pending[0]), pick(widths[0])
        else:
            at = ((seen - 1) % self.horizon)[None, None, :]
            y = np.take_along_axis(pick(pending), at, axis=0)[0]
            w = np.take_along_axis(pick(widths), at, axis=0)[0]
        w = np.where(seen > 0, w, np.nan)
        return (y - w).T.copy(), (y + w).T.copy()

    def scores(self, rows: Any = None) -> dict[str, np.ndarray]:
        """Accuracy so far, each ``[k, 3, T]`` (axis 1 in :data:`FORECASTERS` order): ``mae``,
        ``mse`` over all scored points, ``recent_mae``, ``recent_mse`` (exponentially weighted,
        half-life ``half_life`` points), ``count`` (points scored); NaN where none was."""
        return _scores(self._public("acc", rows))

    def coverage_so_far(self, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(realised, scored)``, each ``[k, T]``: the share of scored intervals that held the
        value, and how many were scored (NaN share while none was)."""
        return _realised(self._public("cover", rows))

    def half_width(self, rows: Any = None) -> np.ndarray:
        """The half-width the next interval will have, ``[k, T]`` (inf: none yet)."""
        return self._public("q", rows)

    def _public(self, name: str, rows: Any) -> np.ndarray:
        """State array ``name`` of ``rows``, streams first (a copy)."""
        idx = self._rows(rows)
        v = self._a[name] if idx is None else self._a[name][..., idx]
        return self._outward({name: v})[name]

    def _inward(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Streams-first arrays -> contiguous streams-last copies (the inside layout). Inside,
        ``acc`` keeps only the forecasters that are scored (``[6, f, T, n]``; without a season
        the seasonal sums are always zero): then every update of the sums is one contiguous
        loop (a third of the time of the same work on a strided view, measured)."""
        f = self._scored_forecasters
        return {k: np.ascontiguousarray(np.moveaxis(v, 0, -1)[:, :f] if k == "acc"
                                        else np.moveaxis(v, 0, -1)) for k, v in arrays.items()}

    def _outward(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Streams-last arrays -> contiguous streams-first copies (the public layout)."""
        out = {}
        for k, v in arrays.items():
            if k == "acc" and v.shape[1] < len(FORECASTERS):  # the seasonal sums: zeros
                pad = np.zeros((v.shape[0], len(FORECASTERS) - v.shape[1], *v.shape[2:]))
                v = np.concatenate([v, pad], axis=1)
            out[k] = np.ascontiguousarray(np.moveaxis(v, -1, 0))
        return out

    # -- state ----------------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Copies of the whole state, name -> ``[n_streams, ...]`` array."""
        return self._outward(self._a)

    def load_arrays(self, arrays: Mapping[str, np.ndarray], source: str = "load_arrays",
                    streams: int | None = None) -> None:
        """Continue from ``arrays`` (from :meth:`state_arrays` of a LiveScores with the same
        settings); the number of streams is theirs (it must be ``streams`` when given). A
        misfit raises StateError and changes nothing."""
        checked = self._checked(arrays, source, streams)
        self._note_infinite(checked)
        self._a = self._inward(checked)

    def _note_infinite(self, arrays: Mapping[str, np.ndarray]) -> None:
        """A state from elsewhere (other settings) may hold infinite half-widths even though
        this instance's start is finite: then check the widths due before the mask-free path."""
        if np.isinf(arrays["q"]).any() or np.isinf(arrays["pending_width"]).any():
            self._always_started = False

    def take(self, rows: Any) -> dict[str, np.ndarray]:
        """Copies of ``rows``' state, streams first (for :meth:`put` or :meth:`concat`)."""
        idx = self._rows(rows)
        return self._outward(self._a if idx is None
                             else {k: v[..., idx] for k, v in self._a.items()})

    def put(self, rows: Any, arrays: Mapping[str, np.ndarray]) -> None:
        """Overwrite ``rows``' state with ``arrays`` (one row each, as :meth:`take` gives)."""
        idx = self._rows(rows)
        plain = self._checked(arrays, "put", streams=self.n_streams if idx is None else len(idx))
        self._note_infinite(plain)
        checked = self._inward(plain)
        for name, value in checked.items():
            self._a[name][..., slice(None) if idx is None else idx] = value

    def concat(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Append streams: ``arrays`` as :meth:`take` gives, or :meth:`fresh` for new ones."""
        plain = self._checked(arrays, "concat")
        self._note_infinite(plain)
        checked = self._inward(plain)
        self._a = {name: np.concatenate([v, checked[name]], axis=-1)
                   for name, v in self._a.items()}

    def move(self, src: int, dst: int) -> None:
        """Copy stream ``src``'s state over stream ``dst`` (a pool filling a removed row)."""
        for v in self._a.values():
            v[..., dst] = v[..., src]

    def resize(self, n: int) -> None:
        """Keep the first ``n`` streams (dropping the rest) or append fresh ones up to ``n``."""
        n = _positive_int(n, "n", zero=True)
        if n <= self.n_streams:
            self._a = {name: np.ascontiguousarray(v[..., :n]) for name, v in self._a.items()}
        else:
            self.concat(self._fresh(n - self.n_streams))

    def reset(self, rows: Any = None) -> None:
        """Forget everything ``rows`` (default: all) have seen (a slice: a block of rows)."""
        if isinstance(rows, slice):
            sel: Any = rows
            n = len(range(*rows.indices(self.n_streams)))
        else:
            idx = self._rows(rows)
            sel = slice(None) if idx is None else idx
            n = self.n_streams if idx is None else len(idx)
        for name, value in self._inward(self._fresh(n)).items():
            self._a[name][..., sel] = value

    def _rows(self, rows: Any) -> np.ndarray | None:
        """None for every stream in order; else distinct row indices."""
        n = self.n_streams
        if rows is None:
            return None
        if isinstance(rows, slice):
            span = rows.indices(n)
            return None if span == (0, n, 1) else np.arange(*span)
        idx = np.asarray(rows)
        if idx.size == 0 and idx.ndim == 1:
            return np.empty(0, np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or (idx.size and (
                idx.min() < 0 or idx.max() >= n)) or np.unique(idx).size != idx.size:
            raise InputError(f"rows is {describe(rows)}; expected distinct integers in "
                             f"[0, {n}) as a 1-d sequence")
        return idx.astype(np.int64)


class LiveStream(_Settings):
    """:class:`LiveScores` for one stream in plain Python floats: the same numbers, bit for bit,
    and the same state arrays (``[1, ...]``), at a few microseconds a step."""

    def __init__(self, features: Sequence[str], targets: Sequence[str], **settings: Any) -> None:
        super().__init__(features, targets, **settings)
        self._src = [int(i) for i in self.source]
        self._nans = [math.nan] * len(self.targets)
        self._one_order = (*range(1, self._scored_forecasters), _MODEL)  # for update_one
        self._load(self._fresh(1))

    # state as nested lists: pending[slot][forecaster][target], acc[forecaster][metric][target]
    def _load(self, a: Mapping[str, np.ndarray]) -> None:
        self._seen = int(a["seen"][0])
        self._pending = a["pending"][0].tolist()
        self._pw = a["pending_width"][0].tolist()
        self._hist = a["history"][0].tolist()
        self._acc = np.moveaxis(a["acc"][0], 0, 1).tolist()  # [3][6][T]
        self._q = a["q"][0].tolist()
        self._peak = a["peak"][0].tolist()
        self._cover = a["cover"][0].tolist()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The state as :meth:`LiveScores.state_arrays` of one stream gives it."""
        return {
            "seen": np.array([self._seen], _I64),
            "pending": np.array([self._pending], _F64).reshape(1, *self._layout()["pending"][0]),
            "pending_width": np.array([self._pw], _F64),
            "history": np.array([self._hist], _F64).reshape(
                1, *self._layout()["history"][0]),
            "acc": np.moveaxis(np.array(self._acc, _F64), 1, 0)[None].copy(),
            "q": np.array([self._q], _F64),
            "peak": np.array([self._peak], _F64),
            "cover": np.array([self._cover], _F64),
        }

    def load_arrays(self, arrays: Mapping[str, np.ndarray], source: str = "load_arrays") -> None:
        """Continue from one stream's arrays; a misfit raises StateError and changes nothing."""
        self._load(self._checked(arrays, source, streams=1))

    def reset(self) -> None:
        self._load(self._fresh(1))

    @property
    def seen(self) -> int:
        return self._seen

    def update(self, x: Sequence[float], y: Sequence[float]) -> None:
        """Score and record one point ``x`` (F finite floats, the features) and the prediction
        ``y`` (T finite floats) made from it. The caller has checked them (the Predictor has).
        Written for speed (a few microseconds a step, inside ``Predictor.step``): the same
        arithmetic as :meth:`LiveScores._advance`, in the same order."""
        seen = self._seen
        slot = seen % self.horizon
        due, issued = self._pending[slot], self._pw[slot]
        actual = list(x) if self._identity else [x[i] if i >= 0 else math.nan
                                                 for i in self._src]
        decay = self.decay
        acc = self._acc
        for f in range(1, self._scored_forecasters):  # persistence; seasonal with a season
            _add_errors(acc[f], due[f], actual, decay)
        # the model: its scores, and the tracked half-width of its residuals
        errors = _add_errors(acc[_MODEL], due[_MODEL], actual, decay)
        cnt, ewa, eww = acc[_MODEL][_COUNT], acc[_MODEL][_EWA], acc[_MODEL][_EWW]
        q, peak, cover = self._q, self._peak, self._cover
        for j, ae in enumerate(errors):
            if ae is None:  # not scorable
                continue
            if ae > peak[j]:
                peak[j] = ae
            w = issued[j]
            if w < math.inf:
                cover[0][j] += 1.0
                if ae <= w:
                    cover[1][j] += 1.0
                    qj = q[j] * self._down
                else:
                    qj = q[j] * self._up
                floor = (ewa[j] / eww[j]) * FLOOR
                q[j] = qj if qj > floor else floor  # (as np.maximum)
            if q[j] == math.inf and cnt[j] >= self.warmup:
                q[j] = peak[j]
        if self.season is None:
            seasonal = self._nans  # never scored, never changed
        else:
            m = self.season
            self._hist[seen % m] = actual
            seasonal = (list(self._hist[(seen - self.lag) % m]) if seen >= self.lag
                        else self._nans)
        self._pending[slot] = [list(y), actual, seasonal]
        self._pw[slot] = list(q)
        self._seen = seen + 1

    def update_one(self, x: float, y: float) -> None:
        """:meth:`update` of a model with one target, ``x`` the target's value in the point
        that arrived (finite; NaN when the target is not a feature) and ``y`` the prediction
        (finite): the same arithmetic in the
        same order, without the lists and loops over targets (half the time; what
        ``Predictor.step`` uses for one-target models). A differential test holds it equal to
        :meth:`update` bit for bit."""
        seen = self._seen
        slot = seen % self.horizon
        due, issued = self._pending[slot], self._pw[slot][0]
        decay = self.decay
        acc = self._acc
        ae = math.nan
        for f in self._one_order:  # persistence, seasonal with a season, then the model
            err = x - due[f][0]
            if err - err != 0.0:  # not scorable (no forecast yet)
                ae = math.nan
                continue
            cnt, asum, ssum, eww, ewa, ews = acc[f]
            ae = abs(err)
            sq = err * err
            cnt[0] += 1.0
            asum[0] += ae
            ssum[0] += sq
            eww[0] = eww[0] * decay + 1.0
            ewa[0] = ewa[0] * decay + ae
            ews[0] = ews[0] * decay + sq
        q = self._q
        if ae == ae:  # the model's error was scored: track the quantile of its residuals
            cnt, ewa, eww = acc[_MODEL][_COUNT], acc[_MODEL][_EWA], acc[_MODEL][_EWW]
            peak = self._peak
            if ae > peak[0]:
                peak[0] = ae
            if issued < math.inf:
                cover = self._cover
                cover[0][0] += 1.0
                if ae <= issued:
                    cover[1][0] += 1.0
                    qj = q[0] * self._down
                else:
                    qj = q[0] * self._up
                floor = (ewa[0] / eww[0]) * FLOOR
                q[0] = qj if qj > floor else floor  # (as np.maximum)
            if q[0] == math.inf and cnt[0] >= self.warmup:
                q[0] = peak[0]
        if self.season is None:
            seasonal = self._nans  # never scored, never changed
        else:
            m = self.season
            self._hist[seen % m] = [x]
            seasonal = (list(self._hist[(seen - self.lag) % m]) if seen >= self.lag
                        else self._nans)
        self._pending[slot] = [[y], [x], seasonal]
        self._pw[slot] = [q[0]]
        self._seen = seen + 1

    def interval(self) -> tuple[list[float], list[float]]:
        """``(lower, upper)`` around the latest prediction, one value per target."""
        if self._seen == 0:
            nans = [math.nan] * len(self.targets)
            return nans, list(nans)
        slot = (self._seen - 1) % self.horizon
        y, w = self._pending[slot][_MODEL], self._pw[slot]
        return [a - b for a, b in zip(y, w, strict=True)], [a + b for a, b in
                                                              zip(y, w, strict=True)]

    def interval_of_one(self) -> tuple[float, float]:
        """:meth:`interval` of a one-target model, as two floats (the Predictor's fast path)."""
        seen = self._seen
        if seen == 0:
            return math.nan, math.nan
        slot = (seen - 1) % self.horizon
        y, w = self._pending[slot][_MODEL][0], self._pw[slot][0]
        return y - w, y + w

    def half_width(self) -> list[float]:
        return list(self._q)

    def plain_scores(self) -> dict[str, list[Any]]:
        """:meth:`scores` and :meth:`coverage_so_far` as plain Python lists, the same numbers
        bit for bit, without building arrays (for per-row read-outs): ``mae``, ``mse``,
        ``recent_mae``, ``recent_mse``, ``count`` (each ``[3][T]``, forecasters in
        :data:`FORECASTERS` order), ``coverage`` and ``scored`` (``[T]``); NaN where nothing
        was scored."""
        nan = math.nan

        def ratio(a: list[float], b: list[float]) -> list[float]:
            return [x / y if y else nan for x, y in zip(a, b, strict=True)]

        acc = self._acc  # [3][6][T]
        cover = self._cover
        return {
            "mae": [ratio(f[_ABS], f[_COUNT]) for f in acc],
            "mse": [ratio(f[_SQ], f[_COUNT]) for f in acc],
            "recent_mae": [ratio(f[_EWA], f[_EWW]) for f in acc],
            "recent_mse": [ratio(f[_EWS], f[_EWW]) for f in acc],
            "count": [[int(c) for c in f[_COUNT]] for f in acc],
            "coverage": ratio(cover[1], cover[0]),
            "scored": [int(c) for c in cover[0]],
        }

    def coverage_so_far(self) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`LiveScores.coverage_so_far` for one stream (arrays ``[1, T]``)."""
        return _realised(np.array([self._cover], _F64))

    def scores(self) -> dict[str, np.ndarray]:
        """As :meth:`LiveScores.scores` for one stream (arrays ``[1, 3, T]``)."""
        return _scores(np.moveaxis(np.array(self._acc, _F64), 1, 0)[None])


# -- calibration stored in the contract ----------------------------------------------------------
CALIBRATION_LEVELS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)


def conformal_half_widths(abs_residuals: np.ndarray,
                          levels: Sequence[float] = CALIBRATION_LEVELS) -> list[float | None]:
    """Split-conformal half-widths of ``m`` absolute residuals at each level: the
    ``ceil((m + 1) * level)``-th smallest, None (infinite) when that exceeds ``m``."""
    r = np.sort(np.asarray(abs_residuals, _F64)[np.isfinite(abs_residuals)])
    m = r.size
    out: list[float | None] = []
    for c in levels:
        rank = math.ceil((m + 1) * c)
        out.append(float(r[rank - 1]) if 1 <= rank <= m else None)
    return out


def _calibration_table(contract_metrics: Mapping[str, Any], targets: Sequence[str],
                       source: str) -> dict[str, Any] | None:
    cal = contract_metrics.get("calibration") if isinstance(contract_metrics, Mapping) else None
    if cal is None:
        return None
    levels: Any = cal.get("levels") if isinstance(cal, Mapping) else None
    steps: Any = cal.get("half_widths") if isinstance(cal, Mapping) else None
    problem = ""
    if not (isinstance(levels, list) and levels and all(
            isinstance(v, float) and 0 < v < 1 for v in levels) and levels == sorted(levels)):
        problem = f"'levels' is {levels!r}; expected increasing coverages in (0, 1)"
    elif not isinstance(steps, Mapping) or set(steps) != set(targets):
        given = sorted(steps) if isinstance(steps, Mapping) else type(steps).__name__
        problem = f"'half_widths' has targets {given}; the model's are {list(targets)}"
    else:
        for name, rows in steps.items():
            if not (isinstance(rows, list) and rows and all(
                    isinstance(r, list) and len(r) == len(levels) and all(
                        v is None or (isinstance(v, (int, float)) and math.isfinite(v)
                                      and v >= 0) for v in r) for r in rows)):
                problem = (f"'half_widths' of {name!r} is not a list of rows (one per step "
                           f"ahead) of {len(levels)} non-negative numbers or nulls")
                break
    if problem:
        raise ContractError(f"{source}: metrics 'calibration' is malformed: {problem}. It is "
                            "written by training; re-export the model with this release, or "
                            "pass live_options={'initial_quantiles': [...]}")
    return {"levels": levels, "half_widths": steps}


def _at(levels: Sequence[float], row: Sequence[float | None], coverage: float) -> float:
    """A half-width at ``coverage``, linear between the stored levels; inf outside them or
    next to a null (a quantile the residuals could not give)."""
    for i in range(len(levels)):
        if math.isclose(levels[i], coverage, rel_tol=0, abs_tol=1e-12):
            v = row[i]
            return math.inf if v is None else float(v)
        if i and levels[i - 1] < coverage < levels[i]:
            lo, hi = row[i - 1], row[i]
            if lo is None or hi is None:
                return math.inf
            w = (coverage - levels[i - 1]) / (levels[i] - levels[i - 1])
            return float(lo + w * (hi - lo))
    return math.inf


def initial_half_widths(metrics: Mapping[str, Any], targets: Sequence[str], coverage: float,
                        source: str = "model") -> list[float] | None:
    """The validation half-width per target at ``coverage`` (the model's own horizon) from a
    contract's ``metrics["calibration"]``; None when the model has none (older exports)."""
    table = _calibration_table(metrics, targets, source)
    if table is None:
        return None
    return [_at(table["levels"], table["half_widths"][t][0], coverage) for t in targets]


def step_ratios(metrics: Mapping[str, Any], targets: Sequence[str], coverage: float, n: int,
                source: str = "model") -> np.ndarray:
    """``[n, T]``: the validation half-width of a forecast fed back ``k`` steps, divided by the
    one-step one (row 0 is 1); inf where the contract has no such figure."""
    out = np.full((n, len(targets)), np.inf)
    out[0] = 1.0
    table = _calibration_table(metrics, targets, source)
    if table is None:
        return out
    for j, t in enumerate(targets):
        rows = table["half_widths"][t]
        base = _at(table["levels"], rows[0], coverage)
        for k in range(1, min(n, len(rows))):
            v = _at(table["levels"], rows[k], coverage)
            out[k, j] = v / base if 0 < base < math.inf and v < math.inf else math.inf
    return out


def open_live(contract: ModelContract, coverage: float, season: int | None,
              options: Mapping[str, Any], source: str = "model", n: int | None = None) -> Any:
    """:class:`LiveStream` (``n`` None) or :class:`LiveScores` of ``n`` streams for the model
    of ``contract``, starting from the validation half-widths its contract stores unless
    ``options`` (``lr``, ``half_life``, ``initial_quantiles``) gives initial_quantiles.
    ``season`` None takes the season the model was trained with (``metrics["season"]``), if
    any; 0 means none."""
    if season is None:  # the season the model was trained with, when it stores one
        stored = contract.metrics.get("season") if isinstance(contract.metrics, Mapping) else None
        season = stored if isinstance(stored, int) and not isinstance(stored, bool) \
            and stored >= 1 else None
    elif season == 0 and not isinstance(season, bool):
        season = None
    opts = dict(options)
    unknown = set(opts) - {*DEFAULTS, "initial_quantiles"}
    if unknown:
        raise InputError(f"live_options {sorted(unknown)} unknown; expected some of "
                         f"{sorted({*DEFAULTS, 'initial_quantiles'})}")
    if "initial_quantiles" not in opts:
        opts["initial_quantiles"] = initial_half_widths(contract.metrics, contract.targets,
                                                        coverage, source)
    if n is None:
        return LiveStream(contract.features, contract.targets, horizon=contract.horizon,
                          season=season, coverage=coverage, **opts)
    return LiveScores(n, contract.features, contract.targets, horizon=contract.horizon,
                      season=season, coverage=coverage, **opts)


def snapshot_entries(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Live state arrays as snapshot entries (``live.<name>``), beside the model's states."""
    return {SNAPSHOT_PREFIX + k: v for k, v in arrays.items()}


def _add_errors(acc: list[list[float]], forecast: list[float], actual: list[float],
                decay: float) -> list[float | None]:
    """Add one point's errors to one forecaster's sums (``acc``: the ACC rows, each [T]), as
    :meth:`LiveScores._advance` does; return each target's absolute error (None: not
    scorable, NaN or infinite, as numpy's isfinite)."""
    cnt, asum, ssum, eww, ewa, ews = acc
    out: list[float | None] = []
    for j, v in enumerate(actual):
        err = v - forecast[j]
        if err - err != 0.0:
            out.append(None)
            continue
        ae = abs(err)
        sq = err * err
        cnt[j] += 1.0
        asum[j] += ae
        ssum[j] += sq
        eww[j] = eww[j] * decay + 1.0
        ewa[j] = ewa[j] * decay + ae
        ews[j] = ews[j] * decay + sq
        out.append(ae)
    return out


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


def _positive_int(value: Any, what: str, zero: bool = False) -> int:
    low = 0 if zero else 1
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise InputError(f"{what} is {value!r}; expected an integer >= {low}")
    return int(value)


def _positive_number(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} is {value!r}; expected a positive number")
    return float(value)


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
