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

The names below are loaded on first use (PEP 562), so the small core -- :mod:`.spec`,
:mod:`.errors`, :mod:`.atomic`, :mod:`.integrity` -- imports without numpy or onnxruntime:
``import rnnstream.runtime.spec`` costs the standard library only, and
``from rnnstream.runtime import Predictor`` loads the engine when it is asked for.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what mypy and editors see; at run time __getattr__ imports on first use
    from ._state import State
    from .contract import ModelContract, StateSpec
    from .errors import (
        ConfigError,
        ContractError,
        InferenceError,
        InputError,
        LiveConfigError,
        ModelLoadError,
        RnnStreamError,
        StateError,
        StreamKeyError,
        UnsupportedError,
    )
    from .live import LiveScores, LiveStream
    from .live_config import LiveConfig
    from .pool import StreamPool
    from .predictor import Predictor
    from .session import default_session_options

# public name -> the module (relative to this package) that defines it
_HOMES = {
    "ConfigError": ".errors",
    "ContractError": ".errors",
    "InferenceError": ".errors",
    "InputError": ".errors",
    "LiveConfig": ".live_config",
    "LiveConfigError": ".errors",
    "LiveScores": ".live",
    "LiveStream": ".live",
    "ModelContract": ".contract",
    "ModelLoadError": ".errors",
    "Predictor": ".predictor",
    "RnnStreamError": ".errors",
    "State": "._state",
    "StateError": ".errors",
    "StateSpec": ".contract",
    "StreamKeyError": ".errors",
    "StreamPool": ".pool",
    "UnsupportedError": ".errors",
    "default_session_options": ".session",
}

__all__ = [
    "ConfigError",
    "ContractError",
    "InferenceError",
    "InputError",
    "LiveConfig",
    "LiveConfigError",
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


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, then keep the name here.

    A submodule's name (``rnnstream.runtime.pool``) resolves too, as it did when this package
    imported every module eagerly.
    """
    home = _HOMES.get(name)
    if home is not None:
        value = getattr(import_module(home, __name__), name)
    elif not name.startswith("__") and find_spec(f"{__name__}.{name}") is not None:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
