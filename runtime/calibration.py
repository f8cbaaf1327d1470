"""The calibration format: validation half-widths stored in a model's contract.

A model that rnnstream trained (or wrapped with a sample) stores, in its contract's
``calibration`` field, the split-conformal half-widths of its validation residuals::

    {"levels": [0.5, ..., 0.99],                  increasing coverages in (0, 1)
     "half_widths": {target: [[w, ...], ...]},     per target, one row per step ahead (row 0:
                                                   the model's own horizon; row k: a forecast
                                                   fed back k + 1 steps), one number or null
                                                   (not enough residuals) per level
     ... figures about them (residuals, origins, validation, source), kept as written}

The runtime starts its intervals from row 0 at the asked coverage (linear between the stored
levels) and scales forecast intervals by the ratio of row k to row 0. Releases before 0.4 kept
the same document in the contract's free-form ``metrics["calibration"]``; it is still read from
there (:meth:`rnnstream.runtime.contract.ModelContract.live_facts`).

This module needs only the standard library (numpy is imported by the two functions that
return or take arrays, when called).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ContractError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CALIBRATION_LEVELS", "Calibration", "conformal_half_widths", "initial_half_widths",
           "step_ratios"]

CALIBRATION_LEVELS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)


@dataclass(frozen=True, eq=True)
class Calibration:
    """Validated validation half-widths of a model (the module docstring's format)."""

    levels: tuple[float, ...]
    # target -> rows (one per step ahead) of one half-width or None per level
    half_widths: Mapping[str, tuple[tuple[float | None, ...], ...]]
    # the other keys of the stored document (figures about the half-widths), as written
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any, targets: Sequence[str], where: str) -> Calibration:
        """Check a stored document against the model's ``targets``; ContractError naming
        ``where`` (e.g. ``"model.onnx: 'calibration'"``) and what is wrong otherwise."""
        problem = _problem(value, targets)
        if problem:
            raise ContractError(f"{where} is malformed: {problem}. It is written by training; "
                                "re-export the model with this release, or pass "
                                "initial_quantiles=[...] (live_options) instead")
        rows = {t: tuple(tuple(None if v is None else float(v) for v in r) for r in rs)
                for t, rs in value["half_widths"].items()}
        info = {k: v for k, v in value.items() if k not in ("levels", "half_widths")}
        return cls(tuple(value["levels"]), rows, info)

    def to_json(self) -> dict[str, Any]:
        """The stored document (plain lists and dicts, JSON-ready)."""
        return {"levels": list(self.levels),
                "half_widths": {t: [list(r) for r in rows] for t, rows in self.half_widths.items()},
                **self.info}

    def half_widths_at(self, targets: Sequence[str], coverage: float, step: int = 0
                       ) -> list[float]:
        """The half-width per target at ``coverage`` for ``step`` (0: the model's horizon);
        inf where the stored figures cannot give one."""
        out = []
        for t in targets:
            rows = self.half_widths[t]
            out.append(_at(self.levels, rows[step], coverage) if step < len(rows) else math.inf)
        return out

    def step_ratio_rows(self, targets: Sequence[str], coverage: float, n: int
                        ) -> list[list[float]]:
        """``n`` rows of ``[T]``: the half-width ``k`` steps ahead over the one-step one (row 0
        is 1); inf where there is no such figure."""
        base = self.half_widths_at(targets, coverage)
        out = [[1.0] * len(targets)]
        for k in range(1, n):
            row = []
            for b, v in zip(base, self.half_widths_at(targets, coverage, k), strict=True):
                row.append(v / b if 0 < b < math.inf and v < math.inf else math.inf)
            out.append(row)
        return out[:n]


def _problem(value: Any, targets: Sequence[str]) -> str:
    """What is wrong with a stored calibration document ('' when nothing)."""
    levels: Any = value.get("levels") if isinstance(value, Mapping) else None
    steps: Any = value.get("half_widths") if isinstance(value, Mapping) else None
    if not (isinstance(levels, list) and levels and all(
            isinstance(v, float) and 0 < v < 1 for v in levels) and levels == sorted(levels)):
        return f"'levels' is {levels!r}; expected increasing coverages in (0, 1)"
    if not isinstance(steps, Mapping) or set(steps) != set(targets):
        given = sorted(steps) if isinstance(steps, Mapping) else type(steps).__name__
        return f"'half_widths' has targets {given}; the model's are {list(targets)}"
    for name, rows in steps.items():
        if not (isinstance(rows, list) and rows and all(
                isinstance(r, list) and len(r) == len(levels) and all(
                    v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                  and math.isfinite(v) and v >= 0) for v in r) for r in rows)):
            return (f"'half_widths' of {name!r} is not a list of rows (one per step "
                    f"ahead) of {len(levels)} non-negative numbers or nulls")
    return ""


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


def conformal_half_widths(abs_residuals: np.ndarray,
                          levels: Sequence[float] = CALIBRATION_LEVELS) -> list[float | None]:
    """Split-conformal half-widths of ``m`` absolute residuals at each level: the
    ``ceil((m + 1) * level)``-th smallest, None (infinite) when that exceeds ``m``."""
    import numpy as np

    r = np.sort(np.asarray(abs_residuals, np.float64)[np.isfinite(abs_residuals)])
    m = r.size
    out: list[float | None] = []
    for c in levels:
        rank = math.ceil((m + 1) * c)
        out.append(float(r[rank - 1]) if 1 <= rank <= m else None)
    return out


def _from_metrics(metrics: Mapping[str, Any], targets: Sequence[str], source: str
                  ) -> Calibration | None:
    """A contract's calibration as releases before 0.4 stored it (``metrics["calibration"]``)."""
    cal = metrics.get("calibration") if isinstance(metrics, Mapping) else None
    if cal is None:
        return None
    return Calibration.from_json(cal, targets, f"{source}: metrics 'calibration'")


def initial_half_widths(metrics: Mapping[str, Any], targets: Sequence[str], coverage: float,
                        source: str = "model") -> list[float] | None:
    """The validation half-width per target at ``coverage`` (the model's own horizon) from a
    ``metrics["calibration"]`` document; None when there is none. (A contract's:
    ``contract.live_facts().calibration.half_widths_at(...)``.)"""
    table = _from_metrics(metrics, targets, source)
    return None if table is None else table.half_widths_at(targets, coverage)


def step_ratios(metrics: Mapping[str, Any] | Calibration | None, targets: Sequence[str],
                coverage: float, n: int, source: str = "model") -> np.ndarray:
    """``[n, T]``: the validation half-width of a forecast fed back ``k`` steps, divided by the
    one-step one (row 0 is 1); inf where there is no such figure. ``metrics``: a
    :class:`Calibration`, a ``metrics["calibration"]`` document's mapping, or None."""
    import numpy as np

    table = metrics if isinstance(metrics, Calibration) or metrics is None \
        else _from_metrics(metrics, targets, source)
    out = np.full((n, len(targets)), np.inf)
    out[0] = 1.0
    if table is None:
        return out
    return np.array(table.step_ratio_rows(targets, coverage, n), np.float64).reshape(n, -1)
