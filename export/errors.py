"""Exceptions raised by :mod:`rnnstream.export`.

Nothing is written when one of these is raised: no model, no sidecar, no temporary file::

    ExportError                 base class; catch it to handle every export failure
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

__all__ = ["ExportError", "GraphError", "ParityError", "ParityFailure", "QuantizationError"]


class ExportError(Exception):
    """Base class of every error :mod:`rnnstream.export` raises on purpose."""


class GraphError(ExportError):
    """The built ONNX graph is invalid or does not have the promised structure."""


class QuantizationError(ExportError):
    """Dynamic int8 quantisation was refused or failed its own checks."""


@dataclass(frozen=True)
class ParityFailure:
    """One output of one parity case whose difference exceeded the tolerance."""

    case: str  # e.g. "batch7_time50" or "stream1000"
    output: str  # graph output name, e.g. "y" or "h_out"
    max_abs_diff: float
    atol: float

    def __str__(self) -> str:
        return (f"{self.case}: {self.output} max |diff| = {self.max_abs_diff:.3g} "
                f"> atol {self.atol:.3g}")


class ParityError(ExportError):
    """The exported graph disagrees with the torch model; ``failures`` lists every output."""

    def __init__(self, failures: Sequence[ParityFailure], what: str = "torch vs onnxruntime"):
        self.failures = list(failures)
        lines = "\n".join(f"  {f}" for f in self.failures)
        super().__init__(
            f"parity check failed ({what}), {len(self.failures)} output(s) out of tolerance:\n"
            f"{lines}\nNothing was written. If the graph builder was changed, compare it with "
            "torch's own exporter (exporter='torchscript'); if the model has huge weights or "
            "raw values, check float32 rounding against a float64 torch run before raising atol."
        )
