"""Old private name of :mod:`rnnstream.runtime.integrity`, kept so existing imports keep working.

Import :mod:`rnnstream.runtime.integrity` instead; this module holds no code of its own.
"""

from __future__ import annotations

from .integrity import Tensor, WireError, fingerprint, initializers, layout_json

__all__ = ["Tensor", "WireError", "fingerprint", "initializers", "layout_json"]
