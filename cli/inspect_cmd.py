"""`rnnstream inspect` (placeholder until its stage lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("inspect", help="(not yet implemented)")


def run(args: argparse.Namespace) -> int:
    print("rnnstream inspect: not implemented yet")
    return 2
