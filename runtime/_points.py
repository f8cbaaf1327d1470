"""Turn what a caller hands in (a number, a sequence, a mapping, an array) into model input.

Every refusal is an :class:`~rnnstream.runtime.errors.InputError` saying what was given and what
was expected. Nothing here touches stream state, so a refused point changes nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError

_MAX_REPR = 80


def describe(value: Any) -> str:
    """A short description of a value for an error message."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[:_MAX_REPR - 3] + "..."
    return f"{type(value).__name__} {text}"


class PointReader:
    """Validates points of ``n`` values (named by ``names`` when known) for one model input."""

    def __init__(self, n: int | None, names: Sequence[str] | None = None,
                 dtype: Any = np.float32) -> None:
        self.n = n  # None: any number of values (a foreign model with a free axis)
        self.names = list(names) if names else None
        self.index = {name: i for i, name in enumerate(self.names or ())}
        self.dtype = np.dtype(dtype)
        self.is_float = self.dtype.kind == "f"

    @property
    def expected(self) -> str:
        if self.n is None:
            return "one or more values"
        if self.names:
            return f"{self.n} value{'s' if self.n != 1 else ''} (features {', '.join(self.names)})"
        return f"{self.n} value{'s' if self.n != 1 else ''}"

    # -- one point ------------------------------------------------------------------------
    def row(self, point: Any) -> np.ndarray:
        """One point -> a new array of ``n`` values of the input dtype."""
        if isinstance(point, Mapping):
            return self._from_mapping(point)
        if isinstance(point, (bool, np.bool_)):
            raise InputError(f"got a boolean ({point!r}); expected {self.expected} as numbers")
        if isinstance(point, numbers.Number) or (isinstance(point, np.generic)
                                                 and np.ndim(point) == 0):
            if self.n not in (1, None):
                raise InputError(f"got one number ({point!r}); expected {self.expected}")
            return self._array([point], point)
        if isinstance(point, (str, bytes)) or point is None:
            raise InputError(f"got {describe(point)}; expected {self.expected} as numbers")
        if isinstance(point, (np.ndarray, Sequence)) or hasattr(point, "__array__"):
            _refuse_booleans(point, self.expected)
            arr = self._array(point, point)
            if arr.ndim == 0:
                arr = arr.reshape(1)
            if arr.size == 0:
                raise InputError(f"got an empty point; expected {self.expected}")
            if self.n is None:
                return arr.reshape(-1)
            if arr.size != self.n or (self.names is not None and arr.ndim != 1):
                raise InputError(
                    f"got {arr.size} value{'s' if arr.size != 1 else ''} of shape "
                    f"{arr.shape}; expected {self.expected}"
                    + (" as a flat sequence" if arr.size == self.n else "")
                )
            return arr.reshape(self.n)
        raise InputError(f"got {describe(point)}; expected a number, a sequence of "
                         f"{self.expected}, or a mapping of feature name to value")

    def _from_mapping(self, point: Mapping[Any, Any]) -> np.ndarray:
        if not self.names:
            raise InputError("got a mapping, but this model's inputs are unnamed; pass a "
                             f"sequence of {self.expected}")
        unknown = [k for k in point if k not in self.index]
        missing = [k for k in self.names if k not in point]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown feature name{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}")
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing))}")
            raise InputError(f"{'; '.join(parts)}; expected exactly the features "
                             f"{', '.join(self.names)}")
        for k, v in point.items():
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Number, np.generic)):
                raise InputError(f"feature {k!r} is {describe(v)}; expected a number")
        return self._array([point[k] for k in self.names], point)

    def _array(self, values: Any, original: Any) -> np.ndarray:
        try:
            raw = np.asarray(values)
        except (ValueError, TypeError) as exc:  # ragged nesting, unconvertible objects
            raise InputError(f"got {describe(original)}; expected {self.expected} "
                             f"as numbers ({exc})") from exc
        if raw.dtype.kind not in "fiu" or (raw.dtype.kind == "f" and not self.is_float):
            kind = {"b": "booleans", "U": "text", "S": "bytes", "O": "non-numeric values"}.get(
                raw.dtype.kind, f"{raw.dtype} values")
            raise InputError(f"got {kind} ({describe(original)}); expected {self.expected} "
                             f"as {'numbers' if self.is_float else self.dtype.name}")
        if self.is_float and raw.dtype.kind == "f" and raw.dtype.itemsize > self.dtype.itemsize:
            self._refuse_overflow(raw, original)
        arr = raw.astype(self.dtype)  # always a copy: the caller may reuse its array
        if self.is_float and not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
            raise InputError(
                f"got a non-finite value ({arr.reshape(-1)[bad[0]]!r} at position {bad[0]}"
                + (f", feature {self.names[bad[0] % self.n]!r}" if self.names else "")
                + f"); expected {self.expected}, all finite"
            )
        return arr

    def _refuse_overflow(self, raw: np.ndarray, original: Any) -> None:
        """Finite values beyond the input dtype's range would silently become inf on the cast
        (with a RuntimeWarning) and be reported as non-finite; say what really happened."""
        limit = np.finfo(self.dtype).max
        with np.errstate(invalid="ignore"):  # NaN compares False here; caught after the cast
            big = np.isfinite(raw) & (np.abs(raw) > limit)
        if big.any():
            i = int(np.flatnonzero(big.reshape(-1))[0])
            raise InputError(
                f"got {float(raw.reshape(-1)[i])!r} at position {i}"
                + (f", feature {self.names[i % self.n]!r}" if self.names and self.n else "")
                + f", beyond the {self.dtype} range (±{limit:.6g}) of the model input "
                f"({describe(original)}); expected {self.expected}, all finite"
            )

    # -- many points ----------------------------------------------------------------------
    def rows(self, values: Any, what: str = "values") -> np.ndarray:
        """``[k, n]`` values (or ``[k]`` when ``n == 1``) -> a new ``[k, n]`` array."""
        if isinstance(values, (str, bytes, Mapping)) or values is None:
            raise InputError(f"{what}: got {describe(values)}; expected an array of shape "
                             f"[count, {self.n}]")
        _refuse_booleans(values, self.expected)
        arr = self._array(values, values)
        if arr.ndim == 1 and self.n == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != self.n:
            raise InputError(f"{what}: got shape {arr.shape}; expected [count, {self.n}] "
                             f"(count points of {self.expected})")
        if arr.shape[0] == 0:
            raise InputError(f"{what}: got no points; expected at least one row of "
                             f"{self.expected}")
        return arr


def _refuse_booleans(values: Any, expected: str) -> None:
    """numpy reads ``[1.5, True]`` as ``[1.5, 1.0]``; a boolean is never a measurement, so one
    inside a list or tuple (or a list of rows) is refused as a lone boolean point is."""
    if not isinstance(values, (list, tuple)):
        return
    for i, v in enumerate(values):
        inner = v if isinstance(v, (list, tuple)) else (v,)
        if any(isinstance(w, (bool, np.bool_)) for w in inner):
            raise InputError(f"got booleans among the values (position {i}: {v!r}); "
                             f"expected {expected} as numbers")


def finite_float(value: Any) -> bool:
    """True for a plain Python float that is finite (the step fast path)."""
    return type(value) is float and math.isfinite(value)
