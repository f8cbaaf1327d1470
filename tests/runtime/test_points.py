"""runtime/_points.py on its own: what a caller hands in becomes model input, or an InputError
saying what was given and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from rnnstream.runtime import InputError
from rnnstream.runtime._points import PointReader, describe


@pytest.fixture
def named() -> PointReader:
    return PointReader(3, ["a", "b", "c"])


def test_a_point_in_every_accepted_form(named):
    want = np.array([1, 2, 3], np.float32)
    for point in ([1, 2, 3], (1.0, 2.0, 3.0), np.array([1, 2, 3], np.float64),
                  {"c": 3, "a": 1, "b": 2}):
        got = named.row(point)
        assert got.dtype == np.float32
        assert got.tobytes() == want.tobytes(), point
    one = PointReader(1)
    assert one.row(2.5).tolist() == [2.5]
    assert one.row(np.float64(2.5)).tolist() == [2.5]


def test_the_row_is_a_copy(named):
    given = np.array([1, 2, 3], np.float32)
    named.row(given)[0] = 99
    assert given[0] == 1


@pytest.mark.parametrize(("point", "match"), [
    ([1, 2], r"got 2 values.*expected 3 values \(features a, b, c\)"),
    ({"a": 1, "b": 2, "z": 3}, "unknown feature name 'z'; missing 'c'"),
    ({"a": 1, "b": 2, "c": "x"}, "feature 'c' is str 'x'; expected a number"),
    ([1, True, 3], r"got booleans among the values \(position 1: True\)"),
    ([1, float("nan"), 3], "non-finite value .* feature 'b'"),
    ([1, 1e39, 3], "beyond the float32 range"),
    ("123", "got str '123'"),
])
def test_refusals_say_what_and_why(named, point, match):
    with pytest.raises(InputError, match=match):
        named.row(point)


def test_rows(named):
    arr = named.rows([[1, 2, 3], [4, 5, 6]], "history")
    assert arr.shape == (2, 3)
    assert PointReader(1).rows([1.0, 2.0]).shape == (2, 1)
    with pytest.raises(InputError, match=r"history: got shape \(2, 2\); expected \[count, 3\]"):
        named.rows([[1, 2], [3, 4]], "history")
    with pytest.raises(InputError, match="history: got no points"):
        named.rows(np.zeros((0, 3)), "history")
    with pytest.raises(InputError, match="history: got dict"):
        named.rows({"a": 1}, "history")


def test_unnamed_and_integer_inputs():
    with pytest.raises(InputError, match="this model's inputs are unnamed"):
        PointReader(2).row({"a": 1, "b": 2})
    ints = PointReader(2, None, np.int64)
    assert ints.row([3, 4]).dtype == np.int64
    with pytest.raises(InputError, match=r"got float64 values .* as int64"):
        ints.row([1.5, 2.0])
    assert PointReader(None).row([1, 2, 3, 4]).shape == (4,)  # any size (a free axis)


def test_describe_is_short():
    assert describe(np.zeros((2, 3))) == "array of shape (2, 3) and dtype float64"
    text = describe(list(range(1000)))
    assert text.startswith("list [0, 1, 2")
    assert len(text) < 100
