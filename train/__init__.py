"""rnnstream.train: data, training loop, checkpoints and plots (needs the 'train' extra).

Public API::

    series = sine_series()  # or load_csv(path, features=[...], targets=[...]), from_arrays(X, Y)
    result = train(series, ForecasterConfig(cell="lstm", hidden=32), TrainConfig(horizon=1))
    save_checkpoint("runs/x/model.pt", result)
    model, info = load_checkpoint("runs/x/model.pt")
    plot_training(result, "runs/x/training.png")
"""

from __future__ import annotations

try:
    import torch  # noqa: F401 -- only to fail early with a helpful message
except ImportError as exc:  # pragma: no cover - exercised on base installs only
    raise ImportError(
        "rnnstream.train needs torch, which comes with the 'train' extra: "
        "pip install 'rnnstream[train]'"
    ) from exc

from .checkpoint import load_checkpoint, save_checkpoint
from .data import Series, from_arrays, load_csv, sine_series
from .errors import CheckpointError, ConfigError, DataError, TrainError
from .loop import EpochReport, TrainConfig, TrainResult, Validation, train
from .model import CELLS, Forecaster, ForecasterConfig
from .plot import plot_training

__all__ = [
    "CELLS",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EpochReport",
    "Forecaster",
    "ForecasterConfig",
    "Series",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "Validation",
    "from_arrays",
    "load_checkpoint",
    "load_csv",
    "plot_training",
    "save_checkpoint",
    "sine_series",
    "train",
]
