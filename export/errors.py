"""Exceptions raised by :mod:`rnnstream.export`.

Nothing is written when one of these is raised: no model, no sidecar, no temporary file::

    ExportError                 base class; catch it to handle every export failure (it derives
    │                           from RnnStreamError, the root of every rnnstream error)
    ├── GraphError              the ONNX graph is invalid (checker, strict shape inference) or
    │                           lacks what the contract promises (native recurrent op, I/O names,
    │                           GRU ``linear_before_reset=1``)
    ├── ParityError             onnxruntime does not compute what torch computes; lists every
    │                           failing output by name with its maximum difference and tolerance
    └── QuantizationError       int8 quantisation is not possible for this cell, or it broke the
                                contract, or its error against the float model is too large

Each message says what was found and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rnnstream.runtime.errors import RnnStreamError

__all__ = [
    "ExportError",
    "GraphError",
    "ParityError",
    "ParityFailure",
    "QuantizationError",
    "RnnStreamError",
]


class ExportError(RnnStreamError):
    """Base class of every error :mod:`rnnstream.export` raises on purpose."""


class GraphError(ExportError):
    """The built ONNX graph is invalid or does not have the promised structure."""


class QuantizationError(ExportError):
    """Dynamic int8 quantisation was refused or failed its own checks."""


@dataclass(frozen=True)
class ParityFailure:
    """One output of one parity case whose difference exceeded its bound.

    ``atol`` is the bound it was held to: the fixed atol, or the bound derived from
    ``baseline_error`` (torch float32's own distance from the float64 ``reference``).
    """

    case: str  # e.g. "batch7_time50" or "stream1000"
    output: str  # graph output name, e.g. "y" or "h_out"
    max_abs_diff: float
    atol: float
    baseline_error: float | None = None
    reference: str | None = None  # e.g. "torch float64"
    baseline: str | None = None  # e.g. "torch float32"

    def __str__(self) -> str:
        if self.baseline_error is None:
            return (f"{self.case}: {self.output} max |diff| = {self.max_abs_diff:.3g} "
                    f"> atol {self.atol:.3g}")
        return (f"{self.case}: {self.output} max |diff| = {self.max_abs_diff:.3g} from "
                f"{self.reference} > bound {self.atol:.3g} ({self.baseline} is "
                f"{self.baseline_error:.3g} from it)")


class ParityError(ExportError):
    """The exported graph disagrees with the torch model; ``failures`` lists every output."""

    def __init__(self, failures: Sequence[ParityFailure], what: str = "torch vs onnxruntime"):
        self.failures = list(failures)
        lines = "\n".join(f"  {f}" for f in self.failures)
        super().__init__(
            f"parity check failed ({what}), {len(self.failures)} output(s) out of tolerance:\n"
            f"{lines}\nNothing was written. If the graph builder was changed, compare it with "
            "torch's own exporter (exporter='torchscript'). The default bound is derived from "
            "torch's own float32 error against float64 on the same inputs, so a refusal means "
            "onnxruntime is measurably worse than float32 itself, not rounding; with an "
            "explicit atol, export without it to be held to that bound instead."
        )
