"""Exceptions raised by :mod:`rnnstream.runtime`, and the root of every rnnstream error.

:class:`RnnStreamError` is the one base class of every error rnnstream raises on purpose, in
every package: the runtime's below, and ``rnnstream.train.TrainError``,
``rnnstream.export.ExportError`` and ``rnnstream.serve.ServeError`` with their subclasses, so
``except RnnStreamError`` catches them all. Each message says what was given, what was expected
and, where there is one, how to fix it. The runtime's own::

    RnnStreamError
    ├── ModelLoadError          the model file cannot be used (missing, truncated, not ONNX,
    │   │                       external data outside the model's folder)
    │   └── ContractError       the file loads but its rnnstream contract is missing, malformed,
    │                           of a newer schema, or disagrees with the graph
    ├── ConfigError             a setting is out of range or contradicts another (threads=0,
    │   │                       a negative idle timeout); also a ValueError
    │   └── LiveConfigError     a live-score setting (LiveConfig: coverage, season, lr, ...);
    │                           also an InputError, as a bad coverage= was in 0.3
    ├── InputError              a data point is unusable (shape, dtype, feature count, unknown
    │                           feature name, non-numeric, NaN/inf, empty); also a ValueError
    ├── StreamKeyError          unknown or duplicate stream key; also a KeyError
    ├── StateError              a state or snapshot does not fit this model (shape, dtype,
    │                           fingerprint) or the snapshot file is unreadable
    ├── InferenceError          onnxruntime failed while running the model (the original
    │                           onnxruntime exception is its __cause__)
    └── UnsupportedError        the operation makes no sense for this model (e.g. forecast when
                                the targets are not the features)

Whenever one of these is raised by a call that would change a stream's state, the state is
bit-for-bit what it was before the call.

This module needs only the standard library (it is part of the small core, with :mod:`.spec`,
:mod:`.atomic` and :mod:`.integrity`).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContractError",
    "InferenceError",
    "InputError",
    "LiveConfigError",
    "ModelLoadError",
    "RnnStreamError",
    "StateError",
    "StreamKeyError",
    "UnsupportedError",
]


class RnnStreamError(Exception):
    """Base class of every error rnnstream raises on purpose, in every package."""


class ConfigError(RnnStreamError, ValueError):
    """A setting is out of range or contradicts another; the message names it and its range."""


class ModelLoadError(RnnStreamError):
    """The model file cannot be loaded: missing, truncated, not ONNX, or unsafe external data."""


class ContractError(ModelLoadError):
    """The model's rnnstream contract is missing, malformed, newer than this runtime, or false."""


class InputError(RnnStreamError, ValueError):
    """A data point handed to the runtime cannot be used as model input."""


class LiveConfigError(ConfigError, InputError):
    """A setting of the live scores (:class:`~rnnstream.runtime.live.LiveConfig`) is out of range
    or contradicts another. A ConfigError, the name for a bad setting; also an InputError, which
    a bad ``coverage=`` or ``season=`` was in 0.3, so ``except InputError`` still catches it."""


class StreamKeyError(RnnStreamError, KeyError):
    """A stream key is unknown (or already present, when adding)."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plain
        return str(self.args[0]) if self.args else ""


class StateError(RnnStreamError):
    """A state or snapshot does not belong to this model, or cannot be read."""


class InferenceError(RnnStreamError):
    """onnxruntime raised while running a loaded model (its exception is ``__cause__``)."""


class UnsupportedError(RnnStreamError):
    """The requested operation is not possible with this model."""
