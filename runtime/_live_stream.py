"""Live scores of one stream in plain Python floats: :class:`LiveStream` (the same numbers as
:class:`~._live_scores.LiveScores`, bit for bit; the method: :mod:`._live_settings`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._live_settings import (
    _ABS,
    _COUNT,
    _EWA,
    _EWS,
    _EWW,
    _F64,
    _I64,
    _MODEL,
    _SQ,
    FLOOR,
    RATIO_MAX,
    SMALLEST_SCALE,
    _realised,
    _scores,
    _Settings,
)

__all__ = ["LiveStream"]


class LiveStream(_Settings):
    """:class:`LiveScores` for one stream in plain Python floats: the same numbers, bit for bit,
    and the same state arrays (``[1, ...]``), at a few microseconds a step."""

    def __init__(self, features: Sequence[str], targets: Sequence[str], **settings: Any) -> None:
        super().__init__(features, targets, **settings)
        self._src = [int(i) for i in self.source]
        self._nans = [math.nan] * len(self.targets)
        self._one_order = (*range(1, self._scored_forecasters), _MODEL)  # for update_one
        self._s0 = self.scale0.tolist()  # the scale's prior, s_0 and p_0 (module docstring)
        self._p0 = self.prior.tolist()
        self._given = [p > 0.0 for p in self._p0]
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
        cnt, ewa, eww = acc[_MODEL][_COUNT], acc[_MODEL][_EWA], acc[_MODEL][_EWW]
        s0, p0 = self._s0, self._p0
        olds = [_scale(a, w, s, p) for a, w, s, p in zip(ewa, eww, s0, p0, strict=True)]  # s_t
        errors = _add_errors(acc[_MODEL], due[_MODEL], actual, decay)
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
                old = olds[j]
                if old >= SMALLEST_SCALE and (self._given[j] or cnt[j] > self.warmup):
                    r = _scale(ewa[j], eww[j], s0[j], p0[j]) / old  # s_{t+1} / s_t
                    qj = qj * (r if r < RATIO_MAX else RATIO_MAX)  # (as np.minimum)
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

    def observe(self, x: Sequence[float], y: Sequence[float]) -> None:
        """:meth:`update`, except that a prediction holding NaN or infinity starts the scores
        afresh instead (the policy :class:`~rnnstream.runtime.live.LiveConfig` describes)."""
        if all(v - v == 0.0 for v in y):
            self.update(x, y)
        else:
            self.reset()

    def observe_one(self, x: float, y: float) -> None:
        """:meth:`observe` of a model with one target, ``x`` the target's value in the point
        that arrived (finite; NaN when the target is not a feature) and ``y`` the prediction:
        a NaN or infinite ``y`` starts the scores afresh; else the arithmetic of :meth:`update`
        in the same order, without the lists and loops over targets (half the time; what
        ``Predictor.step`` uses for one-target models). A differential test holds it equal to
        :meth:`update` bit for bit."""
        if y - y != 0.0:  # the policy of observe, inline: this is the Predictor's hot path
            self.reset()
            return
        seen = self._seen
        slot = seen % self.horizon
        due, issued = self._pending[slot], self._pw[slot][0]
        decay = self.decay
        acc = self._acc
        ae = math.nan
        model = acc[_MODEL]
        old = _scale(model[_EWA][0], model[_EWW][0], self._s0[0], self._p0[0])  # s_t
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
                if old >= SMALLEST_SCALE and (self._given[0] or cnt[0] > self.warmup):
                    r = _scale(ewa[0], eww[0], self._s0[0], self._p0[0]) / old
                    qj = qj * (r if r < RATIO_MAX else RATIO_MAX)  # (as np.minimum)
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

    update_one = observe_one  # the name before 0.4 (a finite ``y``: the same)

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


def _scale(ewa: float, eww: float, s0: float, p0: float) -> float:
    """The scale ``s_t = (ewa + s_0) / (eww + p_0)`` (module docstring of :mod:`._live_settings`);
    a divisor below 1 (nothing scored, no prior: 0 / 0) is taken as 1, as LiveScores does."""
    d = eww + p0
    return (ewa + s0) / (d if d > 1.0 else 1.0)


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
