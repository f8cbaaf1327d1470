"""Hypothesis strategies for what a long-running stream gets handed: points, good and bad.

Every drawn point comes with the oracle's verdict: the float32 row a valid point must become,
or the exception class and a piece of the message an invalid one must raise. The oracle is
written from the documented rules, not from the implementation:

* a valid point is ``n`` finite numbers whose magnitude fits float32 (``|v| <= 3.4028235e38``;
  1e30 is valid), given as a number (one feature), a flat sequence or array, or a mapping with
  exactly the feature names;
* anything else is an ``InputError``: wrong count or nesting, str/bytes/None/bool/complex/
  objects, NaN or infinity, finite values that overflow float32 (1e39, 1e300), unknown or
  missing feature names.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from rnnstream.runtime import InputError

F32_MAX = float(np.finfo(np.float32).max)

# Mostly ordinary magnitudes (so predictions stay informative), sometimes anything float32 holds.
VALUE = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False, width=32),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([1e30, -1e30, F32_MAX, -F32_MAX, 0.0, -0.0, 1e-45]),
    st.integers(-(2**31), 2**31),
)
NON_FINITE = st.sampled_from([float("nan"), float("inf"), -float("inf")])
OVERFLOW = st.sampled_from([1e39, -1e39, 1e300, -3.5e38])


@dataclass(frozen=True)
class Drawn:
    """A point (or history) as handed in, and what the runtime must make of it."""

    value: Any
    row: np.ndarray | None = None  # the float32 values, when valid
    error: type[Exception] | None = None
    match: str = ""

    @property
    def valid(self) -> bool:
        return self.error is None


def _valid(data: Any, n: int, names: list[str]) -> Drawn:
    vals = data.draw(st.lists(VALUE, min_size=n, max_size=n))
    row = np.array(vals, np.float32)
    forms = ["list", "tuple", "f32", "f64", "dict"] + (["scalar", "np32", "np64"] if n == 1 else [])
    form = data.draw(st.sampled_from(forms))
    if form == "dict":
        order = data.draw(st.permutations(names))
        value: Any = {k: vals[names.index(k)] for k in order}
    else:
        value = {"list": lambda: list(vals), "tuple": lambda: tuple(vals),
                 "f32": lambda: row.copy(), "f64": lambda: np.array(vals, np.float64),
                 "scalar": lambda: vals[0], "np32": lambda: np.float32(vals[0]),
                 "np64": lambda: np.float64(vals[0])}[form]()
    return Drawn(value, row=row)


def _bad_value(data: Any, n: int, names: list[str], bad: Any) -> Any:
    """A point whose values are valid except one (``bad``), in a drawn form."""
    vals: list[Any] = data.draw(st.lists(VALUE, min_size=n, max_size=n))
    pos = data.draw(st.integers(0, n - 1))
    vals[pos] = bad
    forms = ["list", "dict"] + (["scalar"] if n == 1 else [])
    if isinstance(bad, float):
        forms += ["f64"]
    form = data.draw(st.sampled_from(forms))
    if form == "dict":
        return dict(zip(names, vals, strict=True))
    if form == "scalar":
        return vals[0]
    if form == "f64":
        return np.array(vals, np.float64)
    return vals


def _invalid(data: Any, n: int, names: list[str]) -> Drawn:
    kind = data.draw(st.sampled_from([
        "count", "nested", "str", "bytes", "none", "object", "bool", "none_inside",
        "strings", "complex", "decimal", "non_finite", "non_finite_f32", "overflow",
        "unknown_name", "missing_name", "text_value", "bool_value",
    ]))
    vals = data.draw(st.lists(VALUE, min_size=n, max_size=n))
    if kind == "count":
        size = data.draw(st.sampled_from([0, n + 1, n + 3] + ([n - 1] if n > 1 else [])))
        return Drawn(data.draw(st.lists(VALUE, min_size=size, max_size=size)),
                     error=InputError, match="empty point|got \\d+ values?")
    if kind == "nested":
        return Drawn([vals], error=InputError, match="flat sequence|got \\d+ value")
    simple = {"str": (",".join(map(str, vals)), "got str"), "bytes": (b"1.0", "got bytes"),
              "none": (None, "got NoneType"), "object": (object(), "expected a number"),
              "bool": (True, "boolean")}
    if kind in simple:
        value, match = simple[kind]
        return Drawn(value, error=InputError, match=match)
    inside = {"none_inside": (None, "non-numeric values|is NoneType|got NoneType"),
              "strings": ("1.5", "got text|is str|got str"),
              "complex": (1j, "complex\\d* values|got one number|is complex"),
              "decimal": (decimal.Decimal("1.5"), "non-numeric values|is Decimal"),
              "non_finite": (data.draw(NON_FINITE), "non-finite"),
              "overflow": (data.draw(OVERFLOW), "beyond the float32 range"),
              "bool_value": (False, "boolean|is bool")}
    if kind in inside:
        bad, match = inside[kind]
        return Drawn(_bad_value(data, n, names, bad), error=InputError, match=match)
    if kind == "non_finite_f32":
        arr = np.array(vals, np.float32)
        arr[data.draw(st.integers(0, n - 1))] = data.draw(NON_FINITE)
        return Drawn(arr, error=InputError, match="non-finite")
    point = dict(zip(names, vals, strict=True))
    if kind == "unknown_name":
        point[data.draw(st.sampled_from(["x", "V", "", "a ", "price"]))] = 1.0
        return Drawn(point, error=InputError, match="unknown feature name")
    if kind == "missing_name":
        del point[data.draw(st.sampled_from(names))]
        return Drawn(point, error=InputError, match="missing")
    point[data.draw(st.sampled_from(names))] = "1.0"  # text_value
    return Drawn(point, error=InputError, match="is str")


def draw_point(data: Any, n: int, names: list[str], p_valid: float = 0.5) -> Drawn:
    if data.draw(st.floats(0, 1)) < p_valid:
        return _valid(data, n, names)
    return _invalid(data, n, names)


def draw_history(data: Any, n: int, names: list[str]) -> Drawn:
    """A history for prime(): [k, n] rows, valid or not."""
    k = data.draw(st.integers(1, 6))
    rows = np.array(data.draw(st.lists(st.lists(VALUE, min_size=n, max_size=n),
                                       min_size=k, max_size=k)), np.float32)
    kind = data.draw(st.sampled_from(["ok", "ok_list", "columns", "empty", "nan", "overflow",
                                      "text", "cube", "none"]))
    if kind == "ok":
        return Drawn(rows.copy(), row=rows)
    if kind == "ok_list":
        return Drawn(rows.astype(np.float64).tolist(), row=rows)
    if kind == "columns":
        return Drawn(np.zeros((k, n + 1)), error=InputError, match="expected \\[count")
    if kind == "empty":
        return Drawn(np.zeros((0, n)), error=InputError, match="no points")
    if kind in ("nan", "overflow"):
        bad = rows.astype(np.float64)
        bad[data.draw(st.integers(0, k - 1)), data.draw(st.integers(0, n - 1))] = (
            float("nan") if kind == "nan" else 1e40)
        return Drawn(bad, error=InputError,
                     match="non-finite" if kind == "nan" else "beyond the float32 range")
    if kind == "text":
        return Drawn("1,2,3", error=InputError, match="history: got str")
    if kind == "cube":
        return Drawn(np.zeros((1, k, n)), error=InputError, match="got shape")
    return Drawn(None, error=InputError, match="history: got NoneType")
