"""Stream predictions from stateful ONNX models, one point at a time.

Needs only numpy and onnxruntime (never torch or onnx)::

    from rnnstream.runtime import Predictor, StreamPool

    p = Predictor("model.onnx")        # reads and checks the contract; one onnxruntime session
    y = p.step(0.42)                   # one point in, one prediction out; state carried
    ys = p.prime(history)              # [time, F] in one call
    future = p.forecast(10)            # 10 steps ahead, live state untouched
    p.save_state("s.npz"); p.load_state("s.npz")

    pool = StreamPool("model.onnx", auto_add=True)
    pool.step({"AAPL": 1.0, "MSFT": 2.0})      # many streams, one batched call

Errors are documented in :mod:`rnnstream.runtime.errors`.
"""

from __future__ import annotations

from ._session import default_session_options
from ._state import State
from .contract import ModelContract, StateSpec
from .errors import (
    ContractError,
    InferenceError,
    InputError,
    ModelLoadError,
    RnnStreamError,
    StateError,
    StreamKeyError,
    UnsupportedError,
)
from .live import LiveScores, LiveStream
from .pool import StreamPool
from .predictor import Predictor

__all__ = [
    "ContractError",
    "InferenceError",
    "InputError",
    "LiveScores",
    "LiveStream",
    "ModelContract",
    "ModelLoadError",
    "Predictor",
    "RnnStreamError",
    "State",
    "StateError",
    "StateSpec",
    "StreamKeyError",
    "StreamPool",
    "UnsupportedError",
    "default_session_options",
]
