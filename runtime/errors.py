"""Exceptions raised by :mod:`rnnstream.runtime`.

The errors the runtime raises on a model, a data point, a stream key or a state derive from
:class:`RnnStreamError` (a wrong constructor argument of ``StreamPool``, such as ``threads=0``,
is still a plain ``ValueError``), and each message says what was given, what was expected and,
where there is one, how to fix it. It is the runtime's root, not every stage's: training raises
``rnnstream.train.TrainError``, export ``rnnstream.export.ExportError`` and the server
``rnnstream.serve.ServeError``, each with its own subclasses, none derived from this one::

    RnnStreamError
    ├── ModelLoadError          the model file cannot be used (missing, truncated, not ONNX,
    │   │                       external data outside the model's folder)
    │   └── ContractError       the file loads but its rnnstream contract is missing, malformed,
    │                           of a newer schema, or disagrees with the graph
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
"""

from __future__ import annotations

__all__ = [
    "ContractError",
    "InferenceError",
    "InputError",
    "ModelLoadError",
    "RnnStreamError",
    "StateError",
    "StreamKeyError",
    "UnsupportedError",
]


class RnnStreamError(Exception):
    """Root of the errors the runtime raises on purpose (train, export, serve have their own)."""


class ModelLoadError(RnnStreamError):
    """The model file cannot be loaded: missing, truncated, not ONNX, or unsafe external data."""


class ContractError(ModelLoadError):
    """The model's rnnstream contract is missing, malformed, newer than this runtime, or false."""


class InputError(RnnStreamError, ValueError):
    """A data point handed to the runtime cannot be used as model input."""


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
