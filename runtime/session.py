"""Opening an ONNX model: the public names other stages use to load, pair and inspect a file.

``rnnstream.export``, ``rnnstream.cli`` and any tool import these from here, never from the
runtime's private modules (a test holds every package to that), so the runtime can reorganise
its insides without breaking them::

    default_session_options()   onnxruntime options chosen for single-step latency
    load_model(path, ...)       open a file, read and check its contract (or pair a foreign
                                model's states): a :class:`LoadedModel`
    contract_missing(path)      True for a file that loads but carries no rnnstream contract
    wrap_hint(path)             one sentence saying how to give such a file a contract
    find_pairs(inputs, outputs) state input -> output names that a naming convention pairs
    ORT_ERRORS                  the exception types onnxruntime raises (they share no base)

The definitions live in the private modules; this module only names them. Loads numpy and
onnxruntime (the small core, :mod:`.spec`, :mod:`.errors`, :mod:`.atomic` and
:mod:`.integrity`, does not).
"""

from __future__ import annotations

from ._generic import find_pairs, wrap_hint
from ._io import ORT_ERRORS
from ._session import LoadedModel, contract_missing, default_session_options, load_model

__all__ = [
    "ORT_ERRORS",
    "LoadedModel",
    "contract_missing",
    "default_session_options",
    "find_pairs",
    "load_model",
    "wrap_hint",
]
