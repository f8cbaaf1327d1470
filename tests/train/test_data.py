"""Data sources, their error messages, and the chronological split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnstream.train import (
    DataError,
    ForecasterConfig,
    TrainConfig,
    from_arrays,
    load_csv,
    sine_series,
    train,
)
from rnnstream.train.data import fit_mean_std, make_split


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sine_series_is_the_lessons_windows_glued_together() -> None:
    s = sine_series(n_windows=3, steps_per_window=20)
    assert s.features.shape == (61, 1)
    # Window k of the lesson is np.sin(np.linspace(k*pi, (k+1)*pi, 21)).
    for k in range(3):
        window = np.sin(np.linspace(k * np.pi, (k + 1) * np.pi, 21))
        np.testing.assert_allclose(s.features[20 * k: 20 * k + 21, 0], window, atol=1e-12)
    assert s.target_index == [0]


def test_csv_defaults_skip_text_columns_and_targets_equal_features(tmp_path: Path) -> None:
    path = _csv(tmp_path, "date,a,b\n2024-01-01,1,10\n2024-01-02,2,20\n2024-01-03,3.5,-1e3\n")
    s = load_csv(path)
    assert s.feature_names == ["a", "b"] == s.target_names
    np.testing.assert_array_equal(s.features, [[1, 10], [2, 20], [3.5, -1000]])
    assert s.target_index == [0, 1]


def test_csv_chosen_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,c\n1,2,3\n4,5,6\n")
    s = load_csv(path, features=["c", "a"], targets=["a"])
    np.testing.assert_array_equal(s.features, [[3, 1], [6, 4]])
    np.testing.assert_array_equal(s.targets, [[1], [4]])
    assert s.target_index == [1]
    assert load_csv(path, features=["a"], targets=["b"]).target_index is None


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("", {}, r"data\.csv: the file is empty"),
        ("\n\n", {}, r"the file is empty"),
        ("a,b\n", {}, r"header but no data rows"),
        ("a,b\n1,2\n", {"features": ["a", "zz"]}, r"no column 'zz'"),
        ("a,b\n1,2\n", {"targets": ["q"]}, r"no column 'q'"),
        ("a\n1\n2\nabc\n", {}, r"column 'a', data row 3 \(line 4\): 'abc' is not a number"),
        ("a\n1\n\n2\n\n", {"features": ["a"]}, None),  # blank lines are skipped, not errors
        ("a,b\n1,2\n3,\n", {}, r"column 'b', data row 2 \(line 3\): '' is not a number"),
        ("a\n1\nnan\n", {}, r"column 'a', data row 2 \(line 3\): 'nan' is NaN/inf"),
        ("a\n1\n-inf\n", {}, r"data row 2 .*NaN/inf"),
        ("a,b\n1,2\n3\n", {}, r"line 3 has 1 fields but the header has 2"),
        ("a,a\n1,2\n", {}, r"duplicate column names"),
        ("name\nx\n", {}, r"no numeric column"),
    ],
)
def test_bad_csv_raises_data_error_naming_file_column_row(
    tmp_path: Path, text: str, kwargs: dict, match: str | None
) -> None:
    path = _csv(tmp_path, text)
    if match is None:
        assert load_csv(path, **kwargs).features[:, 0].tolist() == [1.0, 2.0]
        return
    with pytest.raises(DataError, match=match):
        load_csv(path, **kwargs)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_csv(tmp_path / "nope.csv")


def test_too_short_series_fails_before_training() -> None:
    calls = []
    with pytest.raises(DataError, match=r"too short: 30 rows .* fewer than one window of 25"):
        train(from_arrays(np.arange(30.0)), ForecasterConfig(),
              TrainConfig(bptt=25, progress=False), callbacks=[calls.append])
    assert calls == []


@pytest.mark.parametrize(("inputs", "targets"), [("auto", "delta"), ("delta", "auto"),
                                                 ("auto", "seasonal"), ("level", "ets")])
def test_delta_without_targets_among_features_is_a_data_error(inputs, targets) -> None:
    """Every mode that reads the observed targets (the registry's ``reference`` and
    ``needs_reference``) is refused, not silently trained as level/level ('ets' was)."""
    x = np.random.default_rng(0).normal(size=(200, 2))
    series = from_arrays(x, x[:, 0] ** 2)
    assert series.target_index is None
    with pytest.raises(DataError, match=r"needs every target to be a feature too"):
        train(series, ForecasterConfig(), TrainConfig(input_mode=inputs, target_mode=targets,
                                                      season=4, progress=False))


def test_arrays_errors_name_row() -> None:
    x = np.zeros((10, 2))
    x[5, 1] = np.inf
    with pytest.raises(DataError, match=r"features column 1, row index 5 \(0-based\)"):
        from_arrays(x)
    with pytest.raises(DataError, match=r"features have 10 rows but targets have 3"):
        from_arrays(np.zeros(10), np.zeros(3))
    with pytest.raises(DataError, match=r"non-empty"):
        from_arrays(np.zeros((0, 2)))


def test_from_arrays_finds_targets_among_features() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert from_arrays(x, x[:, [2, 0]]).target_index == [2, 0]
    assert from_arrays(x).target_index == [0, 1, 2]


@pytest.mark.parametrize("horizon", [1, 3])
def test_split_is_chronological(horizon: int) -> None:
    n_rows = 101
    t = np.arange(n_rows, dtype=float)
    series = from_arrays(t, t * 10)  # the values are the times (targets times 10)
    split = make_split(series, horizon, val_fraction=0.2, min_train=10)
    n = split.n_train
    assert split.n_val == round((n_rows - horizon) * 0.2)
    assert n + split.n_val == n_rows - horizon
    # Input at time t is paired with the target at time t + horizon.
    np.testing.assert_array_equal(split.y[:, 0] / 10, split.x[:, 0] + horizon)
    np.testing.assert_array_equal(split.last[:, 0] / 10, split.x[:, 0])
    # Every validation target lies strictly after every training target, nothing shuffled.
    assert split.y[:n, 0].max() < split.y[n:, 0].min()
    assert np.all(np.diff(split.y[:, 0]) > 0)


def test_fit_mean_std_guards_constant_columns() -> None:
    mean, std = fit_mean_std(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_array_equal(mean, [2.0, 5.0])
    np.testing.assert_array_equal(std, [1.0, 1.0])  # second is constant -> guarded to 1
