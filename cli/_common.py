"""Helpers shared by CLI commands."""

from __future__ import annotations

import argparse
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


def coverage_arg(text: str) -> float:
    """``--coverage C`` (argparse type): a coverage strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a coverage strictly between 0 and 1 "
                                         "(e.g. 0.9)")
    return value


def add_live_args(p: argparse.ArgumentParser, coverage_help: str) -> None:
    """``--coverage C`` and ``--season N``, as ``rnnstream stream`` and ``serve`` take them."""
    p.add_argument("--coverage", type=coverage_arg, metavar="C", help=coverage_help)
    p.add_argument("--season", type=season_arg, metavar="N",
                   help="with --coverage: the seasonal period for the seasonal-naive baseline "
                        "(default: the season the model was trained with; 0: none)")


def season_without_coverage(args: argparse.Namespace, command: str) -> bool:
    """Say so (usage error, exit 2 for the caller) when ``--season`` comes without
    ``--coverage``."""
    if args.season is not None and not args.coverage:
        print(f"rnnstream {command}: error: --season is for the live scores: give --coverage "
              "too (e.g. --coverage 0.9 --season 24)", file=sys.stderr)
        return True
    return False


def season_arg(text: str) -> int:
    """``--season N`` (argparse type): a whole number of points, 0 for none."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of points (0: none)")
    return int(text)
