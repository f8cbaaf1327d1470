"""Errors raised by the training stage.

Hierarchy (catch ``TrainError`` to handle all of them; ``RnnStreamError``, the root of every
rnnstream error, catches these and every other stage's)::

    TrainError(RnnStreamError)
    ├── DataError(TrainError, ValueError)        bad or unusable input data (file, column, row)
    ├── ConfigError(TrainError, runtime.ConfigError)  a TrainConfig value out of range, no CUDA;
    │                                            runtime.ConfigError is a ValueError
    └── CheckpointError(TrainError, ValueError)  a checkpoint file that cannot be loaded safely

Every message names the thing at fault and, where there is one, how to fix it.
"""

from __future__ import annotations

from rnnstream.runtime import errors as _runtime
from rnnstream.runtime.errors import RnnStreamError

__all__ = ["CheckpointError", "ConfigError", "DataError", "RnnStreamError", "TrainError"]


class TrainError(RnnStreamError):
    """Base class of the errors raised by ``rnnstream.train``."""


class DataError(TrainError, ValueError):
    """The data cannot be used: empty, missing column, non-numeric or non-finite value, too short.

    Raised before any training starts; the message names the source (file), column and row.
    """


class CheckpointError(TrainError, ValueError):
    """A checkpoint file is missing, truncated, corrupted or not an rnnstream checkpoint."""


class ConfigError(TrainError, _runtime.ConfigError):
    """A training setting is invalid or cannot be honoured (e.g. device="cuda" without CUDA).

    Also a ``rnnstream.runtime.ConfigError`` (one idea, one class to catch) and so a ValueError.
    """
