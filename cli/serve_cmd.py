"""`rnnstream serve`: stateful streams over the network (KServe v2 over HTTP and gRPC).

Needs the 'serve' extra; without it the command says how to get it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Any

from ._common import add_live_args, live_config

SERVE_EXTRA_HINT = "pip install 'rnnstream[serve]'"

DESCRIPTION = """\
Serve models with the KServe v2 inference protocol (what Triton, KServe and OpenVINO Model
Server speak) over HTTP and gRPC, keeping every sequence's state between requests with
Triton's sequence extension: a request carries sequence_id, sequence_start (fresh state) and
sequence_end (release it). Concurrent requests of different sequences are advanced together
in one batched step. docs/serving.md has client code (tritonclient, curl).
"""

EPILOG = """\
examples:
  rnnstream serve model.onnx --http-port 8000 --grpc-port 8001 --state sequences.npz
  curl -s localhost:8000/v2/models/model/infer -d '{"parameters": {"sequence_id": 7,
    "sequence_start": true}, "inputs": [{"name": "x", "datatype": "FP32",
    "shape": [1, 1, 1], "data": [0.5]}]}'
  rnnstream serve model.onnx --coverage 0.9            # outputs y, lower, upper; live scores
  rnnstream serve model.onnx --host 0.0.0.0 --token-file tokens.txt \
      --tls-cert cert.pem --tls-key key.pem             # beyond this machine: token + TLS

durability (--state FILE): with --durability log (the default) a request is answered only once
  its inputs are in FILE.wal, fsynced (one fsync shared by every request of a batched round and
  by the rounds that ran meanwhile); a restart after any crash replays it onto the snapshot, so
  nothing answered is lost. --durability snapshot: only the periodic snapshots (a crash loses
  what was answered after the last one). docs/serving.md says what each promises.

prediction intervals and live accuracy (--coverage C):
  every answer carries two more FP32 outputs beside 'y', 'lower' and 'upper', the same shape:
  the interval around each prediction, calibrated online per sequence and target from that
  sequence's own errors (as 'rnnstream stream --coverage'), holding about C of the values. A
  request's 'outputs' may ask for any of y, lower, upper. GET /metrics adds each model's live
  scores pooled over its live sequences: realised coverage, model and persistence MAE, scored
  points. --state saves and restores the scores and the calibration with the states.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP/gRPC (KServe v2), state per "
                       "sequence", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="rnnstream .onnx models")
    p.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="model name, once per MODEL in order (default: the file's stem)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                   "127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--http-port", type=int, default=8000, metavar="N",
                   help="HTTP port (default 8000; 0 picks a free one; -1 disables HTTP)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="M",
                   help="gRPC port (default 8001; 0 picks a free one; -1 disables gRPC)")
    p.add_argument("--state", metavar="FILE",
                   help="snapshot of every sequence (.npz): restored at start, saved "
                        "atomically on SIGTERM/Ctrl-C and every --save-every seconds (with "
                        "several models: FILE's stem + .NAME per model)")
    p.add_argument("--save-every", type=float, default=30.0, metavar="SECONDS",
                   help="with --state, seconds between snapshots (default 30; 0: only at stop "
                        "and, with the log, when it outgrows 64 MiB)")
    p.add_argument("--durability", choices=["log", "snapshot"], default="log",
                   help="with --state: 'log' (default) answers a request only once its inputs "
                        "are in a write-ahead log (FILE.wal; one fsync covers every round "
                        "appended meanwhile), so a crash loses nothing answered; 'snapshot' "
                        "only saves every --save-every seconds and at stop (a crash loses "
                        "what came after the last snapshot)")
    p.add_argument("--max-sequences", type=int, default=100_000, metavar="N",
                   help="live sequences per model; a start beyond it answers 429 / "
                        "RESOURCE_EXHAUSTED (default 100000)")
    p.add_argument("--idle-timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="evict a sequence after this long without requests; its id then "
                        "answers an error saying so (default 3600; 0 never evicts)")
    p.add_argument("--max-idle", type=float, default=None, metavar="SECONDS",
                   help="deprecated old name of --idle-timeout (warns; removed in the next "
                        "release)")
    p.add_argument("--max-batch", type=int, default=1024, metavar="N",
                   help="most sequences advanced by one step (default 1024)")
    p.add_argument("--queue-delay-us", type=int, default=0, metavar="US",
                   help="wait this long after the first queued request for others to batch "
                        "with it (Triton's max_queue_delay_microseconds; default 0: batch what "
                        "arrives together)")
    p.add_argument("--step-thread-rows", type=int, default=16, metavar="N",
                   help="a batched step of N sequences or more, or any step while requests "
                        "arrive concurrently, runs on a worker thread while the event loop "
                        "parses the next requests (default 16; 0: every step on the loop); "
                        "answers are the same either way")
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                   help="event loop: uvloop when installed (auto, the default), or asyncio's")
    add_live_args(p, "add outputs 'lower' and 'upper': a prediction interval holding about C "
                     "of the values (e.g. 0.9), and live scores on /metrics (see below)")
    p.add_argument("--max-request-bytes", type=int, default=16 << 20, metavar="N",
                   help="largest request body (default 16 MiB); larger answers 413")
    p.add_argument("--token-file", metavar="FILE",
                   help="accept only clients that send one of the tokens in FILE (one per "
                        "line): HTTP 'Authorization: Bearer TOKEN', gRPC metadata "
                        "'authorization: Bearer TOKEN'; others get 401 / UNAUTHENTICATED "
                        "(the health probes stay open)")
    p.add_argument("--tls-cert", metavar="PEM", help="certificate chain: HTTPS and gRPC over "
                   "TLS (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")


def run_loop(main: Any, loop: str) -> None:
    """Run ``main`` on uvloop when installed (the serve extra brings it where it exists: it
    answers loopback HTTP requests ~2x faster than asyncio's own loop here, docs/benchmarks.md),
    else on asyncio's loop."""
    if loop != "asyncio" and importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(main)
        return
    if loop == "uvloop":
        raise OSError("--loop uvloop: uvloop is not installed (pip install uvloop)")
    import asyncio

    asyncio.run(main)


def _without_contract(models: list[str]) -> str | None:
    """The first of ``models`` that loads but has no rnnstream contract (a foreign file)."""
    from rnnstream.runtime.session import contract_missing

    return next((m for m in models if contract_missing(m)), None)


def _tokens(path: str) -> tuple[str, ...] | None:
    """The tokens of --token-file (one per line, blank lines ignored); None after an error
    (printed)."""
    try:
        with open(path, encoding="utf-8") as f:
            tokens = tuple(line.strip() for line in f if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read --token-file {path}: {exc}", file=sys.stderr)
        return None
    bad = [i for i, t in enumerate(tokens, 1) if not t.isprintable() or " " in t]
    if not tokens or bad:
        print(f"error: --token-file {path}: " + ("no token in it" if not tokens else
              f"token {bad[0]} holds spaces or control characters") + "; write one token per "
              "line (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')",
              file=sys.stderr)
        return None
    return tokens


def idle_timeout(args: argparse.Namespace) -> float:
    """--idle-timeout, or its deprecated old name --max-idle (with a warning on stderr)."""
    if args.max_idle is None:
        return float(args.idle_timeout)
    print("warning: --max-idle is deprecated and will be removed in the next release; use "
          "--idle-timeout (the name StreamPool and Spark use)", file=sys.stderr)
    return float(args.max_idle)


def run(args: argparse.Namespace) -> int:
    if any(importlib.util.find_spec(m) is None for m in ("httptools", "grpc", "tritonclient")):
        print(f"rnnstream serve: needs the 'serve' extra:\n  {SERVE_EXTRA_HINT}", file=sys.stderr)
        return 2
    from rnnstream.runtime import RnnStreamError
    from rnnstream.serve import Limits, ServeConfig, ServeError, Server
    from rnnstream.serve.logs import json_lines

    if args.name and len(args.name) != len(args.models):
        print(f"error: {len(args.name)} --name for {len(args.models)} models; give one per "
              "model, in order", file=sys.stderr)
        return 2
    live = live_config(args, "serve")
    if live is None:
        return 2
    names = args.name or [os.path.splitext(os.path.basename(m))[0] for m in args.models]
    if len(set(names)) != len(names):
        print(f"error: two models named alike ({names}); name them with --name",
              file=sys.stderr)
        return 2
    foreign = _without_contract(args.models)
    if foreign:
        from rnnstream.runtime.session import wrap_hint

        print(f"error: {foreign}: no rnnstream contract; rnnstream serve needs one to know "
              f"the state, features and targets. {wrap_hint(foreign)}", file=sys.stderr)
        return 1
    if (args.tls_cert is None) != (args.tls_key is None):
        print("error: --tls-cert and --tls-key go together (a PEM certificate chain and its "
              "private key)", file=sys.stderr)
        return 2
    tokens = _tokens(args.token_file) if args.token_file else ()
    if tokens is None:
        return 1
    idle = idle_timeout(args)
    json_lines()
    limits = Limits(max_sequences=args.max_sequences,
                    idle_timeout_s=idle if idle > 0 else None,
                    max_batch=max(1, args.max_batch), queue_delay_us=max(0, args.queue_delay_us),
                    step_thread_rows=max(0, args.step_thread_rows))
    config = ServeConfig(dict(zip(names, args.models, strict=True)), host=args.host,
                         http_port=None if args.http_port < 0 else args.http_port,
                         grpc_port=None if args.grpc_port < 0 else args.grpc_port,
                         state=args.state, save_every=args.save_every,
                         max_request_bytes=args.max_request_bytes, limits=limits,
                         live=live, durability=args.durability, tokens=tokens,
                         tls_cert=args.tls_cert, tls_key=args.tls_key)
    # listening beyond loopback without a token: the server logs the warning when it starts
    # (event "exposed", in the JSON lines on stderr), once; it is not printed here again
    try:
        server = Server(config)
        run_loop(server.serve_until_signal(), args.loop)
    except (RnnStreamError, ServeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
