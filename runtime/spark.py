"""Deprecated alias of :mod:`rnnstream.spark` (the Spark integration moved out of the runtime).

``import rnnstream.runtime.spark`` still works for one release and emits a DeprecationWarning;
it is the same module object as ``rnnstream.spark``. Import ``rnnstream.spark`` instead.
"""

from __future__ import annotations

import sys
import warnings

warnings.warn(
    "rnnstream.runtime.spark moved to rnnstream.spark; import it from there "
    "(the old name will be removed in the next release)",
    DeprecationWarning,
    stacklevel=2,
)

import rnnstream.spark as _spark  # noqa: E402 -- after the warning, which names the new home

sys.modules[__name__] = _spark
