"""`rnnstream demo` (placeholder until its stage lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("demo", help="(not yet implemented)")


def run(args: argparse.Namespace) -> int:
    print("rnnstream demo: not implemented yet")
    return 2
