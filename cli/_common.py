"""Helpers shared by CLI commands."""

from __future__ import annotations

import sys

TRAIN_EXTRA_HINT = "pip install 'rnnstream[train]'"


def require_train_extra(command: str) -> None:
    """Exit with a clear message when torch/onnx (the 'train' extra) are not installed."""
    import importlib.util

    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"rnnstream {command}: needs {', '.join(missing)}, which come with the 'train' extra:"
            f"\n  {TRAIN_EXTRA_HINT}",
            file=sys.stderr,
        )
        raise SystemExit(2)


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
