"""Data for training: the sine demo, CSV files and numpy arrays, all as one ``Series``.

A ``Series`` holds features and targets aligned in time (row t of both is time t); it is not
shifted. The horizon is applied later by ``make_split``: the input at time t is paired with the
target at time t + horizon, and the pairs are split chronologically into training and validation
(never shuffled across time). Everything is checked here, before any training starts, and every
problem is a ``DataError`` naming the source, column and row.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

__all__ = [
    "Series",
    "Split",
    "fit_mean_std",
    "from_arrays",
    "load_csv",
    "make_split",
    "sine_series",
]


@dataclass(frozen=True)
class Series:
    """A multivariate time series: ``features`` [N, F] and ``targets`` [N, T], row t = time t."""

    features: np.ndarray
    targets: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    # For each target, the index of the same series among the features (needed for
    # target_mode="delta"), or None when some target is not also a feature.
    target_index: list[int] | None
    source: str = "arrays"

    def __len__(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class Split:
    """Input/target pairs for one horizon, split chronologically at ``n_train``.

    ``x[t]`` is the input at time t, ``y[t]`` the raw target at time t + horizon and
    ``last[t]`` the target's value at time t (the persistence forecast for ``y[t]``).
    Pairs ``[0, n_train)`` train, pairs ``[n_train, n)`` validate; every validation target
    lies strictly after every training target in time.
    """

    x: np.ndarray
    y: np.ndarray
    last: np.ndarray
    n_train: int
    horizon: int

    @property
    def n_val(self) -> int:
        return int(self.x.shape[0]) - self.n_train


# -- sources ------------------------------------------------------------------------------
def sine_series(n_windows: int = 100, steps_per_window: int = 20) -> Series:
    """The lesson's sine demo: ``np.sin`` over consecutive windows of π, 20 steps per window.

    The lesson draws ``np.sin(np.linspace(k*π, (k+1)*π, 21))`` for k = 0, 1, 2, ...; glued
    together (each window starts where the previous ended) that is one long series sampled
    ``steps_per_window`` times per π. The one column is both the feature and the target.
    """
    if n_windows < 1 or steps_per_window < 2:
        raise DataError(
            f"sine_series(n_windows={n_windows}, steps_per_window={steps_per_window}): "
            "need n_windows >= 1 and steps_per_window >= 2"
        )
    n = n_windows * steps_per_window + 1
    values = np.sin(np.linspace(0.0, n_windows * math.pi, n))[:, None]
    return Series(values, values.copy(), ["sin"], ["sin"], [0], source="sine")


def from_arrays(
    features: np.ndarray,
    targets: np.ndarray | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    target_names: Sequence[str] | None = None,
    target_index: Sequence[int] | None = None,
) -> Series:
    """Wrap numpy arrays (rows = time) as a ``Series``; 1-D arrays are one column.

    Without ``targets`` the targets are the features. ``target_index`` (for each target, its
    column among the features) enables target_mode="delta"; when omitted it is found by name
    or, failing that, by identical columns.
    """
    x = _as_matrix(features, "features")
    y = x.copy() if targets is None else _as_matrix(targets, "targets")
    if y.shape[0] != x.shape[0]:
        raise DataError(
            f"arrays: features have {x.shape[0]} rows but targets have {y.shape[0]}; "
            "rows are time steps and must line up"
        )
    f_names = _names(feature_names, x.shape[1], "f", "feature_names")
    t_names = list(f_names) if targets is None and target_names is None else (
        _names(target_names, y.shape[1], "t", "target_names"))
    if target_index is None:
        index = _match_targets(x, y, f_names, t_names)
    else:
        index = _checked_index(target_index, x.shape[1], y.shape[1])
    return Series(x, y, f_names, t_names, index, source="arrays")


def _as_matrix(values: np.ndarray, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"arrays: {what} are not numeric ({exc})") from exc
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"arrays: {what} must be a non-empty [rows, columns] array, got shape "
                        f"{array.shape}")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        row, col = (int(v) for v in bad[0])
        raise DataError(f"arrays: {what} column {col}, row index {row} (0-based) is "
                        f"{array[row, col]} (NaN/inf); clean or interpolate the data first")
    return array


def _names(names: Sequence[str] | None, count: int, prefix: str, what: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i}" for i in range(count)]
    if len(names) != count:
        raise DataError(f"arrays: {what} has {len(names)} names for {count} columns")
    return [str(n) for n in names]


def _match_targets(x: np.ndarray, y: np.ndarray, f_names: list[str],
                   t_names: list[str]) -> list[int] | None:
    index = []
    for j, name in enumerate(t_names):
        same = [i for i in range(x.shape[1]) if np.array_equal(x[:, i], y[:, j])]
        by_name = [i for i in same if f_names[i] == name]
        if not same:
            return None
        index.append((by_name or same)[0])
    return index


def _checked_index(target_index: Sequence[int], n_features: int, n_targets: int) -> list[int]:
    index = [int(i) for i in target_index]
    if len(index) != n_targets or not all(0 <= i < n_features for i in index):
        raise DataError(f"arrays: target_index={index!r} needs {n_targets} entries, each a "
                        f"feature column in 0..{n_features - 1}")
    return index


# -- CSV --------------------------------------------------------------------------------------
def load_csv(
    path: str | Path,
    features: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    *,
    delimiter: str = ",",
) -> Series:
    """Read a CSV file with a header row; rows are time steps in file order.

    ``features`` defaults to every numeric column (a column whose first data row is a number;
    text columns such as dates are skipped), ``targets`` defaults to the features. Errors name
    the file, the column and the row (1-based data row and the file's line number).
    """
    path = Path(path)
    header, rows = _read_rows(path, delimiter)
    f_names = list(features) if features else _numeric_columns(path, header, rows)
    t_names = list(targets) if targets else list(f_names)
    for name in dict.fromkeys(f_names + t_names):
        if name not in header:
            raise DataError(f"{path}: no column {name!r}; the columns are {header}")
    columns = {name: _parse_column(path, header, rows, name)
               for name in dict.fromkeys(f_names + t_names)}
    x = np.stack([columns[n] for n in f_names], axis=1)
    y = np.stack([columns[n] for n in t_names], axis=1)
    index = [f_names.index(n) for n in t_names] if set(t_names) <= set(f_names) else None
    return Series(x, y, f_names, t_names, index, source=str(path))


# (line number, cells) for each non-blank data row
Rows = list[tuple[int, list[str]]]


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], Rows]:
    try:
        # utf-8-sig: spreadsheets often write a byte-order mark before the header.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            lines = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV text ({exc})") from exc
    if not lines:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows")
    header = [c.strip() for c in lines[0][1]]
    _check_header(path, header)
    rows = lines[1:]
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")
    for line, cells in rows:
        if len(cells) != len(header):
            raise DataError(f"{path}: line {line} has {len(cells)} fields but the header has "
                            f"{len(header)}; check the delimiter ({delimiter!r}) and quoting")
    return header, rows


def _check_header(path: Path, header: list[str]) -> None:
    if any(not name for name in header):
        raise DataError(f"{path}: the header row has an empty column name: {header}")
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate column names in the header: {duplicates}")


def _numeric_columns(path: Path, header: list[str], rows: Rows) -> list[str]:
    first = rows[0][1]
    names = [name for name, cell in zip(header, first, strict=True) if _is_number(cell)]
    if not names:
        raise DataError(f"{path}: no numeric column (first data row: {first}); name the "
                        "columns to use with features=[...] / --features")
    return names


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_column(path: Path, header: list[str], rows: Rows, name: str) -> np.ndarray:
    col = header.index(name)
    values = np.empty(len(rows), dtype=np.float64)
    for i, (line, cells) in enumerate(rows):
        where = f"{path}: column {name!r}, data row {i + 1} (line {line})"
        try:
            values[i] = float(cells[col])
        except ValueError as exc:
            raise DataError(f"{where}: {cells[col]!r} is not a number") from exc
        if not math.isfinite(values[i]):
            raise DataError(f"{where}: {cells[col]!r} is NaN/inf; clean or interpolate the data")
    return values


# -- pairs, split and normalisation -----------------------------------------------------------
def make_split(series: Series, horizon: int, val_fraction: float, min_train: int) -> Split:
    """Pair input t with target t + horizon and split chronologically (last pairs validate).

    ``min_train`` is the fewest training pairs that make one training window.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r}: expected 0 < val_fraction < 1")
    n_rows = len(series)
    n_pairs = n_rows - horizon
    n_val = max(1, round(n_pairs * val_fraction))
    n_train = n_pairs - n_val
    if n_train < min_train:
        raise DataError(
            f"{series.source}: series too short: {n_rows} rows with horizon {horizon} and "
            f"val_fraction {val_fraction} leave {max(n_train, 0)} training steps, fewer than one "
            f"window of {min_train}; give more rows or a smaller bptt window"
        )
    return Split(
        x=series.features[:n_pairs],
        y=series.targets[horizon:],
        last=series.targets[:n_pairs],
        n_train=n_train,
        horizon=horizon,
    )


def fit_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of ``values`` [N, C]; a constant column gets std 1.

    Spreads below float32 resolution count as constant: dividing by them would blow up.
    """
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    tiny = np.finfo(np.float32).eps * np.maximum(1.0, np.abs(mean))
    return mean, np.where(std > tiny, std, 1.0)
