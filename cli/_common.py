"""Helpers shared by CLI commands."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rnnstream.runtime import LiveConfig

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


def live_config(args: argparse.Namespace, command: str) -> LiveConfig | None:
    """``--coverage`` and ``--season`` as one :class:`LiveConfig`, checked once by it; its
    refusal is said as a usage error in the flags' words (None: exit 2 for the caller)."""
    from rnnstream.runtime import LiveConfig, RnnStreamError

    try:
        return LiveConfig(coverage=args.coverage or None, season=args.season)
    except RnnStreamError as exc:
        said = ("--season is for the live scores: give --coverage too (e.g. --coverage 0.9 "
                "--season 24)" if args.season is not None and not args.coverage else exc)
        print(f"rnnstream {command}: error: {said}", file=sys.stderr)
        return None


def season_arg(text: str) -> int:
    """``--season N`` (argparse type): a whole number of points, 0 for none."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of points (0: none)")
    return int(text)
