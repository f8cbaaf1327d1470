"""Errors raised by the training stage.

Hierarchy (catch ``TrainError`` to handle all of them)::

    TrainError(Exception)
    ├── DataError(TrainError, ValueError)        bad or unusable input data (file, column, row)
    ├── ConfigError(TrainError, ValueError)      a TrainConfig value out of range, no CUDA, ...
    └── CheckpointError(TrainError, ValueError)  a checkpoint file that cannot be loaded safely

Every message names the thing at fault and, where there is one, how to fix it.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "TrainError"]


class TrainError(Exception):
    """Base class of the errors raised by ``rnnstream.train``."""


class DataError(TrainError, ValueError):
    """The data cannot be used: empty, missing column, non-numeric or non-finite value, too short.

    Raised before any training starts; the message names the source (file), column and row.
    """


class CheckpointError(TrainError, ValueError):
    """A checkpoint file is missing, truncated, corrupted or not an rnnstream checkpoint."""


class ConfigError(TrainError, ValueError):
    """A training setting is invalid or cannot be honoured (e.g. device="cuda" without CUDA)."""
