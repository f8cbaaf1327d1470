"""``rnnstream`` command line: train | export | wrap | inspect | stream | serve | demo.

Each command lives in its own module exposing ``register(subparsers)`` and ``run(args) -> int``.
Modules are imported lazily so that runtime commands (``stream``, ``inspect``) work on a base
install without torch, and a training command without it says how to get it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# command name -> module under rnnstream.cli; order is the order shown by --help
COMMANDS = {
    "train": "train_cmd",
    "export": "export_cmd",
    "wrap": "wrap_cmd",
    "stream": "stream_cmd",
    "serve": "serve_cmd",
    "inspect": "inspect_cmd",
    "demo": "demo_cmd",
}

EPILOG = """\
typical session:
  rnnstream train --data sine --cell lstm --epochs 30 --out runs/sine
  rnnstream export runs/sine/model.pt --out runs/sine/model.onnx
  rnnstream inspect runs/sine/model.onnx
  printf '0.1\\n0.2\\n0.3\\n' | rnnstream stream runs/sine/model.onnx
  rnnstream demo            # all of the above on the built-in sine data
  rnnstream serve runs/sine/model.onnx --state seqs.npz   # KServe v2 over HTTP and gRPC
  rnnstream wrap lstm.onnx --state h0=hn --state c0=cn --out model.onnx  # ONNX from elsewhere

'rnnstream COMMAND --help' explains each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnstream",
        description="Train recurrent forecasters, export them to ONNX with explicit state, "
        "and stream predictions one data point at a time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"rnnstream.cli.{module}").register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnstream")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f"rnnstream.cli.{COMMANDS[args.command]}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rnnstream inspect M | head`: the reader left; not an error of ours
        # Python would complain again when flushing stdout at exit: point it at devnull first
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
