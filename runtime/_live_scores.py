"""Live scores of many streams in numpy: :class:`LiveScores` (the method: :mod:`._live_settings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._live_settings import (
    _COUNT,
    _EWA,
    _EWW,
    _F64,
    _MODEL,
    _PERSISTENCE,
    _SEASONAL,
    FLOOR,
    FORECASTERS,
    RATIO_MAX,
    SMALLEST_SCALE,
    _matrix,
    _positive_int,
    _realised,
    _scores,
    _Settings,
)
from ._points import describe
from .errors import InputError

__all__ = ["LiveScores"]


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
        self._zeros: dict[tuple[int, np.dtype], np.ndarray] = {}  # for _all_finite
        self._ones: set[tuple[int, ...]] = set()  # scratch shapes whose count row is all 1.0
        self._block: tuple[int, int, dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
        # the constants as 0-d arrays: numpy converts a Python float on every call (0.4-0.7 us
        # each, measured); the same float64 values, so the same bits as LiveStream's floats
        self._k = {name: np.array(v, _F64) for name, v in (
            ("one", 1.0), ("decay", self.decay), ("floor", FLOOR), ("down", self._down),
            ("up", self._up))}
        # the scale's prior per target, [T, 1] against the stream-last [T, n] arrays (0-d with
        # one target: numpy broadcasts those a microsecond faster per 1,024-stream pass)
        one = len(self.targets) == 1
        self._s0 = np.array(self.scale0[0]) if one else self.scale0[:, None].copy()
        self._p0 = np.array(self.prior[0]) if one else self.prior[:, None].copy()
        self._given = self.prior[:, None] > 0.0
        # every target has a positive prior: the divisor eww + 1 is >= 1 and the scale > 0, so
        # the ratio needs neither the max nor the gate (the same bits, fewer passes: _rescale)
        self._ratio_max = np.array(RATIO_MAX, _F64)
        # (eww < 1 / (1 - decay), so the scale never falls below s_0 / (1 + 1 / (1 - decay)))
        least = self.scale0 / (1.0 + 1.0 / (1.0 - self.decay))
        self._plain_scale = bool((self.prior > 0.0).all() and (least >= 2 * SMALLEST_SCALE).all())
        self._scale_bufs: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

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

    def observe(self, rows: np.ndarray | slice, x: np.ndarray, y: np.ndarray) -> None:
        """:meth:`advance_block` (``rows`` a block) or :meth:`advance_rows` (distinct
        indices), except that a stream whose prediction holds NaN or infinity starts afresh
        instead (the policy :class:`~rnnstream.runtime.live.LiveConfig` describes), the others
        go on. Unchecked as those: ``x`` ``[k, F]`` finite, ``y`` ``[k, T]``."""
        if self._all_finite(y):
            if isinstance(rows, slice):  # the usual case: a block of rows, in place
                self.advance_block(rows, x, y)
            else:
                self.advance_rows(rows, x, y)
            return
        bad = ~np.isfinite(y).all(axis=1)
        idx = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows
        self.reset(idx[bad])
        if (~bad).any():
            self.update(x[~bad], y[~bad], idx[~bad])

    def _all_finite(self, values: np.ndarray) -> bool:
        """``np.isfinite(values).all()`` in half the time: x * 0 is 0 exactly when x is finite
        (inf * 0 and NaN * 0 are NaN), so the dot product with zeros is 0 iff all are finite."""
        zeros = self._zeros.get((values.size, values.dtype))
        if zeros is None:
            if len(self._zeros) > 64:
                self._zeros.clear()
            zeros = self._zeros[(values.size, values.dtype)] = np.zeros(values.size,
                                                                         values.dtype)
        return bool(np.vdot(values, zeros) == 0.0)

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
            old = self._scale_before(acc)  # s_t, before this point's errors
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
            q *= self._rescale(acc, old)
            np.maximum(q, floor, out=q)
        else:
            ok = np.isfinite(err)
            s[0] = ok
            self._ones.discard(due.shape)
            np.copyto(err, 0.0, where=~ok)
            np.abs(err, out=s[1])
            np.multiply(err, err, out=s[2])
            old = self._scale(acc)  # s_t, before this point's errors
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
            moved = q * np.where(hit, self._down, self._up)
            moved *= self._rescale(acc, old)
            np.maximum(moved, scale * FLOOR, out=moved)
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

    def _scale_before(self, acc: np.ndarray) -> np.ndarray:
        """:meth:`_scale` for the mask-free path, into a kept buffer when every target has a
        positive prior (then ``eww + 1 >= 1``, and the max of :meth:`_scale` changes nothing)."""
        if not self._plain_scale:
            return self._scale(acc)
        shape = acc.shape[2:]
        bufs = self._scale_bufs.get(shape)
        if bufs is None:
            if len(self._scale_bufs) > 8:
                self._scale_bufs.clear()
            bufs = self._scale_bufs[shape] = (np.empty(shape), np.empty(shape), np.empty(shape))
        old, div, _ = bufs
        np.add(acc[_EWA, _MODEL], self._s0, out=old)
        np.add(acc[_EWW, _MODEL], self._p0, out=div)
        return np.divide(old, div, out=old)

    def _scale(self, acc: np.ndarray) -> np.ndarray:
        """The scale ``s = (ewa + s_0) / (eww + p_0)`` of the model's residuals, ``[T, n]``
        (module docstring of :mod:`._live_settings`); a divisor below 1 (nothing scored and no
        prior) is taken as 1, so 0 / 0 never happens and such a scale is 0."""
        num = acc[_EWA, _MODEL] + self._s0
        return np.divide(num, np.maximum(acc[_EWW, _MODEL] + self._p0, 1.0), out=num)

    def _rescale(self, acc: np.ndarray, old: np.ndarray) -> np.ndarray:
        """``min(s_{t+1} / s_t, RATIO_MAX)`` where the width follows the scale (``s_t >=
        SMALLEST_SCALE``, and a prior given or more than ``warmup`` points scored), else 1.0:
        the factor the width is multiplied by after its quantile-tracking step."""
        if self._plain_scale and old is self._scale_bufs.get(acc.shape[2:], (None,))[0]:
            _, div, new = self._scale_bufs[acc.shape[2:]]  # (the mask-free path's buffers)
            np.add(acc[_EWW, _MODEL], self._p0, out=div)
            np.add(acc[_EWA, _MODEL], self._s0, out=new)
            np.divide(new, div, out=new)
            np.divide(new, old, out=new)  # every scale > 0: no gate
            return np.minimum(new, self._ratio_max, out=new)
        new = self._scale(acc)
        gate = (old >= SMALLEST_SCALE) & (self._given | (acc[_COUNT, _MODEL] > self.warmup))
        out = np.ones_like(new)
        np.divide(new, old, out=out, where=gate)
        return np.minimum(out, self._ratio_max, out=out)

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
